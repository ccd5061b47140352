"""LocalHost: the node the tool runs on, over NodeRoot; ``live`` decides whether units and containers are touched."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path, PurePosixPath

import pytest

from kuberevive.cli.env import is_live_root
from kuberevive.errors import PlanError, TransportError
from kuberevive.io.host import Container, Host, LocalHost
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.paths import BACKUP_DIR

CRICTL_PS = {
    "containers": [
        {
            "id": "c1",
            "metadata": {"name": "etcd", "attempt": 0},
            "state": "CONTAINER_RUNNING",
            "createdAt": "1764806400000000000",
            "labels": {"io.kubernetes.pod.name": "etcd-cp1", "io.kubernetes.pod.namespace": "kube-system"},
        },
        {"id": "c2", "metadata": {"name": "etcd-sidecar"}, "state": "CONTAINER_RUNNING", "createdAt": "1"},
    ]
}


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``systemctl`` and ``crictl`` on PATH that record their arguments (one line per call) in ``calls``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (tmp_path / "ps.json").write_text(json.dumps(CRICTL_PS))
    for tool, body in (
        ("systemctl", 'case "$1" in is-active) echo active;; esac'),
        ("crictl", f'case "$*" in *" ps "*|ps*) cat {tmp_path}/ps.json;; esac'),
    ):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n{body}\n')
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return calls


def _node(tmp_path: Path) -> NodeRoot:
    (tmp_path / "node").mkdir(exist_ok=True)
    return NodeRoot(tmp_path / "node")


def test_a_host_that_is_not_live_runs_no_unit_or_container_command(tmp_path: Path, fake_tools: Path) -> None:
    host: Host = LocalHost(_node(tmp_path), live=False)
    assert not host.live
    local = LocalHost(_node(tmp_path), live=False)
    assert local.containers() == [] and local.stop_containers("etcd") == 0 and not local.unit_active("kubelet")
    assert local.addresses() == () and local.images() == () and local.kubelet_version() is None
    with pytest.raises(PlanError, match="cannot be restarted"):
        local.restart_unit("kubelet")
    assert not fake_tools.exists()  # nothing ran


def test_a_live_host_lists_stops_and_restarts_through_crictl_and_systemctl(tmp_path: Path, fake_tools: Path) -> None:
    host = LocalHost(_node(tmp_path), live=True)
    etcd = Container("c1", "etcd", "CONTAINER_RUNNING", 1764806400.0, "etcd-cp1", "kube-system")
    assert host.containers("etcd", "unix:///run/containerd/containerd.sock") == [etcd]
    assert host.container_created_at("etcd") == 1764806400.0
    assert host.stop_containers("etcd") == 1
    assert host.unit_active("kubelet")
    host.restart_unit("kubelet")
    lines = fake_tools.read_text().splitlines()
    assert "crictl --runtime-endpoint unix:///run/containerd/containerd.sock ps -o json --name ^etcd$" in lines
    # graceful: SIGTERM and the pod's grace period before SIGKILL (crictl's default --timeout 0 is SIGKILL at once)
    assert "crictl stop --timeout 30 c1" in lines and not any(line.endswith(" c2") for line in lines)
    assert lines[-2:] == ["systemctl is-active kubelet", "systemctl restart kubelet"]


def test_write_moves_the_old_file_aside_and_keeps_the_final_mode(tmp_path: Path) -> None:
    root = _node(tmp_path)
    host = LocalHost(root, live=False)
    path = PurePosixPath("/etc/kubernetes/pki/ca.key")
    assert host.write(path, b"one", 0o600) is None
    assert host.write(path, b"one", 0o600) is None  # same content: nothing moved
    aside = host.write(path, b"two", 0o600)
    assert aside is not None and aside.is_relative_to(BACKUP_DIR)
    assert root.read(aside) == b"one" and host.read(path) == b"two"
    assert stat.S_IMODE(root.host_path(path).stat().st_mode) == 0o600
    link = PurePosixPath("/var/lib/kubelet/pki/kubelet-client-current.pem")
    host.replace_symlink(link, "/var/lib/kubelet/pki/a.pem")
    host.replace_symlink(link, "/var/lib/kubelet/pki/b.pem")
    assert host.readlink(link) == "/var/lib/kubelet/pki/b.pem"
    moved = host.move_aside(link)
    assert moved is not None and root.readlink(moved) == "/var/lib/kubelet/pki/b.pem" and not host.exists(link)


def test_live_is_decided_from_the_root_argument_once(tmp_path: Path) -> None:
    assert is_live_root("/") and is_live_root("/.") and not is_live_root(str(tmp_path))


def test_run_returns_the_exit_status_and_names_a_missing_program(tmp_path: Path) -> None:
    host = LocalHost(_node(tmp_path), live=False, name="cp1")
    result = host.run(["sh", "-c", "cat; echo err >&2; exit 3"], input=b"in")
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"in", b"err\n")
    with pytest.raises(TransportError, match="cp1: cannot run no-such-program-kr"):
        host.run(["no-such-program-kr"])
