"""The HA lab: cp1..cp3 made by real ``kubeadm init --upload-certs`` / ``kubeadm join --control-plane``, stacked
etcd (three members), Debian's haproxy as ``controlPlaneEndpoint`` with TCP health checks, and worker1.

One bring-up for the module (the ``ha_lab`` fixture, on its own instance: tests/conftest.py). The tests run in
the order written; the last one takes the lab down through the CLI and checks that nothing is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable

import pytest
import yaml

from kuberevive.cli.app import main
from kuberevive.lab import Lab
from kuberevive.lab.loadbalancer import LoadBalancer

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
    assert (
        f"kuberevive: error: the lab in {ha_lab.cfg.state_dir} is up with 3 control planes and 1 worker, "
        "not 1 control plane and 1 worker" in err
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
