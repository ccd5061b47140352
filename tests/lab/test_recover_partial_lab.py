"""``kuberevive recover`` on the real lab after partial losses, a half-done manual kubeadm attempt, and a worker
that lost its files. One lab, the scenarios chained in this order (a successful recovery leaves a healthy lab):
cheap ones that keep every CA first, then the worker repair, then the ones that need a new CA.

Each scenario runs with a client requesting the labapp Service every 100 ms from both nodes, and ends with
the cluster as healthy as after a recovery from scratch: ``/readyz`` with the new admin.conf, both nodes
Ready, the labapp containers on both nodes kept (same container ids), the ClusterConfiguration unchanged,
``recover`` on cp1 with nothing left to do, and 0 failed Service requests. When ``ca.key`` survived, the CA
certificate is unchanged and worker1's kubelet files are untouched (no re-trust).

The lab is rebuilt after the module (the later scenarios replace the cluster CA).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kuberevive.lab import Lab
from kuberevive.lab.demo import SEED_DISASTER
from kuberevive.lab.probe import ServiceProbe
from tests.lab.test_recover_lab import ssh_args

pytestmark = pytest.mark.lab

OnNode = Callable[..., "subprocess.CompletedProcess[str]"]
NODES = ("cp1", "worker1")
WORKER_TRUST = (
    "/etc/kubernetes/kubelet.conf",
    "/etc/kubernetes/pki/ca.crt",
    "/var/lib/kubelet/pki/kubelet-client-current.pem",
)


@pytest.fixture(scope="module")
def chain(lab: Lab, on_node: OnNode) -> Iterator[dict[str, Any]]:
    """The lab and what must not change across every scenario; rebuilt afterwards."""
    state = {"cluster": _cluster_configuration(on_node), "kubeadm_config": str(lab.cfg.init_config_file)}
    yield state
    lab.down()
    lab.up()


def _cluster_configuration(on_node: OnNode) -> dict[str, Any]:
    cm = json.loads(on_node("cp1", "kubectl", "get", "cm", "-n", "kube-system", "kubeadm-config", "-o", "json").stdout)
    doc: dict[str, Any] = yaml.safe_load(cm["data"]["ClusterConfiguration"])
    return doc


def _labapp_containers(on_node: OnNode) -> dict[str, tuple[str, int]]:
    out = {}
    for node in NODES:
        items = json.loads(on_node(node, "crictl", "ps", "-o", "json", "--name", "^labapp$").stdout)["containers"]
        for c in items:
            out[f"{node}/{c['labels']['io.kubernetes.pod.name']}"] = (c["id"], int(c["metadata"].get("attempt", 0)))
    assert sorted(k.split("/")[0] for k in out) == ["cp1", "worker1"], out
    return out


def _digest(on_node: OnNode, node: str, paths: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for p in paths:
        r = on_node(node, "sh", "-c", f"readlink {p}; cat {p}", check=False)
        out[p] = hashlib.sha256(r.stdout.encode()).hexdigest() if r.returncode == 0 else "missing"
    return out


def _tree_digest(on_node: OnNode, node: str, directory: str) -> str:
    out = on_node(node, "sh", "-c", f"cd {directory} && find . -type f -o -type l | sort | xargs sha256sum")
    return out.stdout


def _wait(what: str, check: Callable[[], bool], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(2)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def _ready(on_node: OnNode, name: str) -> bool:
    r = on_node("cp1", "kubectl", "get", "node", name, "-o", "json", check=False)
    if r.returncode != 0:
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in json.loads(r.stdout)["status"]["conditions"])


def _recover(on_node: OnNode, *args: str) -> subprocess.CompletedProcess[str]:
    extra = ssh_args() if "--apply" in args else []
    return on_node("cp1", "kuberevive", "recover", *args, *extra, check=False, timeout=1200)


def _scenario(
    lab: Lab,
    on_node: OnNode,
    chain: dict[str, Any],
    tmp_path: Path,
    damage: str,
    keeps_ca: bool,
) -> subprocess.CompletedProcess[str]:
    """``damage`` (a shell script) on cp1, then ``recover --apply`` on cp1; checks the end state."""
    containers = _labapp_containers(on_node)
    ca_before = on_node("cp1", "cat", "/etc/kubernetes/pki/ca.crt").stdout
    worker_before = _digest(on_node, "worker1", WORKER_TRUST)
    with ServiceProbe(lab, tmp_path / "probe") as probe:
        on_node("cp1", "sh", "-ec", damage, timeout=300)
        run = _recover(on_node, "--apply")
        print(run.stdout[-3000:], run.stderr[-6000:])
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        _wait("both nodes Ready", lambda: all(_ready(on_node, n) for n in NODES))
    readyz = on_node("cp1", "kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "get", "--raw", "/readyz")
    assert readyz.stdout.strip() == "ok"
    assert _labapp_containers(on_node) == containers
    assert _cluster_configuration(on_node) == chain["cluster"]
    plan = _recover(on_node, "--json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["plan"]["steps"] == [], plan.stdout
    if keeps_ca:
        assert on_node("cp1", "cat", "/etc/kubernetes/pki/ca.crt").stdout == ca_before
        assert _digest(on_node, "worker1", WORKER_TRUST) == worker_before
        assert "re-trusting" not in run.stderr
    else:
        assert "re-trusting worker1 over SSH" in run.stderr
        worker_ca = on_node("worker1", "cat", "/etc/kubernetes/pki/ca.crt").stdout
        assert worker_ca == on_node("cp1", "cat", "/etc/kubernetes/pki/ca.crt").stdout != ca_before
    for node, p in probe.results.items():
        assert p.failed == 0, (node, p.as_dict())
        assert p.ok > 0, (node, p.as_dict())
    return run


def _moved_aside(run: subprocess.CompletedProcess[str], path: str) -> bool:
    return f"{path} moved aside to" in run.stdout


def test_only_some_kubeconfigs_lost(lab: Lab, on_node: OnNode, chain: dict[str, Any], tmp_path: Path) -> None:
    run = _scenario(
        lab,
        on_node,
        chain,
        tmp_path,
        "rm -f /etc/kubernetes/admin.conf /etc/kubernetes/scheduler.conf",
        keeps_ca=True,
    )
    assert "sa.key was kept" in run.stderr  # no workload restarted


def test_only_the_manifests_lost(lab: Lab, on_node: OnNode, chain: dict[str, Any], tmp_path: Path) -> None:
    manifests = _tree_digest(on_node, "cp1", "/etc/kubernetes/manifests")
    _scenario(lab, on_node, chain, tmp_path, "rm -rf /etc/kubernetes/manifests", keeps_ca=True)
    assert _tree_digest(on_node, "cp1", "/etc/kubernetes/manifests") == manifests  # what kubeadm wrote, byte for byte


def test_only_sa_key_lost(lab: Lab, on_node: OnNode, chain: dict[str, Any], tmp_path: Path) -> None:
    """A new sa.key: the token-using pods are restarted (rolling), the labapp containers stay; the CA is kept."""
    run = _scenario(lab, on_node, chain, tmp_path, "rm -f /etc/kubernetes/pki/sa.key", keeps_ca=True)
    assert _moved_aside(run, "/etc/kubernetes/pki/sa.pub")  # derived from the lost key: replaced, kept aside
    _wait(
        "the apicaller calling the API with a token of the new sa.key", lambda: "ok" in lab.apicaller_logs(tail=1), 90
    )
    assert "apicaller ok status=200" in lab.apicaller_logs(tail=1)


def test_a_worker_that_lost_its_files_is_repaired_in_place(lab: Lab, on_node: OnNode, tmp_path: Path) -> None:
    """worker1 loses /etc/kubernetes and its kubelet restarts (crash-loops); recover on the healthy cp1 finds
    it (expired node Lease), probes its files over SSH and repairs it in place."""
    containers = _labapp_containers(on_node)
    cp1_files = _tree_digest(on_node, "cp1", "/etc/kubernetes")
    cp1_kubelet = _tree_digest(on_node, "cp1", "/var/lib/kubelet/pki")
    with ServiceProbe(lab, tmp_path / "probe") as probe:
        on_node("worker1", "sh", "-ec", "rm -rf /etc/kubernetes; systemctl restart kubelet")

        def listed() -> bool:
            plan = _recover(on_node, "--json")
            assert plan.returncode == 0, plan.stderr
            return [n["name"] for n in json.loads(plan.stdout)["plan"]["node_repairs"]] == ["worker1"]

        _wait("recover listing worker1 as a node whose kubelet no longer reports", listed, timeout=150)
        run = _recover(on_node, "--apply")
        print(run.stdout, run.stderr[-3000:])
        assert run.returncode == 0, run.stdout + run.stderr
        assert "node worker1: repaired in place" in run.stdout
        assert "/etc/kubernetes/kubelet.conf is missing" in run.stdout
        _wait("worker1 Ready", lambda: _ready(on_node, "worker1"))
    assert _labapp_containers(on_node) == containers
    assert _tree_digest(on_node, "cp1", "/etc/kubernetes") == cp1_files  # no other node touched
    assert _tree_digest(on_node, "cp1", "/var/lib/kubelet/pki") == cp1_kubelet
    ca = on_node("cp1", "cat", "/etc/kubernetes/pki/ca.crt").stdout
    assert on_node("worker1", "cat", "/etc/kubernetes/pki/ca.crt").stdout == ca
    pods = json.loads(
        on_node("cp1", "kubectl", "get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-proxy", "-o", "json").stdout
    )["items"]
    (proxy,) = [p["metadata"]["name"] for p in pods if p["spec"]["nodeName"] == "worker1"]
    # the API server reaches worker1's kubelet again (the kubelet trusts its client certificate's CA)
    on_node("cp1", "kubectl", "logs", "-n", "kube-system", proxy, "--tail=1")
    after = _recover(on_node, "--json")
    assert json.loads(after.stdout)["plan"]["node_repairs"] == []
    for node, p in probe.results.items():
        assert p.failed == 0, (node, p.as_dict())


def test_half_done_manual_etcd_phases_and_a_ca(
    lab: Lab, on_node: OnNode, chain: dict[str, Any], tmp_path: Path
) -> None:
    """The seed disaster, then what an operator would start with at 3 a.m.: the etcd certificates, the etcd
    manifest and a CA with kubeadm itself. That CA is not the one worker1 trusts: a new CA, worker1 re-trusted."""
    cfg = chain["kubeadm_config"]
    phases = [
        f"kubeadm init phase certs {c} --config {cfg}"
        for c in ("etcd-ca", "etcd-server", "etcd-peer", "etcd-healthcheck-client", "apiserver-etcd-client", "ca")
    ]
    phases.append(f"kubeadm init phase etcd local --config {cfg}")
    made = {"etcd/ca.crt": "/tmp/kr-manual-etcd-ca.crt", "ca.crt": "/tmp/kr-manual-ca.crt"}
    phases += [f"cp /etc/kubernetes/pki/{name} {copy}" for name, copy in made.items()]  # what kubeadm made
    script = SEED_DISASTER + "\n" + "\n".join(phases) + "\n"
    _scenario(lab, on_node, chain, tmp_path, script, keeps_ca=False)
    # what kubeadm made is valid and consistent: kept (the etcd CA, and its CA, now the cluster's)
    for name, copy in made.items():
        assert on_node("cp1", "cat", f"/etc/kubernetes/pki/{name}").stdout == on_node("cp1", "cat", copy).stdout, name
        on_node("cp1", "rm", "-f", copy)


def test_half_done_manual_certs_all_and_kubeconfig_all(
    lab: Lab, on_node: OnNode, chain: dict[str, Any], tmp_path: Path
) -> None:
    """The seed disaster, then ``kubeadm init phase certs all`` and ``kubeconfig all``: a whole new, consistent
    PKI (CA and sa.key the cluster does not know) and kubeconfigs. Kept; the cluster follows (re-trust, tokens)."""
    cfg = chain["kubeadm_config"]
    copies = (
        "cp /etc/kubernetes/pki/ca.crt /tmp/kr-manual-ca.crt; cp /etc/kubernetes/admin.conf /tmp/kr-manual-admin.conf"
    )
    phases = "\n".join(f"kubeadm init phase {p} all --config {cfg}" for p in ("certs", "kubeconfig"))
    script = f"{SEED_DISASTER}\n{phases}\n{copies}\n"
    run = _scenario(lab, on_node, chain, tmp_path, script, keeps_ca=False)
    assert "rollout-restart Deployment krlab/apicaller" in run.stderr  # kubeadm's sa.key is new to the pods
    for name, copy in (("pki/ca.crt", "/tmp/kr-manual-ca.crt"), ("admin.conf", "/tmp/kr-manual-admin.conf")):
        assert on_node("cp1", "cat", f"/etc/kubernetes/{name}").stdout == on_node("cp1", "cat", copy).stdout, name
        on_node("cp1", "rm", "-f", copy)


def test_only_the_ca_keys_lost(lab: Lab, on_node: OnNode, chain: dict[str, Any], tmp_path: Path) -> None:
    """ca.key, front-proxy-ca.key and etcd/ca.key gone: CAs that cannot sign are replaced (worker1 re-trusted);
    sa.key survives, so no workload restarts."""
    damage = "cd /etc/kubernetes/pki && rm -f ca.key front-proxy-ca.key etcd/ca.key"
    run = _scenario(lab, on_node, chain, tmp_path, damage, keeps_ca=False)
    assert "sa.key was kept" in run.stderr
    assert _moved_aside(run, "/etc/kubernetes/pki/ca.crt")


def test_only_pki_lost(lab: Lab, on_node: OnNode, chain: dict[str, Any], tmp_path: Path) -> None:
    """pki/ gone while the control plane runs on: new CAs and sa.key, worker1 re-trusted, the kubeconfigs of
    the old CA moved aside."""
    run = _scenario(lab, on_node, chain, tmp_path, "rm -rf /etc/kubernetes/pki", keeps_ca=False)
    assert _moved_aside(run, "/etc/kubernetes/admin.conf")
