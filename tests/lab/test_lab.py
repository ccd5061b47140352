"""The lab itself: a real kubeadm cluster with both nodes Ready, the control plane, the workload."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from kuberevive.cli.app import main
from kuberevive.lab import Lab
from tests.documents import validate
from tests.lab.conftest import wait_ready_since

pytestmark = pytest.mark.lab

OnNode = Callable[..., "subprocess.CompletedProcess[str]"]


def test_both_nodes_ready(lab: Lab) -> None:
    assert lab.node_conditions() == {"cp1": "Ready", "worker1": "Ready"}


def test_control_plane_pods_running(lab: Lab) -> None:
    pods = lab.system_pods()
    for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert pods.get(f"{component}-cp1") == "Running", pods
    proxies = [state for name, state in pods.items() if name.startswith("kube-proxy-")]
    assert proxies == ["Running", "Running"], pods


@pytest.mark.parametrize("node", ["cp1", "worker1"])
def test_service_answers_from_each_node(on_node: OnNode, lab: Lab, node: str) -> None:
    ip = lab.service_ip()
    assert ip.startswith("10.")
    answers = {on_node(node, "curl", "-sS", "-m", "3", f"http://{ip}/").stdout.strip() for _ in range(6)}
    assert all(a.startswith("labapp pod=labapp-") for a in answers), answers


def test_one_labapp_replica_per_node(on_node: OnNode) -> None:
    out = on_node("cp1", "kubectl", "get", "pods", "-n", "krlab", "-l", "app=labapp", "-o", "json").stdout
    nodes = sorted(p["spec"]["nodeName"] for p in json.loads(out)["items"])
    assert nodes == ["cp1", "worker1"]


def test_apicaller_uses_its_token(lab: Lab) -> None:
    assert "apicaller ok status=200" in lab.apicaller_logs(tail=20)


def test_readyz_with_admin_conf(on_node: OnNode) -> None:
    out = on_node("cp1", "kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "get", "--raw", "/readyz")
    assert out.stdout.strip() == "ok"


def test_kubeadm_certs_check_expiration(on_node: OnNode) -> None:
    out = on_node("cp1", "kubeadm", "certs", "check-expiration").stdout
    assert "apiserver-etcd-client" in out and "CERTIFICATE AUTHORITY" in out


def test_kubeadm_config_kept_with_lab_non_defaults(lab: Lab) -> None:
    docs = list(yaml.safe_load_all(lab.cfg.init_config_file.read_text()))
    cluster = next(d for d in docs if d["kind"] == "ClusterConfiguration")
    assert cluster["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert cluster["kubernetesVersion"] == f"v{lab.cfg.k8s_version}"
    assert cluster["networking"]["podSubnet"] == "10.123.0.0/16"
    assert {"name": "event-ttl", "value": "2h0m0s"} in cluster["apiServer"]["extraArgs"]
    assert "kuberevive-lab.invalid" in cluster["apiServer"]["certSANs"]


def test_each_node_has_its_own_etc_kubernetes(on_node: OnNode) -> None:
    assert on_node("cp1", "test", "-f", "/etc/kubernetes/admin.conf", check=False).returncode == 0
    assert on_node("worker1", "test", "-e", "/etc/kubernetes/admin.conf", check=False).returncode != 0
    assert on_node("worker1", "test", "-f", "/etc/kubernetes/kubelet.conf", check=False).returncode == 0
    assert on_node("worker1", "hostname").stdout.strip() == "worker1"


def test_host_etc_kubernetes_untouched(lab: Lab, on_node: OnNode) -> None:
    """A file written to /etc/kubernetes inside cp1 lands in cp1's own layer, never in this machine's."""
    marker = f"kr-isolation-{uuid.uuid4().hex}"
    cp1_upper = lab.cfg.node_dir("cp1") / "upper" / "etc" / "kubernetes"
    assert (cp1_upper / "admin.conf").is_file()
    on_node("cp1", "sh", "-c", f"echo {marker} > /etc/kubernetes/{marker}")
    try:
        assert (cp1_upper / marker).read_text().strip() == marker
        assert not Path("/etc/kubernetes", marker).exists()
        assert on_node("worker1", "test", "-e", f"/etc/kubernetes/{marker}", check=False).returncode != 0
    finally:
        on_node("cp1", "rm", "-f", f"/etc/kubernetes/{marker}")


def test_ssh_reaches_each_node(lab: Lab) -> None:
    for node in ("cp1", "worker1"):
        argv = ["ssh", "-F", str(lab.cfg.ssh_dir / "config"), node, "hostname; systemctl is-active kubelet"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout.split()
        assert out == [node, "active"]


def test_kubelet_restart_keeps_containers(on_node: OnNode) -> None:
    before = set(on_node("cp1", "crictl", "ps", "-q").stdout.split())
    since = datetime.now(UTC).replace(microsecond=0)
    on_node("cp1", "systemctl", "restart", "kubelet")
    assert on_node("cp1", "systemctl", "is-active", "kubelet").stdout.strip() == "active"
    wait_ready_since(on_node, "cp1", since)  # the restarted kubelet has synced its pods; only then compare
    after = set(on_node("cp1", "crictl", "ps", "-q").stdout.split())
    assert before and before == after


def test_kubelet_flags_come_from_kubeadm_flags_env(lab: Lab) -> None:
    pid = int((lab.cfg.node_run_dir("cp1") / "kubelet.pid").read_text())
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"--config=/var/lib/kubelet/config.yaml" in argv
    assert b"--kubeconfig=/etc/kubernetes/kubelet.conf" in argv
    assert f"--cgroup-root={lab.cfg.cgroup_root('cp1')}".encode() in argv


def test_cli_exec_passes_exit_code(lab: Lab) -> None:
    assert main(["lab", "exec", "cp1", "--", "sh", "-c", "exit 7"]) == 7


def test_cli_status_json(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "status", "--json"]) == 0
    data = validate(json.loads(capsys.readouterr().out))  # its JSON Schema (docs/json.md)
    net = lab.cfg.network.rsplit(".", 1)[0]  # 172.30.<instance>
    assert [(n["name"], n["address"], n["state"]) for n in data["nodes"]] == [
        ("cp1", f"{net}.11", "up"),
        ("worker1", f"{net}.12", "up"),
    ]


def test_up_again_is_a_no_op(lab: Lab) -> None:
    before = lab.read_state()["up_at"]
    lab.up()
    assert lab.read_state()["up_at"] == before


def test_down_leaves_nothing_then_up_again(lab: Lab, on_node: OnNode) -> None:
    """Last in this module (pytest runs a module's tests in the order they are written): down, check for
    leftovers, bring the lab back up for later tests.

    A container made behind the kubelet's back (own namespaces, cgroup outside the node root) must go too.
    """
    stray = f"{lab.cfg.prefix}-stray"
    on_node("worker1", "ctr", "-n", "k8s.io", "run", "-d", lab.cfg.pause_image, stray)
    stray_cgroup = Path("/sys/fs/cgroup/pids/k8s.io") / stray
    assert stray_cgroup.is_dir()
    lab.down()
    assert lab.leftovers() == []
    assert not stray_cgroup.exists() and not stray_cgroup.parent.exists()
    lab.down()  # a second down with nothing up is safe
    lab.up()
    assert all(s.state == "up" for s in lab.status())
