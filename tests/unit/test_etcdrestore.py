"""restore-etcd's control flow on a live node (io/etcdrestore.py), the kubelet, crictl, etcdutl and etcd faked: the
API server is stopped before etcd and started after it, and every manifest is back whatever happens. The real
restore runs against real etcd binaries in tests/integration (test_backup_cli.py, test_etcd_safety.py) and on the
lab (tests/lab/test_backup_lab.py::test_restore_etcd_after_data_dir_lost)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kuberevive.core import etcdsafety
from kuberevive.errors import EtcdError
from kuberevive.io import etcdprobe, etcdrestore
from kuberevive.io.host import LocalHost
from kuberevive.io.noderoot import NodeRoot

ETCD = b"""apiVersion: v1
kind: Pod
metadata: {name: etcd, namespace: kube-system}
spec:
  containers:
  - name: etcd
    command: [etcd, --name=cp1, --data-dir=/var/lib/etcd, --initial-advertise-peer-urls=https://10.0.0.1:2380,
              --initial-cluster=cp1=https://10.0.0.1:2380, --listen-client-urls=https://10.0.0.1:2379]
"""
APISERVER = b"apiVersion: v1\nkind: Pod\nmetadata: {name: kube-apiserver, namespace: kube-system}\n"
MANIFESTS = "etc/kubernetes/manifests"
NAMES = {"etcd": "etcd.yaml", "kube-apiserver": "kube-apiserver.yaml"}


class Node:
    """A kubelet that runs a static pod exactly while its manifest is in the manifests directory; etcd is healthy
    once it runs (unless told otherwise). Records what ran when etcdutl restored."""

    def __init__(self, root: Path, *, etcd_gets_healthy: bool = True) -> None:
        self.root = root
        self.etcd_gets_healthy = etcd_gets_healthy
        self.backed_off = False  # etcd crash-looped: the kubelet starts it again only once it is restarted
        self.back_off_after_stop = False  # it still ran when the restore began
        self.kubelet_restarts = 0
        self.sandbox_asked: list[str] = []
        self.sandbox_lingers = 0
        self.recreate_data_dir = False
        self.at_restore: list[str] = []
        self.events: list[str] = []
        self.stops: list[tuple[str, int]] = []

    def stop_containers(self, name: str, cri_socket: str | None = None, grace: int = 30) -> int:
        if name == "etcd":
            self.back_off_after_stop = False
        assert not (self.root / MANIFESTS / NAMES[name]).exists()  # only once the kubelet will not start it again
        self.stops.append((name, grace))
        return 1

    def running(self, _crictl: str, name: str) -> list[str]:
        if name == "etcd" and self.backed_off and not self.back_off_after_stop:
            return []
        return [f"id-{name}"] if (self.root / MANIFESTS / NAMES[name]).exists() else []

    def sandboxes(self, _crictl: str, name: str) -> list[str]:
        self.sandbox_asked.append(name)
        if name == "etcd" and self.sandbox_lingers > 0:  # the kubelet lets a crash-looping etcd go a moment later
            self.sandbox_lingers -= 1
            if self.sandbox_lingers == 0 and self.recreate_data_dir:
                (self.root / "var/lib/etcd/member").mkdir(parents=True, exist_ok=True)
            return ["sandbox-etcd"]
        return []

    def restart_unit(self, unit: str) -> None:
        assert unit == "kubelet" and not (self.root / MANIFESTS / NAMES["kube-apiserver"]).exists()
        self.kubelet_restarts += 1
        self.backed_off = False

    def restore(self, _etcdutl: str, _member: Any, _fd: int, target: Path, _skip: bool) -> None:
        self.at_restore = [name for name in NAMES if self.running("", name)]
        (target / "member/snap").mkdir(parents=True)
        self.events.append("restored")

    def healthy(self, _root: NodeRoot, _member: Any) -> bool:
        api_back = (self.root / MANIFESTS / NAMES["kube-apiserver"]).exists()
        self.events.append(f"etcd probed, API server {'running' if api_back else 'stopped'}")
        return self.etcd_gets_healthy and bool(self.running("", "etcd"))


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Node:
    root = tmp_path / "node"
    (root / MANIFESTS).mkdir(parents=True)
    (root / MANIFESTS / "etcd.yaml").write_bytes(ETCD)
    (root / MANIFESTS / "kube-apiserver.yaml").write_bytes(APISERVER)
    (root / "var/lib/etcd/member").mkdir(parents=True)
    n = Node(root)
    monkeypatch.setattr(etcdrestore, "find_tool", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(etcdrestore, "_running", n.running)
    monkeypatch.setattr(etcdrestore, "_ready_sandboxes", n.sandboxes)
    monkeypatch.setattr(etcdrestore, "_etcdutl_restore", n.restore)
    monkeypatch.setattr(etcdrestore, "_healthy", n.healthy)
    monkeypatch.setattr(LocalHost, "stop_containers", n.stop_containers)
    monkeypatch.setattr(LocalHost, "restart_unit", n.restart_unit)
    monkeypatch.setattr(etcdprobe, "facts", lambda *_a, **_k: etcdsafety.Facts())
    return n


def _snapshot(tmp_path: Path) -> Path:
    snap = tmp_path / "snap.db"
    snap.write_bytes(b"\0" * 4096 + b"h" * 32)
    return snap


def test_the_api_server_is_stopped_before_etcd_and_started_once_etcd_is_healthy(node: Node, tmp_path: Path) -> None:
    progress: list[str] = []
    result = etcdrestore.restore_etcd(NodeRoot(node.root), _snapshot(tmp_path), progress=progress.append)
    assert node.at_restore == []  # neither etcd nor the API server ran while the data directory was replaced
    assert node.events[0] == "restored" and node.events[-1] == "etcd probed, API server stopped"
    assert (node.root / MANIFESTS / "etcd.yaml").read_bytes() == ETCD
    assert (node.root / MANIFESTS / "kube-apiserver.yaml").read_bytes() == APISERVER
    moved = [s for s in result.steps if s.startswith("moved")]
    assert moved[0].startswith("moved /etc/kubernetes/manifests/kube-apiserver.yaml to /etc/kubernetes/tmp/")
    assert moved[1].startswith("moved /etc/kubernetes/manifests/etcd.yaml to /etc/kubernetes/tmp/")
    assert moved[2:] == ["moved /etc/kubernetes/manifests/etcd.yaml back",
                         "moved /etc/kubernetes/manifests/kube-apiserver.yaml back"]  # fmt: skip
    assert result.healthy and [p.split(" (")[0] for p in progress[:2]] == ["stopping kube-apiserver", "stopping etcd"]
    assert result.steps[1] == "kube-apiserver container stopped"  # before etcd's manifest was moved
    # the API server's drain grace (no --shutdown-delay-duration: 5 s), not the 30 s the kubelet gives its watches
    assert node.stops == [("kube-apiserver", 5), ("etcd", 30)]
    assert list((node.root / "etc/kubernetes/tmp").iterdir()) == []
    assert node.kubelet_restarts == 0  # etcd started: no kubelet restart


def test_an_etcd_in_the_kubelets_back_off_is_started_by_one_kubelet_restart_with_the_api_server_stopped(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(etcdrestore, "KUBELET_KICK_AFTER", 0.0)
    node.backed_off = True
    node.back_off_after_stop = True  # it ran when the restore began, and is in the back-off once put back
    result = etcdrestore.restore_etcd(NodeRoot(node.root), _snapshot(tmp_path))
    assert result.healthy and node.kubelet_restarts == 1
    assert "restarted the kubelet (no etcd container runs 0 s after its manifest is back)" in result.steps
    assert (node.root / MANIFESTS / "kube-apiserver.yaml").read_bytes() == APISERVER


def test_an_etcd_that_crash_looped_before_the_restore_gets_a_kubelet_restart_at_once(
    node: Node, tmp_path: Path
) -> None:
    node.backed_off = True  # no etcd container ran when the restore began
    result = etcdrestore.restore_etcd(NodeRoot(node.root), _snapshot(tmp_path))  # KUBELET_KICK_AFTER is 10 s
    assert result.healthy and node.kubelet_restarts == 1
    assert "restarted the kubelet (etcd was not running before the restore)" in result.steps
    assert result.seconds < etcdrestore.KUBELET_KICK_AFTER


def test_an_etcd_that_never_gets_healthy_leaves_both_manifests_in_place(node: Node, tmp_path: Path) -> None:
    node.etcd_gets_healthy = False
    with pytest.raises(EtcdError, match=r"etcd was restored but is not healthy after 0 s \(old data kept as "):
        etcdrestore.restore_etcd(NodeRoot(node.root), _snapshot(tmp_path), health_timeout=0.0)
    assert node.kubelet_restarts == 0  # its container runs: not a back-off
    assert (node.root / MANIFESTS / "etcd.yaml").read_bytes() == ETCD
    assert (node.root / MANIFESTS / "kube-apiserver.yaml").read_bytes() == APISERVER


def test_a_failed_restore_puts_both_manifests_and_the_data_back(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_a: Any) -> None:
        raise EtcdError("etcdutl snapshot restore failed: corrupt", "check the snapshot")

    monkeypatch.setattr(etcdrestore, "_etcdutl_restore", broken)
    with pytest.raises(EtcdError, match="corrupt"):
        etcdrestore.restore_etcd(NodeRoot(node.root), _snapshot(tmp_path))
    assert (node.root / MANIFESTS / "etcd.yaml").read_bytes() == ETCD
    assert (node.root / MANIFESTS / "kube-apiserver.yaml").read_bytes() == APISERVER
    assert sorted(p.name for p in (node.root / "var/lib").iterdir()) == ["etcd"]
    assert (node.root / "var/lib/etcd/member").is_dir()


def test_without_an_api_server_manifest_only_etcd_is_stopped(node: Node, tmp_path: Path) -> None:
    (node.root / MANIFESTS / "kube-apiserver.yaml").unlink()
    result = etcdrestore.restore_etcd(NodeRoot(node.root), _snapshot(tmp_path))
    assert result.healthy and not (node.root / MANIFESTS / "kube-apiserver.yaml").exists()
    assert not any("kube-apiserver" in s for s in result.steps)


def test_a_crash_looping_etcd_is_restored_only_once_the_kubelet_let_its_pod_go_and_a_late_data_dir_is_kept(
    node: Node, tmp_path: Path
) -> None:
    node.backed_off = True  # no etcd container runs: the sandbox says when the kubelet has let the Pod go
    node.sandbox_lingers = 2
    node.recreate_data_dir = False
    (node.root / "var/lib/etcd").rename(node.root / "gone")  # the data directory was lost
    result = etcdrestore.restore_etcd(NodeRoot(node.root), _snapshot(tmp_path))
    assert node.sandbox_asked.count("etcd") == 3 and node.sandbox_lingers == 0
    assert result.healthy and result.old_data_dir is None


def test_a_data_directory_made_again_during_the_restore_is_kept_aside(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (node.root / "var/lib/etcd").rename(node.root / "gone")
    restore = node.restore

    def restore_while_the_kubelet_makes_the_directory(*a: Any) -> None:
        restore(*a)
        (node.root / "var/lib/etcd/member").mkdir(parents=True)  # DirectoryOrCreate, at the worst moment

    monkeypatch.setattr(etcdrestore, "_etcdutl_restore", restore_while_the_kubelet_makes_the_directory)
    result = etcdrestore.restore_etcd(NodeRoot(node.root), _snapshot(tmp_path))
    assert result.healthy and (node.root / "var/lib/etcd/member/snap").is_dir()  # the restored data is in place
    [late] = [p for p in (node.root / "var/lib").iterdir() if p.name.endswith("-late")]
    assert (late / "member").is_dir() and any("made during the restore" in s for s in result.steps)
