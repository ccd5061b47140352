"""``recover`` (plan only) on a temporary root: R-3 (``--config`` gives the version on a rescue host without a
kubelet) and R-8 (a FIFO at kubeadm-flags.env is one line, never a hang). Issue 18, adversarial F7, F13."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DEFAULTS = Path(__file__).resolve().parents[1] / "configs" / "defaults.yaml"


def recover(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kuberevive", "recover", "--root", str(root), *extra],
        capture_output=True,
        text=True,
        timeout=120,  # a hang fails the test
        check=False,
    )


@pytest.fixture
def lost_node(tmp_path: Path) -> Path:
    """A control-plane node after ``rm -rf /etc/kubernetes``: etcd data and the kubelet's files survive; seen
    through --root, so no kubelet binary or image tells the Kubernetes version."""
    root = tmp_path / "node"
    (root / "var/lib/etcd/member/snap").mkdir(parents=True)
    (root / "var/lib/etcd/member/snap/db").write_bytes(b"x")
    kubelet = root / "var/lib/kubelet"
    (kubelet / "pki").mkdir(parents=True)
    (kubelet / "config.yaml").write_text("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n")
    (kubelet / "kubeadm-flags.env").write_text('KUBELET_KUBEADM_ARGS="--node-ip=192.168.56.10"\n')
    (root / "etc").mkdir()
    (root / "etc/hostname").write_text("cp1\n")
    return root


def test_R_3_recover_config_gives_the_version_on_a_node_without_a_kubelet(lost_node: Path):
    without = recover(lost_node)
    assert without.returncode == 1 and "cannot tell the Kubernetes version" in without.stderr, without.stderr
    result = recover(lost_node, "--config", str(DEFAULTS))
    assert result.returncode == 0, result.stderr
    assert "recovery plan for node cp1 (192.168.56.10:6443)" in result.stdout, result.stdout


def test_R_8_a_fifo_at_kubeadm_flags_env_is_one_line_never_a_hang(lost_node: Path):
    flags = lost_node / "var/lib/kubelet/kubeadm-flags.env"
    flags.unlink()
    os.mkfifo(flags)
    result = recover(lost_node, "--config", str(DEFAULTS))
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stderr.strip().splitlines() == [
        "kuberevive: error: /var/lib/kubelet/kubeadm-flags.env is not a regular file (a FIFO). "
        "Move it away and run again."
    ]


def _surviving_apiserver_manifest(root: Path, version: str) -> None:
    manifests = root / "etc/kubernetes/manifests"
    manifests.mkdir(parents=True)
    (manifests / "kube-apiserver.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: kube-apiserver, namespace: kube-system}\n"
        f"spec:\n  containers:\n  - name: kube-apiserver\n    image: registry.k8s.io/kube-apiserver:{version}\n"
    )


def test_the_version_is_read_from_a_surviving_manifest_and_the_plan_is_that_minors(lost_node: Path):
    """Issue 13: no kubelet binary (seen through --root), but kube-apiserver.yaml survived: the plan is v1.37's
    kubeadm's (etcd image 3.7.0-0) and says where the version came from."""
    import json

    _surviving_apiserver_manifest(lost_node, "v1.37.2")
    result = recover(lost_node, "--json")
    assert result.returncode == 0, result.stderr
    identity = json.loads(result.stdout)["plan"]["identity"]
    assert identity["kubernetes_version"] == "v1.37.2"
    assert identity["etcd_image"] == "registry.k8s.io/etcd:3.7.0-0"
    assert "/etc/kubernetes/manifests/kube-apiserver.yaml" in identity["sources"]["Kubernetes version"]


@pytest.mark.parametrize("version", ["v1.29.15", "v1.38.0"])
def test_a_surviving_version_outside_the_range_is_one_line_and_nothing_is_written(lost_node: Path, version: str):
    _surviving_apiserver_manifest(lost_node, version)
    before = sorted((p, p.stat().st_mtime_ns) for p in lost_node.rglob("*"))
    result = recover(lost_node, "--apply")
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and f"{version} is outside" in result.stderr, result.stderr
    assert "(v1.30 to v1.37)" in result.stderr
    assert sorted((p, p.stat().st_mtime_ns) for p in lost_node.rglob("*")) == before
