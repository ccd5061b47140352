"""The HA lab: cp1..cp3 made by real ``kubeadm init --upload-certs`` / ``kubeadm join --control-plane``, stacked
etcd (three members), Debian's haproxy as ``controlPlaneEndpoint`` with /readyz health checks, and worker1.

One bring-up for the module (the ``ha_lab`` fixture, on its own instance: tests/conftest.py). The tests run in
the order written; the last one takes the lab down through the CLI and checks that nothing is left.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from kuberevive.cli.app import main
from kuberevive.core import recover as rcore
from kuberevive.core import salvage
from kuberevive.lab import Lab
from kuberevive.lab.demo import SEED_DISASTER
from kuberevive.lab.loadbalancer import LoadBalancer
from kuberevive.lab.probe import ApiProbe, ServiceProbe
from kuberevive.model import paths
from kuberevive.model.recover import RetrustOptions
from kuberevive.run import renew
from kuberevive.run.retrust import read_peer_files

pytestmark = pytest.mark.lab

OnNode = Callable[..., "subprocess.CompletedProcess[str]"]
CPS = ("cp1", "cp2", "cp3")
NODES = (*CPS, "worker1")
ETCDCTL = (
    "etcdctl",
    "--endpoints",
    "https://127.0.0.1:2379",
    "--cacert",
    "/etc/kubernetes/pki/etcd/ca.crt",
    "--cert",
    "/etc/kubernetes/pki/etcd/healthcheck-client.crt",
    "--key",
    "/etc/kubernetes/pki/etcd/healthcheck-client.key",
)


def _poll(what: str, probe: Callable[[], object], timeout: float) -> object:
    """``probe()`` until it returns something true; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})")


def _server(on_node: OnNode, node: str, kubeconfig: str) -> str:
    conf = yaml.safe_load(on_node(node, "cat", kubeconfig).stdout)
    (cluster,) = conf["clusters"]
    server: str = cluster["cluster"]["server"]
    return server


def test_four_nodes_ready_and_every_control_plane_runs_its_pods(ha_lab: Lab) -> None:
    assert ha_lab.node_conditions() == dict.fromkeys(NODES, "Ready")
    pods = ha_lab.system_pods()
    for cp in CPS:
        for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            assert pods.get(f"{component}-{cp}") == "Running", pods
    assert sorted(v for k, v in pods.items() if k.startswith("kube-proxy-")) == ["Running"] * 4, pods


KUBEADM_MANIFESTS: dict[str, dict[str, Any]] = {}
"""Every master's static Pod manifests as kubeadm wrote them, for the all-masters test at the end."""


def test_what_kubeadm_wrote_on_each_master_is_recorded(ha_lab: Lab, ha_on_node: OnNode) -> None:
    for cp in CPS:
        KUBEADM_MANIFESTS[cp] = _manifests(ha_on_node, cp)
        assert set(KUBEADM_MANIFESTS[cp]) == set(COMPONENTS) and all(KUBEADM_MANIFESTS[cp].values())


def test_etcd_has_three_started_voting_members(ha_lab: Lab, ha_on_node: OnNode) -> None:
    members = json.loads(ha_on_node("cp1", *ETCDCTL, "member", "list", "-w", "json").stdout)["members"]
    by_name = {m.get("name", ""): m for m in members}
    assert sorted(by_name) == list(CPS), members  # an unstarted member has no name
    for cp in CPS:
        ip = ha_lab.cfg.node(cp).ip
        assert by_name[cp]["peerURLs"] == [f"https://{ip}:2380"]
        assert by_name[cp]["clientURLs"] == [f"https://{ip}:2379"]
        assert not by_name[cp].get("isLearner", False), by_name[cp]  # promoted: a voting member


def test_etcd_endpoint_health_cluster(ha_lab: Lab, ha_on_node: OnNode) -> None:
    health = json.loads(ha_on_node("cp1", *ETCDCTL, "endpoint", "health", "--cluster", "-w", "json").stdout)
    assert sorted(h["endpoint"] for h in health) == sorted(f"https://{ha_lab.cfg.node(cp).ip}:2379" for cp in CPS)
    assert all(h["health"] for h in health), health


def test_kubectl_through_the_load_balancer(ha_lab: Lab, ha_on_node: OnNode) -> None:
    """TLS to the LB address verifies against the cluster CA: every API server's certificate has the LB's IP."""
    lb = f"https://{ha_lab.cfg.api_endpoint}"
    for cp in CPS:
        out = ha_on_node(cp, "kubectl", "--server", lb, "get", "nodes", "-o", "name").stdout.split()
        assert sorted(out) == sorted(f"node/{n}" for n in NODES)
    states = LoadBalancer(ha_lab.cfg).server_states()
    assert states == dict.fromkeys(CPS, "UP")


def test_kubeconfigs_name_the_load_balancer(ha_lab: Lab, ha_on_node: OnNode) -> None:
    """admin.conf everywhere and the worker's kubelet.conf use the controlPlaneEndpoint. A control plane's
    kubelet.conf, controller-manager.conf and scheduler.conf name its own API server: kubeadm v1.33 writes them so
    (ControlPlaneKubeletLocalMode, beta and on by default in v1.33, for the kubelet)."""
    lb = f"https://{ha_lab.cfg.api_endpoint}"
    for cp in CPS:
        assert _server(ha_on_node, cp, "/etc/kubernetes/admin.conf") == lb
        own = f"https://{ha_lab.cfg.node(cp).ip}:6443"
        for conf in ("kubelet.conf", "controller-manager.conf", "scheduler.conf"):
            assert _server(ha_on_node, cp, f"/etc/kubernetes/{conf}") == own, (cp, conf)
    assert _server(ha_on_node, "worker1", "/etc/kubernetes/kubelet.conf") == lb
    cluster = json.loads(
        ha_on_node("cp1", "kubectl", "get", "cm", "-n", "kube-system", "kubeadm-config", "-o", "json").stdout
    )
    assert yaml.safe_load(cluster["data"]["ClusterConfiguration"])["controlPlaneEndpoint"] == ha_lab.cfg.api_endpoint


def test_labapp_runs_on_every_node_and_its_service_answers_from_each(ha_lab: Lab, ha_on_node: OnNode) -> None:
    out = ha_on_node("cp1", "kubectl", "get", "pods", "-n", "krlab", "-l", "app=labapp", "-o", "json").stdout
    assert sorted(p["spec"]["nodeName"] for p in json.loads(out)["items"]) == sorted(NODES)
    ip = ha_lab.service_ip()
    for node in NODES:
        answers = {ha_on_node(node, "curl", "-sS", "-m", "3", f"http://{ip}/").stdout.strip() for _ in range(4)}
        assert all(a.startswith("labapp pod=labapp-") for a in answers), (node, answers)
    assert "apicaller ok status=200" in ha_lab.apicaller_logs(tail=20)


def test_lab_status_shows_every_node_and_the_load_balancer(
    ha_lab: Lab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBEREVIVE_LAB_INSTANCE", ha_lab.cfg.prefix.removeprefix("krlab") or "0")
    monkeypatch.delenv("KUBEREVIVE_LAB_CONTROL_PLANES", raising=False)
    assert main(["lab", "status", "--json"]) == 0  # no topology given: the one the lab was built with
    data = json.loads(capsys.readouterr().out)
    assert [(n["name"], n["address"], n["state"]) for n in data["nodes"]] == [
        *((n.name, n.ip, "up") for n in ha_lab.cfg.nodes),
        ("lb", ha_lab.cfg.lb_ip, "up"),
    ]


def test_up_with_another_topology_is_refused(
    ha_lab: Lab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = ha_lab.read_state()["up_at"]
    monkeypatch.setenv("KUBEREVIVE_LAB_INSTANCE", ha_lab.cfg.prefix.removeprefix("krlab") or "0")
    assert main(["lab", "up", "--control-planes", "1"]) == 1
    err = capsys.readouterr().err
    v = ha_lab.cfg.k8s_version
    assert (
        f"kuberevive: error: the lab in {ha_lab.cfg.state_dir} is up with 3 control planes and 1 worker on "
        f"Kubernetes v{v}, not 1 control plane and 1 worker on v{v}" in err
    ), err
    assert "kuberevive lab down" in err and "Traceback" not in err
    assert ha_lab.read_state()["up_at"] == before and all(s.state == "up" for s in ha_lab.status())


def test_a_stopped_api_server_is_taken_out_by_the_load_balancer(ha_lab: Lab, ha_on_node: OnNode) -> None:
    """cp1's kubelet is stopped first (its containers keep running), so that the stopped kube-apiserver stays
    stopped while the test looks; then the kubelet starts it again and haproxy puts cp1 back."""
    lb = LoadBalancer(ha_lab.cfg)
    server = f"https://{ha_lab.cfg.api_endpoint}"
    cp1 = ha_lab.cfg.node("cp1").ip
    ha_on_node("cp1", "systemctl", "stop", "kubelet")
    try:
        ids = ha_on_node("cp1", "crictl", "ps", "-q", "--name", "^kube-apiserver$").stdout.split()
        assert len(ids) == 1, ids
        ha_on_node("cp1", "crictl", "stop", ids[0])
        _poll("haproxy to take cp1 out", lambda: lb.server_states()["cp1"].startswith("DOWN"), timeout=60)
        direct = ha_on_node("worker1", "curl", "-sk", "-m", "3", f"https://{cp1}:6443/livez", check=False)
        assert direct.returncode != 0, direct.stdout  # cp1's API server does not answer
        for _ in range(20):  # each kubectl is a new connection: haproxy spreads them over cp2 and cp3
            out = ha_on_node("cp2", "kubectl", "--server", server, "get", "--raw", "/readyz", timeout=30).stdout
            assert out.strip() == "ok"
        states = lb.server_states()
        assert states["cp1"].startswith("DOWN") and states["cp2"] == states["cp3"] == "UP", states
    finally:
        ha_on_node("cp1", "systemctl", "start", "kubelet")
    _poll(
        "the kubelet to start a new kube-apiserver on cp1",
        lambda: set(ha_on_node("cp1", "crictl", "ps", "-q", "--name", "^kube-apiserver$").stdout.split()) - set(ids),
        timeout=240,
    )
    _poll("haproxy to put cp1 back", lambda: lb.server_states()["cp1"] == "UP", timeout=240)


# ------------------------------------------------------------------ one master lost (issue 12)
# Issue 12, one master lost: on the 3+1 HA lab, cp2 loses ``/etc/kubernetes`` and its control-plane containers
# (the seed disaster; its etcd data and kubelet survive) while cp1 and cp3 stay healthy. ``kuberevive recover
# --apply --peer cp1=<address>`` on cp2 salvages the cluster's CAs and sa.key from cp1 over SSH and rejoins cp2's
# etcd member to its peers on its own data.
#
# Checked against the real cluster: cp2's ``ca.*``, ``front-proxy-ca.*``, ``etcd/ca.*``, ``sa.*`` byte-identical to
# cp1's; the same three etcd member IDs, all started and voting, every endpoint healthy; cp2's control-plane
# manifests as kubeadm wrote them (etcd's ``--initial-cluster`` now lists every member); all nodes Ready; no pod
# anywhere restarted or re-created (same UIDs, container IDs and restart counts; cp2's own control-plane
# containers, which the disaster removed, aside); 0 failed requests of a Service probe every 100 ms from every
# node and of an API probe every 100 ms through the load balancer (a ServiceAccount token listing pods), during
# the disaster and the whole recovery.

TRUST = paths.TRUST_FILES
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
LOST = "cp2"
API_DURING_RECOVERY: dict[str, Any] = {}
API_DURING_RENEWAL: dict[str, Any] = {}
"""What the API probe through the load balancer saw, for the second test (failures, the recovery's window)."""


def _trust_sums(on_node: OnNode, node: str) -> dict[str, str]:
    out = on_node(node, "sh", "-c", "cd /etc/kubernetes/pki && sha256sum " + " ".join(TRUST)).stdout
    return {line.split()[1]: line.split()[0] for line in out.splitlines()}


def _members(on_node: OnNode) -> dict[str, dict[str, Any]]:
    members = json.loads(on_node("cp1", *ETCDCTL, "member", "list", "-w", "json").stdout)["members"]
    return {format(m["ID"], "x"): m for m in members}


LOST_STATIC = frozenset(f"{c}-{LOST}" for c in COMPONENTS)


def _pods(on_node: OnNode, skip: frozenset[str] = LOST_STATIC) -> dict[str, tuple[str, dict[str, tuple[str, int]]]]:
    """Every pod (namespace/name): its UID and, per container, its container ID and restart count; the kube-system
    pods in ``skip`` left out (by default cp2's own control-plane static pods: the disaster removed their
    containers)."""
    items = json.loads(on_node("cp1", "kubectl", "get", "pods", "-A", "-o", "json").stdout)["items"]
    out = {}
    for p in items:
        ns, name = p["metadata"]["namespace"], p["metadata"]["name"]
        if ns == "kube-system" and name in skip:
            continue
        containers = {
            s["name"]: (s.get("containerID", ""), int(s.get("restartCount", 0)))
            for s in p["status"].get("containerStatuses", [])
        }
        out[f"{ns}/{name}"] = (p["metadata"]["uid"], containers)
    return out


def _manifests(on_node: OnNode, node: str) -> dict[str, Any]:
    return {c: yaml.safe_load(on_node(node, "cat", f"/etc/kubernetes/manifests/{c}.yaml").stdout) for c in COMPONENTS}


def _flags(manifest: dict[str, Any]) -> dict[str, str]:
    cmd = manifest["spec"]["containers"][0]["command"]
    return dict(a.removeprefix("--").split("=", 1) for a in cmd[1:])


def _wait_all_ready(lab: Lab, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while (conditions := lab.node_conditions()) != dict.fromkeys(NODES, "Ready"):
        assert time.monotonic() < deadline, f"nodes not all Ready after {timeout:.0f} s: {conditions}"
        time.sleep(1)


def test_one_master_lost_is_recovered_with_the_trust_of_a_healthy_peer(
    ha_lab: Lab, ha_on_node: OnNode, tmp_path: Path
) -> None:
    on_node = ha_on_node
    _wait_all_ready(ha_lab)
    trust_cp1 = _trust_sums(on_node, "cp1")
    assert _trust_sums(on_node, LOST) == trust_cp1  # what kubeadm join --control-plane copied
    members_before = _members(on_node)
    assert sorted(m["name"] for m in members_before.values()) == list(CPS)
    pods_before = _pods(on_node)
    manifests_before = _manifests(on_node, LOST)
    token = on_node("cp1", "kubectl", "create", "token", "apicaller", "-n", "krlab", "--duration", "2h").stdout
    ca = on_node("cp1", "cat", "/etc/kubernetes/pki/ca.crt").stdout.encode()
    ssh = ha_lab.cfg.ssh_dir
    peer = f"cp1={ha_lab.cfg.node('cp1').ip}"
    argv = ["kuberevive", "recover", "--apply", "--json", "--peer", peer]
    argv += ["--ssh-key", str(ssh / "id_ed25519"), "--known-hosts", str(ssh / "known_hosts")]

    probes_started = time.time()  # the probes' failure times are relative to their start (within 0.2 s)
    with (
        ServiceProbe(ha_lab, tmp_path / "service") as service,
        ApiProbe(ha_lab, tmp_path / "api", token.strip(), ca, nodes=["worker1"]) as api,
    ):
        service.wait_for_answers(10)
        api.wait_for_answers(10)
        on_node(LOST, "sh", "-c", SEED_DISASTER, timeout=180)
        assert on_node(LOST, "test", "-e", "/etc/kubernetes", check=False).returncode != 0
        started = time.time()
        run = on_node(LOST, *argv, check=False, timeout=900)
        recovery_s = time.time() - started
        API_DURING_RECOVERY["window"] = (started - probes_started, started + recovery_s - probes_started)
        assert run.returncode == 0, run.stderr[-3000:]
        _wait_all_ready(ha_lab)
        service.wait_for_answers(20)  # the clients answer after the recovery too
        api.wait_for_answers(20)
    result = json.loads(run.stdout)
    print(f"one master recovered in {recovery_s:.1f} s; timings {result['timings']}")

    assert result["applied"][0] == "salvage-trust" and result["report"]["eviction_guard"] == "off"
    # the trust material is cp1's, byte for byte
    assert _trust_sums(on_node, LOST) == trust_cp1
    # the same three members, started and voting, each endpoint healthy
    members = _members(on_node)
    assert sorted(members) == sorted(members_before)
    assert all(m.get("name") and not m.get("isLearner", False) for m in members.values()), members
    health = json.loads(on_node("cp1", *ETCDCTL, "endpoint", "health", "--cluster", "-w", "json").stdout)
    assert len(health) == 3 and all(h["health"] for h in health), health
    # cp2's manifests as kubeadm wrote them; etcd's --initial-cluster names every member now, still 'existing'
    manifests = _manifests(on_node, LOST)
    for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert manifests[c] == manifests_before[c], c
    etcd, etcd_before = _flags(manifests["etcd"]), _flags(manifests_before["etcd"])
    assert etcd["initial-cluster-state"] == "existing"
    assert sorted(etcd["initial-cluster"].split(",")) == sorted(
        f"{m['name']}={m['peerURLs'][0]}" for m in members.values()
    )
    assert {k: v for k, v in etcd.items() if k != "initial-cluster"} == {
        k: v for k, v in etcd_before.items() if k != "initial-cluster"
    }
    # no pod restarted or re-created anywhere
    assert _pods(on_node) == pods_before
    # nothing failed, during the disaster and the whole recovery
    print("Service probes:", {node: (r.ok, r.failed) for node, r in service.results.items()})
    for node, r in service.results.items():
        assert r.ok > 0 and r.failed == 0, f"Service probe on {node}: {r.as_dict()}"
    (through_lb,) = api.results.values()
    assert through_lb.ok > 0
    API_DURING_RECOVERY["failures"] = through_lb.failures
    print(f"API probe through the load balancer: {through_lb.as_dict()}; recovery window {API_DURING_RECOVERY}")


def test_no_api_request_through_the_load_balancer_failed_during_the_recovery() -> None:
    """Run after the test above: the API probe's failures between the start and the end of ``recover --apply``
    (those of the disaster itself, in-flight requests on the removed kube-apiserver, come before)."""
    assert "failures" in API_DURING_RECOVERY, "the recovery test did not get this far"
    begin, end = API_DURING_RECOVERY["window"]
    during = [f for f in API_DURING_RECOVERY["failures"] if begin <= f[0] <= end]
    assert during == []


def test_a_peers_files_are_read_over_real_ssh_and_a_missing_one_is_none(ha_lab: Lab, ha_on_node: OnNode) -> None:
    """read_peer_files (the salvage step's default reader) against cp1's real sshd, from the host."""
    ssh = ha_lab.cfg.ssh_dir
    opts = RetrustOptions(identity_files=(str(ssh / "id_ed25519"),), known_hosts=(str(ssh / "known_hosts"),))
    cp1 = salvage.parse_peer(f"cp1={ha_lab.cfg.node('cp1').ip}")
    pki = PurePosixPath("/etc/kubernetes/pki")
    wanted = [pki / n for n in paths.TRUST_FILES] + [pki / "no-such-file.key"]
    got = read_peer_files(cp1, opts, wanted)
    assert got[pki / "no-such-file.key"] is None
    files = {n: got[pki / n] for n in paths.TRUST_FILES}
    assert salvage.material_problems(files, datetime.now(UTC)) == []
    assert files["ca.crt"] == ha_on_node("cp1", "cat", str(pki / "ca.crt")).stdout.encode()


# certs renew --apply --all-nodes on the HA lab (issue 14): every leaf, kubeconfig and kubelet client certificate of
# cp1, cp2 and cp3 counted as expiring (--expiry-warning-days 400: kubeadm's leaves are valid one year), renewed with
# each node's own SANs, the control planes restarted one node at a time; an API probe through the load balancer
# every 100 ms, a Service probe every 100 ms from every node; no workload pod restarted.

STATIC = frozenset(f"{c}-{cp}" for c in COMPONENTS for cp in CPS)
"""The control planes' static pods, which the renewal restarts."""
RENEWED_GROUPS = ("certificate", "kubeconfig")


def _certs_by_node(on_node: OnNode, ssh: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``certs check --all-nodes --json`` on cp1: node -> item name -> item (cp1's own items under "cp1")."""
    argv = ["kuberevive", "certs", "check", "--all-nodes", "--json"]
    argv += ["--ssh-key", str(ssh / "id_ed25519"), "--known-hosts", str(ssh / "known_hosts")]
    data = json.loads(on_node("cp1", *argv, check=False, timeout=300).stdout)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for item in data["items"]:
        out.setdefault(item["node"] or "cp1", {})[item["name"]] = item
    return out


def _pod_time(on_node: OnNode, pod: str, what: str) -> datetime:
    """When the kube-system pod's container started (``started``) or the pod last became Ready (``ready``)."""
    status = json.loads(on_node("cp1", "kubectl", "get", "pod", "-n", "kube-system", pod, "-o", "json").stdout)[
        "status"
    ]
    if what == "started":
        stamp = status["containerStatuses"][0]["state"]["running"]["startedAt"]
    else:
        stamp = next(c["lastTransitionTime"] for c in status["conditions"] if c["type"] == "Ready")
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _serving_serial(on_node: OnNode, address: str) -> str:
    """The serial (hex, lower case) of the certificate the API server at ``address``:6443 serves now."""
    script = f"openssl s_client -connect {address}:6443 </dev/null 2>/dev/null | openssl x509 -noout -serial"
    return on_node("cp1", "sh", "-c", script).stdout.strip().removeprefix("serial=").lower().lstrip("0")


def test_certs_renew_all_nodes_renews_every_master_one_at_a_time_with_the_api_up(
    ha_lab: Lab, ha_on_node: OnNode, tmp_path: Path
) -> None:
    on_node = ha_on_node
    _wait_all_ready(ha_lab)
    ssh = ha_lab.cfg.ssh_dir
    before = _certs_by_node(on_node, ssh)
    assert sorted(before) == sorted(NODES)
    for cp in CPS:  # every control-plane node is read whole (kubeadm's rows), not as a worker
        assert {"apiserver", "etcd-server", "etcd-peer", "admin.conf", "ca", "kubelet-client"} <= set(before[cp]), cp
    assert set(before["worker1"]) == {"kubelet-client", "kubelet-serving"}
    pods_before = _pods(on_node, skip=STATIC)
    members_before = _members(on_node)
    token = on_node("cp1", "kubectl", "create", "token", "apicaller", "-n", "krlab", "--duration", "2h").stdout
    ca = on_node("cp1", "cat", "/etc/kubernetes/pki/ca.crt").stdout.encode()
    argv = ["kuberevive", "certs", "renew", "--apply", "--all-nodes", "--expiry-warning-days", "400", "--json"]
    argv += ["--ssh-key", str(ssh / "id_ed25519"), "--known-hosts", str(ssh / "known_hosts")]

    probes_started = time.time()
    with (
        ServiceProbe(ha_lab, tmp_path / "service") as service,
        ApiProbe(ha_lab, tmp_path / "api", token.strip(), ca, nodes=["worker1"]) as api,
    ):
        service.wait_for_answers(10)
        api.wait_for_answers(10)
        started = time.time()
        run = on_node("cp1", *argv, check=False, timeout=1500)
        took = time.time() - started
        window = (started - probes_started, started + took - probes_started)
        print(f"certs renew --apply --all-nodes took {took:.1f} s\n{run.stderr[-6000:]}")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        _wait_all_ready(ha_lab)
        service.wait_for_answers(20)
        api.wait_for_answers(20)
    result = json.loads(run.stdout)
    # every step, the peers' between this node's files and its restart, and after it (tests/unit/test_renew_ha.py)
    assert result["applied"] == renew.steps_for([t["name"] for t in result["targets"]], True, all_nodes=True)
    assert {"peer-certificates", "peer-restarts", "other-kubelets"} <= set(result["applied"])
    after = _certs_by_node(on_node, ssh)
    for cp in CPS:
        renewed = [n for n, i in before[cp].items() if i["group"] in RENEWED_GROUPS and i["status"] != "missing"]
        assert len(renewed) >= 10, (cp, renewed)
        for name in [*renewed, "kubelet-client"]:
            old, new = before[cp][name], after[cp][name]
            assert new["serial"] != old["serial"] and new["status"] == "ok" and new["signer_verified"], (cp, name)
        # the node's own name and address, not cp1's, in its serving certificates (kept: every old SAN)
        assert after[cp]["apiserver"]["subject"] == "kube-apiserver"
        # the running API server serves the renewed certificate
        assert _serving_serial(on_node, ha_lab.cfg.node(cp).ip) == after[cp]["apiserver"]["serial"].lstrip("0"), cp
    assert after["worker1"]["kubelet-client"]["serial"] != before["worker1"]["kubelet-client"]["serial"]
    for cp in ("cp2", "cp3"):  # each SAN set is the node's own: cp1's address is not in cp2's certificates
        sans = on_node(
            cp, "openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", "/etc/kubernetes/pki/etcd/server.crt"
        )
        assert ha_lab.cfg.node(cp).ip in sans.stdout and ha_lab.cfg.node("cp1").ip not in sans.stdout, sans.stdout
    # etcd: the same three members, all healthy
    assert sorted(_members(on_node)) == sorted(members_before)
    health = json.loads(on_node("cp1", *ETCDCTL, "endpoint", "health", "--cluster", "-w", "json").stdout)
    assert len(health) == 3 and all(h["health"] for h in health), health
    # no workload pod restarted or re-created
    assert _pods(on_node, skip=STATIC) == pods_before
    (through_lb,) = api.results.values()
    during = [f for f in through_lb.failures if window[0] <= f[0] <= window[1]]
    print(f"API probe through the load balancer: {through_lb.as_dict()}; window {window}")
    print("Service probes:", {node: r.as_dict() for node, r in service.results.items()})
    API_DURING_RENEWAL["during"] = during  # judged by the test after this one
    API_DURING_RENEWAL["failed_at"] = through_lb.failed_at()  # wall-clock times, against haproxy's log
    assert through_lb.ok > 0
    for node, r in service.results.items():
        assert r.ok > 0 and r.failed == 0, f"Service probe on {node}: {r.as_dict()}"
    # one control plane at a time: each master's etcd and API server were started anew during the run, cp1's first,
    # and the next master's only after the previous one's API server had started again and turned Ready (the kubelet
    # reports Ready from its own probe, some seconds after /readyz answers kuberevive: up to 15 s late here)
    started_at = datetime.fromtimestamp(started, UTC).replace(microsecond=0)
    for prev, cp in itertools.pairwise(CPS):
        for c in ("etcd", "kube-apiserver"):
            before_it, it = _pod_time(on_node, f"{c}-{prev}", "started"), _pod_time(on_node, f"{c}-{cp}", "started")
            assert started_at <= before_it < it, (c, prev, cp, before_it, it)
        next_etcd = _pod_time(on_node, f"etcd-{cp}", "started")
        assert _pod_time(on_node, f"kube-apiserver-{prev}", "started") < next_etcd, (prev, cp)
        ready = _pod_time(on_node, f"kube-apiserver-{prev}", "ready")
        assert ready <= next_etcd + timedelta(seconds=15), (prev, cp, ready, next_etcd)


def test_no_api_request_through_the_load_balancer_failed_during_the_renewal() -> None:
    """Run after the test above: the API probe's failures (a ServiceAccount token listing pods every 100 ms through
    the load balancer) while ``certs renew --apply --all-nodes`` restarted the masters one at a time. Each master's
    API server is stopped gracefully before its etcd (SIGTERM: it fails /readyz at once and, with the lab's
    ``shutdown-delay-duration: 5s``, serves 5 s more while haproxy takes it out), and its successor is put back only
    after 2 passed /readyz checks: no request may fail, timeouts included."""
    if "during" not in API_DURING_RENEWAL:
        pytest.skip("the renewal test did not get as far as its API probe")
    assert API_DURING_RENEWAL["during"] == [], API_DURING_RENEWAL.get("failed_at")


# ------------------------------------------------------------------ all masters lost (issue 12)
# The seed disaster on cp1, cp2 AND cp3 at once (``/etc/kubernetes`` and the control-plane containers gone; etcd
# data and kubelets survive), a wait past the node-monitor grace period, then ONE ``kuberevive recover --apply``
# on cp1 with SSH to cp2 and cp3: one new etcd CA, every member's etcd first, quorum, then one new cluster CA,
# front-proxy CA and sa.key for all, each master's own certificates, kubeconfigs and manifests, then the worker.
# Runs after the one-master tests (it leaves a healthy cluster with new CAs; only ``lab down`` follows).

NODE_MONITOR_GRACE_SECONDS = 50  # kube-controller-manager's default (v1.33)


def _labapp(on_node: OnNode) -> dict[str, tuple[str, str, dict[str, tuple[str, int]]]]:
    """labapp's pods: node, UID and, per container, its container ID and restart count."""
    items = json.loads(on_node("cp1", "kubectl", "get", "pods", "-n", "krlab", "-l", "app=labapp", "-o", "json").stdout)
    return {
        p["metadata"]["name"]: (
            p["spec"]["nodeName"],
            p["metadata"]["uid"],
            {
                c["name"]: (c.get("containerID", ""), int(c.get("restartCount", 0)))
                for c in p["status"].get("containerStatuses", [])
            },
        )
        for p in items["items"]
    }


def _evictions(on_node: OnNode) -> set[str]:
    out = on_node(
        "cp1", "kubectl", "get", "events", "-A", "--field-selector", "reason=TaintManagerEviction", "-o", "name"
    )
    return set(out.stdout.split())


def _assert_members_healthy_and_one_trust(
    on_node: OnNode, members_before: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The same etcd members, started and voting, every endpoint healthy asked on each master; one set of trust
    material, byte-identical on the three masters. The members."""
    members = _members(on_node)
    assert sorted(members) == sorted(members_before)
    assert all(m.get("name") and not m.get("isLearner", False) for m in members.values()), members
    for cp in CPS:
        health = json.loads(on_node(cp, *ETCDCTL, "endpoint", "health", "--cluster", "-w", "json").stdout)
        assert len(health) == 3 and all(h["health"] for h in health), (cp, health)
    sums = {cp: _trust_sums(on_node, cp) for cp in CPS}
    assert sums["cp1"] == sums["cp2"] == sums["cp3"] and len(sums["cp1"]) == len(TRUST)
    return members


ALL_MASTERS_STEPS = rcore.ALL_MASTERS_IDS
"""The all-masters plan (25 steps): the chain of killed runs walks it one step per run."""
MID_STEP = ALL_MASTERS_STEPS.index("masters-control-plane") + 1
"""kill -9 also in the middle of masters-control-plane (step 14: half of cp2's files written over SSH)."""
KILLED = (-9, 137)
JOIN_COMMANDS: dict[str, str] = {}
"""The ``kubeadm join`` commands the all-masters recovery printed (``worker``, ``control_plane``)."""


def _kill_chain(on_node: OnNode, argv: list[str]) -> list[float]:
    """kill -9 of ``recover --apply`` after EVERY step of the all-masters plan, the last one too: run n resumes from
    the journal (steps 1..n-1 'done before'), does step n and is killed right after it; step 14 is first also killed
    in its middle (a remote write half done). The seconds of each run."""
    total, seconds = len(ALL_MASTERS_STEPS), []
    for n in range(1, total + 1):
        for hook in (["KUBEREVIVE_FAULT_MID_STEP"] if n == MID_STEP else []) + ["KUBEREVIVE_FAULT_AFTER_STEP"]:
            t0 = time.monotonic()
            killed = on_node("cp1", "env", f"{hook}={n}", *argv, check=False, timeout=1800)
            seconds.append(round(time.monotonic() - t0, 1))
            assert killed.returncode in KILLED, f"{hook}={n}: exit {killed.returncode}\n{killed.stderr[-3000:]}"
            journal = json.loads(on_node("cp1", "cat", "/var/lib/kuberevive/recover/journal.json").stdout)
            assert journal["status"] == "running", journal["status"]
            done = [s for s in ALL_MASTERS_STEPS if journal["steps"].get(s, {}).get("state") == "done"]
            mid = hook == "KUBEREVIVE_FAULT_MID_STEP"
            assert done == list(ALL_MASTERS_STEPS[: n - 1 if mid else n]), (hook, n, done)
            assert f"[{n}/{total}]" in killed.stderr and f"[{n}/{total}] " not in _done_before(killed.stderr), n
            if n > 1:  # resumed: the step before is not done again
                assert f"[{n - 1}/{total}]" in _done_before(killed.stderr), (hook, n, killed.stderr[-2000:])
    return seconds


def _done_before(stderr: str) -> str:
    """The progress lines of the steps a resumed run skipped (done by an earlier run)."""
    return "\n".join(line for line in stderr.splitlines() if line.endswith(": done before"))


def test_all_masters_lost_are_recovered_from_one_node_killed_at_every_step(
    ha_lab: Lab, ha_on_node: OnNode, tmp_path: Path
) -> None:
    on_node = ha_on_node
    assert KUBEADM_MANIFESTS, "test_what_kubeadm_wrote_on_each_master_is_recorded did not run first"
    _wait_all_ready(ha_lab)
    members_before = _members(on_node)
    assert sorted(m["name"] for m in members_before.values()) == list(CPS)
    labapp_before = _labapp(on_node)
    assert sorted(n for n, _uid, _c in labapp_before.values()) == sorted(NODES)
    evictions_before = _evictions(on_node)  # events live 2 h: an earlier test's count too
    ssh = ha_lab.cfg.ssh_dir
    argv = ["kuberevive", "recover", "--apply", "--json"]
    for cp in CPS[1:]:
        argv += ["--peer", f"{cp}={ha_lab.cfg.node(cp).ip}"]
    argv += ["--ssh-key", str(ssh / "id_ed25519"), "--known-hosts", str(ssh / "known_hosts")]

    with ServiceProbe(ha_lab, tmp_path / "service") as service:
        service.wait_for_answers(10)
        with ThreadPoolExecutor(len(CPS)) as pool:  # the disaster on every master at once
            for done in [pool.submit(on_node, cp, "sh", "-c", SEED_DISASTER, timeout=180) for cp in CPS]:
                done.result()
        for cp in CPS:
            assert on_node(cp, "test", "-e", "/etc/kubernetes", check=False).returncode != 0
        time.sleep(NODE_MONITOR_GRACE_SECONDS + 5)  # the scenario: the cluster stays broken past the grace period
        started = time.time()
        runs = _kill_chain(on_node, argv)  # issue 12: kill -9 at every step boundary and once mid-step, then the rerun
        run = on_node("cp1", *argv, check=False, timeout=1800)
        recovery_s = time.time() - started
        assert run.returncode == 0, run.stderr[-3000:]
        _wait_all_ready(ha_lab)
        service.wait_for_answers(20)
    result = json.loads(run.stdout)
    print(f"all masters recovered in {recovery_s:.1f} s through {len(runs)} killed runs {runs}; {result['timings']}")
    assert [s["id"] for s in result["plan"]["steps"]] == list(ALL_MASTERS_STEPS)
    assert result["applied"] == []  # every step was done by a killed run; the rerun only finishes
    assert result["join_command"].startswith(f"kubeadm join {ha_lab.cfg.api_endpoint} --token ")
    assert result["control_plane_join_command"].startswith(result["join_command"] + " --control-plane ")
    JOIN_COMMANDS.update(worker=result["join_command"], control_plane=result["control_plane_join_command"])
    members = _assert_members_healthy_and_one_trust(on_node, members_before)
    # each master's manifests as kubeadm wrote them for that node; etcd's --initial-cluster lists every member
    for cp in CPS:
        manifests, before = _manifests(on_node, cp), KUBEADM_MANIFESTS[cp]
        for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            assert manifests[c] == before[c], (cp, c)
        etcd, etcd_before = _flags(manifests["etcd"]), _flags(before["etcd"])
        assert etcd["initial-cluster-state"] == "existing"
        assert sorted(etcd["initial-cluster"].split(",")) == sorted(
            f"{m['name']}={m['peerURLs'][0]}" for m in members.values()
        )
        ignore = ("initial-cluster", "initial-cluster-state")
        assert {k: v for k, v in etcd.items() if k not in ignore} == {
            k: v for k, v in etcd_before.items() if k not in ignore
        }, cp
        rest, rest_before = json.loads(json.dumps(manifests["etcd"])), json.loads(json.dumps(before["etcd"]))
        rest["spec"]["containers"][0]["command"] = rest_before["spec"]["containers"][0]["command"] = None
        assert rest == rest_before, cp
        check = on_node(cp, "kubeadm", "certs", "check-expiration", check=False)
        assert check.returncode == 0 and "MISSING" not in check.stdout and "invalid" not in check.stdout, (
            cp,
            check.stdout,
            check.stderr,
        )
    # the workload: labapp's containers kept (IDs, restart counts), nothing evicted, no Service request failed
    assert _labapp(on_node) == labapp_before
    assert _evictions(on_node) - evictions_before == set()
    print("Service probes:", {node: (r.ok, r.failed) for node, r in service.results.items()})
    for node, r in service.results.items():
        assert r.ok > 0 and r.failed == 0, f"Service probe on {node}: {r.as_dict()}"
    # the ServiceAccount-using pod (restarted for the new sa.key) calls the API again
    _poll("apicaller to call the API again", lambda: "apicaller ok status=200" in ha_lab.apicaller_logs(tail=5), 180)


NEW_WORKER, NEW_MASTER = "worker2", "cp4"


def test_the_printed_join_commands_join_a_new_worker_and_a_new_control_plane(ha_lab: Lab, ha_on_node: OnNode) -> None:
    """After the all-masters recovery (new CAs, a new bootstrap token and certificate key): fresh machines with new
    names and addresses join with what the printed commands carry (endpoint, token, CA hash, certificate key): the
    worker Ready; the control plane's etcd a 4th started, voting, healthy member, its API server serving, its Node
    Ready. Then both leave again (machine destroyed, etcd member removed, Node deleted): the 3+1 lab."""
    on_node = ha_on_node
    assert JOIN_COMMANDS, "the all-masters test did not print its join commands"
    members_before = _members(on_node)
    try:
        ha_lab.add_worker(NEW_WORKER, JOIN_COMMANDS["worker"], timeout=300)
        assert ha_lab.node_conditions()[NEW_WORKER] == "Ready"
        ha_lab.add_node(NEW_MASTER)
        ip = ha_lab.cfg.node(NEW_MASTER).ip
        assert ip not in {ha_lab.cfg.node(n).ip for n in NODES}
        ha_lab.join_node(NEW_MASTER, JOIN_COMMANDS["control_plane"], timeout=300)
        members = _members(on_node)
        assert set(members_before) < set(members) and len(members) == 4, members
        (new,) = (m for i, m in members.items() if i not in members_before)
        assert new.get("name") == NEW_MASTER and not new.get("isLearner", False), new  # started and voting
        assert new["peerURLs"] == [f"https://{ip}:2380"], new
        health = json.loads(on_node(NEW_MASTER, *ETCDCTL, "endpoint", "health", "--cluster", "-w", "json").stdout)
        assert len(health) == 4 and all(h["health"] for h in health), health
        ready = on_node(NEW_MASTER, "kubectl", "--server", f"https://{ip}:6443", "get", "--raw", "/readyz", timeout=60)
        assert ready.stdout.strip() == "ok"
        assert ha_lab.node_conditions() == dict.fromkeys((*NODES, NEW_WORKER, NEW_MASTER), "Ready")
        assert _trust_sums(on_node, NEW_MASTER) == _trust_sums(on_node, "cp1")  # opened with the certificate key
    finally:
        _remove_added_nodes(ha_lab, on_node)
    assert sorted(_members(on_node)) == sorted(members_before)
    _wait_all_ready(ha_lab)
    assert ha_lab.cfg.node_names == list(NODES)


def _remove_added_nodes(lab: Lab, on_node: OnNode) -> None:
    """The machines the test above added leave the cluster and the lab: destroyed, cp4's etcd member removed (3 of 4
    members stay healthy meanwhile), Nodes deleted, forgotten by the lab."""
    for name in (NEW_MASTER, NEW_WORKER):
        if name not in lab.cfg.node_names:
            continue
        lab.destroy_node(name)
        for member_id, m in _members(on_node).items():
            if m.get("name") == name or m.get("peerURLs") == [f"https://{lab.cfg.node(name).ip}:2380"]:
                on_node("cp1", *ETCDCTL, "member", "remove", member_id)
        on_node("cp1", "kubectl", "delete", "node", name, "--ignore-not-found", "--wait=true", timeout=180)
        lab.forget_node(name)


def test_down_through_the_cli_leaves_nothing(ha_lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """Last: ``lab down`` without a topology finds the HA lab's nodes and load balancer and removes them all."""
    if os.environ.get("KUBEREVIVE_LAB_KEEP") == "1":
        pytest.skip("KUBEREVIVE_LAB_KEEP=1: the HA lab stays up")
    haproxy_pid = int((LoadBalancer(ha_lab.cfg).run_dir / "haproxy.pid").read_text())
    monkeypatch.setenv("KUBEREVIVE_LAB_INSTANCE", ha_lab.cfg.prefix.removeprefix("krlab") or "0")
    monkeypatch.delenv("KUBEREVIVE_LAB_CONTROL_PLANES", raising=False)
    assert main(["lab", "down"]) == 0
    assert ha_lab.leftovers() == []
    assert not os.path.exists(f"/proc/{haproxy_pid}")
