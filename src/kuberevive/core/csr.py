"""Should kuberevive approve this kubelet serving-certificate CSR? A pure decision with reasons.

kube-controller-manager auto-approves kubelet *client* CSRs (RBAC on the ``selfnodeclient`` and
``nodeclient`` subresources), but never ``kubernetes.io/kubelet-serving`` ones: someone must vouch
that the names and addresses in the request belong to the node. After a CA change every kubelet
asks for a new serving certificate, so kuberevive approves exactly those it can vouch for and leaves
everything else pending, with the reasons, for a human.

A CSR is approved only when **all** of these hold (each failure adds one reason):

* ``spec.signerName`` is ``kubernetes.io/kubelet-serving``; the CSR is still pending (no condition);
* ``spec.username`` is ``system:node:<name>``, ``spec.groups`` contains ``system:nodes``, and
  ``<name>`` is a known Node;
* the PEM in ``spec.request`` is one valid, self-signed PKCS#10 request;
* its subject is exactly ``O=system:nodes, CN=system:node:<name>`` (the same ``<name>``);
* its SANs are DNS names and IPs only, at least one, each IP among the Node's ``InternalIP`` /
  ``ExternalIP`` addresses and each DNS name among its ``Hostname`` / ``InternalDNS`` /
  ``ExternalDNS`` addresses;
* ``spec.usages`` include ``digital signature`` and ``server auth`` and nothing beyond those and
  ``key encipherment`` (the set kube-apiserver accepts for this signer).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

KUBELET_SERVING = "kubernetes.io/kubelet-serving"
NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
REQUIRED_USAGES = frozenset({"digital signature", "server auth"})
ALLOWED_USAGES = REQUIRED_USAGES | {"key encipherment"}
IP_ADDRESS_TYPES = frozenset({"InternalIP", "ExternalIP"})
DNS_ADDRESS_TYPES = frozenset({"Hostname", "InternalDNS", "ExternalDNS"})


@dataclass(frozen=True)
class NodeIdentity:
    """What a Node object says about itself: its name, IPs and DNS names (from ``status.addresses``)."""

    name: str
    ips: frozenset[str]
    dns_names: frozenset[str]

    @classmethod
    def from_node(cls, node: Mapping[str, Any]) -> NodeIdentity:
        name = str(node.get("metadata", {}).get("name", ""))
        ips: set[str] = set()
        dns: set[str] = set()
        for addr in node.get("status", {}).get("addresses") or []:
            kind, value = addr.get("type"), str(addr.get("address", ""))
            if kind in IP_ADDRESS_TYPES:
                try:
                    ips.add(str(ipaddress.ip_address(value)))
                except ValueError:
                    continue
            elif kind in DNS_ADDRESS_TYPES and value:
                dns.add(value.lower())
        return cls(name, frozenset(ips), frozenset(dns))


@dataclass(frozen=True)
class CsrDecision:
    """``approve`` only when ``reasons`` is empty; ``node`` is the node the CSR claims to be."""

    name: str
    approve: bool
    node: str | None
    reasons: tuple[str, ...]
    requested_ips: tuple[str, ...] = ()
    requested_dns: tuple[str, ...] = ()

    def summary(self) -> str:
        if self.approve:
            return f"CSR {self.name}: approve (kubelet serving certificate of node {self.node})"
        return f"CSR {self.name}: left pending: " + "; ".join(self.reasons)


def _pending(csr: Mapping[str, Any]) -> str | None:
    """None when pending, else why not (approved, denied, failed, already issued)."""
    status = csr.get("status") or {}
    types = [c.get("type") for c in status.get("conditions") or []]
    for t in ("Denied", "Failed", "Approved"):
        if t in types:
            return f"it is already {t.lower()}"
    if status.get("certificate"):
        return "it already has a certificate"
    return None


def _load_request(spec: Mapping[str, Any]) -> tuple[x509.CertificateSigningRequest | None, str | None]:
    raw = spec.get("request")
    if not isinstance(raw, str) or not raw:
        return None, "spec.request is empty"
    try:
        pem = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None, "spec.request is not base64"
    if pem.count(b"-----BEGIN CERTIFICATE REQUEST-----") != 1:
        return None, "spec.request is not exactly one PEM CERTIFICATE REQUEST"
    try:
        req = x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        return None, f"spec.request is not a valid PKCS#10 request ({exc})"
    if not req.is_signature_valid:
        return None, "the request's signature does not match its public key"
    return req, None


def decide(csr: Mapping[str, Any], nodes: Iterable[NodeIdentity]) -> CsrDecision:
    """The approval decision for one ``certificates.k8s.io/v1`` CertificateSigningRequest object."""
    name = str(csr.get("metadata", {}).get("name", "?"))
    spec = csr.get("spec") or {}
    reasons: list[str] = []

    not_pending = _pending(csr)
    if not_pending:
        reasons.append(not_pending)

    signer = spec.get("signerName")
    if signer != KUBELET_SERVING:
        reasons.append(f"signer is {signer!r}, not {KUBELET_SERVING}")

    username = str(spec.get("username", ""))
    node_name: str | None = None
    if username.startswith(NODE_USER_PREFIX) and len(username) > len(NODE_USER_PREFIX):
        node_name = username[len(NODE_USER_PREFIX) :]
    else:
        reasons.append(f"requester {username!r} is not a node (system:node:<name>)")
    if NODES_GROUP not in (spec.get("groups") or []):
        reasons.append(f"requester is not in the {NODES_GROUP} group")

    known = {n.name: n for n in nodes}
    node = known.get(node_name) if node_name else None
    if node_name and node is None:
        reasons.append(f"no Node named {node_name!r} exists")

    usages = {str(u) for u in spec.get("usages") or []}
    if missing := sorted(REQUIRED_USAGES - usages):
        reasons.append("usages lack " + ", ".join(missing))
    if extra := sorted(usages - ALLOWED_USAGES):
        reasons.append("usages include " + ", ".join(extra))

    ips: list[str] = []
    dns: list[str] = []
    req, error = _load_request(spec)
    if error:
        reasons.append(error)
    if req is not None:
        cns = [a.value for a in req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        orgs = [a.value for a in req.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        other = [a for a in req.subject if a.oid not in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME)]
        if cns != [username] or not username.startswith(NODE_USER_PREFIX):
            reasons.append(f"subject CN {cns!r} is not the requester {username!r}")
        if orgs != [NODES_GROUP]:
            reasons.append(f"subject O {orgs!r} is not [{NODES_GROUP!r}]")
        if other:
            reasons.append("subject has other attributes: " + ", ".join(a.rfc4514_string() for a in other))
        try:
            san = req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            san = None
        if san is None or len(san) == 0:
            reasons.append("the request names no DNS name or IP address")
        else:
            for gn in san:
                if isinstance(gn, x509.IPAddress):
                    ips.append(str(gn.value))
                elif isinstance(gn, x509.DNSName):
                    dns.append(gn.value)
                else:
                    reasons.append(
                        f"the request has a {type(gn).__name__} SAN ({gn.value!r}); only DNS and IP are allowed"
                    )
        if node is not None:
            if bad_ips := [ip for ip in ips if ip not in node.ips]:
                reasons.append(f"IP {', '.join(bad_ips)} is not an address of Node {node.name}")
            if bad_dns := [d for d in dns if d.lower() not in node.dns_names]:
                reasons.append(f"DNS name {', '.join(bad_dns)} is not a hostname of Node {node.name}")

    return CsrDecision(name, not reasons, node_name, tuple(reasons), tuple(ips), tuple(dns))


def decide_all(csrs: Iterable[Mapping[str, Any]], nodes: Iterable[Mapping[str, Any]]) -> list[CsrDecision]:
    """Decisions for every kubelet-serving CSR in ``csrs`` (other signers are not ours to judge)."""
    identities = [NodeIdentity.from_node(n) for n in nodes]
    return [decide(c, identities) for c in csrs if (c.get("spec") or {}).get("signerName") == KUBELET_SERVING]


def approval_condition(decision: CsrDecision, now_rfc3339: str) -> dict[str, Any]:
    """The ``status.conditions`` entry to PUT to ``.../certificatesigningrequests/<name>/approval``."""
    if not decision.approve:
        raise ValueError("refused CSRs are left pending, never approved")
    return {
        "type": "Approved",
        "status": "True",
        "reason": "KuberevivePostRecovery",
        "message": f"kuberevive: names and addresses match Node {decision.node}",
        "lastUpdateTime": now_rfc3339,
    }
