"""``pki.extend_ca``: the same CA key and identity, a new validity; every leaf the old CA signed still verifies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from kuberevive.core import pki
from kuberevive.errors import PkiError
from kuberevive.model.config import EncryptionAlgorithm
from tests.unit.test_pki import PKI, make_config

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
TEN_YEARS = timedelta(hours=87600)
CAS = {"ca.crt": "ca.key", "front-proxy-ca.crt": "front-proxy-ca.key", "etcd/ca.crt": "etcd/ca.key"}


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module", params=[EncryptionAlgorithm.RSA_2048, EncryptionAlgorithm.ECDSA_P256])
def bundle(request: pytest.FixtureRequest) -> dict[PurePosixPath, bytes]:
    b = pki.build_certificates(make_config(algorithm=request.param), NOW, {})
    return {a.path: a.content for a in b.artifacts}


def _load(files: dict[PurePosixPath, bytes], rel: str) -> x509.Certificate:
    return pki.load_certificate(files[PKI / rel], rel)


@pytest.mark.parametrize("ca_rel", sorted(CAS))
@pytest.mark.parametrize("when", [NOW + timedelta(days=1), NOW + timedelta(days=3660 * 2)], ids=["valid", "expired"])
def test_extended_ca_keeps_identity_and_verifies_every_old_leaf(
    bundle: dict[PurePosixPath, bytes], ca_rel: str, when: datetime
) -> None:
    old = _load(bundle, ca_rel)
    key = pki.load_private_key(bundle[PKI / CAS[ca_rel]], CAS[ca_rel])
    new = pki.extend_ca(old, key, when, TEN_YEARS)
    assert pki.is_expired(old, when) is (when > NOW + TEN_YEARS)
    assert new.subject.public_bytes() == old.subject.public_bytes()
    assert new.issuer.public_bytes() == old.issuer.public_bytes()
    assert _spki(new) == _spki(old)
    assert new.serial_number != old.serial_number
    assert list(new.extensions) == list(old.extensions)  # SKI, AKI (if any), basic constraints, key usages, SAN
    assert new.signature_algorithm_oid == old.signature_algorithm_oid
    assert new.not_valid_before_utc == old.not_valid_before_utc
    assert new.not_valid_after_utc == (when + TEN_YEARS).replace(microsecond=0)
    assert pki.verify_signed_by(new, new)
    signed = [
        pki.load_certificate(data, str(path))
        for path, data in bundle.items()
        if path.suffix == ".crt" and path.relative_to(PKI).as_posix() not in CAS
    ]
    leaves = [c for c in signed if pki.verify_signed_by(c, old)]
    assert leaves, "the bundle has leaves signed by this CA"
    for leaf in leaves:
        assert pki.verify_signed_by(leaf, new)
        leaf.verify_directly_issued_by(new)  # raises if not
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        assert aki == new.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def test_a_ca_without_key_identifiers_keeps_having_none() -> None:
    """CAs from kubeadm before Go 1.15 have no SKI (and their leaves no AKI): nothing is added."""
    key = pki.generate_private_key(EncryptionAlgorithm.RSA_2048)
    subject = pki.build_subject("kubernetes")
    old = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    new = pki.extend_ca(old, key, NOW + timedelta(days=2), TEN_YEARS)
    assert [e.oid for e in new.extensions] == [x509.oid.ExtensionOID.BASIC_CONSTRAINTS]


def test_the_wrong_key_or_a_leaf_is_refused(bundle: dict[PurePosixPath, bytes]) -> None:
    ca = _load(bundle, "ca.crt")
    other = pki.load_private_key(bundle[PKI / "front-proxy-ca.key"], "front-proxy-ca.key")
    with pytest.raises(PkiError, match="does not belong"):
        pki.extend_ca(ca, other, NOW, TEN_YEARS)
    leaf = _load(bundle, "apiserver.crt")
    leaf_key = pki.load_private_key(bundle[PKI / "apiserver.key"], "apiserver.key")
    with pytest.raises(PkiError, match="not a self-signed CA"):
        pki.extend_ca(leaf, leaf_key, NOW, TEN_YEARS)
    key = pki.load_private_key(bundle[PKI / "ca.key"], "ca.key")
    with pytest.raises(PkiError, match="positive"):
        pki.extend_ca(ca, key, NOW, timedelta(0))


def test_rewrites_put_the_new_ca_in_kubeconfigs_and_bundles_and_leave_others(
    bundle: dict[PurePosixPath, bytes],
) -> None:
    from kuberevive.core import caextend, kubeconfig

    ca_path, fp_path = PKI / "ca.crt", PKI / "front-proxy-ca.crt"
    old = _load(bundle, "ca.crt")
    key = pki.load_private_key(bundle[PKI / "ca.key"], "ca.key")
    ext = caextend.Extended("ca", ca_path, old, pki.extend_ca(old, key, NOW, TEN_YEARS))
    conf = kubeconfig.render_kubeconfig("kubernetes", "https://x:6443", bundle[ca_path], "u", b"c", b"k").encode()
    other_bundle = bundle[fp_path] + b"# a comment\n" + bundle[ca_path]
    files = {
        ca_path: (bundle[ca_path], 0o100644),
        fp_path: (bundle[fp_path], 0o100644),
        PurePosixPath("/etc/kubernetes/kubelet.conf"): (conf, 0o100600),
        PurePosixPath("/etc/kubernetes/client-ca.pem"): (other_bundle, 0o100640),
    }
    out = {a.path: a for a in caextend.rewrites(files, [ext])}
    assert set(out) == {
        ca_path,
        PurePosixPath("/etc/kubernetes/kubelet.conf"),
        PurePosixPath("/etc/kubernetes/client-ca.pem"),
    }
    assert out[ca_path].content == ext.new_pem
    doc = kubeconfig.Kubeconfig.from_yaml(out[PurePosixPath("/etc/kubernetes/kubelet.conf")].content)
    assert doc.current()[0].certificate_authority_data == ext.new_pem
    assert out[PurePosixPath("/etc/kubernetes/kubelet.conf")].mode == 0o600
    pem = out[PurePosixPath("/etc/kubernetes/client-ca.pem")]
    assert pem.content == bundle[fp_path] + b"# a comment\n" + ext.new_pem and pem.mode == 0o640
    # on a node without the CA keys (a worker) its copy of ca.crt is a bundle like any other
    worker = caextend.rewrites({ca_path: (bundle[ca_path], 0o100644)}, [ext], with_cas=False)
    assert [(a.path, a.content) for a in worker] == [(ca_path, ext.new_pem)]
    # once rewritten, nothing more to do
    again = {p: (a.content, a.mode) for p, a in out.items()}
    assert caextend.rewrites(again, [ext], with_cas=False) == []


def test_a_kubeconfig_nested_too_deep_is_one_clear_error_not_a_recursion_error() -> None:
    from pathlib import PurePosixPath

    from kuberevive.core.caextend import replace_in_kubeconfig
    from kuberevive.errors import PlanError

    with pytest.raises(PlanError, match="is not a readable kubeconfig"):
        replace_in_kubeconfig(PurePosixPath("/etc/kubernetes/admin.conf"), b"[" * 100_000, [])
