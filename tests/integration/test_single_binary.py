"""The single executable (issue 15): it runs with no Python on PATH and does the work of the installed package.

Every command runs under ``env -i`` with a PATH that holds no Python (an empty directory), as on a bare node.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.single_binary import single_binary

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def binary() -> Path:
    return single_binary()


def run(binary: Path, tmp: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    bare = tmp / "bare-bin"
    bare.mkdir(exist_ok=True)
    full = {"PATH": str(bare), "HOME": str(tmp), "LANG": "C.UTF-8"} | (env or {})
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=300, check=False, env=full)


def test_no_python_on_the_path_the_binary_gets(tmp_path: Path):
    r = run(Path("/usr/bin/env"), tmp_path)  # env with no arguments prints the environment it was given
    path = dict(line.split("=", 1) for line in r.stdout.splitlines())["PATH"]
    assert [shutil.which(p, path=path) for p in ("python3", "python", "python3.11")] == [None, None, None]


def test_version_and_help(binary: Path, tmp_path: Path):
    assert run(binary, tmp_path, "--version").stdout.strip() == "kuberevive 0.1.0"
    helptext = run(binary, tmp_path, "--help").stdout
    for command in ("generate", "diagnose", "recover", "backup"):
        assert command in helptext


def test_generate_diagnose_backup_without_python(binary: Path, tmp_path: Path):
    root = tmp_path / "node"
    root.mkdir()
    r = run(binary, tmp_path, "generate", "all", "--config", str(CONFIGS / "defaults.yaml"), "--root", str(root))
    assert r.returncode == 0, r.stderr
    ca_key = root / "etc/kubernetes/pki/ca.key"
    assert stat.S_IMODE(ca_key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in ca_key.read_bytes()
    assert sorted(p.name for p in (root / "etc/kubernetes/manifests").iterdir()) == [
        "etcd.yaml",
        "kube-apiserver.yaml",
        "kube-controller-manager.yaml",
        "kube-scheduler.yaml",
    ]

    # diagnose: the same report and exit code as the installed package gives on the same root
    d = run(binary, tmp_path, "diagnose", "--root", str(root), "--offline", "--json")
    installed = subprocess.run(
        [sys.executable, "-m", "kuberevive", "diagnose", "--root", str(root), "--offline", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert d.returncode == installed.returncode and d.returncode != 70, d.stderr
    assert _comparable(json.loads(d.stdout)) == _comparable(json.loads(installed.stdout))
    assert json.loads(d.stdout)["findings"]

    kubelet = root / "var/lib/kubelet"
    kubelet.mkdir(parents=True)
    (kubelet / "config.yaml").write_text("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n")
    (kubelet / "kubeadm-flags.env").write_text('KUBELET_KUBEADM_ARGS="--node-ip=192.0.2.10"\n')
    secret = {"KUBEREVIVE_PASSPHRASE": "single binary passphrase"}
    out = tmp_path / "backups"
    c = run(binary, tmp_path, "backup", "create", "--root", str(root), "--out", f"{out}/", "--json", env=secret)
    assert c.returncode == 0, c.stderr
    (made,) = out.iterdir()
    assert made.name.startswith("kuberevive-backup-") and made.read_bytes().startswith(b"age-encryption.org/v1")
    v = run(binary, tmp_path, "backup", "verify", str(made), env=secret)
    assert v.returncode == 0, v.stderr
    wrong = run(binary, tmp_path, "backup", "verify", str(made), env={"KUBEREVIVE_PASSPHRASE": "wrong"})
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    """The report without what differs from run to run (times, durations)."""
    return {k: v for k, v in report.items() if not any(w in k for w in ("time", "generated", "took", "duration"))}


def test_the_binary_is_one_self_contained_file(binary: Path):
    assert binary.stat().st_size > 5_000_000 and os.access(binary, os.X_OK)
    # no interpreter named in the ELF header: it is not a script, and it links only the C library's loader
    assert binary.read_bytes()[:4] == b"\x7fELF"
