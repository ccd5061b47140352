"""``pki.extend_ca`` checked by the real ``openssl verify``: a leaf signed by a CA that has expired fails against the
old CA certificate and verifies against the extended one (same key), at the same moment."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kuberevive.core import pki
from kuberevive.lab.config import LabConfig
from kuberevive.lab.kubeadm import dump, init_documents
from kuberevive.model.config import EncryptionAlgorithm

NOW = datetime.now(UTC).replace(microsecond=0)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_openssl_verifies_old_leaves_against_the_extended_ca_after_the_old_one_expired(
    tmp_path: Path, openssl: str, run: Callable[..., str]
) -> None:
    key = pki.generate_private_key(EncryptionAlgorithm.RSA_2048)
    old = pki.new_self_signed_ca("kubernetes", key, NOW - timedelta(minutes=5), NOW + timedelta(hours=1))
    leaf_key = pki.generate_private_key(EncryptionAlgorithm.ECDSA_P256)
    leaf = pki.issue_certificate(
        common_name="kube-apiserver",
        organization=(),
        usages=(pki.KeyUsage.SERVER_AUTH,),
        public_key=leaf_key.public_key(),
        ca_cert=old,
        ca_key=key,
        not_before=NOW - timedelta(minutes=5),
        not_after=NOW + timedelta(days=365),
    )
    later = NOW + timedelta(hours=2)  # the old CA has expired by then, the leaf has not
    new = pki.extend_ca(old, key, later, timedelta(days=3650))
    old_pem = _write(tmp_path / "old-ca.crt", pki.encode_certificate_pem(old))
    new_pem = _write(tmp_path / "new-ca.crt", pki.encode_certificate_pem(new))
    leaf_pem = _write(tmp_path / "leaf.crt", pki.encode_certificate_pem(leaf))
    at = str(int(later.timestamp()))

    refused = subprocess.run(
        [openssl, "verify", "-attime", at, "-CAfile", str(old_pem), str(leaf_pem)], capture_output=True, check=False
    )
    assert refused.returncode != 0
    assert b"expired" in refused.stdout + refused.stderr

    assert run(openssl, "verify", "-attime", at, "-CAfile", new_pem, leaf_pem).strip() == f"{leaf_pem}: OK"
    assert run(openssl, "verify", "-CAfile", new_pem, leaf_pem).strip() == f"{leaf_pem}: OK"  # and now
    # the same public key, subject and key identifier as openssl reads them; another serial
    fields = [
        run(openssl, "x509", "-in", p, "-noout", "-pubkey", "-subject", "-ext", "subjectKeyIdentifier")
        for p in (old_pem, new_pem)
    ]
    assert fields[0] == fields[1]
    serials = [run(openssl, "x509", "-in", p, "-noout", "-serial") for p in (old_pem, new_pem)]
    assert serials[0] != serials[1]


def test_kubeadm_honours_the_lab_ca_validity_and_its_leaves_verify_against_the_extended_ca(
    tmp_path: Path, k8s_bin_dir: Path, openssl: str, run: Callable[..., str]
) -> None:
    """The lab's ``ca_certificate_validity`` reaches real kubeadm v1.33 (``caCertificateValidityPeriod``): its CAs
    expire after 10 minutes while its leaves keep their year (kubeadm does not cap them at the CA's NotAfter).
    Each leaf kubeadm signed verifies, at a time its CA has expired, against that CA extended by kuberevive."""
    docs = init_documents(LabConfig(ca_certificate_validity="10m"), "abcdef.0123456789abcdef")
    cluster = next(d for d in docs if d["kind"] == "ClusterConfiguration")
    assert cluster["caCertificateValidityPeriod"] == "10m"
    cluster["certificatesDir"] = str(tmp_path / "pki")
    (tmp_path / "kubeadm.yaml").write_text(dump(docs))
    now = datetime.now(UTC)
    run(k8s_bin_dir / "kubeadm", "init", "phase", "certs", "all", "--config", tmp_path / "kubeadm.yaml")
    pki_dir = tmp_path / "pki"
    signed = {"ca": "apiserver", "front-proxy-ca": "front-proxy-client", "etcd/ca": "etcd/server"}
    for ca_name, leaf_name in signed.items():
        old = pki.load_certificate((pki_dir / f"{ca_name}.crt").read_bytes(), ca_name)
        leaf = pki.load_certificate((pki_dir / f"{leaf_name}.crt").read_bytes(), leaf_name)
        assert timedelta(minutes=9) < old.not_valid_after_utc - now < timedelta(minutes=11)
        assert leaf.not_valid_after_utc - now > timedelta(days=364)
        key = pki.load_private_key((pki_dir / f"{ca_name}.key").read_bytes(), ca_name)
        later = old.not_valid_after_utc + timedelta(hours=1)
        new = _write(
            tmp_path / f"{ca_name.replace('/', '-')}-new.crt",
            pki.encode_certificate_pem(pki.extend_ca(old, key, later, timedelta(days=3650))),
        )
        at = str(int(later.timestamp()))
        leaf_file = pki_dir / f"{leaf_name}.crt"
        refused = subprocess.run(
            [openssl, "verify", "-attime", at, "-CAfile", str(pki_dir / f"{ca_name}.crt"), str(leaf_file)],
            capture_output=True,
            check=False,
        )
        assert refused.returncode != 0 and b"expired" in refused.stdout + refused.stderr
        assert run(openssl, "verify", "-attime", at, "-CAfile", new, leaf_file).strip() == f"{leaf_file}: OK"
