"""Shared fixtures for integration tests: where the real programs are, and PKI trees made by kuberevive and kubeadm.

Binaries: ``KUBEREVIVE_BIN_DIR`` or the lab build cache (src/kuberevive/lab/data/build-binaries.sh). When a program
is missing the test is skipped on a workstation and fails under CI (env ``CI`` set), so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kuberevive.core import kubeconfig, pki
from kuberevive.model.config import KubeadmConfig, NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config

DEFAULT_BIN_DIR = Path("/var/cache/kuberevive/k8s-v1.33.13-etcd-v3.5.24/bin")
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIG_NAMES = ("defaults.yaml", "ecdsa-validity.yaml", "endpoint-sans.yaml")


def _missing(what: str) -> None:
    """Skip locally, fail under CI: a missing program must not turn CI green."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="session")
def k8s_bin_dir() -> Path:
    """Directory with the Kubernetes v1.33 binaries (kubeadm, kubectl, ...)."""
    path = Path(os.environ.get("KUBEREVIVE_BIN_DIR") or DEFAULT_BIN_DIR)
    if not (path / "kubectl").is_file() or not (path / "kubeadm").is_file():
        _missing(
            f"Kubernetes binaries not found in {path}: build them with src/kuberevive/lab/data/build-binaries.sh "
            "or point KUBEREVIVE_BIN_DIR at a directory holding kubeadm and kubectl v1.33"
        )
    return path


@pytest.fixture(scope="session")
def openssl() -> str:
    """Path of the openssl program."""
    path = shutil.which("openssl")
    if path is None:
        _missing("openssl is not installed")
    assert path is not None
    return path


def _run(*args: str | Path, stdin: bytes | None = None) -> str:
    """Run a program and return stdout; a non-zero exit fails the test with stderr shown."""
    proc = subprocess.run([str(a) for a in args], input=stdin, capture_output=True, timeout=60, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode()


@pytest.fixture(scope="session")
def run() -> Callable[..., str]:
    """``run(program, *args, stdin=b"")`` -> stdout; a non-zero exit fails the test and shows stderr."""
    return _run


@dataclass(frozen=True)
class Tree:
    """One set of PKI files and kubeconfigs on disk, with the config and time that produced them."""

    cfg: KubeadmConfig
    now: datetime
    pki: Path
    kubeconfigs: Path


def load_config(name: str) -> KubeadmConfig:
    return load_kubeadm_config((CONFIGS_DIR / name).read_text(), NodeFacts(hostname="ignored"))


@pytest.fixture(scope="session")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Tree]:
    """kuberevive's certs + kubeconfigs for a reference config, written as the io layer would (path, mode)."""
    cache: dict[str, Tree] = {}

    def make(name: str) -> Tree:
        if name not in cache:
            cfg = load_config(name)
            now = datetime.now(UTC).replace(microsecond=0)
            bundle = pki.build_certificates(cfg, now, {})
            assert bundle.ca_key_pem is not None
            arts = bundle.artifacts + kubeconfig.build_kubeconfigs(cfg, bundle.ca_cert_pem, bundle.ca_key_pem, now)
            root = tmp_path_factory.mktemp(f"ours-{name.removesuffix('.yaml')}")
            for a in arts:
                target = root / str(a.path).lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(a.content)
                target.chmod(a.mode)
            cache[name] = Tree(cfg, now, root / cfg.cluster.certificates_dir.lstrip("/"), root / "etc/kubernetes")
        return cache[name]

    return make


@pytest.fixture(scope="session")
def kubeadm_made(tmp_path_factory: pytest.TempPathFactory, k8s_bin_dir: Path) -> Callable[[str], Tree]:
    """The same files made by the real ``kubeadm init phase certs all`` / ``kubeconfig all`` (v1.33)."""
    cache: dict[str, Tree] = {}

    def make(name: str) -> Tree:
        if name not in cache:
            root = tmp_path_factory.mktemp(f"kubeadm-{name.removesuffix('.yaml')}")
            pki_dir, kc_dir = root / "pki", root / "kubeconfigs"
            text = (CONFIGS_DIR / name).read_text()
            # certificatesDir only exists in the ClusterConfiguration; add or replace it there.
            docs = []
            for doc in text.split("\n---\n"):
                if "kind: ClusterConfiguration" in doc:
                    doc = "\n".join(line for line in doc.splitlines() if not line.startswith("certificatesDir:"))
                    doc += f"\ncertificatesDir: {pki_dir}\n"
                docs.append(doc)
            cfg_file = root / "kubeadm.yaml"
            cfg_file.write_text("\n---\n".join(docs))
            now = datetime.now(UTC).replace(microsecond=0)
            kubeadm = k8s_bin_dir / "kubeadm"
            _run(kubeadm, "init", "phase", "certs", "all", "--config", cfg_file)
            _run(kubeadm, "init", "phase", "kubeconfig", "all", "--config", cfg_file, "--kubeconfig-dir", kc_dir)
            cache[name] = Tree(load_config(name), now, pki_dir, kc_dir)
        return cache[name]

    return make
