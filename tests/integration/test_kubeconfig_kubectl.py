"""The generated kubeconfigs read by the real kubectl v1.33, their client certs checked by openssl.

Expected names and URLs are written from spec §3 (with the v1.33 kubelet.conf correction: local endpoint).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

Tree = Any  # tests/integration/conftest.py Tree: cfg, now, pki, kubeconfigs
Run = Callable[..., str]
CONFIG_NAMES = ("defaults.yaml", "ecdsa-validity.yaml", "endpoint-sans.yaml")
FILES = ("admin.conf", "super-admin.conf", "kubelet.conf", "controller-manager.conf", "scheduler.conf")

# config -> (cluster name, node name, CPE URL, local URL)
URLS = {
    "defaults.yaml": ("kubernetes", "cp1", "https://192.168.56.10:6443", "https://192.168.56.10:6443"),
    "ecdsa-validity.yaml": ("kubernetes", "cp-ecdsa", "https://172.16.5.5:6443", "https://172.16.5.5:6443"),
    "endpoint-sans.yaml": ("prod-eu", "master-a", "https://api.prod.example.com:8443", "https://10.20.30.40:6443"),
}


def expected(config: str, file: str) -> tuple[str, str, str]:
    """(user, subject as openssl prints it, server URL) for one kubeconfig."""
    _cluster, node, cpe, local = URLS[config]
    return {
        "admin.conf": ("kubernetes-admin", "O = kubeadm:cluster-admins, CN = kubernetes-admin", cpe),
        "super-admin.conf": ("kubernetes-super-admin", "O = system:masters, CN = kubernetes-super-admin", cpe),
        "kubelet.conf": (f"system:node:{node}", f"O = system:nodes, CN = system:node:{node}", local),
        "controller-manager.conf": (
            "system:kube-controller-manager",
            "CN = system:kube-controller-manager",
            local,
        ),
        "scheduler.conf": ("system:kube-scheduler", "CN = system:kube-scheduler", local),
    }[file]


@pytest.fixture(scope="session")
def kubectl(k8s_bin_dir: Path) -> Path:
    return k8s_bin_dir / "kubectl"


@pytest.mark.parametrize("file", FILES)
@pytest.mark.parametrize("config", CONFIG_NAMES)
def test_kubectl_reads_every_kubeconfig(
    run: Run, kubectl: Path, ours: Callable[[str], Tree], config: str, file: str
) -> None:
    path = ours(config).kubeconfigs / file
    cluster, _node, _cpe, _local = URLS[config]
    user, _subject, server = expected(config, file)
    view = json.loads(run(kubectl, "--kubeconfig", path, "config", "view", "-o", "json"))
    assert view == {
        "kind": "Config",
        "apiVersion": "v1",
        "preferences": {},
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": "DATA+OMITTED"}}],
        "users": [
            {"name": user, "user": {"client-certificate-data": "DATA+OMITTED", "client-key-data": "DATA+OMITTED"}}
        ],
        "contexts": [{"name": f"{user}@{cluster}", "context": {"cluster": cluster, "user": user}}],
        "current-context": f"{user}@{cluster}",
    }
    assert run(kubectl, "--kubeconfig", path, "config", "current-context").strip() == f"{user}@{cluster}"
    jsonpath = "{.clusters[0].cluster.server} {.users[0].name} {.contexts[0].context.user}"
    raw = run(kubectl, "--kubeconfig", path, "config", "view", "--raw", "-o", f"jsonpath={jsonpath}")
    assert raw.split() == [server, user, user]
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("file", FILES)
@pytest.mark.parametrize("config", CONFIG_NAMES)
def test_embedded_credentials_are_valid(
    run: Run, kubectl: Path, openssl: str, ours: Callable[[str], Tree], config: str, file: str, tmp_path: Path
) -> None:
    tree = ours(config)
    path = tree.kubeconfigs / file

    def data(field: str) -> bytes:
        out = run(kubectl, "--kubeconfig", path, "config", "view", "--raw", "-o", f"jsonpath={{{field}}}")
        return base64.b64decode(out)

    ca, cert, key = (
        data(".clusters[0].cluster.certificate-authority-data"),
        data(".users[0].user.client-certificate-data"),
        data(".users[0].user.client-key-data"),
    )
    assert ca == (tree.pki / "ca.crt").read_bytes()
    (tmp_path / "client.crt").write_bytes(cert)
    (tmp_path / "client.key").write_bytes(key)
    assert run(openssl, "verify", "-CAfile", tree.pki / "ca.crt", tmp_path / "client.crt").endswith(": OK\n")
    _user, subject, _server = expected(config, file)
    got = run(openssl, "x509", "-in", tmp_path / "client.crt", "-noout", "-subject", "-nameopt", "oneline")
    assert got.strip() == f"subject={subject}"
    ext = run(openssl, "x509", "-in", tmp_path / "client.crt", "-noout", "-ext", "extendedKeyUsage,subjectAltName")
    assert ext.split("\n", 1)[1].strip() == "TLS Web Client Authentication"
    assert "Subject Alternative Name" not in ext
    from_key = run(openssl, "pkey", "-in", tmp_path / "client.key", "-pubout")
    assert from_key == run(openssl, "x509", "-in", tmp_path / "client.crt", "-noout", "-pubkey")
    expected_key = "EC PRIVATE KEY" if config == "ecdsa-validity.yaml" else "RSA PRIVATE KEY"
    assert key.startswith(f"-----BEGIN {expected_key}-----\n".encode())


@pytest.mark.parametrize("file", FILES)
@pytest.mark.parametrize("config", CONFIG_NAMES)
def test_kubectl_sees_the_same_kubeconfig_as_kubeadm_writes(
    run: Run, kubectl: Path, ours: Callable[[str], Tree], kubeadm_made: Callable[[str], Tree], config: str, file: str
) -> None:
    """kubectl's redacted view of our file equals its view of the file real kubeadm v1.33 wrote."""

    def view(path: Path) -> str:
        return run(kubectl, "--kubeconfig", path, "config", "view", "-o", "yaml")

    theirs = kubeadm_made(config).kubeconfigs / file
    assert view(ours(config).kubeconfigs / file) == view(theirs)
    assert theirs.stat().st_mode & 0o777 == 0o600
