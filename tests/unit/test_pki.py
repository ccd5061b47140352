"""kuberevive.core.pki: SANs, the cert table, PEM shapes, reuse rules and errors (no disk, no programs)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from kuberevive.core import pki
from kuberevive.errors import PkiError
from kuberevive.model.artifacts import ArtifactKind
from kuberevive.model.config import (
    APIEndpoint,
    APIServer,
    ClusterConfiguration,
    EncryptionAlgorithm,
    ExternalEtcd,
    InitConfiguration,
    KubeadmConfig,
    LocalEtcd,
    NodeFacts,
    NodeRegistration,
)
from kuberevive.model.kubeadm_yaml import load_kubeadm_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
PKI = PurePosixPath("/etc/kubernetes/pki")

# ca.crt of a real kubeadm v1.33.0 node (spec §0 "S-1.33", kubelet.conf certificate-authority-data).
S133_CA_PEM = b"""-----BEGIN CERTIFICATE-----
MIIDBTCCAe2gAwIBAgIITCNb9O0sfLswDQYJKoZIhvcNAQELBQAwFTETMBEGA1UE
AxMKa3ViZXJuZXRlczAeFw0yNTA3MTcxMzE3MDJaFw0zNTA3MTUxMzIyMDJaMBUx
EzARBgNVBAMTCmt1YmVybmV0ZXMwggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAwggEK
AoIBAQDD2jmLUjbH8Q6fVtC8kezT1b95GbzUvJ3A90Zis7dC40vGbO6e1n6puUCK
D5VXNuciVmt2IiadWnWJCKltSdemCmUUzx7xkYGtMQxlRSczWhpzLB5uA5dwFoB0
FudjBWkpX44+bNePVeXEdgv1LA0O90jjwd9UC/JO966PYqJJwSdlOpQHP8OEFkkS
fYFpX+PxOn5ppz4FejF42VZeIqdsr8mW1IE/u0FlPVkqRbZ2xjNygZsaiJH0/jWf
2vAenjTCdJLotFhvUuXi62Ta1bX/rBw0LoVROnvW82jonM2OcFiCjbl/4cIRoaLS
VKptgqN1A0soEArqZPfqB0+w9yFjAgMBAAGjWTBXMA4GA1UdDwEB/wQEAwICpDAP
BgNVHRMBAf8EBTADAQH/MB0GA1UdDgQWBBQuDrP6oSnlYsBqfyA/Ll8lN4eayjAV
BgNVHREEDjAMggprdWJlcm5ldGVzMA0GCSqGSIb3DQEBCwUAA4IBAQBHSiHFt7SZ
bNmtOBg91QrNRPICWVItYcBZAnTjXEUI59QLwkcNf3VVPxLwvaJjWVNKuQfqCyoi
ToZt1hWnA1jUJwoKzqGFyew6DSkwkK/pPpr/jk/5a5pCdtdK9e9DSbXvIrJ4yRgE
aj2S9e8dR2JPdFD4I+wd6Sy/MmJALHaQ2o2x7VR1qHWKvWgJzZQZKYLmoWGuG30E
BXjoOYGD36w4utaFiApfkIUjPPmCGugB0ItoZJDic56hwMeMvQYZCZ43aBDMI4LL
EzBL5RnQxEA7gsDDvHghkSCit+327Cky1abet+3thiGKO4CMK927vDqEtikpKflp
l9tK14zV7SFL
-----END CERTIFICATE-----
"""


def load_config(name: str) -> KubeadmConfig:
    return load_kubeadm_config((CONFIGS / name).read_text(), NodeFacts(hostname="ignored"))


def make_config(
    *,
    adv: str = "192.168.56.10",
    node: str = "cp1",
    cpe: str = "",
    cert_sans: tuple[str, ...] = (),
    service_subnet: str = "10.96.0.0/12",
    external_etcd: bool = False,
    certificates_dir: str = "/etc/kubernetes/pki",
    algorithm: EncryptionAlgorithm = EncryptionAlgorithm.RSA_2048,
) -> KubeadmConfig:
    from kuberevive.model.config import Networking

    cluster = ClusterConfiguration(
        kubernetes_version="v1.33.13",
        networking=Networking(service_subnet=service_subnet),
        control_plane_endpoint=cpe,
        api_server=APIServer(cert_sans=cert_sans),
        etcd_local=None if external_etcd else LocalEtcd(),
        etcd_external=ExternalEtcd(endpoints=("https://10.0.0.5:2379",)) if external_etcd else None,
        certificates_dir=certificates_dir,
        encryption_algorithm=algorithm,
    )
    return KubeadmConfig(cluster, InitConfiguration(APIEndpoint(adv), NodeRegistration(node)))


def ips(*texts: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    return tuple(ipaddress.ip_address(t) for t in texts)


@pytest.fixture(scope="module")
def default_bundle() -> pki.PkiBundle:
    return pki.build_certificates(load_config("defaults.yaml"), NOW, {})


def files_of(bundle: pki.PkiBundle) -> dict[PurePosixPath, bytes]:
    return {a.path: a.content for a in bundle.artifacts}


def cert_at(bundle: pki.PkiBundle, rel: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(files_of(bundle)[PKI / rel])


# ------------------------------------------------------------------------------------------ SANs


@pytest.mark.parametrize(
    ("config", "dns", "ip"),
    [
        (
            "defaults.yaml",
            (
                "cp1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips("10.96.0.1", "192.168.56.10"),
        ),
        (
            "ecdsa-validity.yaml",
            (
                "cp-ecdsa",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips("10.96.0.1", "172.16.5.5"),
        ),
        (
            "endpoint-sans.yaml",
            (
                "*.apps.example.com",
                "api.prod.example.com",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "master-a",
            ),
            ips("10.112.0.1", "10.20.30.40", "203.0.113.7"),
        ),
    ],
)
def test_apiserver_sans_of_the_reference_configs(config: str, dns: tuple[str, ...], ip: tuple[object, ...]) -> None:
    names = pki.apiserver_alt_names(load_config(config))
    assert names.dns == dns
    assert names.ips == ip
    assert names.rejected == ()


@pytest.mark.parametrize(
    ("config", "server", "peer"),
    [
        (
            "defaults.yaml",
            (("cp1", "localhost"), ips("192.168.56.10", "127.0.0.1", "::1")),
            (("cp1", "localhost"), ips("192.168.56.10", "127.0.0.1", "::1")),
        ),
        (
            "ecdsa-validity.yaml",
            (("cp-ecdsa", "localhost"), ips("172.16.5.5", "127.0.0.1", "::1")),
            (("cp-ecdsa", "localhost"), ips("172.16.5.5", "127.0.0.1", "::1")),
        ),
        (
            "endpoint-sans.yaml",
            (("etcd.prod.example.com", "localhost", "master-a"), ips("10.20.30.40", "127.0.0.1", "::1")),
            (("localhost", "master-a"), ips("10.20.30.40", "127.0.0.1", "::1", "10.20.30.41")),
        ),
    ],
)
def test_etcd_sans_of_the_reference_configs(config: str, server: tuple[object, ...], peer: tuple[object, ...]) -> None:
    cfg = load_config(config)
    s, p = pki.etcd_server_alt_names(cfg), pki.etcd_peer_alt_names(cfg)
    assert (s.dns, s.ips) == server
    assert (p.dns, p.ips) == peer


def test_apiserver_sans_edge_cases() -> None:
    cfg = make_config(
        adv="192.168.056.010",  # leading zeros: ParseIPSloppy reads them as decimal
        cpe="10.0.0.100:6443",  # an IP endpoint goes to the IP SANs
        cert_sans=("10.0.0.100", "Bad_Name", "*.wild.example.org", "cp1", "fd00::0:1", "kubernetes"),
        service_subnet="fd00:10::/108,10.96.0.0/12",  # dual stack: the first CIDR gives the VIP
    )
    names = pki.apiserver_alt_names(cfg)
    assert names.dns == (
        "*.wild.example.org",
        "cp1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    )
    assert names.ips == ips("fd00:10::1", "192.168.56.10", "10.0.0.100", "fd00::1")
    assert names.rejected == ("Bad_Name",)


def test_rejected_san_becomes_a_warning_and_is_left_out() -> None:
    bundle = pki.build_certificates(make_config(cert_sans=("not a name",)), NOW, {})
    assert any("not a name" in w and "apiserver" in w for w in bundle.warnings)
    san = cert_at(bundle, "apiserver.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "not a name" not in san.get_values_for_type(x509.DNSName)


def test_ipv6_advertise_address_in_etcd_sans() -> None:
    names = pki.etcd_server_alt_names(make_config(adv="fd00::10"))
    assert names.ips == ips("fd00::10", "127.0.0.1", "::1")


# ---------------------------------------------------------------------------------- cert table

EXPECTED: dict[str, tuple[str, tuple[tuple[str, ...], str], tuple[str, ...]]] = {
    # rel path: (issuer CN, subject (O..., CN), EKUs)
    "ca.crt": ("kubernetes", ((), "kubernetes"), ()),
    "apiserver.crt": ("kubernetes", ((), "kube-apiserver"), ("serverAuth",)),
    "apiserver-kubelet-client.crt": ("kubernetes", ((), "kube-apiserver-kubelet-client"), ("clientAuth",)),
    "front-proxy-ca.crt": ("front-proxy-ca", ((), "front-proxy-ca"), ()),
    "front-proxy-client.crt": ("front-proxy-ca", ((), "front-proxy-client"), ("clientAuth",)),
    "etcd/ca.crt": ("etcd-ca", ((), "etcd-ca"), ()),
    "etcd/server.crt": ("etcd-ca", ((), "cp1"), ("serverAuth", "clientAuth")),
    "etcd/peer.crt": ("etcd-ca", ((), "cp1"), ("serverAuth", "clientAuth")),
    "etcd/healthcheck-client.crt": ("etcd-ca", ((), "kube-etcd-healthcheck-client"), ("clientAuth",)),
    "apiserver-etcd-client.crt": ("etcd-ca", ((), "kube-apiserver-etcd-client"), ("clientAuth",)),
}


def test_artifact_paths_modes_and_order(default_bundle: pki.PkiBundle) -> None:
    got = [(str(a.path), oct(a.mode), a.kind) for a in default_bundle.artifacts]
    expected: list[tuple[str, str, ArtifactKind]] = []
    for rel in EXPECTED:
        base = rel.removesuffix(".crt")
        expected.append((f"/etc/kubernetes/pki/{base}.key", "0o600", ArtifactKind.PRIVATE_KEY))
        expected.append((f"/etc/kubernetes/pki/{base}.crt", "0o644", ArtifactKind.CERTIFICATE))
    expected.append(("/etc/kubernetes/pki/sa.key", "0o600", ArtifactKind.PRIVATE_KEY))
    expected.append(("/etc/kubernetes/pki/sa.pub", "0o600", ArtifactKind.PUBLIC_KEY))
    assert got == expected
    assert default_bundle.reused == [] and default_bundle.external_cas == [] and default_bundle.warnings == []


@pytest.mark.parametrize("rel", list(EXPECTED))
def test_every_certificate_field(default_bundle: pki.PkiBundle, rel: str) -> None:
    issuer_cn, (orgs, cn), ekus = EXPECTED[rel]
    cert = cert_at(default_bundle, rel)
    is_ca = not ekus
    subject = [(a.oid, a.value) for a in cert.subject]
    assert subject == [*((NameOID.ORGANIZATION_NAME, o) for o in orgs), (NameOID.COMMON_NAME, cn)]
    assert cert.issuer.rfc4514_string() == f"CN={issuer_cn}"
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    validity = timedelta(hours=87600) if is_ca else timedelta(hours=8760)
    assert cert.not_valid_after_utc == NOW + validity
    assert 1 <= cert.serial_number < 2**63 - 1
    public_key = cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size == 2048
    assert cert.signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.11"  # sha256WithRSAEncryption

    ext = {e.oid: e for e in cert.extensions}
    order = [e.oid for e in cert.extensions]
    ku = ext[ExtensionOID.KEY_USAGE]
    assert ku.critical and ku.value.digital_signature and ku.value.key_encipherment
    assert ku.value.key_cert_sign is is_ca
    bc = ext[ExtensionOID.BASIC_CONSTRAINTS]
    assert bc.critical and bc.value.ca is is_ca and bc.value.path_length is None
    if is_ca:
        assert order == [
            ExtensionOID.KEY_USAGE,
            ExtensionOID.BASIC_CONSTRAINTS,
            ExtensionOID.SUBJECT_KEY_IDENTIFIER,
            ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ]
        assert ext[ExtensionOID.SUBJECT_ALTERNATIVE_NAME].value.get_values_for_type(x509.DNSName) == [cn]
        assert cert.issuer == cert.subject
    else:
        eku = ext[ExtensionOID.EXTENDED_KEY_USAGE]
        names = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}
        assert not eku.critical and tuple(names[o] for o in eku.value) == ekus
        assert ExtensionOID.SUBJECT_KEY_IDENTIFIER not in ext
        ca_rel = {"kubernetes": "ca.crt", "front-proxy-ca": "front-proxy-ca.crt", "etcd-ca": "etcd/ca.crt"}[issuer_cn]
        ca = cert_at(default_bundle, ca_rel)
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        assert ext[ExtensionOID.AUTHORITY_KEY_IDENTIFIER].value.key_identifier == ski
        assert pki.verify_signed_by(cert, ca)
        has_san = rel in ("apiserver.crt", "etcd/server.crt", "etcd/peer.crt")
        assert (ExtensionOID.SUBJECT_ALTERNATIVE_NAME in ext) is has_san


def test_kubeadm_cert_shape_matches_a_real_kubeadm_ca() -> None:
    """Our ca.crt has the extension list, criticality and subject encoding of a kubeadm v1.33 ca.crt."""
    real = x509.load_pem_x509_certificate(S133_CA_PEM)
    ours = pki.build_certificates(make_config(), NOW, {})
    mine = cert_at(ours, "ca.crt")
    assert [(e.oid, e.critical) for e in mine.extensions] == [(e.oid, e.critical) for e in real.extensions]
    assert mine.subject.public_bytes() == real.subject.public_bytes()  # CN=kubernetes as PrintableString
    assert mine.signature_algorithm_oid == real.signature_algorithm_oid
    assert (mine.not_valid_after_utc - mine.not_valid_before_utc) == (
        real.not_valid_after_utc - real.not_valid_before_utc
    )


def test_external_etcd_skips_the_etcd_certificates() -> None:
    bundle = pki.build_certificates(make_config(external_etcd=True), NOW, {})
    paths = {str(a.path) for a in bundle.artifacts}
    assert not any("etcd" in p for p in paths)
    assert "/etc/kubernetes/pki/apiserver.crt" in paths and "/etc/kubernetes/pki/sa.pub" in paths


def test_certificates_dir_is_honoured() -> None:
    bundle = pki.build_certificates(make_config(certificates_dir="/srv/k8s/pki"), NOW, {})
    assert {a.path.parent for a in bundle.artifacts} == {
        PurePosixPath("/srv/k8s/pki"),
        PurePosixPath("/srv/k8s/pki/etcd"),
    }


def test_ecdsa_config_gives_p256_keys_and_custom_validity() -> None:
    bundle = pki.build_certificates(load_config("ecdsa-validity.yaml"), NOW, {})
    files = files_of(bundle)
    ca = cert_at(bundle, "ca.crt")
    leaf = cert_at(bundle, "apiserver.crt")
    for cert in (ca, leaf):
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
        assert cert.signature_algorithm_oid.dotted_string == "1.2.840.10045.4.3.2"  # ecdsa-with-SHA256
    assert ca.not_valid_after_utc == NOW + timedelta(hours=43800)
    assert leaf.not_valid_after_utc == NOW + timedelta(hours=720)
    assert files[PKI / "sa.key"].startswith(b"-----BEGIN EC PRIVATE KEY-----\n")


# ----------------------------------------------------------------------------------------- PEM


def test_pem_block_types(default_bundle: pki.PkiBundle) -> None:
    for a in default_bundle.artifacts:
        text = a.content.decode()
        if a.kind is ArtifactKind.CERTIFICATE:
            assert text.startswith("-----BEGIN CERTIFICATE-----\n") and text.count("BEGIN") == 1
        elif a.kind is ArtifactKind.PRIVATE_KEY:
            assert text.startswith("-----BEGIN RSA PRIVATE KEY-----\n")  # PKCS#1, never PKCS#8
        else:
            assert text.startswith("-----BEGIN PUBLIC KEY-----\n")
        assert text.endswith("-----\n")


def test_sa_pub_is_the_public_half_of_sa_key(default_bundle: pki.PkiBundle) -> None:
    files = files_of(default_bundle)
    key = pki.load_private_key(files[PKI / "sa.key"], "sa.key")
    pub = pki.load_public_key(files[PKI / "sa.pub"], "sa.pub")
    assert pki.public_key_matches(key, pub)


def test_pkcs8_keys_are_accepted_on_read() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert pkcs8.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = pki.load_private_key(pkcs8, "k.key")
    assert pki.public_key_matches(loaded, key.public_key())


def test_a_private_key_is_parsed_once_per_distinct_pem_and_never_when_made_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Parsing an RSA key costs ~30 ms (OpenSSL's consistency check) and a recovery loads the CA key for every
    certificate and kubeconfig it signs: the same PEM bytes are parsed once, a PEM made by
    encode_private_key_pem not at all; other bytes are parsed anew, and a bad PEM fails every time."""
    calls: list[bytes] = []
    real = serialization.load_pem_private_key

    def counting(data: bytes, password: bytes | None = None) -> object:
        calls.append(data)
        return real(data, password=password)

    monkeypatch.setattr(serialization, "load_pem_private_key", counting)
    made = pki.generate_private_key(EncryptionAlgorithm.RSA_2048)
    pem = pki.encode_private_key_pem(made)
    assert pki.load_private_key(pem, "ca.key") is made and calls == []
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs8 = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    first = pki.load_private_key(pkcs8, "sa.key")
    assert pki.load_private_key(bytes(pkcs8), "sa.key") is first and calls == [pkcs8]
    assert pki.public_key_matches(first, other.public_key())
    for _ in range(2):
        with pytest.raises(PkiError, match="truncated or corrupt"):
            pki.load_private_key(pkcs8[:200], "bad.key")
    assert len(calls) == 3
    for _ in range(pki.KEY_CACHE_SIZE):  # bounded: the oldest goes first
        pki.encode_private_key_pem(pki.generate_private_key(EncryptionAlgorithm.ECDSA_P256))
    pki.load_private_key(pkcs8, "sa.key")
    assert len(calls) == 4


def test_keys_made_ahead_are_handed_out_once_each_then_made_on_demand_and_dropped() -> None:
    pki.drop_spare_keys()
    alg = EncryptionAlgorithm.ECDSA_P256
    pki.make_spare_keys(alg, 2)
    first, second = pki.generate_private_key(alg), pki.generate_private_key(alg)
    third = pki.generate_private_key(alg)  # none left ahead: made now
    assert len({pki.encode_private_key_pem(k) for k in (first, second, third)}) == 3
    assert pki.generate_private_key(EncryptionAlgorithm.RSA_2048).key_size == 2048  # other algorithms: made now
    assert pki.drop_spare_keys() == 0
    pki.make_spare_keys(alg, 1)
    assert pki.drop_spare_keys() == 1 and pki.drop_spare_keys() == 0


def test_a_key_asked_for_while_a_thread_makes_one_is_that_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Making another key on demand would only compete for the CPU with the one being made (2 cores on the lab:
    14 of a run's keys were made twice so): the caller waits for it."""
    import threading

    pki.drop_spare_keys()
    alg = EncryptionAlgorithm.ECDSA_P256
    real = pki._new_private_key
    started, release = threading.Event(), threading.Event()
    made_by: list[str] = []

    def slow(algorithm: EncryptionAlgorithm) -> Any:
        made_by.append(threading.current_thread().name)
        started.set()
        assert release.wait(10)
        return real(algorithm)

    monkeypatch.setattr(pki, "_new_private_key", slow)
    maker = threading.Thread(target=pki.make_spare_keys, args=(alg, 1), name="maker")
    maker.start()
    assert started.wait(10)
    threading.Timer(0.2, release.set).start()
    key = pki.generate_private_key(alg)
    maker.join(10)
    assert made_by == ["maker"] and key is not None  # none made by the caller
    assert pki.drop_spare_keys() == 0


def test_discovery_hash_of_the_spec_vector() -> None:
    cert = x509.load_pem_x509_certificate(S133_CA_PEM)
    assert cert.serial_number == 0x4C235BF4ED2C7CBB
    assert pki.discovery_token_ca_cert_hash(cert) == (
        "sha256:c63a9844e3b0fde68873337c81175460eb449925b9285aac27f97773ba32c0bd"
    )
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    assert ski.hex().upper() == "2E0EB3FAA129E562C06A7F203F2E5F2537879ACA"


def test_inspection_helpers(default_bundle: pki.PkiBundle) -> None:
    api = cert_at(default_bundle, "apiserver.crt")
    ca = cert_at(default_bundle, "ca.crt")
    etcd_ca = cert_at(default_bundle, "etcd/ca.crt")
    usages = pki.certificate_usages(api)
    assert usages.key_usages == {"digitalSignature", "keyEncipherment"} and usages.extended == ("serverAuth",)
    assert pki.certificate_usages(ca).key_usages == {"digitalSignature", "keyEncipherment", "keyCertSign"}
    assert pki.certificate_alt_names(api).ips == ips("10.96.0.1", "192.168.56.10")
    assert pki.certificate_validity(api) == (NOW - timedelta(minutes=5), NOW + timedelta(hours=8760))
    assert pki.is_ca_certificate(ca) and not pki.is_ca_certificate(api)
    assert pki.verify_signed_by(api, ca) and not pki.verify_signed_by(api, etcd_ca)
    api_key = pki.load_private_key(files_of(default_bundle)[PKI / "apiserver.key"], "apiserver.key")
    assert pki.key_matches_certificate(api_key, api) and not pki.key_matches_certificate(api_key, ca)


def test_serials_are_random() -> None:
    a = pki.build_certificates(make_config(external_etcd=True), NOW, {})
    b = pki.build_certificates(make_config(external_etcd=True), NOW, {})
    assert cert_at(a, "ca.crt").serial_number != cert_at(b, "ca.crt").serial_number


# --------------------------------------------------------------------------------------- reuse


def test_existing_ca_is_reused_and_signs_missing_leaves(default_bundle: pki.PkiBundle) -> None:
    old = files_of(default_bundle)
    existing = {PKI / "ca.crt": old[PKI / "ca.crt"], PKI / "ca.key": old[PKI / "ca.key"]}
    later = NOW + timedelta(days=30)
    bundle = pki.build_certificates(load_config("defaults.yaml"), later, existing)
    written = {a.path for a in bundle.artifacts}
    assert PKI / "ca.crt" not in written and PKI / "ca.key" not in written
    assert bundle.reused == [PKI / "ca.crt", PKI / "ca.key"]
    api = x509.load_pem_x509_certificate(files_of(bundle)[PKI / "apiserver.crt"])
    assert pki.verify_signed_by(api, x509.load_pem_x509_certificate(old[PKI / "ca.crt"]))
    assert api.not_valid_before_utc == later - timedelta(minutes=5)
    assert bundle.ca_cert_pem == old[PKI / "ca.crt"]


def test_complete_tree_is_kept_as_it_is(default_bundle: pki.PkiBundle) -> None:
    bundle = pki.build_certificates(load_config("defaults.yaml"), NOW, files_of(default_bundle))
    assert bundle.artifacts == []
    assert set(bundle.reused) == set(files_of(default_bundle))


def test_external_ca_mode_uses_existing_leaves(default_bundle: pki.PkiBundle) -> None:
    existing = files_of(default_bundle)
    del existing[PKI / "ca.key"]
    bundle = pki.build_certificates(load_config("defaults.yaml"), NOW, existing)
    assert bundle.external_cas == ["ca"]
    assert bundle.artifacts == []
    assert bundle.ca_key_pem is None


def test_external_ca_mode_requires_the_leaves(default_bundle: pki.PkiBundle) -> None:
    existing = files_of(default_bundle)
    del existing[PKI / "ca.key"], existing[PKI / "apiserver.crt"], existing[PKI / "apiserver.key"]
    with pytest.raises(PkiError, match=r"external CA mode: ca\.key is absent.*/etc/kubernetes/pki/apiserver\.crt"):
        pki.build_certificates(load_config("defaults.yaml"), NOW, existing)


def test_front_proxy_external_ca_only_affects_its_own_leaf(default_bundle: pki.PkiBundle) -> None:
    old = files_of(default_bundle)
    keep = ("front-proxy-ca.crt", "front-proxy-client.crt", "front-proxy-client.key")
    bundle = pki.build_certificates(load_config("defaults.yaml"), NOW, {PKI / k: old[PKI / k] for k in keep})
    assert bundle.external_cas == ["front-proxy-ca"]
    written = {a.path.name for a in bundle.artifacts if a.path.parent == PKI}
    assert "ca.crt" in written and "front-proxy-client.crt" not in written and "front-proxy-ca.key" not in written


def test_mismatched_ca_key_is_an_error(default_bundle: pki.PkiBundle) -> None:
    other = pki.build_certificates(make_config(external_etcd=True), NOW, {})
    existing = {
        PKI / "ca.crt": files_of(default_bundle)[PKI / "ca.crt"],
        PKI / "ca.key": files_of(other)[PKI / "ca.key"],
    }
    with pytest.raises(PkiError) as err:
        pki.build_certificates(load_config("defaults.yaml"), NOW, existing)
    text = str(err.value)
    assert "/etc/kubernetes/pki/ca.key does not belong to /etc/kubernetes/pki/ca.crt" in text
    assert "\n" not in text and err.value.hint


def test_ca_key_without_ca_cert_is_an_error(default_bundle: pki.PkiBundle) -> None:
    existing = {PKI / "ca.key": files_of(default_bundle)[PKI / "ca.key"]}
    with pytest.raises(PkiError, match=r"ca\.key exists but /etc/kubernetes/pki/ca\.crt does not"):
        pki.build_certificates(load_config("defaults.yaml"), NOW, existing)


def test_leaf_as_ca_cert_is_refused(default_bundle: pki.PkiBundle) -> None:
    old = files_of(default_bundle)
    existing = {PKI / "ca.crt": old[PKI / "apiserver.crt"], PKI / "ca.key": old[PKI / "apiserver.key"]}
    with pytest.raises(PkiError, match="is not a CA certificate"):
        pki.build_certificates(load_config("defaults.yaml"), NOW, existing)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_broken_pem_names_the_file(default_bundle: pki.PkiBundle, damage: str) -> None:
    existing = files_of(default_bundle)
    good = existing[PKI / "etcd/ca.crt"]
    existing[PKI / "etcd/ca.crt"] = {
        "truncate": good[: len(good) // 2],
        "garbage": b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
        "empty": b"",
    }[damage]
    with pytest.raises(PkiError, match=r"^/etc/kubernetes/pki/etcd/ca\.crt (does not hold|is empty|is not PEM)"):
        pki.build_certificates(load_config("defaults.yaml"), NOW, existing)


def test_truncated_key_names_the_file(default_bundle: pki.PkiBundle) -> None:
    existing = files_of(default_bundle)
    existing[PKI / "sa.key"] = existing[PKI / "sa.key"][:200]
    with pytest.raises(PkiError, match=r"/etc/kubernetes/pki/sa\.key does not hold a readable PEM private key"):
        pki.build_certificates(load_config("defaults.yaml"), NOW, existing)


def test_leaf_missing_required_sans_is_an_error(default_bundle: pki.PkiBundle) -> None:
    cfg = load_config("defaults.yaml")
    cfg = replace(cfg, cluster=replace(cfg.cluster, api_server=APIServer(cert_sans=("api.example.com",))))
    with pytest.raises(PkiError, match=r"apiserver\.crt lacks SANs the configuration requires: DNS:api\.example\.com"):
        pki.build_certificates(cfg, NOW, files_of(default_bundle))


def test_leaf_of_another_ca_is_an_error(default_bundle: pki.PkiBundle) -> None:
    other = files_of(pki.build_certificates(make_config(external_etcd=True), NOW, {}))
    existing = files_of(default_bundle)
    existing[PKI / "apiserver.crt"], existing[PKI / "apiserver.key"] = (
        other[PKI / "apiserver.crt"],
        other[PKI / "apiserver.key"],
    )
    with pytest.raises(PkiError, match=r"apiserver\.crt is not signed by ca"):
        pki.build_certificates(load_config("defaults.yaml"), NOW, existing)


def test_leaf_with_half_missing_is_an_error(default_bundle: pki.PkiBundle) -> None:
    existing = files_of(default_bundle)
    del existing[PKI / "front-proxy-client.key"]
    with pytest.raises(PkiError, match=r"front-proxy-client\.key is missing while its partner exists"):
        pki.build_certificates(load_config("defaults.yaml"), NOW, existing)


def test_expired_reused_leaf_is_a_warning(default_bundle: pki.PkiBundle) -> None:
    bundle = pki.build_certificates(load_config("defaults.yaml"), NOW + timedelta(days=400), files_of(default_bundle))
    assert bundle.artifacts == []
    assert any(w.startswith("/etc/kubernetes/pki/apiserver.crt has expired") for w in bundle.warnings)


def test_existing_sa_key_is_reused_and_sa_pub_derived(default_bundle: pki.PkiBundle) -> None:
    old = files_of(default_bundle)
    bundle = pki.build_certificates(load_config("defaults.yaml"), NOW, {PKI / "sa.key": old[PKI / "sa.key"]})
    new = files_of(bundle)
    assert PKI / "sa.key" not in new and PKI / "sa.key" in bundle.reused
    assert new[PKI / "sa.pub"] == old[PKI / "sa.pub"]


def test_sa_pub_of_another_key_is_an_error(default_bundle: pki.PkiBundle) -> None:
    other = files_of(pki.build_certificates(make_config(external_etcd=True), NOW, {}))
    existing = {PKI / "sa.key": files_of(default_bundle)[PKI / "sa.key"], PKI / "sa.pub": other[PKI / "sa.pub"]}
    with pytest.raises(PkiError, match=r"sa\.pub does not belong to /etc/kubernetes/pki/sa\.key"):
        pki.build_certificates(load_config("defaults.yaml"), NOW, existing)


def test_invalid_control_plane_endpoint_is_a_config_error() -> None:
    from kuberevive.errors import ConfigError

    with pytest.raises(ConfigError, match="controlPlaneEndpoint"):
        pki.apiserver_alt_names(make_config(cpe="Bad_Host:6443"))
