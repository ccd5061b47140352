"""Recover part 2 on the real lab: the seed disaster with a NEW CA and sa.key, and zero impact on the workload.

A client requests the labapp Service every 100 ms from each node for the whole run. The seed disaster
on cp1 (``/etc/kubernetes`` removed, control-plane containers removed); the test waits past the
node-monitor grace period (50 s) and the workload's NotReady toleration (30 s, set by the lab);
``recover --apply`` runs on cp1 with only the lab's SSH key and known_hosts, and re-trusts worker1
over SSH. ``KUBEREVIVE_RETRUST_DELAY`` holds the re-trust back for longer than grace period +
toleration, so worker1 is NotReady to the NEW control plane long enough for taint-based eviction to
act: with the eviction guard nothing is evicted; without it (``--no-eviction-guard``) the same run
shows the evictions, so this test can fail.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kuberevive.lab import Lab
from kuberevive.lab.demo import SEED_DISASTER
from kuberevive.lab.impact import eviction_events
from kuberevive.lab.probe import ServiceProbe
from kuberevive.lab.workload import NOT_READY_TOLERATION_SECONDS
from tests.documents import validate
from tests.lab.test_recover_lab import ssh_args

pytestmark = pytest.mark.lab

OnNode = Callable[..., "subprocess.CompletedProcess[str]"]

GRACE = 50  # kube-controller-manager --node-monitor-grace-period default (v1.33)
HOLD = GRACE + NOT_READY_TOLERATION_SECONDS + 25  # worker1 NotReady to the new control plane for this long


@pytest.fixture
def rebuilt_lab(lab: Lab) -> Iterator[Lab]:
    """The lab; rebuilt afterwards (its control plane and trust were replaced)."""
    yield lab
    lab.down()
    lab.up()


def _kubectl_json(on_node: OnNode, *args: str) -> Any:
    return json.loads(on_node("cp1", "kubectl", *args, "-o", "json").stdout)


def _labapp_pods(on_node: OnNode) -> dict[str, dict[str, Any]]:
    pods = _kubectl_json(on_node, "get", "pods", "-n", "krlab", "-l", "app=labapp")["items"]
    return {
        p["metadata"]["uid"]: {
            "name": p["metadata"]["name"],
            "node": p["spec"].get("nodeName"),
            "restarts": sum(s.get("restartCount", 0) for s in p["status"].get("containerStatuses", [])),
            "deleting": bool(p["metadata"].get("deletionTimestamp")),
        }
        for p in pods
    }


def _labapp_containers(on_node: OnNode, node: str) -> dict[str, tuple[str, int]]:
    items = json.loads(on_node(node, "crictl", "ps", "-o", "json", "--name", "^labapp$").stdout)["containers"]
    return {c["labels"]["io.kubernetes.pod.name"]: (c["id"], int(c["metadata"].get("attempt", 0))) for c in items}


def _evictions(on_node: OnNode) -> list[str]:
    return eviction_events(_kubectl_json(on_node, "get", "events", "-A")["items"])


def _run(rebuilt_lab: Lab, on_node: OnNode, tmp_path: Path, guard: bool) -> dict[str, Any]:
    kcm_before = on_node("cp1", "cat", "/etc/kubernetes/manifests/kube-controller-manager.yaml").stdout
    pods_before = _labapp_pods(on_node)
    assert sorted(p["node"] for p in pods_before.values()) == ["cp1", "worker1"]
    containers_before = {n: _labapp_containers(on_node, n) for n in ("cp1", "worker1")}
    apicaller_before = _kubectl_json(on_node, "get", "pods", "-n", "krlab", "-l", "app=apicaller")["items"]
    assert not _evictions(on_node)
    with ServiceProbe(rebuilt_lab, tmp_path / "probe") as probe:
        probe.wait_for_answers(10)  # the clients answer from both nodes before the disaster
        on_node("cp1", "sh", "-c", SEED_DISASTER, timeout=180)
        time.sleep(GRACE + NOT_READY_TOLERATION_SECONDS + 5)
        started = time.monotonic()
        args = ["--apply", "--json", *ssh_args()] + ([] if guard else ["--no-eviction-guard"])
        run = on_node(
            "cp1",
            "env",
            f"KUBEREVIVE_RETRUST_DELAY={HOLD}",
            "kuberevive",
            "recover",
            *args,
            check=False,
            timeout=1500,
        )
        took = time.monotonic() - started
        probe.wait_for_answers(30)  # about 3 s more of answers after the recovery, from both nodes
    results = {n: r.as_dict() for n, r in probe.results.items()}
    print(f"guard={guard}: recover --apply took {took:.0f} s; probe {results}")
    print(run.stderr[-4000:])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = validate(json.loads(run.stdout))  # a RecoveryResult matching its JSON Schema (docs/json.md)
    return {
        "out": out,
        "probe": results,
        "took": took,
        "kcm_before": kcm_before,
        "pods_before": pods_before,
        "containers_before": containers_before,
        "apicaller_before": apicaller_before,
        "stderr": run.stderr,
    }


def test_recover_with_new_ca_has_zero_impact(rebuilt_lab: Lab, on_node: OnNode, tmp_path: Path) -> None:
    r = _run(rebuilt_lab, on_node, tmp_path, guard=True)
    report = r["out"]["report"]
    # both nodes Ready, worker1 re-trusted in place (same Node object)
    assert {n["name"]: (n["ready"], n["retrust"]) for n in report["nodes"]} == {
        "cp1": (True, "this node"),
        "worker1": (True, "done"),
    }
    assert report["eviction_guard"] == "off" and not report["problems"], report
    # 0 failed requests from either node, and the probe really ran the whole time (>= 8 answers a second)
    for node, p in r["probe"].items():
        assert p["failed"] == 0, (node, p)
        assert p["ok"] >= 8 * r["took"], (node, p)
    # 0 evictions: the same pods, the same containers, no restarts
    assert not _evictions(on_node)
    assert _labapp_pods(on_node) == r["pods_before"]
    assert {n: _labapp_containers(on_node, n) for n in ("cp1", "worker1")} == r["containers_before"]
    # the ServiceAccount-using pod was restarted (new token from the new sa.key) and calls the API again
    apicaller = _kubectl_json(on_node, "get", "pods", "-n", "krlab", "-l", "app=apicaller")["items"]
    assert [p["metadata"]["uid"] for p in apicaller] != [p["metadata"]["uid"] for p in r["apicaller_before"]]
    deadline = time.monotonic() + 60
    while "apicaller ok" not in rebuilt_lab.apicaller_logs(tail=1) and time.monotonic() < deadline:
        time.sleep(2)
    assert "apicaller ok status=200" in rebuilt_lab.apicaller_logs(tail=1)
    assert report["token_reviews"]["krlab/apicaller"]["authenticated"], report["token_reviews"]
    # kubectl logs and exec work on both nodes (the kubelets trust the new CA's apiserver-kubelet-client)
    for pod in r["pods_before"].values():
        logs = on_node("cp1", "kubectl", "logs", "-n", "krlab", pod["name"], "--tail=1")
        assert logs.returncode == 0, (pod, logs.stderr)
    proxies = _kubectl_json(on_node, "get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-proxy")["items"]
    assert sorted(p["spec"]["nodeName"] for p in proxies) == ["cp1", "worker1"]
    for p in proxies:
        ex = on_node(
            "cp1", "kubectl", "exec", "-n", "kube-system", p["metadata"]["name"], "--", "kube-proxy", "--version"
        )
        assert f"v{rebuilt_lab.cfg.k8s_version.removeprefix('v')}" in ex.stdout, (p["spec"]["nodeName"], ex.stderr)
    # the controller-manager runs its normal manifest again, byte for byte what kubeadm wrote
    kcm = on_node("cp1", "cat", "/etc/kubernetes/manifests/kube-controller-manager.yaml").stdout
    assert kcm == r["kcm_before"]
    # the guarded controller-manager's lease was released for it once its container had stopped (not waited
    # out), and the one that leads now is a running instance of the normal manifest
    assert "its leader lease released for it" in r["stderr"], r["stderr"][-3000:]
    lease = _kubectl_json(on_node, "get", "lease", "-n", "kube-system", "kube-controller-manager")
    holder = lease["spec"]["holderIdentity"]
    assert holder.startswith("cp1_") and lease["spec"]["leaseDurationSeconds"] == 15, lease["spec"]
    kcm_pod = _kubectl_json(on_node, "get", "pod", "-n", "kube-system", "kube-controller-manager-cp1")
    assert "-taint-eviction-controller" not in json.dumps(kcm_pod["spec"]), kcm_pod["spec"]
    # recover signed cluster-info for its token itself: the real bootstrap signer computes the same string
    # (it signs again once the signature is removed, and its value equals the one recover wrote)
    token = r["out"]["join_command"].split("--token ")[1].split()[0]
    key = f"jws-kubeconfig-{token.partition('.')[0]}"
    ours = _kubectl_json(on_node, "get", "cm", "-n", "kube-public", "cluster-info")["data"][key]
    patch = json.dumps([{"op": "remove", "path": f"/data/{key}"}])
    on_node("cp1", "kubectl", "patch", "cm", "-n", "kube-public", "cluster-info", "--type=json", "-p", patch)
    deadline, theirs = time.monotonic() + 120, None
    while theirs is None and time.monotonic() < deadline:
        time.sleep(1)
        theirs = _kubectl_json(on_node, "get", "cm", "-n", "kube-public", "cluster-info")["data"].get(key)
    assert theirs == ours
    print(
        f"zero impact: probe {r['probe']}, recovery {r['took']:.0f} s, phases {report['phases_s']}, "
        f"timings {r['out']['timings']}"
    )
