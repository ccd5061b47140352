"""CA-derived cluster objects: what they should hold for the current CAs, and what is stale.

After the control plane comes back with a new cluster CA (and front-proxy CA), three kinds of
objects still carry the old ones:

* ``kube-system/extension-apiserver-authentication`` — kube-apiserver's
  ClusterAuthenticationTrustController *merges* its CA bundles into ``client-ca-file`` and
  ``requestheader-client-ca-file`` (it adds, it never removes), so aggregated API servers and
  webhooks keep trusting the lost CA until someone removes it. Only certificates that are in the
  current bundle are kept; the rest are reported and removed. The other keys (allowed names,
  header names) are left alone.
* ``kube-root-ca.crt`` in every namespace — kube-controller-manager's root-ca publisher writes the
  exact bytes of its ``--root-ca-file`` and rewrites any ConfigMap that differs. We compute the
  same content so that both agree (and the plan is empty once the publisher has caught up).
* ``kube-public/cluster-info`` — the ``kubeconfig`` key's ``certificate-authority-data`` must be the
  current CA, or ``kubeadm join`` discovery (CA pinning) fails. The bootstrap signer re-signs the
  ``jws-kubeconfig-*`` keys after the kubeconfig changes, so they are not touched here.

:func:`plan_trust` is pure: current CA PEMs and the current objects in, a :class:`TrustPlan` out
(one :class:`ObjectChange` per object that must change, with reasons). ``kuberevive.io.trust_apply``
reads the objects and applies a plan.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kuberevive.core.redact import redact_url
from kuberevive.model import yamlload
from kuberevive.model.document import rfc3339

EXTENSION_AUTH = ("kube-system", "extension-apiserver-authentication")
CLUSTER_INFO = ("kube-public", "cluster-info")
ROOT_CA_NAME = "kube-root-ca.crt"
ROOT_CA_KEY = "ca.crt"
CLIENT_CA_KEY = "client-ca-file"
REQUESTHEADER_CA_KEY = "requestheader-client-ca-file"

Action = Literal["update", "create", "report"]


@dataclass(frozen=True)
class CertInfo:
    """A certificate as an operator recognises it."""

    subject: str
    sha256: str
    not_after: str

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertInfo:
        fp = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        return cls(cert.subject.rfc4514_string(), fp, rfc3339(cert.not_valid_after_utc))

    def __str__(self) -> str:
        return f"{self.subject or '<empty subject>'} (sha256 {self.sha256[:16]}, expires {self.not_after})"


@dataclass(frozen=True)
class ObjectChange:
    """One ConfigMap to change: ``data`` holds the keys to set (a merge), ``reasons`` why.

    ``report`` means kuberevive does not change the object and a human should look (for example a
    missing ``extension-apiserver-authentication``, which only kube-apiserver itself creates).
    ``resource_version`` is the version read, used as a precondition when applying.
    """

    namespace: str
    name: str
    action: Action
    reasons: tuple[str, ...]
    data: Mapping[str, str] = field(default_factory=dict)
    removed: tuple[CertInfo, ...] = ()
    resource_version: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def summary(self) -> str:
        return f"{self.action} configmap {self.ref}: " + "; ".join(self.reasons)


@dataclass(frozen=True)
class TrustPlan:
    changes: tuple[ObjectChange, ...]
    #: Objects checked and found current (``namespace/name``).
    current: tuple[str, ...] = ()
    #: Namespaces skipped (terminating: the API refuses new objects there).
    skipped: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.changes

    def lines(self) -> list[str]:
        return [c.summary() for c in self.changes]


class BadPem(ValueError):
    """A PEM bundle that does not parse (the text is kept in the reason, not raised to the user)."""


def load_bundle(pem: bytes | str) -> list[x509.Certificate]:
    """Every CERTIFICATE block of a PEM bundle, in order; ``BadPem`` if there is none or one is broken."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise BadPem("no PEM CERTIFICATE block")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise BadPem(str(exc)) from exc


def encode_bundle(certs: Iterable[x509.Certificate]) -> str:
    """PEM text the way Go's ``cert.EncodeCertificate`` writes it (64-column base64, one block each)."""
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _data(obj: Mapping[str, Any] | None) -> dict[str, str]:
    if not obj:
        return {}
    data = obj.get("data") or {}
    return {str(k): str(v) for k, v in data.items()}


def _rv(obj: Mapping[str, Any] | None) -> str | None:
    if not obj:
        return None
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv is not None else None


def _clean_bundle(
    key: str, text: str | None, current: Sequence[x509.Certificate]
) -> tuple[str | None, list[str], list[CertInfo]]:
    """(desired text or None when already right, reasons, removed certs) for one CA-bundle key."""
    want = {_der(c) for c in current}
    if text is None:
        return encode_bundle(current), [f"{key} is missing; set it to the current CA"], []
    try:
        have = load_bundle(text)
    except BadPem as exc:
        return encode_bundle(current), [f"{key} is not a valid PEM bundle ({exc}); replace it with the current CA"], []
    stale = [c for c in have if _der(c) not in want]
    have_der = {_der(c) for c in have}
    missing = [c for c in current if _der(c) not in have_der]
    reasons: list[str] = []
    if stale:
        reasons.append(f"{key} still trusts " + ", ".join(str(CertInfo.of(c)) for c in stale))
    if missing:
        reasons.append(f"{key} lacks the current CA " + ", ".join(str(CertInfo.of(c)) for c in missing))
    if not reasons:
        return None, [], []
    return encode_bundle(current), reasons, [CertInfo.of(c) for c in stale]


def plan_extension_auth(
    obj: Mapping[str, Any] | None, ca_pem: bytes, front_proxy_ca_pem: bytes | None
) -> ObjectChange | None:
    """The change to ``kube-system/extension-apiserver-authentication``, or None when it is current."""
    ns, name = EXTENSION_AUTH
    if obj is None:
        return ObjectChange(
            ns,
            name,
            "report",
            ("it does not exist; kube-apiserver creates it when it starts, so check that kube-apiserver is running",),
        )
    data = _data(obj)
    desired: dict[str, str] = {}
    reasons: list[str] = []
    removed: list[CertInfo] = []
    text, why, gone = _clean_bundle(CLIENT_CA_KEY, data.get(CLIENT_CA_KEY), load_bundle(ca_pem))
    if text is not None:
        desired[CLIENT_CA_KEY] = text
        reasons += why
        removed += gone
    # requestheader-* exists only when kube-apiserver runs with --requestheader-client-ca-file.
    if front_proxy_ca_pem is not None and (REQUESTHEADER_CA_KEY in data):
        text, why, gone = _clean_bundle(
            REQUESTHEADER_CA_KEY, data.get(REQUESTHEADER_CA_KEY), load_bundle(front_proxy_ca_pem)
        )
        if text is not None:
            desired[REQUESTHEADER_CA_KEY] = text
            reasons += why
            removed += gone
    if not desired:
        return None
    return ObjectChange(ns, name, "update", tuple(reasons), desired, tuple(removed), _rv(obj))


def plan_root_ca(namespace: str, obj: Mapping[str, Any] | None, ca_pem: bytes) -> ObjectChange | None:
    """The change to ``<namespace>/kube-root-ca.crt``: exactly the bytes of the current ``ca.crt``."""
    want = ca_pem.decode()
    if obj is None:
        return ObjectChange(namespace, ROOT_CA_NAME, "create", ("it is missing",), {ROOT_CA_KEY: want})
    have = _data(obj).get(ROOT_CA_KEY)
    if have == want:
        return None
    current = load_bundle(ca_pem)
    if have is None:
        reasons = [f"{ROOT_CA_KEY} is missing"]
        removed: list[CertInfo] = []
    else:
        try:
            certs = load_bundle(have)
        except BadPem as exc:
            certs, reasons = [], [f"{ROOT_CA_KEY} is not a valid PEM bundle ({exc})"]
        else:
            reasons = []
        want_der = {_der(c) for c in current}
        stale = [c for c in certs if _der(c) not in want_der]
        removed = [CertInfo.of(c) for c in stale]
        if stale:
            reasons.append(f"{ROOT_CA_KEY} holds the old CA " + ", ".join(str(i) for i in removed))
        if certs and not stale and {_der(c) for c in certs} == want_der:
            reasons.append(
                f"{ROOT_CA_KEY} holds the current CA but not byte-for-byte as kube-controller-manager writes it"
            )
        elif certs and not stale:
            reasons.append(f"{ROOT_CA_KEY} lacks part of the current CA bundle")
    return ObjectChange(
        namespace, ROOT_CA_NAME, "update", tuple(reasons), {ROOT_CA_KEY: want}, tuple(removed), _rv(obj)
    )


def plan_cluster_info(
    obj: Mapping[str, Any] | None, ca_pem: bytes, expected_server: str | None = None
) -> ObjectChange | None:
    """The change to ``kube-public/cluster-info``: its kubeconfig's CA must be the current CA."""
    ns, name = CLUSTER_INFO
    if obj is None:
        return ObjectChange(
            ns, name, "report", ("it does not exist; run `kubeadm init phase bootstrap-token` to recreate it",)
        )
    text = _data(obj).get("kubeconfig")
    try:
        kubeconfig: Any = yamlload.load(text) if text else None
        cluster = kubeconfig["clusters"][0]["cluster"]
        server = str(cluster.get("server", ""))
        ca_b64 = cluster.get("certificate-authority-data")
    except (yaml.YAMLError, KeyError, IndexError, TypeError):
        return ObjectChange(
            ns,
            name,
            "report",
            ("its kubeconfig is missing or malformed; recreate it with `kubeadm init phase bootstrap-token`",),
        )
    current = load_bundle(ca_pem)
    reasons: list[str] = []
    removed: list[CertInfo] = []
    try:
        have = load_bundle(base64.b64decode(str(ca_b64), validate=True)) if ca_b64 else []
    except (BadPem, binascii.Error, ValueError):
        have = []
        reasons.append("its certificate-authority-data is not a valid CA")
    want_der = {_der(c) for c in current}
    stale = [c for c in have if _der(c) not in want_der]
    if stale:
        removed = [CertInfo.of(c) for c in stale]
        reasons.append("its kubeconfig pins the old CA " + ", ".join(str(i) for i in removed))
    elif have and {_der(c) for c in have} != want_der:
        reasons.append("its kubeconfig lacks part of the current CA bundle")
    elif not have and not reasons:
        reasons.append("its kubeconfig has no certificate-authority-data")
    notes: list[str] = []
    if expected_server and server != expected_server:
        notes.append(
            f"its server is {redact_url(server)!r}, expected {redact_url(expected_server)!r} "
            "(not changed: check the control-plane endpoint)"
        )
    if not reasons:
        return ObjectChange(ns, name, "report", tuple(notes), resource_version=_rv(obj)) if notes else None
    cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    new_text = yaml.safe_dump(kubeconfig, default_flow_style=False, sort_keys=False)
    return ObjectChange(ns, name, "update", tuple(reasons + notes), {"kubeconfig": new_text}, tuple(removed), _rv(obj))


def plan_trust(
    *,
    ca_pem: bytes,
    front_proxy_ca_pem: bytes | None,
    extension_auth: Mapping[str, Any] | None,
    cluster_info: Mapping[str, Any] | None,
    namespaces: Iterable[Mapping[str, Any]],
    root_ca_configmaps: Iterable[Mapping[str, Any]],
    expected_server: str | None = None,
) -> TrustPlan:
    """Every change the CA-derived objects need, in one pass.

    ``namespaces``: Namespace objects; ``root_ca_configmaps``: every ``kube-root-ca.crt`` ConfigMap
    (any namespace). Raises :class:`BadPem` when ``ca_pem``/``front_proxy_ca_pem`` do not parse.
    """
    load_bundle(ca_pem)
    if front_proxy_ca_pem is not None:
        load_bundle(front_proxy_ca_pem)
    changes: list[ObjectChange] = []
    current: list[str] = []
    skipped: list[str] = []

    for ref, change in (
        (EXTENSION_AUTH, plan_extension_auth(extension_auth, ca_pem, front_proxy_ca_pem)),
        (CLUSTER_INFO, plan_cluster_info(cluster_info, ca_pem, expected_server)),
    ):
        if change is None:
            current.append("/".join(ref))
        else:
            changes.append(change)

    by_ns = {str(cm["metadata"]["namespace"]): cm for cm in root_ca_configmaps}
    for ns_obj in sorted(namespaces, key=lambda n: str(n["metadata"]["name"])):
        ns = str(ns_obj["metadata"]["name"])
        if (ns_obj.get("status") or {}).get("phase") == "Terminating":
            skipped.append(ns)
            continue
        change = plan_root_ca(ns, by_ns.get(ns), ca_pem)
        if change is None:
            current.append(f"{ns}/{ROOT_CA_NAME}")
        else:
            changes.append(change)
    return TrustPlan(tuple(changes), tuple(current), tuple(skipped))
