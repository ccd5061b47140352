"""``kuberevive recover`` on the real lab: the seed disaster on cp1, recovered from the node alone.

The seed: ``rm -rf /etc/kubernetes`` inside cp1, then the control-plane containers and their pod
sandboxes removed with crictl. ``recover --apply`` runs ON cp1 with no other input.

These tests destroy the lab's control plane. The module's fixture takes the lab down and up again
at the end (the other nodes' kubelets still trust the old CA after a recovery; re-trusting them is
recover part 2), so later tests get a fresh, healthy lab.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kuberevive.core.recover import EARLY_STEP_IDS, SEED_STEP_IDS
from kuberevive.lab import Lab, LabConfig
from kuberevive.lab.demo import SEED_DISASTER
from kuberevive.lab.kubeadm import ca_cert_hash
from tests.single_binary import single_binary

pytestmark = pytest.mark.lab

OnNode = Callable[..., "subprocess.CompletedProcess[str]"]

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
KILLED = (-9, 137)

DISASTER = SEED_DISASTER
#: What read-config says when the configuration was read from etcd's data file before etcd ran.
EARLY = "etcd serves the configuration read from its data file"


@pytest.fixture(scope="module")
def fresh_lab(lab: Lab) -> Iterator[Lab]:
    """The lab, rebuilt after this module (its control plane was destroyed and recovered)."""
    yield lab
    lab.down()
    lab.up()


#: The kubelet's files kubeadm writes (instance-config.yaml from v1.34: the CRI socket).
KUBELET_FILES = (
    "/var/lib/kubelet/config.yaml",
    "/var/lib/kubelet/kubeadm-flags.env",
    "/var/lib/kubelet/instance-config.yaml",
)


def _manifests(on_node: OnNode) -> dict[str, Any]:
    """cp1's control-plane manifests (parsed: field by field), its kubelet's files (None: absent) and kubelet.conf
    without its certificate data (a new CA changes that, nothing else may change)."""
    out: dict[str, Any] = {
        c: yaml.safe_load(on_node("cp1", "cat", f"/etc/kubernetes/manifests/{c}.yaml").stdout) for c in CONTROL_PLANE
    }
    for path in KUBELET_FILES:
        proc = on_node("cp1", "cat", path, check=False)
        out[path] = proc.stdout if proc.returncode == 0 else None
    kubelet_conf = yaml.safe_load(on_node("cp1", "cat", "/etc/kubernetes/kubelet.conf").stdout)
    for cluster in kubelet_conf["clusters"]:
        cluster["cluster"].pop("certificate-authority-data", None)
    out["/etc/kubernetes/kubelet.conf"] = kubelet_conf
    return out


def _workload_containers(on_node: OnNode) -> dict[str, tuple[str, int]]:
    """The labapp containers on cp1 (no ServiceAccount token: never restarted): name/pod -> (id, attempt).

    kube-proxy is not among them: with a new sa.key its token is invalid and recover restarts it."""
    items = json.loads(on_node("cp1", "crictl", "ps", "-o", "json").stdout)["containers"]
    out = {}
    for c in items:
        pod = c["labels"].get("io.kubernetes.pod.name", "")
        if not pod.startswith("labapp-"):
            continue
        out[f"{c['metadata']['name']}/{pod}"] = (c["id"], int(c["metadata"].get("attempt", 0)))
    return out


def _restart_counts(on_node: OnNode) -> dict[str, int]:
    pods = json.loads(
        on_node("cp1", "kubectl", "get", "pods", "-A", "--field-selector=spec.nodeName=cp1", "-o", "json").stdout
    )
    return {
        f"{p['metadata']['namespace']}/{p['metadata']['name']}": sum(
            s.get("restartCount", 0) for s in p["status"].get("containerStatuses", [])
        )
        for p in pods["items"]
        if p["metadata"]["name"].startswith("labapp-")
    }


def _cluster_configuration(on_node: OnNode) -> dict[str, Any]:
    cm = json.loads(on_node("cp1", "kubectl", "get", "cm", "-n", "kube-system", "kubeadm-config", "-o", "json").stdout)
    doc: dict[str, Any] = yaml.safe_load(cm["data"]["ClusterConfiguration"])
    return doc


def _containers(on_node: OnNode, name: str) -> list[str]:
    """The ids of cp1's running containers called ``name``."""
    return on_node("cp1", "crictl", "ps", "-q", "--name", f"^{name}$").stdout.split()


def _disaster(on_node: OnNode) -> None:
    on_node("cp1", "sh", "-c", DISASTER, timeout=120)
    assert on_node("cp1", "test", "-e", "/etc/kubernetes", check=False).returncode != 0


def _node_ready(on_node: OnNode, name: str) -> bool:
    node = json.loads(on_node("cp1", "kubectl", "get", "node", name, "-o", "json").stdout)
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])


def ssh_args() -> list[str]:
    """How recover on cp1 reaches the other nodes: the lab's client key and known_hosts (visible inside cp1)."""
    d = LabConfig.from_env().ssh_dir
    return ["--ssh-key", str(d / "id_ed25519"), "--known-hosts", str(d / "known_hosts")]


def _recover(
    on_node: OnNode, *args: str, env: dict[str, str] | None = None, program: str = "kuberevive"
) -> subprocess.CompletedProcess[str]:
    """``kuberevive recover ARGS`` on cp1: the installed package, or ``program`` (the single executable)."""
    prefix = ["env", *(f"{k}={v}" for k, v in (env or {}).items())]
    extra = ssh_args() if "--apply" in args else []
    return on_node("cp1", *prefix, program, "recover", *args, *extra, check=False, timeout=900)


def _single_binary_without_python() -> tuple[str, dict[str, str]]:
    """The single executable (packaging/build-binary.sh, under /var/cache/kuberevive, which the nodes see) and a
    PATH without the installed package's scripts directory (issue 15: the node needs no Python for it)."""
    cfg = LabConfig.from_env()
    path = ":".join(p for p in cfg.node_path().split(":") if p != cfg.python_scripts_dir)
    return str(single_binary()), {"PATH": path}


def _assert_healthy(on_node: OnNode, before_cluster: dict[str, Any], before_manifests: dict[str, Any]) -> None:
    out = on_node("cp1", "kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "get", "--raw", "/readyz")
    assert out.stdout.strip() == "ok"
    assert _cluster_configuration(on_node) == before_cluster
    assert _manifests(on_node) == before_manifests
    assert _node_ready(on_node, "cp1")
    plan = _recover(on_node, "--json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["plan"]["steps"] == []


def _wait(what: str, timeout: float, check: Callable[[], tuple[bool, str]]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ok, last = check()
        if ok:
            return
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s; last: {last}"
        time.sleep(1)


def _all_nodes_ready(on_node: OnNode) -> tuple[bool, str]:
    nodes = json.loads(on_node("cp1", "kubectl", "get", "nodes", "-o", "json").stdout)["items"]
    state = {
        n["metadata"]["name"]: next((c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready"), "?")
        for n in nodes
    }
    return all(v == "True" for v in state.values()), str(state)


def _ca_backups(on_node: OnNode) -> list[str]:
    """The copies of cp1's ca.crt kuberevive moved aside, in its backup directory."""
    ls = on_node("cp1", "sh", "-c", "ls /var/lib/kuberevive/backup/*/etc/kubernetes/pki/ca.crt", check=False)
    return ls.stdout.split()


def test_recover_a_node_rebooted_after_the_disaster(fresh_lab: Lab, on_node: OnNode, tmp_path: Path) -> None:
    """Issue 17: the seed disaster, then the kubelet restarted (as by a reboot): it cannot start at all ("unable to
    load client CA file"). recover --apply alone brings the node back: all nodes Ready, no Service request lost,
    the workload's containers kept. First in the module: it needs the fresh two-node lab, and leaves it healthy."""
    from kuberevive.lab.probe import ServiceProbe

    before_manifests = _manifests(on_node)
    before_cluster = _cluster_configuration(on_node)
    before_containers = _workload_containers(on_node)
    before_restarts = _restart_counts(on_node)
    backups_before = _ca_backups(on_node)  # an earlier module on this lab (ca extend) may have made some
    log = fresh_lab.cfg.log_dir("cp1") / "kubelet.log"
    marks: dict[str, float] = {}
    with ServiceProbe(fresh_lab, tmp_path / "probe") as probe:
        t0 = time.monotonic()  # about when the probe started: its failures are timed from its start
        probe.wait_for_answers(10)
        marks["disaster"] = time.monotonic() - t0
        _disaster(on_node)
        seen = log.stat().st_size
        marks["kubelet restarted"] = time.monotonic() - t0
        on_node("cp1", "systemctl", "restart", "kubelet")

        def crash_looping() -> tuple[bool, str]:  # it exits at every start, and never answers /healthz
            # v1.33's kubelet exits on the missing client CA file; v1.37's retries that file and exits on the missing
            # kubeconfig ("unable to load bootstrap kubeconfig")
            lines = log.read_bytes()[seen:].decode(errors="replace").splitlines()
            failed = [ln for ln in lines if "failed to run Kubelet" in ln or "unable to load client CA file" in ln]
            return len(failed) >= 2, f"{len(failed)} start(s) that failed: {failed[-1:] or 'none'}"

        _wait("the kubelet crash-looping", 120, crash_looping)
        health = on_node("cp1", "curl", "-s", "-m", "2", "http://127.0.0.1:10248/healthz", check=False)
        assert health.stdout.strip() != "ok", health

        marks["recover"] = time.monotonic() - t0
        run = _recover(on_node, "--apply")
        marks["recovered"] = time.monotonic() - t0
        assert run.returncode == 0, run.stdout + run.stderr
        print(run.stdout)
        print(run.stderr)
        # the tool (re)started the kubelet; in the early order it stops the crash-looping kubelet at the run's start
        # (else systemd may restart it by itself once ca.crt and kubelet.conf are back, with its old client
        # certificate) and starts it once every file is written
        assert "starting it (running containers are kept)" in run.stderr
        said = ("the kubelet does not run", "the kubelet runs with its old credentials", "stopped at the run's start")
        assert any(s in run.stderr for s in said), run.stderr
        _wait("every node Ready", 180, lambda: _all_nodes_ready(on_node))
        probe.wait_for_answers(10)
    results = {n: r.as_dict() for n, r in probe.results.items()}
    print(f"probe {results}; seconds from the probe's start: {marks}")
    for node, p in results.items():
        assert p["failed"] == 0 and p["ok"] > 0, (node, p, marks)
    _assert_healthy(on_node, before_cluster, before_manifests)
    assert _workload_containers(on_node) == before_containers
    assert _restart_counts(on_node) == before_restarts
    # the configuration read from etcd's data file (etcd did not run): every file written before the one kubelet
    # restart, nothing provisional; else the provisional client CA and kubelet.conf were moved aside, not left
    aside = [p for p in _ca_backups(on_node) if p not in backups_before]
    if EARLY in run.stderr:
        assert not aside and run.stderr.count("starting it (running containers are kept)") == 1, run.stderr
    else:
        assert aside, "the provisional ca.crt was not moved aside"
    ca = on_node("cp1", "openssl", "x509", "-noout", "-subject", "-in", "/etc/kubernetes/pki/ca.crt").stdout
    assert "CN = kubernetes" in ca, ca


def test_recover_with_kept_trust_keeps_the_other_nodes(fresh_lab: Lab, on_node: OnNode) -> None:
    """``--ca-from`` with the CAs and sa.key copied out before the disaster (as a backup would hold them):
    the cluster keeps its identity, so worker1 stays Ready and ServiceAccount tokens stay valid."""
    kept_dir = f"/tmp/kuberevive-recover-kept-{fresh_lab.cfg.prefix}"
    names = (
        "ca.crt",
        "ca.key",
        "front-proxy-ca.crt",
        "front-proxy-ca.key",
        "etcd/ca.crt",
        "etcd/ca.key",
        "sa.key",
        "sa.pub",
    )
    on_node("cp1", "sh", "-c", f"rm -rf {kept_dir} && mkdir -p {kept_dir}/etcd && chmod 700 {kept_dir}")
    for n in names:
        on_node("cp1", "cp", "-p", f"/etc/kubernetes/pki/{n}", f"{kept_dir}/{n}")
    before = {n: on_node("cp1", "cat", f"/etc/kubernetes/pki/{n}").stdout for n in names}
    before_manifests = _manifests(on_node)
    before_cluster = _cluster_configuration(on_node)
    _disaster(on_node)
    run = _recover(on_node, "--apply", "--ca-from", kept_dir)
    assert run.returncode == 0, run.stdout + run.stderr
    print(run.stdout)
    for n in names:
        assert on_node("cp1", "cat", f"/etc/kubernetes/pki/{n}").stdout == before[n], n
    _assert_healthy(on_node, before_cluster, before_manifests)
    # the join hash is the kept CA's (not the lab's first CA: an earlier test of this module may have replaced it,
    # nor kubelet-start's provisional client CA, moved aside in this run)
    printed = re.findall(r"--discovery-token-ca-cert-hash (sha256:[0-9a-f]{64})", run.stdout)
    assert printed and set(printed) == {ca_cert_hash(before["ca.crt"].encode())}, run.stdout
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # worker1 still trusts this CA: it reports to the new API server
        if _node_ready(on_node, "worker1"):
            break
        time.sleep(2)
    assert _node_ready(on_node, "worker1")
    # its ServiceAccount token (the kept sa.key) is still accepted: the apicaller's next calls succeed (polled: a
    # call may have met the API server while the kubelet restarted it)
    deadline = time.monotonic() + 60
    while "apicaller ok status=200" not in fresh_lab.apicaller_logs(tail=1) and time.monotonic() < deadline:
        time.sleep(2)
    assert "apicaller ok status=200" in fresh_lab.apicaller_logs(tail=1)
    on_node("cp1", "rm", "-rf", kept_dir)


def test_recover_seed_disaster_then_join_a_new_node(fresh_lab: Lab, on_node: OnNode) -> None:
    """The seed disaster recovered by the single executable (issue 15), the package playing no part."""
    binary, bare = _single_binary_without_python()
    before_manifests = _manifests(on_node)
    before_cluster = _cluster_configuration(on_node)
    before_containers = _workload_containers(on_node)
    before_restarts = _restart_counts(on_node)
    assert any(k.startswith("labapp/") for k in before_containers)
    # the lab's own configuration: the values recovery must find without being told
    init = {d["kind"]: d for d in yaml.safe_load_all(fresh_lab.cfg.init_config_file.read_text())}
    assert before_cluster["networking"]["podSubnet"] == init["ClusterConfiguration"]["networking"]["podSubnet"]

    healthy = _recover(on_node, env=bare, program=binary)
    assert healthy.returncode == 0 and "nothing to recover" in healthy.stdout

    _disaster(on_node)
    # and the kubelet's instance-config.yaml where kubeadm writes it (v1.34+): recover writes it again, as kubeadm did
    had_instance_config = before_manifests["/var/lib/kubelet/instance-config.yaml"] is not None
    on_node("cp1", "rm", "-f", "/var/lib/kubelet/instance-config.yaml")
    plan = _recover(on_node, env=bare, program=binary)
    assert plan.returncode == 0, plan.stderr
    assert "etcd static Pod manifest" in plan.stdout and "nothing was changed" in plan.stdout
    assert on_node("cp1", "test", "-e", "/etc/kubernetes/pki", check=False).returncode != 0  # plan wrote nothing

    run = _recover(on_node, "--apply", env=bare, program=binary)
    assert run.returncode == 0, run.stdout + run.stderr
    print(run.stdout)
    m = re.search(r"time from start to API ready: ([\d.]+) s \(components alone: ([\d.]+) s; ", run.stdout)
    assert m, run.stdout

    _assert_healthy(on_node, before_cluster, before_manifests)  # instance-config.yaml byte for byte among them
    minor = int(fresh_lab.cfg.k8s_version.split(".")[1])
    assert had_instance_config == (minor >= 34), before_manifests["/var/lib/kubelet/instance-config.yaml"]
    cluster = _cluster_configuration(on_node)
    assert cluster["networking"] == {
        "dnsDomain": "cluster.local",
        "podSubnet": "10.123.0.0/16",
        "serviceSubnet": "10.96.0.0/12",
    }
    assert cluster["apiServer"]["certSANs"] == ["kuberevive-lab.invalid"]
    assert cluster["apiServer"]["extraArgs"] == [{"name": "event-ttl", "value": "2h0m0s"}]
    assert _workload_containers(on_node) == before_containers
    assert _restart_counts(on_node) == before_restarts
    # the kubelet's old client certificate was moved aside, not deleted
    aside = on_node("cp1", "sh", "-c", "ls /var/lib/kuberevive/backup/*/var/lib/kubelet/pki/").stdout
    assert "kubelet-client-current.pem" in aside

    lines = run.stdout.splitlines()
    printed = lines[lines.index("join (or re-join) the other nodes with:") + 1].strip()
    join = re.fullmatch(
        r"kubeadm join (\S+) --token (\S+) --discovery-token-ca-cert-hash (sha256:[0-9a-f]{64})", printed
    )
    assert join, run.stdout
    assert "--control-plane" not in run.stdout  # no controlPlaneEndpoint in the 1+1 lab: no control-plane command
    # the run's log file (issue 15): there, 0600, with what the run said, and no key, certificate, token or JWT
    logs = on_node("cp1", "sh", "-c", "ls -t /var/lib/kuberevive/log/recover-*.log").stdout.split()
    assert logs, "recover --apply left no log file"
    assert on_node("cp1", "stat", "-c", "%a", logs[0]).stdout.strip() == "600"
    text = on_node("cp1", "cat", logs[0]).stdout
    assert "kubeadm join" in text and "time from start to API ready" in text, text[-2000:]
    token_secret = join.group(2).split(".")[1]
    for secret in ("-----BEGIN", "PRIVATE KEY", "LS0tLS1CRUdJTi", "eyJ", token_secret):
        assert secret not in text, f"{secret!r} is in {logs[0]}"
    fresh_lab.add_worker("worker2", printed)  # the printed command, as printed: its endpoint, token and hash
    assert _node_ready(on_node, "worker2")


def test_recover_killed_at_every_step_converges(fresh_lab: Lab, on_node: OnNode) -> None:
    before_manifests = _manifests(on_node)
    before_cluster = _cluster_configuration(on_node)
    before_containers = _workload_containers(on_node)
    _disaster(on_node)
    ids = [s["id"] for s in json.loads(_recover(on_node, "--json").stdout)["plan"]["steps"]]
    assert ids in (list(SEED_STEP_IDS), list(EARLY_STEP_IDS))  # the latter: etcd stopped before the plan
    # a --config that disagrees with etcd is refused at step 4 and what the run wrote is moved aside again
    wrong = fresh_lab.cfg.init_config_file.read_text().replace("10.123.0.0/16", "10.124.0.0/16")
    wrong_file = f"/tmp/kuberevive-recover-wrong-{fresh_lab.cfg.prefix}.yaml"
    with open(wrong_file, "w") as fh:
        fh.write(wrong)
    refused = _recover(on_node, "--apply", "--config", wrong_file)
    os.unlink(wrong_file)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "networking.pod_subnet: file '10.124.0.0/16', etcd '10.123.0.0/16'" in refused.stderr
    for path in ("/etc/kubernetes/manifests/etcd.yaml", "/etc/kubernetes/pki/etcd/ca.key"):
        assert on_node("cp1", "test", "-e", path, check=False).returncode != 0, path
    # a second run is refused while the lock is held (here by flock(1), the same flock(2) lock a running
    # recover holds); the holder keeps it for 20 s in the background
    holder = subprocess.Popen(
        fresh_lab.node("cp1").nsenter(
            [
                "sh",
                "-c",
                "mkdir -p /var/lib/kuberevive/recover && exec flock -o /var/lib/kuberevive/recover/lock sleep 20",
            ]
        )
    )
    time.sleep(1)
    second = _recover(on_node, "--apply")
    assert second.returncode == 1 and "another 'kuberevive recover' is running" in second.stderr, second.stderr
    holder.terminate()
    holder.wait(timeout=30)
    # the refused run started etcd (its manifest moved aside, the container may run on for minutes): the disaster
    # again, so the runs below read the configuration from etcd's data file (core.recover.EARLY_STEP_IDS)
    _disaster(on_node)
    assert not _containers(on_node, "etcd")
    ids = [s["id"] for s in json.loads(_recover(on_node, "--json").stdout)["plan"]["steps"]]
    steps = len(ids)
    assert ids == list(EARLY_STEP_IDS)
    # etcd certs, cluster certs, kubelet client: killed half-way through their files
    mid_step = {ids.index(s) + 1 for s in ("etcd-certs", "certs", "kubelet-client")}
    for n in range(1, steps):
        if n in mid_step:
            r = _recover(on_node, "--apply", env={"KUBEREVIVE_FAULT_MID_STEP": str(n)})
            assert r.returncode in KILLED, f"mid-step {n}: {r.returncode}\n{r.stdout}\n{r.stderr}"
        r = _recover(on_node, "--apply", env={"KUBEREVIVE_FAULT_AFTER_STEP": str(n)})
        assert r.returncode in KILLED, f"after step {n}: {r.returncode}\n{r.stdout}\n{r.stderr}"
        assert f"[{n}/{steps}]" in r.stderr
    final = _recover(on_node, "--apply")
    assert final.returncode == 0, final.stdout + final.stderr
    assert "kubeadm join" in final.stdout
    _assert_healthy(on_node, before_cluster, before_manifests)
    assert _workload_containers(on_node) == before_containers
