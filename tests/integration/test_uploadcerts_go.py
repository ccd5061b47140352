"""The kubeadm-certs Secret kuberevive uploads for the control-plane join command (core/uploadcerts.py), opened
by Go's own AES-GCM exactly as kubeadm's DownloadCerts opens it (data/kubeadm_download_certs.go: hex key,
aes.NewCipher, cipher.NewGCM, Open with the first NonceSize bytes as the nonce): every file comes out byte for byte
under kubeadm's data keys, and another key opens nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kuberevive.core import uploadcerts
from tests.integration.conftest import _missing
from tests.unit.test_salvage import cluster_pki
from tests.unit.test_uploadcerts import KUBEADM_DATA_KEYS, OWNER

PROGRAM = Path(__file__).parent / "data" / "kubeadm_download_certs.go"
GOCACHE = Path("/var/cache/kuberevive/gocache")


@pytest.fixture(scope="module")
def download_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None)
    if go is None:
        _missing("the Go toolchain is not installed (it builds the lab's binaries)")
    out = tmp_path_factory.mktemp("go") / "download-certs"
    # the lab build's Go cache when there is one (the standard library is compiled there already), else a new one
    cache = os.environ.get("GOCACHE") or next((str(p) for p in [GOCACHE] if p.is_dir()), str(out.parent / "cache"))
    env = {**os.environ, "GOCACHE": cache, "GOTOOLCHAIN": "local", "GO111MODULE": "off"}
    subprocess.run([str(go), "build", "-o", str(out), str(PROGRAM)], env=env, check=True, timeout=900)
    return out


def _open(program: Path, secret: dict[str, object], key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(program), key], input=json.dumps(secret), capture_output=True, text=True, timeout=60, check=False
    )


def test_gos_aes_gcm_opens_every_file_of_the_secret_as_kubeadm_does(download_certs: Path) -> None:
    files = cluster_pki()
    key = uploadcerts.new_certificate_key(os.urandom)
    secret = uploadcerts.certs_secret(files, key, os.urandom, OWNER)
    done = _open(download_certs, secret, key)
    assert done.returncode == 0, done.stderr
    opened = json.loads(done.stdout)
    assert set(opened) == KUBEADM_DATA_KEYS
    for data_key, digest in opened.items():
        assert digest == hashlib.sha256(files[data_key.replace("etcd-", "etcd/")]).hexdigest(), data_key
    wrong = _open(download_certs, secret, uploadcerts.new_certificate_key(os.urandom))
    assert wrong.returncode == 1 and "error decoding secret data with provided key" in wrong.stderr
