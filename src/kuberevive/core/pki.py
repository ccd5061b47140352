"""The kubeadm PKI as pure functions: keys, certificates and the files ``kubeadm init`` writes under pki/.

Entry point for the generate command::

    bundle = build_certificates(cfg, now, existing)
    # bundle.artifacts  files to write (key before cert), absolute node paths under certificatesDir
    # bundle.reused     files already on the node that were kept
    # bundle.external_cas  CAs present without their key (external-CA mode)
    # bundle.ca_cert_pem / bundle.ca_key_pem  the cluster CA, for kuberevive.core.kubeconfig

``existing`` maps absolute node paths (``<certificatesDir>/ca.crt`` ...) to the bytes of files that are
already on the node; only the PKI paths are looked at. ``now`` stands for kubeadm's process start time.
Nothing here touches the disk or the network; randomness comes from ``cryptography`` (keys) and
``secrets`` (serial numbers).

Checked against the real kubeadm v1.33.13 binary (tests/integration/test_pki_openssl.py): same files, modes,
PEM types, and the same certificates field by field (only serials, keys, key ids, signatures and dates differ).
Note: apiserver-kubelet-client has no O in v1.33, v1.36 and v1.37, and O=kubeadm:cluster-admins in the other minors
(core/versions.py; spec §2.2 said ``kubeadm:cluster-admins``).

Inspection helpers for diagnose/recover: :func:`load_certificate`, :func:`load_private_key`,
:func:`key_matches_certificate`, :func:`verify_signed_by`, :func:`certificate_alt_names`,
:func:`certificate_usages`, :func:`discovery_token_ca_cert_hash`; detached signatures (backups):
:func:`sign_sha256`, :func:`verify_sha256_signature`.

kubeadm vs. kuberevive
======================
==============================  ========================================  =============================================
topic                           kubeadm v1.33                             kuberevive
==============================  ========================================  =============================================
CA cert + key on disk           reused; key/cert match not checked        reused; a key that does not match -> PkiError
CA cert without key             external-CA mode                          same (``external_cas``); leaves must exist
CA key unreadable               treated like "no key" (external CA)       PkiError naming the file
leaf cert/key present           kept if chain and SANs fit, else error    same, and the key must match the cert
sa.key present, sa.pub missing  sa.pub is not written                     sa.pub derived from sa.key and written
sa.pub not matching sa.key      not checked                               PkiError
expired cert reused             warning                                   warning (``warnings``)
subject string type             PrintableString when possible (Go asn1)   same
==============================  ========================================  =============================================
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kuberevive.core import versions
from kuberevive.core.netaddr import (
    IPAddress,
    advertise_ip,
    is_dns1123_subdomain,
    is_wildcard_dns1123_subdomain,
    parse_ip_sloppy,
    split_host_port,
)
from kuberevive.errors import PkiError
from kuberevive.model.artifacts import Artifact, ArtifactKind
from kuberevive.model.config import EncryptionAlgorithm, KubeadmConfig

# cryptography warns about a common name longer than RFC 5280's 64 characters whenever such a name is built or
# read back; kubeadm (Go) writes them for long node names, so they are expected here (see _name_attribute).
warnings.filterwarnings("ignore", message="Attribute's length must be", category=UserWarning)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

CERTIFICATE_BACKDATE = timedelta(minutes=5)
"""kubeadm ``CertificateBackdate``: NotBefore = start − 5 min for every CA and leaf of the cert list."""

MODE_CERT = 0o644
MODE_KEY = 0o600
MODE_PUBLIC_KEY = 0o600
"""sa.pub goes through client-go's key writer, hence 0600 (spec §1.2)."""

_MAX_SERIAL = (1 << 63) - 1  # Go math.MaxInt64; serials are uniform in [1, MaxInt64)

CLUSTER_ADMINS_GROUP = "kubeadm:cluster-admins"


class KeyUsage:
    """Names used in :class:`CertUsages` (OpenSSL spelling is mapped in the integration tests)."""

    DIGITAL_SIGNATURE = "digitalSignature"
    KEY_ENCIPHERMENT = "keyEncipherment"
    KEY_CERT_SIGN = "keyCertSign"
    SERVER_AUTH = "serverAuth"
    CLIENT_AUTH = "clientAuth"


_EKU_OIDS = {
    KeyUsage.SERVER_AUTH: ExtendedKeyUsageOID.SERVER_AUTH,
    KeyUsage.CLIENT_AUTH: ExtendedKeyUsageOID.CLIENT_AUTH,
}
_EKU_NAMES = {oid: name for name, oid in _EKU_OIDS.items()}


# --------------------------------------------------------------------------------------------- SANs


@dataclass(frozen=True)
class AltNames:
    """Subject alternative names, normalised as kubeadm does: DNS sorted and unique, IPs unique in order."""

    dns: tuple[str, ...] = ()
    ips: tuple[IPAddress, ...] = ()
    rejected: tuple[str, ...] = ()
    """Extra SANs from the configuration that are neither an IP nor a DNS name (kubeadm warns and drops)."""

    @classmethod
    def normalised(cls, dns: list[str], ips: list[IPAddress], rejected: tuple[str, ...] = ()) -> AltNames:
        """kubeadm ``RemoveDuplicateAltNames``: DNS de-duplicated and sorted, IPs de-duplicated keeping order."""
        seen: set[str] = set()
        unique_ips: list[IPAddress] = []
        for ip in ips:
            if str(ip) not in seen:
                seen.add(str(ip))
                unique_ips.append(ip)
        return cls(tuple(sorted(set(dns))), tuple(unique_ips), rejected)

    def missing_from(self, other: AltNames) -> list[str]:
        """Entries of ``self`` that ``other`` lacks (as ``DNS:x`` / ``IP:y``)."""
        have_ips = {str(ip) for ip in other.ips}
        return [f"DNS:{d}" for d in self.dns if d not in other.dns] + [
            f"IP:{ip}" for ip in self.ips if str(ip) not in have_ips
        ]


def _classify_extra_sans(sans: tuple[str, ...], dns: list[str], ips: list[IPAddress]) -> tuple[str, ...]:
    """kubeadm ``appendSANsToAltNames``: IP, else DNS-1123 subdomain, else wildcard; others are returned."""
    rejected: list[str] = []
    for san in sans:
        ip = parse_ip_sloppy(san)
        if ip is not None:
            ips.append(ip)
        elif is_dns1123_subdomain(san) or is_wildcard_dns1123_subdomain(san):
            dns.append(san)
        else:
            rejected.append(san)
    return tuple(rejected)


def apiserver_alt_names(cfg: KubeadmConfig) -> AltNames:
    """SANs of apiserver.crt (kubeadm ``GetAPIServerAltNames``, spec §2.3)."""
    c = cfg.cluster
    dns = [
        cfg.node_name,
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{c.networking.dns_domain}",
    ]
    ips: list[IPAddress] = [c.networking.apiserver_virtual_ip, advertise_ip(cfg.advertise_address)]
    if c.control_plane_endpoint:
        host, _ = split_host_port(c.control_plane_endpoint)
        host_ip = parse_ip_sloppy(host)
        if host_ip is not None:
            ips.append(host_ip)
        else:
            dns.append(host)
    rejected = _classify_extra_sans(c.api_server.cert_sans, dns, ips)
    return AltNames.normalised(dns, ips, rejected)


def _etcd_alt_names(cfg: KubeadmConfig, extra: Callable[[KubeadmConfig], tuple[str, ...]]) -> AltNames:
    dns = [cfg.node_name, "localhost"]
    ips: list[IPAddress] = [
        advertise_ip(cfg.advertise_address),
        ipaddress.IPv4Address("127.0.0.1"),
        ipaddress.IPv6Address("::1"),
    ]
    rejected = _classify_extra_sans(extra(cfg), dns, ips)
    return AltNames.normalised(dns, ips, rejected)


def etcd_server_alt_names(cfg: KubeadmConfig) -> AltNames:
    """SANs of etcd/server.crt (kubeadm ``getAltNames`` + etcd.local.serverCertSANs)."""
    return _etcd_alt_names(cfg, lambda c: c.cluster.etcd_local.server_cert_sans if c.cluster.etcd_local else ())


def etcd_peer_alt_names(cfg: KubeadmConfig) -> AltNames:
    """SANs of etcd/peer.crt (kubeadm ``getAltNames`` + etcd.local.peerCertSANs)."""
    return _etcd_alt_names(cfg, lambda c: c.cluster.etcd_local.peer_cert_sans if c.cluster.etcd_local else ())


# ------------------------------------------------------------------------------------- cert table


@dataclass(frozen=True)
class CertSpec:
    """One row of the kubeadm certificate list (spec §2.2)."""

    name: str
    """kubeadm's name for the cert (``etcd-server``), used in messages."""
    base_name: str
    """File base name relative to certificatesDir (``etcd/server`` -> etcd/server.crt + .key)."""
    common_name: Callable[[KubeadmConfig], str]
    organization: tuple[str, ...] = ()
    usages: tuple[str, ...] = ()
    """Extended key usages, in order; empty for CAs."""
    signer: str | None = None
    """Name of the CA spec that signs it; None for a self-signed CA."""
    alt_names: Callable[[KubeadmConfig], AltNames] | None = None
    etcd: bool = False
    """Only with local etcd."""

    @property
    def is_ca(self) -> bool:
        return self.signer is None

    def cert_path(self, certificates_dir: str) -> PurePosixPath:
        return PurePosixPath(certificates_dir) / f"{self.base_name}.crt"

    def key_path(self, certificates_dir: str) -> PurePosixPath:
        return PurePosixPath(certificates_dir) / f"{self.base_name}.key"


def _const(value: str) -> Callable[[KubeadmConfig], str]:
    return lambda _cfg: value


CERT_SPECS: tuple[CertSpec, ...] = (
    CertSpec("ca", "ca", _const("kubernetes")),
    CertSpec(
        "apiserver",
        "apiserver",
        _const("kube-apiserver"),
        usages=(KeyUsage.SERVER_AUTH,),
        signer="ca",
        alt_names=apiserver_alt_names,
    ),
    CertSpec(
        "apiserver-kubelet-client",
        "apiserver-kubelet-client",
        _const("kube-apiserver-kubelet-client"),
        usages=(KeyUsage.CLIENT_AUTH,),
        signer="ca",
    ),
    CertSpec("front-proxy-ca", "front-proxy-ca", _const("front-proxy-ca")),
    CertSpec(
        "front-proxy-client",
        "front-proxy-client",
        _const("front-proxy-client"),
        usages=(KeyUsage.CLIENT_AUTH,),
        signer="front-proxy-ca",
    ),
    CertSpec("etcd-ca", "etcd/ca", _const("etcd-ca"), etcd=True),
    CertSpec(
        "etcd-server",
        "etcd/server",
        lambda cfg: cfg.node_name,
        usages=(KeyUsage.SERVER_AUTH, KeyUsage.CLIENT_AUTH),
        signer="etcd-ca",
        alt_names=etcd_server_alt_names,
        etcd=True,
    ),
    CertSpec(
        "etcd-peer",
        "etcd/peer",
        lambda cfg: cfg.node_name,
        usages=(KeyUsage.SERVER_AUTH, KeyUsage.CLIENT_AUTH),
        signer="etcd-ca",
        alt_names=etcd_peer_alt_names,
        etcd=True,
    ),
    CertSpec(
        "etcd-healthcheck-client",
        "etcd/healthcheck-client",
        _const("kube-etcd-healthcheck-client"),
        usages=(KeyUsage.CLIENT_AUTH,),
        signer="etcd-ca",
        etcd=True,
    ),
    CertSpec(
        "apiserver-etcd-client",
        "apiserver-etcd-client",
        _const("kube-apiserver-etcd-client"),
        usages=(KeyUsage.CLIENT_AUTH,),
        signer="etcd-ca",
        etcd=True,
    ),
)
"""kubeadm's cert list in its order (certlist ``GetDefaultCertList``)."""


def certificate_specs(cfg: KubeadmConfig) -> tuple[CertSpec, ...]:
    """The certs ``kubeadm init`` of the configuration's minor creates: without the etcd rows when etcd is
    external; apiserver-kubelet-client with O=kubeadm:cluster-admins in the minors that set it (versions.py)."""
    specs = tuple(s for s in CERT_SPECS if not (s.etcd and cfg.cluster.is_external_etcd))
    if versions.profile(cfg.cluster.kubernetes_version).apiserver_kubelet_client_org:
        specs = tuple(
            replace(s, organization=(CLUSTER_ADMINS_GROUP,)) if s.name == "apiserver-kubelet-client" else s
            for s in specs
        )
    return specs


def cert_spec(name: str) -> CertSpec:
    """The spec called ``name`` (``ca``, ``etcd-server`` ...)."""
    for spec in CERT_SPECS:
        if spec.name == name:
            return spec
    raise KeyError(name)


# ----------------------------------------------------------------------------------- keys and PEM


@dataclass
class _SpareKeys:
    """Keys made ahead of need by :func:`make_spare_keys`, for :func:`generate_private_key` to hand out."""

    keys: dict[EncryptionAlgorithm, list[PrivateKey]] = field(default_factory=dict)
    wanted: dict[EncryptionAlgorithm, int] = field(default_factory=dict)
    """How many more of each algorithm may still be made ahead (a key made on demand counts too)."""
    making: dict[EncryptionAlgorithm, int] = field(default_factory=dict)
    """How many of each algorithm a thread is making now."""
    generation: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)
    """Held to read or change the above; notified when a key is ready or the making stops."""


_spare = _SpareKeys()
#: How long :func:`generate_private_key` waits at most for a key a thread is making (one RSA-2048 key: 50-150 ms of
#: CPU; more on a loaded machine) before it makes one itself.
SPARE_KEY_WAIT = 2.0


def generate_private_key(algorithm: EncryptionAlgorithm) -> PrivateKey:
    """A new key for ``encryptionAlgorithm`` (RSA exponent 65537, ECDSA on P-256): one made ahead by
    :func:`make_spare_keys` when there is one (each is handed out once), else the one a thread is making now when
    there is one (making another here would only compete with it for the CPU), else made now."""
    with _spare.changed:
        ready = _spare.changed.wait_for(
            lambda: _spare.keys.get(algorithm) or not _spare.making.get(algorithm), SPARE_KEY_WAIT
        )
        if ready and _spare.keys.get(algorithm):
            return _spare.keys[algorithm].pop(0)
        if _spare.wanted.get(algorithm, 0) > 0:
            _spare.wanted[algorithm] -= 1  # made here instead: one fewer to make ahead
    return _new_private_key(algorithm)


def make_spare_keys(algorithm: EncryptionAlgorithm, count: int) -> None:
    """Make up to ``count`` keys for :func:`generate_private_key` to hand out later; meant for a background thread
    started while the caller waits for something else (an RSA-2048 key takes 50-150 ms of CPU, a recovery needs
    16 before the API server can start). Fewer are made when keys are asked for meanwhile (each key made on
    demand takes the place of one made ahead), none once :func:`drop_spare_keys` was called. Safe: the keys come
    from the same generator as those made on demand, each is handed out once, and they live in this process's
    memory only until used or dropped."""
    make_reserved_keys(algorithm, reserve_spare_keys(algorithm, count))


def reserve_spare_keys(algorithm: EncryptionAlgorithm, count: int) -> int:
    """Count ``count`` more keys of ``algorithm`` as to be made ahead (:func:`spare_keys_pending` says so at once,
    before a thread runs :func:`make_reserved_keys`); the generation to pass it."""
    with _spare.changed:
        _spare.wanted[algorithm] = _spare.wanted.get(algorithm, 0) + count
        return _spare.generation


def make_reserved_keys(algorithm: EncryptionAlgorithm, generation: int) -> None:
    """Make keys of ``algorithm`` while some are reserved (:func:`reserve_spare_keys`) and none were dropped since
    ``generation``; several threads may share the work."""
    while True:
        with _spare.changed:
            if _spare.generation != generation or _spare.wanted.get(algorithm, 0) <= 0:
                return
            _spare.wanted[algorithm] -= 1
            _spare.making[algorithm] = _spare.making.get(algorithm, 0) + 1
        key: PrivateKey | None = None
        try:
            key = _new_private_key(algorithm)
        finally:
            with _spare.changed:  # one change: a waiting caller sees the key ready, or none being made
                if _spare.generation == generation:
                    _spare.making[algorithm] -= 1
                    if key is not None:
                        _spare.keys.setdefault(algorithm, []).append(key)
                    _spare.changed.notify_all()


def spare_keys_pending(algorithm: EncryptionAlgorithm) -> int:
    """How many keys of ``algorithm`` are ready, being made or still to be made ahead."""
    with _spare.changed:
        return (
            len(_spare.keys.get(algorithm, ()))
            + _spare.making.get(algorithm, 0)
            + max(0, _spare.wanted.get(algorithm, 0))
        )


def drop_spare_keys() -> int:
    """Forget every key made ahead and not handed out, and stop making more; how many were dropped."""
    with _spare.changed:
        dropped = sum(len(v) for v in _spare.keys.values())
        _spare.keys.clear()
        _spare.wanted.clear()
        _spare.making.clear()
        _spare.generation += 1
        _spare.changed.notify_all()
    return dropped


def _new_private_key(algorithm: EncryptionAlgorithm) -> PrivateKey:
    if algorithm is EncryptionAlgorithm.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    bits = algorithm.rsa_bits
    if bits is None:  # pragma: no cover - the enum has no other members
        raise PkiError(f"unsupported encryptionAlgorithm {algorithm.value}")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def encode_private_key_pem(key: PrivateKey) -> bytes:
    """client-go ``MarshalPrivateKeyToPEM``: RSA -> ``RSA PRIVATE KEY`` (PKCS#1), EC -> ``EC PRIVATE KEY`` (SEC1).

    The PEM is remembered with its key (:func:`load_private_key` of it then needs no parsing)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    _remember_key(pem, key)
    return pem


def encode_public_key_pem(key: PublicKey) -> bytes:
    """``PUBLIC KEY`` block, PKIX SubjectPublicKeyInfo DER (sa.pub)."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def encode_certificate_pem(cert: x509.Certificate) -> bytes:
    """One ``CERTIFICATE`` block."""
    return cert.public_bytes(serialization.Encoding.PEM)


def _require_pem(data: bytes, source: str, what: str) -> None:
    if not data.strip():
        raise PkiError(f"{source} is empty", f"Restore {what} from a backup or move the file aside to regenerate it.")
    if b"-----BEGIN " not in data:
        raise PkiError(
            f"{source} is not PEM (no -----BEGIN line)",
            f"Restore {what} from a backup or move the file aside to regenerate it.",
        )


def load_certificate(data: bytes, source: str) -> x509.Certificate:
    """The first certificate of a PEM file (kubeadm takes the first of a bundle). ``source`` names the file."""
    _require_pem(data, source, "the certificate")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise PkiError(
            f"{source} does not hold a readable PEM certificate (truncated or corrupt: {exc})",
            "Restore it from a backup or move it aside so that it is regenerated.",
        ) from exc
    return certs[0]


#: Private keys already parsed (or made here), by their exact PEM bytes: at most this many are kept.
KEY_CACHE_SIZE = 64
_parsed_keys: dict[bytes, PrivateKey] = {}
_parsed_keys_lock = threading.Lock()  # re-trust threads load the CA key at once


def _remember_key(pem: bytes, key: PrivateKey) -> None:
    """Parsing a PEM private key is slow (OpenSSL checks an RSA key's consistency: about 30 ms for 2048 bits, three
    times that on a loaded machine) and a recovery loads the same few keys again and again (the CA's key for every
    kubeconfig and certificate it signs). The same bytes always parse to the same key, so the result of the first
    parse (or the key a PEM was made from) is reused: the bytes are the cache key, so a changed file is parsed anew.
    The keys stay in this process's memory only, where the run holds them anyway."""
    with _parsed_keys_lock:
        if len(_parsed_keys) >= KEY_CACHE_SIZE:
            del _parsed_keys[next(iter(_parsed_keys))]  # the oldest
        _parsed_keys[bytes(pem)] = key


def load_private_key(data: bytes, source: str) -> PrivateKey:
    """An RSA or ECDSA private key from PEM: PKCS#1, SEC1 or PKCS#8, unencrypted (parsed once per distinct PEM,
    see :func:`_remember_key`)."""
    with _parsed_keys_lock:
        known = _parsed_keys.get(bytes(data))
    if known is not None:
        return known
    _require_pem(data, source, "the key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise PkiError(
            f"{source} is an encrypted private key", "kubeadm needs unencrypted keys; decrypt it with openssl first."
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PkiError(
            f"{source} does not hold a readable PEM private key (truncated or corrupt)",
            "Restore it from a backup or move it aside so that it is regenerated.",
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise PkiError(f"{source} is neither an RSA nor an ECDSA key", "kubeadm accepts only RSA and ECDSA keys.")
    _remember_key(data, key)
    return key


def load_public_key(data: bytes, source: str) -> PublicKey:
    """An RSA or ECDSA public key from a ``PUBLIC KEY`` (or ``RSA PUBLIC KEY``) PEM block."""
    _require_pem(data, source, "the public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PkiError(
            f"{source} does not hold a readable PEM public key (truncated or corrupt)",
            "Restore it from a backup or move it aside so that it is regenerated.",
        ) from exc
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise PkiError(f"{source} is neither an RSA nor an ECDSA public key", "kubeadm accepts only RSA and ECDSA.")
    return key


def _spki_der(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_matches(private_key: PrivateKey, public_key: PublicKey) -> bool:
    """Whether ``public_key`` is the public half of ``private_key``."""
    return _spki_der(private_key.public_key()) == _spki_der(public_key)


def same_public_key(a: x509.Certificate, b: x509.Certificate) -> bool:
    """Whether two certificates hold the same public key."""
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_key().public_bytes(*spki) == b.public_key().public_bytes(*spki)


def key_matches_certificate(key: PrivateKey, cert: x509.Certificate) -> bool:
    """Whether ``cert`` carries the public half of ``key``."""
    cert_key = cert.public_key()
    if not isinstance(cert_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return False
    return public_key_matches(key, cert_key)


def verify_signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Whether ``ca_cert`` issued ``cert``: issuer name equals the CA subject and the signature verifies."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def sign_sha256(key: PrivateKey, data: bytes) -> bytes:
    """A detached signature of ``data``: RSA PKCS#1 v1.5 or ECDSA (DER), both over SHA-256.

    The same bytes ``openssl dgst -sha256 -sign key.pem`` writes, so ``openssl dgst -sha256 -verify`` checks them.
    """
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    try:  # RFC 6979 where the OpenSSL has it: the same bytes for the same data (reproducible backups)
        return key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    except (TypeError, UnsupportedAlgorithm):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify_sha256_signature(cert: x509.Certificate, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is :func:`sign_sha256` of ``data`` by the key of ``cert``."""
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def is_ca_certificate(cert: x509.Certificate) -> bool:
    """Basic constraints say CA:TRUE (Go's ``IsCA``)."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def certificate_alt_names(cert: x509.Certificate) -> AltNames:
    """DNS names and IP addresses of the SAN extension (empty if absent), in certificate order."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return AltNames()
    ips: list[IPAddress] = [ip for ip in san.get_values_for_type(x509.IPAddress) if isinstance(ip, IPAddress)]
    return AltNames(tuple(san.get_values_for_type(x509.DNSName)), tuple(ips))


@dataclass(frozen=True)
class CertUsages:
    """Key usages and extended key usages of a certificate, by the names of :class:`KeyUsage`."""

    key_usages: frozenset[str]
    extended: tuple[str, ...]
    """EKU names in certificate order; unknown OIDs as dotted strings."""


def certificate_usages(cert: x509.Certificate) -> CertUsages:
    """What the certificate may be used for."""
    ku: set[str] = set()
    try:
        k = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if k.digital_signature:
            ku.add(KeyUsage.DIGITAL_SIGNATURE)
        if k.key_encipherment:
            ku.add(KeyUsage.KEY_ENCIPHERMENT)
        if k.key_cert_sign:
            ku.add(KeyUsage.KEY_CERT_SIGN)
    except x509.ExtensionNotFound:
        pass
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        extended = tuple(_EKU_NAMES.get(oid, oid.dotted_string) for oid in eku)
    except x509.ExtensionNotFound:
        extended = ()
    return CertUsages(frozenset(ku), extended)


def certificate_validity(cert: x509.Certificate) -> tuple[datetime, datetime]:
    """(NotBefore, NotAfter) as aware UTC datetimes."""
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def discovery_token_ca_cert_hash(cert: x509.Certificate) -> str:
    """kubeadm ``pubkeypin.Hash``: ``sha256:`` + hex SHA-256 of the DER SubjectPublicKeyInfo (spec §5.8)."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


# ------------------------------------------------------------------------------------ signing


_PRINTABLE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?*")


def _name_attribute(oid: x509.ObjectIdentifier, value: str) -> x509.NameAttribute[str]:
    # Go's encoding/asn1 writes PrintableString when every character allows it, else UTF8String.
    kind = _ASN1Type.PrintableString if set(value) <= _PRINTABLE else _ASN1Type.UTF8String
    if oid == NameOID.COMMON_NAME and len(value) > 64:
        # RFC 5280's ub-common-name (64) is not enforced by Go's crypto/x509, so kubeadm writes a kubelet
        # certificate "system:node:<name>" for any valid node name (up to 253 characters): so do we (G-C-nodename-*)
        return x509.NameAttribute(oid, value, _type=kind, _validate=False)
    return x509.NameAttribute(oid, value, _type=kind)


def build_subject(common_name: str, organization: tuple[str, ...] = ()) -> x509.Name:
    """Subject as Go's pkix writes it: one RDN per O value, then CN."""
    attrs = [_name_attribute(NameOID.ORGANIZATION_NAME, o) for o in organization]
    attrs.append(_name_attribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _signature_hash(ca_key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    """Go picks the hash from the signer key: RSA/P-256 -> SHA-256, P-384 -> SHA-384, P-521 -> SHA-512."""
    if isinstance(ca_key, ec.EllipticCurvePrivateKey):
        if ca_key.curve.key_size == 384:
            return hashes.SHA384()
        if ca_key.curve.key_size == 521:
            return hashes.SHA512()
    return hashes.SHA256()


def _serial() -> int:
    return secrets.randbelow(_MAX_SERIAL - 1) + 1


def _utc_seconds(t: datetime) -> datetime:
    """X.509 times hold whole seconds; a naive datetime is taken as UTC."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).replace(microsecond=0)


def new_self_signed_ca(
    common_name: str, key: PrivateKey, not_before: datetime, not_after: datetime
) -> x509.Certificate:
    """kubeadm ``NewSelfSignedCACert``: KU digitalSignature+keyEncipherment+keyCertSign, CA:TRUE, SKI, SAN DNS=CN."""
    subject = build_subject(common_name)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(_utc_seconds(not_before))
        .not_valid_after(_utc_seconds(not_after))
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(key, _signature_hash(key))
    )


def extend_ca(old: x509.Certificate, key: PrivateKey, now: datetime, validity: timedelta) -> x509.Certificate:
    """``old`` (a self-signed CA certificate, valid or expired) re-issued with the same key: the same subject and
    issuer, every extension exactly as it was (subject and authority key identifiers, basic constraints, key
    usages, SANs), a new serial, NotBefore the old one (so nothing valid under ``old`` becomes "not yet valid")
    and NotAfter ``now + validity``. Every certificate ``old`` signed verifies against the result."""
    if not key_matches_certificate(key, old):
        raise PkiError(f"the key does not belong to the CA certificate {old.subject.rfc4514_string()}")
    if old.issuer != old.subject or not verify_signed_by(old, old):
        raise PkiError(f"{old.subject.rfc4514_string()} is not a self-signed CA certificate; it cannot be extended")
    not_after = _utc_seconds(now + validity)
    if not_after <= _utc_seconds(now):
        raise PkiError("the new CA validity must be positive")
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.issuer)
        .public_key(key.public_key())
        .serial_number(_new_serial(old.serial_number))
        .not_valid_before(min(old.not_valid_before_utc, _utc_seconds(now - CERTIFICATE_BACKDATE)))
        .not_valid_after(not_after)
    )
    for ext in old.extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    return builder.sign(key, _signature_hash(key))


def _new_serial(old: int) -> int:
    while (serial := _serial()) == old:
        pass
    return serial


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def issue_certificate(
    *,
    common_name: str,
    organization: tuple[str, ...],
    usages: tuple[str, ...],
    public_key: PublicKey,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    not_before: datetime,
    not_after: datetime,
    alt_names: AltNames | None = None,
) -> x509.Certificate:
    """kubeadm ``NewSignedCert`` for a leaf: KU digitalSignature+keyEncipherment, CA:FALSE, EKUs, AKI, SANs.

    Extensions come in Go's order (KU, EKU, basic constraints, AKI, SAN); AKI is the CA's SKI when it has one.
    """
    builder = (
        x509.CertificateBuilder()
        .subject_name(build_subject(common_name, organization))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(_utc_seconds(not_before))
        .not_valid_after(_utc_seconds(not_after))
        .add_extension(_key_usage(ca=False), critical=True)
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage([_EKU_OIDS[u] for u in usages]), critical=False)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(x509.AuthorityKeyIdentifier(ski.digest, None, None), critical=False)
    except x509.ExtensionNotFound:
        pass
    if alt_names is not None and (alt_names.dns or alt_names.ips):
        general: list[x509.GeneralName] = [x509.DNSName(d) for d in alt_names.dns]
        general += [x509.IPAddress(ip) for ip in alt_names.ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    return builder.sign(ca_key, _signature_hash(ca_key))


# ------------------------------------------------------------------------------------ the bundle


@dataclass(frozen=True)
class Authority:
    """A CA as found or made: ``key`` is None in external-CA mode."""

    cert: x509.Certificate
    key: PrivateKey | None

    @property
    def cert_pem(self) -> bytes:
        return encode_certificate_pem(self.cert)

    @property
    def key_pem(self) -> bytes | None:
        return encode_private_key_pem(self.key) if self.key is not None else None


@dataclass
class PkiBundle:
    """Result of :func:`build_certificates`."""

    artifacts: list[Artifact] = field(default_factory=list)
    """Files to write, in kubeadm's order, key before cert."""
    reused: list[PurePosixPath] = field(default_factory=list)
    """Existing files that were kept as they are."""
    external_cas: list[str] = field(default_factory=list)
    """CA names (``ca``, ``front-proxy-ca``, ``etcd-ca``) found without their key: their leaves were not made."""
    warnings: list[str] = field(default_factory=list)
    """kubeadm prints these and goes on (dropped SANs, expired reused certs)."""
    expired: list[PurePosixPath] = field(default_factory=list)
    """Existing certificates kept although expired (CAs always; leaves unless ``renew_expired``)."""
    authorities: dict[str, Authority] = field(default_factory=dict)

    @property
    def ca(self) -> Authority:
        """The cluster CA (``ca``), needed for the kubeconfigs."""
        return self.authorities["ca"]

    @property
    def ca_cert_pem(self) -> bytes:
        return self.ca.cert_pem

    @property
    def ca_key_pem(self) -> bytes | None:
        """None in external-CA mode: kubeconfigs must then be supplied by the user."""
        return self.ca.key_pem


class _Existing:
    """Lookup of node files by absolute path, with parsing errors that name the file."""

    def __init__(self, files: Mapping[PurePosixPath, bytes]) -> None:
        self._files = {PurePosixPath(p): b for p, b in files.items()}

    def has(self, path: PurePosixPath) -> bool:
        return path in self._files

    def cert(self, path: PurePosixPath) -> x509.Certificate | None:
        return load_certificate(self._files[path], str(path)) if path in self._files else None

    def key(self, path: PurePosixPath) -> PrivateKey | None:
        return load_private_key(self._files[path], str(path)) if path in self._files else None

    def public_key(self, path: PurePosixPath) -> PublicKey | None:
        return load_public_key(self._files[path], str(path)) if path in self._files else None


def _check_period(cert: x509.Certificate, path: PurePosixPath, now: datetime, bundle: PkiBundle, renew: str) -> None:
    """Warn about a certificate that is kept although not valid now; ``renew`` says how to renew it."""
    if now < cert.not_valid_before_utc:
        bundle.warnings.append(f"{path} is not valid yet (NotBefore {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC)")
    elif now > cert.not_valid_after_utc:
        bundle.expired.append(path)
        bundle.warnings.append(
            f"{path} has expired (NotAfter {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC) and was kept; {renew}"
        )


def is_expired(cert: x509.Certificate, now: datetime) -> bool:
    return now > cert.not_valid_after_utc


def _cert_artifacts(spec: CertSpec, cert: x509.Certificate, key: PrivateKey, cdir: str, issuer: str) -> list[Artifact]:
    subject = cert.subject.rfc4514_string()
    key_pem, cert_pem = encode_private_key_pem(key), encode_certificate_pem(cert)
    return [
        Artifact(spec.key_path(cdir), MODE_KEY, ArtifactKind.PRIVATE_KEY, f"private key of {spec.name}", key_pem),
        Artifact(
            spec.cert_path(cdir), MODE_CERT, ArtifactKind.CERTIFICATE, f"{spec.name} ({subject}), {issuer}", cert_pem
        ),
    ]


def _load_authority(
    spec: CertSpec, cfg: KubeadmConfig, existing: _Existing, now: datetime, bundle: PkiBundle
) -> Authority | None:
    """The existing CA of ``spec`` (key None = external CA), or None when it must be created."""
    cdir = cfg.cluster.certificates_dir
    cert_path, key_path = spec.cert_path(cdir), spec.key_path(cdir)
    cert = existing.cert(cert_path)
    if cert is None:
        if existing.has(key_path):
            raise PkiError(
                f"{key_path} exists but {cert_path} does not",
                f"Restore {cert_path} from a backup, or move {key_path} aside to create a new {spec.name}.",
            )
        return None
    if not is_ca_certificate(cert):
        raise PkiError(
            f"{cert_path} is not a CA certificate (basic constraints lack CA:TRUE)",
            f"Restore the real {spec.name} certificate or move {cert_path} aside to create a new CA.",
        )
    _check_period(cert, cert_path, now, bundle, "a CA is never renewed in place: recover with a new CA instead")
    key = existing.key(key_path)
    bundle.reused.append(cert_path)
    if key is None:
        bundle.external_cas.append(spec.name)
        return Authority(cert, None)
    if not key_matches_certificate(key, cert):
        raise PkiError(
            f"{key_path} does not belong to {cert_path} (their public keys differ)",
            f"Put back the key that belongs to {cert_path}; if the CA must change, move both files aside.",
        )
    bundle.reused.append(key_path)
    return Authority(cert, key)


def _validate_existing_leaf(
    spec: CertSpec,
    cfg: KubeadmConfig,
    authority: Authority,
    existing: _Existing,
    now: datetime,
    bundle: PkiBundle,
    renew_expired: bool = False,
) -> bool:
    """True when the leaf exists and may be kept; False when it is absent (or expired and ``renew_expired``: it is
    then issued again, and the writer moves the old pair aside); PkiError when it is unusable."""
    cdir = cfg.cluster.certificates_dir
    cert_path, key_path = spec.cert_path(cdir), spec.key_path(cdir)
    if not existing.has(cert_path) and not existing.has(key_path):
        if authority.key is None:
            raise PkiError(
                f"external CA mode: {spec.signer}.key is absent, so {cert_path} and {key_path} must already exist",
                f"Provide them signed by {spec.signer}, or provide {spec.signer}.key so that kuberevive can sign them.",
            )
        return False
    missing = key_path if existing.has(cert_path) else cert_path
    cert, key = existing.cert(cert_path), existing.key(key_path)
    if cert is None or key is None:
        raise PkiError(
            f"{missing} is missing while its partner exists",
            f"Restore {missing} from a backup, or move the other file aside so that both are regenerated.",
        )
    if not key_matches_certificate(key, cert):
        raise PkiError(
            f"{key_path} does not belong to {cert_path}",
            "Move both files aside so that they are regenerated.",
        )
    if not verify_signed_by(cert, authority.cert):
        raise PkiError(
            f"{cert_path} is not signed by {spec.signer} ({spec.signer}.crt)",
            "Move the certificate and its key aside so that they are signed again by the current CA.",
        )
    if renew_expired and authority.key is not None and is_expired(cert, now):
        return False
    _check_period(cert, cert_path, now, bundle, "run again with --force to renew it (the old one is moved aside)")
    if spec.alt_names is not None:
        lacking = spec.alt_names(cfg).missing_from(certificate_alt_names(cert))
        if lacking:
            raise PkiError(
                f"{cert_path} lacks SANs the configuration requires: {', '.join(lacking)}",
                "Move the certificate and its key aside so that they are regenerated with the new SANs.",
            )
    bundle.reused.extend([cert_path, key_path])
    return True


def _service_account_keys(cfg: KubeadmConfig, existing: _Existing, bundle: PkiBundle) -> None:
    cdir = PurePosixPath(cfg.cluster.certificates_dir)
    key_path, pub_path = cdir / "sa.key", cdir / "sa.pub"
    key = existing.key(key_path)
    write_key = key is None
    if key is None:
        key = generate_private_key(cfg.cluster.encryption_algorithm)
        pub = None
    else:
        bundle.reused.append(key_path)
        pub = existing.public_key(pub_path)
        if pub is not None and not public_key_matches(key, pub):
            raise PkiError(
                f"{pub_path} does not belong to {key_path}",
                f"Move {pub_path} aside; kuberevive derives it again from {key_path}.",
            )
    if write_key:
        bundle.artifacts.append(
            Artifact(
                key_path, MODE_KEY, ArtifactKind.PRIVATE_KEY, "service-account signing key", encode_private_key_pem(key)
            )
        )
    if pub is None:
        bundle.artifacts.append(
            Artifact(
                pub_path,
                MODE_PUBLIC_KEY,
                ArtifactKind.PUBLIC_KEY,
                "service-account verification key",
                encode_public_key_pem(key.public_key()),
            )
        )
    else:
        bundle.reused.append(pub_path)


def build_certificates(
    cfg: KubeadmConfig,
    now: datetime,
    existing: Mapping[PurePosixPath, bytes] | None = None,
    renew_expired: bool = False,
    etcd_only: bool = False,
) -> PkiBundle:
    """Everything ``kubeadm init phase certs all`` would write for ``cfg`` at time ``now``, given ``existing``; with
    ``etcd_only``, what ``kubeadm init phase certs etcd-*`` and ``apiserver-etcd-client`` would (no other key is made:
    each costs 50-150 ms of CPU for RSA).

    CAs: NotBefore = now − 5 min, NotAfter = now + caCertificateValidityPeriod. Leaves: NotBefore = now − 5 min,
    NotAfter = now + certificateValidityPeriod, whatever CA signs them. Raises PkiError for unusable files.
    """
    now = _utc_seconds(now)
    files = _Existing(existing or {})
    bundle = PkiBundle()
    algorithm = cfg.cluster.encryption_algorithm
    not_before = now - CERTIFICATE_BACKDATE
    cdir = cfg.cluster.certificates_dir

    for spec in certificate_specs(cfg):
        if etcd_only and not spec.etcd:
            continue
        if spec.is_ca:
            authority = _load_authority(spec, cfg, files, now, bundle)
            if authority is None:
                key = generate_private_key(algorithm)
                cert = new_self_signed_ca(
                    spec.common_name(cfg), key, not_before, now + cfg.cluster.ca_certificate_validity
                )
                authority = Authority(cert, key)
                bundle.artifacts += _cert_artifacts(spec, cert, key, cdir, "self-signed CA")
            bundle.authorities[spec.name] = authority
            continue

        assert spec.signer is not None
        authority = bundle.authorities[spec.signer]
        if _validate_existing_leaf(spec, cfg, authority, files, now, bundle, renew_expired):
            continue
        assert authority.key is not None  # external CA without the leaf raised above
        alt_names = spec.alt_names(cfg) if spec.alt_names is not None else None
        if alt_names is not None and alt_names.rejected:
            bundle.warnings.append(
                f"{', '.join(alt_names.rejected)} not added to the {spec.name} SANs: "
                "neither an IP address nor an RFC 1123 DNS name"
            )
        key = generate_private_key(algorithm)
        cert = issue_certificate(
            common_name=spec.common_name(cfg),
            organization=spec.organization,
            usages=spec.usages,
            public_key=key.public_key(),
            ca_cert=authority.cert,
            ca_key=authority.key,
            not_before=not_before,
            not_after=now + cfg.cluster.certificate_validity,
            alt_names=alt_names,
        )
        bundle.artifacts += _cert_artifacts(spec, cert, key, cdir, f"signed by {spec.signer}")

    if not etcd_only:
        _service_account_keys(cfg, files, bundle)
    return bundle
