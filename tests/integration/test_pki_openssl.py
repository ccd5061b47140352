"""The generated PKI checked by openssl against the values of the spec, and against real kubeadm v1.33 output.

Expected values below are written from spec §2 (kubeadm-artifacts.md), not computed by kuberevive; openssl
does all the parsing and verifying. The kubeadm comparison normalises only what is random per run (serial,
key material, key ids, signature, dates).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kuberevive.core import pki

Tree = Any  # tests/integration/conftest.py Tree: cfg, now, pki, kubeconfigs
Run = Callable[..., str]
CONFIG_NAMES = ("defaults.yaml", "ecdsa-validity.yaml", "endpoint-sans.yaml")

pytestmark = pytest.mark.integration

CERTS = (
    "ca.crt",
    "apiserver.crt",
    "apiserver-kubelet-client.crt",
    "front-proxy-ca.crt",
    "front-proxy-client.crt",
    "etcd/ca.crt",
    "etcd/server.crt",
    "etcd/peer.crt",
    "etcd/healthcheck-client.crt",
    "apiserver-etcd-client.crt",
)
SIGNER = {
    "ca.crt": "ca.crt",
    "apiserver.crt": "ca.crt",
    "apiserver-kubelet-client.crt": "ca.crt",
    "front-proxy-ca.crt": "front-proxy-ca.crt",
    "front-proxy-client.crt": "front-proxy-ca.crt",
    "etcd/ca.crt": "etcd/ca.crt",
    "etcd/server.crt": "etcd/ca.crt",
    "etcd/peer.crt": "etcd/ca.crt",
    "etcd/healthcheck-client.crt": "etcd/ca.crt",
    "apiserver-etcd-client.crt": "etcd/ca.crt",
}
SERVER = "TLS Web Server Authentication"
CLIENT = "TLS Web Client Authentication"
V6_LOOPBACK = "IP Address:0:0:0:0:0:0:0:1"  # how openssl prints ::1

# Per config: node name, apiserver SANs, etcd server SANs, etcd peer SANs (openssl's rendering, kubeadm's order),
# key algorithm line(s), signature algorithm, CA validity, leaf validity.
SPEC: dict[str, dict[str, object]] = {
    "defaults.yaml": {
        "node": "cp1",
        "apiserver": "DNS:cp1, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, "
        "DNS:kubernetes.default.svc.cluster.local, IP Address:10.96.0.1, IP Address:192.168.56.10",
        "etcd-server": f"DNS:cp1, DNS:localhost, IP Address:192.168.56.10, IP Address:127.0.0.1, {V6_LOOPBACK}",
        "etcd-peer": f"DNS:cp1, DNS:localhost, IP Address:192.168.56.10, IP Address:127.0.0.1, {V6_LOOPBACK}",
        "key": ("Public Key Algorithm: rsaEncryption", "Public-Key: (2048 bit)"),
        "sig": "sha256WithRSAEncryption",
        "ca_days": 3650,
        "leaf_days": 365,
    },
    "ecdsa-validity.yaml": {
        "node": "cp-ecdsa",
        "apiserver": "DNS:cp-ecdsa, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, "
        "DNS:kubernetes.default.svc.cluster.local, IP Address:10.96.0.1, IP Address:172.16.5.5",
        "etcd-server": f"DNS:cp-ecdsa, DNS:localhost, IP Address:172.16.5.5, IP Address:127.0.0.1, {V6_LOOPBACK}",
        "etcd-peer": f"DNS:cp-ecdsa, DNS:localhost, IP Address:172.16.5.5, IP Address:127.0.0.1, {V6_LOOPBACK}",
        "key": ("Public Key Algorithm: id-ecPublicKey", "Public-Key: (256 bit)", "NIST CURVE: P-256"),
        "sig": "ecdsa-with-SHA256",
        "ca_days": 1825,  # 43800h
        "leaf_days": 30,  # 720h
    },
    "endpoint-sans.yaml": {
        "node": "master-a",
        "apiserver": "DNS:*.apps.example.com, DNS:api.prod.example.com, DNS:kubernetes, DNS:kubernetes.default, "
        "DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, DNS:master-a, "
        "IP Address:10.112.0.1, IP Address:10.20.30.40, IP Address:203.0.113.7",
        "etcd-server": "DNS:etcd.prod.example.com, DNS:localhost, DNS:master-a, IP Address:10.20.30.40, "
        f"IP Address:127.0.0.1, {V6_LOOPBACK}",
        "etcd-peer": "DNS:localhost, DNS:master-a, IP Address:10.20.30.40, IP Address:127.0.0.1, "
        f"{V6_LOOPBACK}, IP Address:10.20.30.41",
        "key": ("Public Key Algorithm: rsaEncryption", "Public-Key: (2048 bit)"),
        "sig": "sha256WithRSAEncryption",
        "ca_days": 3650,
        "leaf_days": 365,
    },
}


def expected_fields(config: str, cert: str) -> dict[str, str | None]:
    """Subject, issuer and extensions of ``cert`` as openssl prints them, from spec §2.1–2.3."""
    spec = SPEC[config]
    node = str(spec["node"])
    ca_ku = "Digital Signature, Key Encipherment, Certificate Sign"
    leaf_ku = "Digital Signature, Key Encipherment"
    cas = {"ca.crt": "kubernetes", "front-proxy-ca.crt": "front-proxy-ca", "etcd/ca.crt": "etcd-ca"}
    if cert in cas:
        cn = cas[cert]
        return {
            "subject": f"CN = {cn}",
            "issuer": f"CN = {cn}",
            "Key Usage": f"critical {ca_ku}",
            "Basic Constraints": "critical CA:TRUE",
            "Extended Key Usage": None,
            "Subject Key Identifier": "KEYID",
            "Authority Key Identifier": None,
            "Subject Alternative Name": f"DNS:{cn}",
        }
    leaves = {
        "apiserver.crt": ("kube-apiserver", SERVER, spec["apiserver"]),
        "apiserver-kubelet-client.crt": ("kube-apiserver-kubelet-client", CLIENT, None),
        "front-proxy-client.crt": ("front-proxy-client", CLIENT, None),
        "etcd/server.crt": (node, f"{SERVER}, {CLIENT}", spec["etcd-server"]),
        "etcd/peer.crt": (node, f"{SERVER}, {CLIENT}", spec["etcd-peer"]),
        "etcd/healthcheck-client.crt": ("kube-etcd-healthcheck-client", CLIENT, None),
        "apiserver-etcd-client.crt": ("kube-apiserver-etcd-client", CLIENT, None),
    }
    cn, eku, sans = leaves[cert]
    return {
        "subject": f"CN = {cn}",
        "issuer": f"CN = {cas[SIGNER[cert]]}",
        "Key Usage": f"critical {leaf_ku}",
        "Basic Constraints": "critical CA:FALSE",
        "Extended Key Usage": eku,
        "Subject Key Identifier": None,
        "Authority Key Identifier": "KEYID",
        "Subject Alternative Name": None if sans is None else str(sans),
    }


_KEYID = re.compile(r"^(keyid:)?([0-9A-F]{2}:){19}[0-9A-F]{2}$")


def openssl_fields(run: Run, openssl: str, path: Path) -> dict[str, str | None]:
    """Subject, issuer and the X509v3 extensions as printed by ``openssl x509 -ext`` (key ids masked)."""
    names = run(openssl, "x509", "-in", path, "-noout", "-subject", "-issuer", "-nameopt", "oneline")
    subject, issuer = (line.split("=", 1)[1].strip() for line in names.splitlines())
    fields: dict[str, str | None] = {"subject": subject, "issuer": issuer}
    for name in (
        "Key Usage",
        "Basic Constraints",
        "Extended Key Usage",
        "Subject Key Identifier",
        "Authority Key Identifier",
        "Subject Alternative Name",
    ):
        fields[name] = None
    ext = run(
        openssl, "x509", "-in", path, "-noout", "-ext",
        "keyUsage,basicConstraints,extendedKeyUsage,subjectKeyIdentifier,authorityKeyIdentifier,subjectAltName",
    )  # fmt: skip
    current = ""
    for line in ext.splitlines():
        if line.startswith("X509v3 "):
            header, _, crit = line[len("X509v3 ") :].partition(":")
            current = header
            fields[current] = "critical" if crit.strip() == "critical" else ""
        elif line.strip():
            value = "KEYID" if _KEYID.match(line.strip()) else line.strip()
            fields[current] = f"{fields[current]} {value}".strip()
    return fields


def openssl_dates(run: Run, openssl: str, path: Path) -> tuple[datetime, datetime]:
    out = run(openssl, "x509", "-in", path, "-noout", "-startdate", "-enddate")
    start, end = (datetime.strptime(line.split("=", 1)[1], "%b %d %H:%M:%S %Y %Z") for line in out.splitlines())
    return start, end


@pytest.mark.parametrize("cert", CERTS)
@pytest.mark.parametrize("config", CONFIG_NAMES)
def test_chain_verifies_with_openssl(
    run: Run, openssl: str, ours: Callable[[str], Tree], config: str, cert: str
) -> None:
    tree = ours(config)
    out = run(openssl, "verify", "-CAfile", tree.pki / SIGNER[cert], tree.pki / cert)
    assert out.strip() == f"{tree.pki / cert}: OK"


@pytest.mark.parametrize("config", CONFIG_NAMES)
def test_openssl_rejects_a_leaf_under_the_wrong_ca(
    run: Run, openssl: str, ours: Callable[[str], Tree], config: str
) -> None:
    tree = ours(config)
    proc = subprocess.run(
        [openssl, "verify", "-CAfile", tree.pki / "etcd/ca.crt", tree.pki / "apiserver.crt"],
        capture_output=True,
        check=False,
    )
    assert proc.returncode != 0


@pytest.mark.parametrize("cert", CERTS)
@pytest.mark.parametrize("config", CONFIG_NAMES)
def test_every_field_as_openssl_reads_it(
    run: Run, openssl: str, ours: Callable[[str], Tree], config: str, cert: str
) -> None:
    tree = ours(config)
    path = tree.pki / cert
    assert openssl_fields(run, openssl, path) == expected_fields(config, cert)

    text = run(openssl, "x509", "-in", path, "-noout", "-text")
    spec = SPEC[config]
    for line in spec["key"]:  # type: ignore[attr-defined]
        assert line in text
    assert f"Signature Algorithm: {spec['sig']}" in text

    start, end = openssl_dates(run, openssl, path)
    days = spec["ca_days"] if cert in ("ca.crt", "front-proxy-ca.crt", "etcd/ca.crt") else spec["leaf_days"]
    assert start == tree.now.replace(tzinfo=None) - timedelta(minutes=5)
    assert end == tree.now.replace(tzinfo=None) + timedelta(days=int(days))  # type: ignore[call-overload]

    serial = int(run(openssl, "x509", "-in", path, "-noout", "-serial").strip().split("=", 1)[1], 16)
    assert 1 <= serial < 2**63 - 1


@pytest.mark.parametrize("cert", CERTS)
@pytest.mark.parametrize("config", CONFIG_NAMES)
def test_keys_match_their_certificates(
    run: Run, openssl: str, ours: Callable[[str], Tree], config: str, cert: str
) -> None:
    tree = ours(config)
    key = tree.pki / cert.replace(".crt", ".key")
    header = key.read_text().splitlines()[0]
    ecdsa = config == "ecdsa-validity.yaml"
    assert header == ("-----BEGIN EC PRIVATE KEY-----" if ecdsa else "-----BEGIN RSA PRIVATE KEY-----")
    run(openssl, "ec" if ecdsa else "rsa", "-in", key, "-check", "-noout")
    from_key = run(openssl, "pkey", "-in", key, "-pubout")
    from_cert = run(openssl, "x509", "-in", tree.pki / cert, "-noout", "-pubkey")
    assert from_key == from_cert


@pytest.mark.parametrize("config", CONFIG_NAMES)
def test_service_account_pair(run: Run, openssl: str, ours: Callable[[str], Tree], config: str) -> None:
    tree = ours(config)
    assert (tree.pki / "sa.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----\n")
    der_from_key = subprocess.run(
        [openssl, "pkey", "-in", tree.pki / "sa.key", "-pubout", "-outform", "DER"], capture_output=True, check=True
    ).stdout
    der_from_pub = subprocess.run(
        [openssl, "pkey", "-pubin", "-in", tree.pki / "sa.pub", "-outform", "DER"], capture_output=True, check=True
    ).stdout
    assert der_from_key == der_from_pub and len(der_from_key) > 50


@pytest.mark.parametrize("config", CONFIG_NAMES)
def test_discovery_hash_matches_the_openssl_recipe(
    run: Run, openssl: str, ours: Callable[[str], Tree], config: str
) -> None:
    import hashlib

    from cryptography import x509

    tree = ours(config)
    pub = run(openssl, "x509", "-in", tree.pki / "ca.crt", "-noout", "-pubkey").encode()
    der = subprocess.run([openssl, "pkey", "-pubin", "-outform", "DER"], input=pub, capture_output=True, check=True)
    cert = x509.load_pem_x509_certificate((tree.pki / "ca.crt").read_bytes())
    assert pki.discovery_token_ca_cert_hash(cert) == "sha256:" + hashlib.sha256(der.stdout).hexdigest()


# -------------------------------------------------------------------------- parity with real kubeadm

_RANDOM = [
    (re.compile(r"^( +)[0-9a-f]{2}(:[0-9a-f]{2})+:?$"), r"\1HEX"),  # modulus, EC point, signature bytes
    (re.compile(r"(Serial Number:).*"), r"\1 X"),
    (re.compile(r"(Not (Before|After) *:).*"), r"\1 T"),
    (re.compile(r"^( +)([0-9A-F]{2}:){19}[0-9A-F]{2}$"), r"\1KEYID"),
]


def normalised_text(openssl: str, pem: bytes) -> list[str]:
    """``openssl x509 -text`` with the per-run random parts masked and repeated mask lines folded."""
    proc = subprocess.run([openssl, "x509", "-noout", "-text"], input=pem, capture_output=True, check=True)
    out: list[str] = []
    for line in proc.stdout.decode().splitlines():
        for pattern, repl in _RANDOM:
            line = pattern.sub(repl, line)
        if not out or out[-1] != line:
            out.append(line)
    return out


def asn1_shape(openssl: str, pem: bytes) -> list[str]:
    """``openssl asn1parse`` without offsets, lengths and random values: types, OIDs and strings in order."""
    proc = subprocess.run([openssl, "asn1parse"], input=pem, capture_output=True, check=True)
    shape = []
    for line in proc.stdout.decode().splitlines():
        depth = re.search(r"d=\s*(\d+)", line)
        body = line.split(" l=", 1)[1].split(None, 1)[1] if " l=" in line else line
        if re.search(r"BIT STRING|INTEGER|UTCTIME|GENERALIZEDTIME|OCTET STRING", body):
            body = body.split(":", 1)[0]
        shape.append(f"{depth.group(1) if depth else '?'} {body.strip()}")
    return shape


@pytest.mark.parametrize("cert", CERTS)
@pytest.mark.parametrize("config", CONFIG_NAMES)
def test_same_certificate_as_kubeadm(
    run: Run, openssl: str, ours: Callable[[str], Tree], kubeadm_made: Callable[[str], Tree], config: str, cert: str
) -> None:
    mine, theirs = (ours(config).pki / cert).read_bytes(), (kubeadm_made(config).pki / cert).read_bytes()
    assert normalised_text(openssl, mine) == normalised_text(openssl, theirs)
    assert asn1_shape(openssl, mine) == asn1_shape(openssl, theirs)
    # and kubeadm's own cert carries the values of the spec
    assert openssl_fields(run, openssl, kubeadm_made(config).pki / cert) == expected_fields(config, cert)


@pytest.mark.parametrize("config", CONFIG_NAMES)
def test_same_files_and_modes_as_kubeadm(
    ours: Callable[[str], Tree], kubeadm_made: Callable[[str], Tree], config: str
) -> None:
    def listing(root: Path) -> dict[str, int]:
        return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in sorted(root.rglob("*")) if p.is_file()}

    theirs = listing(kubeadm_made(config).pki)
    assert listing(ours(config).pki) == theirs
    assert theirs["sa.pub"] == 0o600 and theirs["ca.crt"] == 0o644 and theirs["ca.key"] == 0o600


@pytest.mark.parametrize("config", CONFIG_NAMES)
def test_same_pem_block_types_as_kubeadm(
    ours: Callable[[str], Tree], kubeadm_made: Callable[[str], Tree], config: str
) -> None:
    def headers(root: Path) -> dict[str, list[str]]:
        return {
            str(p.relative_to(root)): [line for line in p.read_text().splitlines() if line.startswith("-----")]
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert headers(ours(config).pki) == headers(kubeadm_made(config).pki)
