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
