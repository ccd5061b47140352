"""``kuberevive certs check`` and the planning half of ``certs renew``, as pure functions.

:func:`check` takes a :class:`~kuberevive.core.diagnose.NodeSnapshot` (the files diagnose reads, collected by
:mod:`kuberevive.io.snapshot`), the resolved kubeadm configuration (or None) and the time, and returns a
:class:`CertsReport`: one :class:`CertItem` per certificate or kubeconfig client credential of a control-plane
node, in the rows ``kubeadm certs check-expiration`` prints (the 7 leaves of kubeadm's list with local etcd,
4 kubeconfigs, the 3 CAs), plus what kubeadm leaves out: ``kubelet.conf``'s client certificate (usually
``/var/lib/kubelet/pki/kubelet-client-current.pem``) with its CN checked against the node name, and the
kubelet's serving certificate when there is one.

Status of an item, the first that applies: ``missing`` (file absent), ``invalid`` (unreadable, key not matching,
not signed by the CA on disk, not valid yet, a kubelet CN that is not ``system:node:<node>``), ``expired``,
``expiring`` (NotAfter within ``warning_days``), ``ok``.

Renewal (:func:`renewal_targets`, :func:`renew_leaf`, :func:`renew_kubeconfig`, :func:`renew_kubelet_client`):
with the CA key on disk, a new key and certificate with the same subject, the SANs kubeadm would write for the
configuration plus every SAN the old certificate had (so no client that used one loses it), usages from
kubeadm's list, NotBefore now - 5 min and NotAfter now + ``certificateValidityPeriod``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kuberevive.core import pki, yamlfmt
from kuberevive.core.diagnose import NodeSnapshot
from kuberevive.core.kubeconfig import (
    ADMIN_CONF,
    CONTROLLER_MANAGER_CONF,
    KUBELET_CONF,
    MODE_KUBECONFIG,
    SCHEDULER_CONF,
    SUPER_ADMIN_CONF,
    Kubeconfig,
    control_plane_url,
    local_api_url,
    render_kubeconfig,
)
from kuberevive.core.retrust import (
    NODES_GROUP,
    NodeTrustFiles,
    kubelet_conf_server,
    node_trust_files,
)
from kuberevive.errors import ConfigError, PkiError, PlanError
from kuberevive.model import yamlload
from kuberevive.model.artifacts import Artifact, ArtifactKind
from kuberevive.model.config import DEFAULT_CERTIFICATES_DIR, EncryptionAlgorithm, KubeadmConfig
from kuberevive.model.document import CERTS_CHECK, Document, rfc3339, rfc3339_or_none, stamp
from kuberevive.model.paths import KUBELET_CLIENT_CURRENT, KUBELET_SERVING_CERT, KUBELET_SERVING_CURRENT, KUBERNETES_DIR

_T = TypeVar("_T")

SCHEMA = CERTS_CHECK.schema
DEFAULT_EXPIRY_WARNING_DAYS = 30

EXIT_OK = 0
EXIT_EXPIRING = 3
"""Something (required) expires within the warning period; nothing is expired, invalid or missing."""
EXIT_EXPIRED = 4
"""Something required is expired, invalid (wrong signer, unreadable, key mismatch, not yet valid, CN) or missing."""

#: The kubeconfigs ``kubeadm certs check-expiration`` lists (it leaves kubelet.conf out), with whether every
#: control-plane node has one (super-admin.conf exists only on the node where ``kubeadm init`` ran).
CHECKED_KUBECONFIGS: tuple[tuple[str, bool], ...] = (
    (ADMIN_CONF, True),
    (SUPER_ADMIN_CONF, False),
    (CONTROLLER_MANAGER_CONF, True),
    (SCHEDULER_CONF, True),
)
KUBELET_CLIENT = "kubelet-client"
KUBELET_SERVING = "kubelet-serving"


class Status(StrEnum):
    OK = "ok"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    MISSING = "missing"
    INVALID = "invalid"


class Group(StrEnum):
    CERTIFICATE = "certificate"
    """A leaf of kubeadm's certificate list (``pki/apiserver.crt`` ...)."""
    KUBECONFIG = "kubeconfig"
    """The client certificate embedded in a kubeconfig kubeadm writes."""
    CA = "ca"
    KUBELET = "kubelet"
    """The kubelet's client and serving certificates (not in kubeadm's table)."""


@dataclass(frozen=True)
class CertItem:
    name: str
    """kubeadm's name (``apiserver``, ``admin.conf``, ``etcd-ca``), or ``kubelet-client`` / ``kubelet-serving``."""
    group: Group
    path: str
    """The file that holds the certificate."""
    status: Status
    required: bool = True
    """False for what a healthy node may lack (super-admin.conf on a joined node, the kubelet serving cert)."""
    problems: tuple[str, ...] = ()
    authority: str | None = None
    """The CA that must have signed it: ``ca``, ``front-proxy-ca``, ``etcd-ca``, ``self`` (self-signed)."""
    externally_managed: bool = False
    """Its CA's key is not on the node (kubeadm's external-CA mode): kuberevive cannot renew it."""
    subject: str | None = None
    organization: tuple[str, ...] = ()
    issuer: str | None = None
    signer_verified: bool | None = None
    """The signature verifies against the authority's certificate on disk (None: that CA is missing)."""
    not_before: datetime | None = None
    not_after: datetime | None = None
    days_left: int | None = None
    residual: str = ""
    serial: str | None = None
    key_path: str | None = None
    node: str | None = None
    """The other node this kubelet item was read from over SSH (``--all-nodes``); None: this node."""

    @property
    def counts(self) -> bool:
        """Whether this item's status decides the exit code (an optional item that is absent does not)."""
        return self.required or self.status is not Status.MISSING

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group.value,
            "path": self.path,
            "status": self.status.value,
            "required": self.required,
            "problems": list(self.problems),
            "authority": self.authority,
            "externally_managed": self.externally_managed,
            "subject": self.subject,
            "organization": list(self.organization),
            "issuer": self.issuer,
            "signer_verified": self.signer_verified,
            "not_before": rfc3339_or_none(self.not_before),
            "not_after": rfc3339_or_none(self.not_after),
            "days_left": self.days_left,
            "residual": self.residual,
            "serial": self.serial,
            "key_path": self.key_path,
            "node": self.node,
        }


@dataclass(frozen=True)
class CertsReport:
    node_name: str
    now: datetime
    warning_days: int
    items: tuple[CertItem, ...]
    config_source: str
    root: str = "/"

    @property
    def exit_code(self) -> int:
        """0 all fine, 3 something expires within the warning period, 4 something expired, invalid or missing."""
        counted = [i for i in self.items if i.counts]
        if any(i.status in (Status.EXPIRED, Status.INVALID, Status.MISSING) for i in counted):
            return EXIT_EXPIRED
        if any(i.status is Status.EXPIRING for i in counted):
            return EXIT_EXPIRING
        return EXIT_OK

    @property
    def status(self) -> str:
        return {EXIT_OK: "ok", EXIT_EXPIRING: "expiring", EXIT_EXPIRED: "expired-or-invalid"}[self.exit_code]

    def item(self, name: str) -> CertItem:
        return next(i for i in self.items if i.name == name)

    def as_json(self) -> Document:
        return stamp(
            CERTS_CHECK,
            {
                "root": self.root,
                "generated_at": rfc3339(self.now),
                "node_name": self.node_name,
                "config_source": self.config_source,
                "expiry_warning_days": self.warning_days,
                "status": self.status,
                "exit_code": self.exit_code,
                "summary": {s.value: sum(1 for i in self.items if i.status is s) for s in Status},
                "items": [i.as_json() for i in self.items],
            },
        )


def kubeadm_date(t: datetime) -> str:
    """The EXPIRES column of ``kubeadm certs check-expiration``: ``Nov 25, 2027 17:42 UTC``."""
    return t.strftime("%b %d, %Y %H:%M UTC")


def short_duration(d: timedelta) -> str:
    """The RESIDUAL TIME column: apimachinery's ``ShortHumanDuration`` (``<invalid>`` once expired)."""
    seconds = int(d.total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    if seconds < 86400 * 365:
        return f"{seconds // 86400}d"
    return f"{seconds // (86400 * 365)}y"


def _cn(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def _orgs(name: x509.Name) -> tuple[str, ...]:
    return tuple(str(a.value) for a in name.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME))


def _load(loader: Callable[[bytes, str], _T], data: bytes | None, source: str) -> tuple[_T | None, str | None]:
    """``loader(data, source)``, or None and why (None, None: no data)."""
    if data is None:
        return None, None
    try:
        return loader(data, source), None
    except PkiError as exc:
        return None, exc.message


def _load_cert(data: bytes | None, source: str) -> tuple[x509.Certificate | None, str | None]:
    return _load(pki.load_certificate, data, source)


def _load_key(data: bytes | None, source: str) -> tuple[pki.PrivateKey | None, str | None]:
    return _load(pki.load_private_key, data, source)


@dataclass
class _Item:
    """Builder of one CertItem."""

    name: str
    group: Group
    path: str
    required: bool = True
    authority: str | None = None
    externally_managed: bool = False
    key_path: str | None = None
    problems: list[str] = field(default_factory=list)

    def missing(self) -> CertItem:
        return CertItem(
            self.name,
            self.group,
            self.path,
            Status.MISSING,
            self.required,
            (f"{self.path} is missing",),
            self.authority,
            self.externally_managed,
            key_path=self.key_path,
        )

    def invalid(self, problem: str) -> CertItem:
        return CertItem(
            self.name,
            self.group,
            self.path,
            Status.INVALID,
            self.required,
            (*self.problems, problem),
            self.authority,
            self.externally_managed,
            key_path=self.key_path,
        )

    def of(
        self,
        cert: x509.Certificate,
        key: pki.PrivateKey | None,
        signer: x509.Certificate | None,
        now: datetime,
        warning_days: int,
    ) -> CertItem:
        nb, na = pki.certificate_validity(cert)
        verified = None if signer is None else pki.verify_signed_by(cert, signer)
        problems = list(self.problems)
        if verified is False:
            problems.append(f"not signed by {self.authority} (the certificate on disk)")
        if key is not None and not pki.key_matches_certificate(key, cert):
            problems.append(f"{self.key_path} does not belong to it")
        if now < nb:
            problems.append(f"not valid before {rfc3339(nb)} (check the clock)")
        if problems:
            status = Status.INVALID
        elif now >= na:
            status = Status.EXPIRED
            problems.append(f"expired on {rfc3339(na)}")
        elif na - now < timedelta(days=warning_days):
            status = Status.EXPIRING
        else:
            status = Status.OK
        return CertItem(
            self.name,
            self.group,
            self.path,
            status,
            self.required,
            tuple(problems),
            self.authority,
            self.externally_managed,
            _cn(cert.subject),
            _orgs(cert.subject),
            _cn(cert.issuer),
            verified,
            nb,
            na,
            int((na - now).total_seconds() // 86400),
            short_duration(na - now),
            format(cert.serial_number, "x"),
            self.key_path,
        )


def _specs(cfg: KubeadmConfig | None) -> tuple[pki.CertSpec, ...]:
    return pki.certificate_specs(cfg) if cfg is not None else pki.CERT_SPECS


def certificates_dir(cfg: KubeadmConfig | None) -> PurePosixPath:
    return PurePosixPath(cfg.cluster.certificates_dir if cfg is not None else DEFAULT_CERTIFICATES_DIR)


def check(
    snap: NodeSnapshot,
    cfg: KubeadmConfig | None,
    node_name: str,
    now: datetime,
    warning_days: int = DEFAULT_EXPIRY_WARNING_DAYS,
    config_source: str = "",
) -> CertsReport:
    """Every certificate and client credential of the control-plane node in ``snap``, at ``now``."""
    cdir = certificates_dir(cfg)
    items: list[CertItem] = []
    cas: dict[str, x509.Certificate] = {}
    ca_keys: dict[str, bool] = {}
    ca_items: list[CertItem] = []
    for spec in _specs(cfg):
        if not spec.is_ca:
            continue
        path, key_path = spec.cert_path(str(cdir)), spec.key_path(str(cdir))
        b = _Item(spec.name, Group.CA, str(path), authority="self", key_path=str(key_path))
        cert, err = _load_cert(snap.content(path), str(path))
        key, key_err = _load_key(snap.content(key_path), str(key_path))
        ca_keys[spec.name] = key is not None
        b.externally_managed = key is None
        if snap.content(path) is None:
            ca_items.append(b.missing())
            continue
        if cert is None:
            ca_items.append(b.invalid(err or "unreadable"))
            continue
        cas[spec.name] = cert
        if key_err:
            b.problems.append(key_err)
        ca_items.append(b.of(cert, key, cert, now, warning_days))

    for spec in _specs(cfg):
        if spec.is_ca:
            continue
        assert spec.signer is not None
        path, key_path = spec.cert_path(str(cdir)), spec.key_path(str(cdir))
        b = _Item(
            spec.name,
            Group.CERTIFICATE,
            str(path),
            authority=spec.signer,
            externally_managed=not ca_keys.get(spec.signer, False),
            key_path=str(key_path),
        )
        items.append(_file_item(b, snap, path, key_path, cas.get(spec.signer), now, warning_days))

    for name, required in CHECKED_KUBECONFIGS:
        b = _Item(name, Group.KUBECONFIG, str(KUBERNETES_DIR / name), required, "ca", not ca_keys.get("ca", False))
        items.append(_kubeconfig_item(b, snap, cas.get("ca"), now, warning_days))
    items.sort(key=lambda i: i.name)  # kubeadm sorts the first table by name

    items.extend(sorted(ca_items, key=lambda i: i.name))
    items += kubelet_items(snap, cas.get("ca"), ca_keys.get("ca", False), node_name, now, warning_days)
    return CertsReport(node_name, now, warning_days, tuple(items), config_source, snap.root)


def kubelet_items(
    snap: NodeSnapshot,
    ca: x509.Certificate | None,
    ca_key: bool,
    node_name: str,
    now: datetime,
    warning_days: int,
    other_node: str | None = None,
) -> list[CertItem]:
    """The kubelet's client and serving certificates of the node in ``snap`` (``other_node``: read over SSH)."""
    items = [
        _kubelet_client_item(snap, ca, ca_key, node_name, now, warning_days),
        _kubelet_serving_item(snap, ca, now, warning_days),
    ]
    return [replace(i, node=other_node) for i in items] if other_node else items


#: The path of :func:`unreachable_item`: nothing was read.
UNREACHABLE_PATH = "-"


def unreachable_item(node: str, why: str) -> CertItem:
    """A node whose kubelet certificates could not be read: counted as invalid (a check must not pass on it)."""
    return CertItem(
        KUBELET_CLIENT, Group.KUBELET, UNREACHABLE_PATH, Status.INVALID, problems=(f"not read: {why}",), node=node
    )


def with_items(report: CertsReport, extra: list[CertItem]) -> CertsReport:
    return replace(report, items=(*report.items, *extra))


def _file_item(
    b: _Item,
    snap: NodeSnapshot,
    path: PurePosixPath,
    key_path: PurePosixPath | None,
    signer: x509.Certificate | None,
    now: datetime,
    warning_days: int,
) -> CertItem:
    data = snap.content(path)
    if data is None:
        return b.missing()
    cert, err = _load_cert(data, str(path))
    if cert is None:
        return b.invalid(err or "unreadable")
    key = None
    if key_path is not None:
        key_data = snap.content(key_path)
        key, key_err = _load_key(key_data, str(key_path))
        if key_data is None:
            b.problems.append(f"its key {key_path} is missing")
        elif key_err:
            b.problems.append(key_err)
    return b.of(cert, key, signer, now, warning_days)


def _kubeconfig_user(data: bytes, path: str) -> tuple[Any, Any]:
    try:
        return Kubeconfig.from_yaml(data).current()
    except (ConfigError, ValueError, TypeError) as exc:
        raise PkiError(f"{path}: {exc}") from exc


def _kubeconfig_item(
    b: _Item, snap: NodeSnapshot, ca: x509.Certificate | None, now: datetime, warning_days: int
) -> CertItem:
    data = snap.content(b.path)
    if data is None:
        return b.missing()
    try:
        cluster, user = _kubeconfig_user(data, b.path)
    except PkiError as exc:
        return b.invalid(exc.message)
    cert_data = user.client_certificate_data
    if cert_data is None and user.client_certificate:
        b.path, b.key_path = user.client_certificate, user.client_key
        return _file_item(b, snap, PurePosixPath(user.client_certificate), _opt(user.client_key), ca, now, warning_days)
    if cert_data is None:
        return b.invalid(f"{b.path} has no client certificate")
    cert, err = _load_cert(cert_data, f"the client certificate of {b.path}")
    if cert is None:
        return b.invalid(err or "unreadable client certificate")
    key, key_err = _load_key(user.client_key_data, f"the client key of {b.path}")
    if key_err:
        b.problems.append(key_err)
    embedded, _ = _load_cert(cluster.certificate_authority_data, f"the CA of {b.path}")
    if ca is not None and embedded is not None and embedded != ca:
        b.problems.append(f"{b.path} trusts another CA than {DEFAULT_CERTIFICATES_DIR}/ca.crt")
    return b.of(cert, key, ca, now, warning_days)


def _bundle(data: bytes | None) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data) if data else []
    except ValueError:
        return []


def _opt(path: str | None) -> PurePosixPath | None:
    return PurePosixPath(path) if path else None


def _kubelet_client_item(
    snap: NodeSnapshot,
    ca: x509.Certificate | None,
    ca_key: bool,
    node_name: str,
    now: datetime,
    warning_days: int,
) -> CertItem:
    conf = str(KUBERNETES_DIR / KUBELET_CONF)
    b = _Item(KUBELET_CLIENT, Group.KUBELET, conf, True, "ca", not ca_key)
    item = _kubeconfig_item(b, snap, ca, now, warning_days)
    expected = f"system:node:{node_name}"
    if item.subject is not None and item.subject != expected:
        mismatch = f"its CN is {item.subject}, not {expected} (the node name)"
        return replace(item, status=Status.INVALID, problems=(*item.problems, mismatch))
    if item.subject is not None and NODES_GROUP not in item.organization:
        missing_group = f"its O lacks {NODES_GROUP}"
        return replace(item, status=Status.INVALID, problems=(*item.problems, missing_group))
    return item


def _kubelet_serving_item(
    snap: NodeSnapshot, ca: x509.Certificate | None, now: datetime, warning_days: int
) -> CertItem:
    path = KUBELET_SERVING_CURRENT if snap.has(KUBELET_SERVING_CURRENT) else KUBELET_SERVING_CERT
    b = _Item(KUBELET_SERVING, Group.KUBELET, str(path), required=False)
    bundle = _bundle(snap.content(path))
    # the kubelet's own serving certificate: self-signed, or signed by a "<node>-ca@<time>" CA it made and wrote
    # after the certificate in the same file
    own = [c for c in bundle if bundle and c.subject == bundle[0].issuer]
    if own:
        b.authority = "self"
        signer: x509.Certificate | None = own[0]
    else:
        b.authority, signer = "ca", ca
    key_path = path.with_suffix(".key") if path == KUBELET_SERVING_CERT else None
    return _file_item(b, snap, path, key_path, signer, now, warning_days)


# ------------------------------------------------------------------------------------------ renew


RENEWABLE_GROUPS = (Group.CERTIFICATE, Group.KUBECONFIG)


def renewal_targets(report: CertsReport, everything: bool = False) -> list[CertItem]:
    """What ``certs renew`` replaces: every leaf, kubeconfig credential and the kubelet's client certificate
    that is expiring, expired or invalid (``everything``: also the valid ones), the kubelet's first.

    CAs are never renewed here, nor the kubelet's serving certificate (the kubelet makes its own), nor a file
    that is missing (``kuberevive generate`` or ``recover`` create those). Raises PlanError when an item to
    renew is externally managed (its CA key is not on the node)."""
    wanted = (Status.EXPIRING, Status.EXPIRED, Status.INVALID) + ((Status.OK,) if everything else ())
    out: list[CertItem] = []
    for item in report.items:
        if item.status not in wanted or item.node is not None:  # other nodes' kubelets: not this command
            continue
        if item.group not in RENEWABLE_GROUPS and item.name != KUBELET_CLIENT:
            continue
        if item.externally_managed:
            raise PlanError(
                f"{item.name} ({item.path}) must be renewed but its CA key ({item.authority}) is not on this node",
                "renew it with the external CA, or put the CA key back in the pki directory",
            )
        out.append(item)
    out.sort(key=lambda i: i.name != KUBELET_CLIENT)
    return out


def _alt_names(spec: pki.CertSpec, cfg: KubeadmConfig | None, old: x509.Certificate | None) -> pki.AltNames | None:
    """The SANs kubeadm would write for ``cfg``, plus every SAN of the old certificate."""
    have = pki.certificate_alt_names(old) if old is not None else pki.AltNames()
    if spec.alt_names is None and not (have.dns or have.ips):
        return None
    want = spec.alt_names(cfg) if (spec.alt_names is not None and cfg is not None) else pki.AltNames()
    return pki.AltNames.normalised([*want.dns, *have.dns], [*want.ips, *have.ips])


def _keeping_algorithm(cfg: KubeadmConfig, old: x509.Certificate | None) -> KubeadmConfig:
    """``cfg`` with the key algorithm of the certificate being replaced (RSA size or ECDSA P-256), so a renewal never
    changes it when the configuration is reconstructed and does not say; ``cfg`` as it is when ``old`` is None."""
    key = old.public_key() if old is not None else None
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        algorithm = EncryptionAlgorithm.ECDSA_P256
    elif isinstance(key, rsa.RSAPublicKey) and f"RSA-{key.key_size}" in EncryptionAlgorithm._value2member_map_:
        algorithm = EncryptionAlgorithm(f"RSA-{key.key_size}")
    else:
        return cfg
    return replace(cfg, cluster=replace(cfg.cluster, encryption_algorithm=algorithm))


def _authority(cdir: PurePosixPath, name: str, files: Mapping[PurePosixPath, bytes]) -> pki.Authority:
    spec = pki.cert_spec(name)
    cert_path, key_path = spec.cert_path(str(cdir)), spec.key_path(str(cdir))
    cert_data, key_data = files.get(cert_path), files.get(key_path)
    if cert_data is None or key_data is None:
        raise PlanError(f"{cert_path} or {key_path} is missing", "restore the CA from a backup; renew needs both")
    cert = pki.load_certificate(cert_data, str(cert_path))
    key = pki.load_private_key(key_data, str(key_path))
    if not pki.key_matches_certificate(key, cert):
        raise PlanError(f"{key_path} does not belong to {cert_path}", "put back the matching CA key")
    return pki.Authority(cert, key)


def renew_leaf(
    name: str,
    cfg: KubeadmConfig,
    files: Mapping[PurePosixPath, bytes],
    now: datetime,
) -> list[Artifact]:
    """A new key and certificate for the leaf ``name`` of kubeadm's list, signed by its CA from ``files``
    (node path -> bytes of the pki directory). Subject from kubeadm's list (the old certificate's when it is
    readable), SANs from :func:`_alt_names`, key usages from kubeadm's list."""
    spec = pki.cert_spec(name)
    assert spec.signer is not None
    cdir = certificates_dir(cfg)
    ca = _authority(cdir, spec.signer, files)
    assert ca.key is not None
    old, _err = _load_cert(files.get(spec.cert_path(str(cdir))), str(spec.cert_path(str(cdir))))
    cn = (_cn(old.subject) if old is not None else None) or spec.common_name(cfg)
    orgs = _orgs(old.subject) if old is not None else spec.organization
    key = pki.generate_private_key(_keeping_algorithm(cfg, old).cluster.encryption_algorithm)
    cert = pki.issue_certificate(
        common_name=cn,
        organization=orgs,
        usages=spec.usages,
        public_key=key.public_key(),
        ca_cert=ca.cert,
        ca_key=ca.key,
        not_before=now - pki.CERTIFICATE_BACKDATE,
        not_after=now + cfg.cluster.certificate_validity,
        alt_names=_alt_names(spec, cfg, old),
    )
    subject = cert.subject.rfc4514_string()
    return [
        Artifact(
            spec.key_path(str(cdir)),
            pki.MODE_KEY,
            ArtifactKind.PRIVATE_KEY,
            f"renewed private key of {name}",
            pki.encode_private_key_pem(key),
        ),
        Artifact(
            spec.cert_path(str(cdir)),
            pki.MODE_CERT,
            ArtifactKind.CERTIFICATE,
            f"renewed {name} ({subject}), signed by {spec.signer}",
            pki.encode_certificate_pem(cert),
        ),
    ]


def renew_kubeconfig(
    path: PurePosixPath, data: bytes, cfg: KubeadmConfig, files: Mapping[PurePosixPath, bytes], now: datetime
) -> Artifact:
    """``data`` (a kubeconfig kubeadm wrote) with a new client key and certificate from the cluster CA: same
    subject, server and CA data, everything else as it was."""
    ca = _authority(certificates_dir(cfg), "ca", files)
    assert ca.key is not None
    doc = yamlload.load(data)
    _cluster, user = _kubeconfig_user(data, str(path))
    old, _err = _load_cert(user.client_certificate_data, f"the client certificate of {path}")
    if old is None or _cn(old.subject) is None:
        raise PlanError(f"{path} has no readable embedded client certificate to renew", f"regenerate {path}")
    key = pki.generate_private_key(_keeping_algorithm(cfg, old).cluster.encryption_algorithm)
    cert = pki.issue_certificate(
        common_name=_cn(old.subject) or "",
        organization=_orgs(old.subject),
        usages=(pki.KeyUsage.CLIENT_AUTH,),
        public_key=key.public_key(),
        ca_cert=ca.cert,
        ca_key=ca.key,
        not_before=now - pki.CERTIFICATE_BACKDATE,
        not_after=now + cfg.cluster.certificate_validity,
    )
    current = Kubeconfig.from_yaml(data).current_context
    user_name = next(c["context"]["user"] for c in doc["contexts"] if c.get("name") == current)
    entry = next(u for u in doc["users"] if u.get("name") == user_name)
    entry["user"]["client-certificate-data"] = base64.b64encode(pki.encode_certificate_pem(cert)).decode()
    entry["user"]["client-key-data"] = base64.b64encode(pki.encode_private_key_pem(key)).decode()
    return Artifact(
        path,
        MODE_KUBECONFIG,
        ArtifactKind.KUBECONFIG,
        f"{path.name} with a renewed client certificate for {_cn(old.subject)}",
        yamlfmt.dump(doc).encode(),
    )


def renew_kubelet_client(
    cfg: KubeadmConfig,
    files: Mapping[PurePosixPath, bytes],
    kubelet_conf: bytes | None,
    node_name: str,
    now: datetime,
    stamp: str,
) -> tuple[NodeTrustFiles, bool]:
    """A client certificate for ``system:node:<node_name>`` from the cluster CA on disk, written the way the
    re-trust step writes it (``kubelet-client-<stamp>.pem`` and the ``-current`` symlink), and whether
    kubelet.conf must be rewritten (it does not point at ``kubelet-client-current.pem`` yet)."""
    cdir = certificates_dir(cfg)
    _authority(cdir, "ca", files)  # both present and matching
    ca_pem, key_pem = files[cdir / "ca.crt"], files[cdir / "ca.key"]
    server = kubelet_conf_server(kubelet_conf, local_api_url(cfg))
    old = _kubelet_client_cert(kubelet_conf, files)
    trust = node_trust_files(
        _keeping_algorithm(cfg, old), ca_pem, key_pem, node_name, server, str(cdir / "ca.crt"), now, stamp
    )
    rewrite = True
    if kubelet_conf is not None:
        try:
            cluster, user = Kubeconfig.from_yaml(kubelet_conf).current()
            rewrite = not (
                user.client_certificate == str(KUBELET_CLIENT_CURRENT)
                and user.client_key == str(KUBELET_CLIENT_CURRENT)
                and cluster.certificate_authority_data == ca_pem
            )
        except (ConfigError, ValueError, TypeError):
            rewrite = True
    return trust, rewrite


def kubelet_client_artifacts(trust: NodeTrustFiles, rewrite: bool) -> list[Artifact]:
    """What :func:`renew_kubelet_client` returns as the files to write: the new ``kubelet-client-<stamp>.pem``
    (certificate and key, 0600) first, then kubelet.conf when it must be rewritten."""
    pem_path = PurePosixPath(trust.pem_path)
    out = [Artifact(pem_path, 0o600, ArtifactKind.PRIVATE_KEY, "kubelet client certificate", trust.pem)]
    if rewrite:
        out.append(
            Artifact(
                KUBERNETES_DIR / KUBELET_CONF,
                MODE_KUBECONFIG,
                ArtifactKind.KUBECONFIG,
                "kubelet.conf referring to kubelet-client-current.pem",
                trust.kubeconfig,
            )
        )
    return out


def kubelet_conf_to_copy(
    cfg: KubeadmConfig, files: Mapping[PurePosixPath, bytes], node_name: str, now: datetime
) -> bytes:
    """A kubelet.conf for ``node_name`` with a new client certificate embedded (signed with the CA in ``files``) and
    the control-plane endpoint: for a node ``certs renew --all-nodes`` could not reach, to be copied there by hand."""
    cdir = certificates_dir(cfg)
    _authority(cdir, "ca", files)  # both present and matching
    ca_pem, server = files[cdir / "ca.crt"], control_plane_url(cfg)
    trust = node_trust_files(cfg, ca_pem, files[cdir / "ca.key"], node_name, server, str(cdir / "ca.crt"), now, "-")
    cert = pki.encode_certificate_pem(pki.load_certificate(trust.pem, "the new client certificate"))
    key = pki.encode_private_key_pem(pki.load_private_key(trust.pem, "the new client key"))
    user = f"system:node:{node_name}"
    return render_kubeconfig(cfg.cluster.cluster_name, server, ca_pem, user, cert, key).encode()


@dataclass(frozen=True)
class NodeRenewal:
    """What ``certs renew --all-nodes`` does on one other node, from its kubelet items (:func:`kubelet_items`)."""

    node: str
    client: CertItem
    serving: CertItem | None
    renew_client: bool
    """A new client certificate signed locally with ca.key, kubelet-client-current.pem pointed at it."""
    new_serving: bool
    """The kubelet's self-signed serving certificate (kubelet.crt/.key) moved aside: it makes a new one at start."""
    notes: tuple[str, ...] = ()
    control_plane: tuple[str, ...] | None = None
    """An other control-plane node (its whole certificate set read): the leaves and kubeconfigs renewed there (its
    control-plane containers restarted, one node at a time); None: a node read for its kubelet only."""

    @property
    def restart(self) -> bool:
        return self.renew_client or self.new_serving or bool(self.control_plane)

    @property
    def reached(self) -> bool:
        return self.client.path != UNREACHABLE_PATH

    def as_json(self) -> dict[str, Any]:
        def cert(i: CertItem | None) -> dict[str, Any] | None:
            if i is None:
                return None
            return {
                "path": i.path,
                "status": i.status.value,
                "not_after": rfc3339_or_none(i.not_after),
                "authority": i.authority,
                "problems": list(i.problems),
            }

        return {
            "node": self.node,
            "reached": self.reached,
            "client": cert(self.client),
            "serving": cert(self.serving),
            "renew_client": self.renew_client,
            "new_serving": self.new_serving,
            "restart_kubelet": self.restart,
            "notes": list(self.notes),
            "control_plane": list(self.control_plane) if self.control_plane is not None else None,
        }


def node_renewal(node: str, items: list[CertItem], everything: bool = False) -> NodeRenewal:
    """What to do on ``node`` given its kubelet items: renew an expiring, expired or invalid client certificate
    (``everything``: also a valid one); move aside an expiring or expired *self-signed* serving certificate (kubeadm's
    default, ``serverTLSBootstrap: false``: the kubelet makes a new one when it starts and finds none). A serving
    certificate signed through a CSR (``serverTLSBootstrap: true``) is only reported: the kubelet asks for a new one
    itself and someone must approve the CSR. A node not read, or whose kubelet.conf is missing, is left alone."""
    client = next(i for i in items if i.name == KUBELET_CLIENT)
    serving = next((i for i in items if i.name == KUBELET_SERVING), None)
    wanted = (Status.EXPIRING, Status.EXPIRED, Status.INVALID) + ((Status.OK,) if everything else ())
    notes: list[str] = []
    if client.path == UNREACHABLE_PATH:
        return NodeRenewal(node, client, serving, False, False, (client.problems[0] if client.problems else "",))
    renew_client = client.status in wanted
    if client.status is Status.MISSING:
        notes.append(
            f"{client.path} is missing: not a renewal; 'kuberevive recover --apply' repairs a node whose kubelet lost "
            "its files"
        )
    old_serving = serving is not None and serving.status in (Status.EXPIRING, Status.EXPIRED)
    new_serving = old_serving and serving is not None and serving.authority == "self"
    if old_serving and not new_serving:
        notes.append(
            "the serving certificate is signed through a CSR (serverTLSBootstrap): after the kubelet restart it asks "
            "for a new one; approve it with 'kubectl certificate approve'"
        )
    control_plane = None
    if any(i.group in RENEWABLE_GROUPS for i in items):  # an other control-plane node (certs renew: peer steps)
        control_plane = tuple(i.name for i in items if i.group in RENEWABLE_GROUPS and i.status in wanted)
    return NodeRenewal(node, client, serving, renew_client, new_serving, tuple(notes), control_plane)


def _kubelet_client_cert(kubelet_conf: bytes | None, files: Mapping[PurePosixPath, bytes]) -> x509.Certificate | None:
    """The client certificate kubelet.conf embeds, or the one it names when ``files`` holds it."""
    if kubelet_conf is None:
        return None
    try:
        _cluster, user = Kubeconfig.from_yaml(kubelet_conf).current()
    except (ConfigError, ValueError, TypeError):
        return None
    data = user.client_certificate_data
    if data is None and user.client_certificate:
        data = files.get(PurePosixPath(user.client_certificate))
    return _load_cert(data, "the kubelet's client certificate")[0]
