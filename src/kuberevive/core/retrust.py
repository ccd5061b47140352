"""Pure planning for re-trusting the other nodes after a recovery with a new cluster CA (recover part 2).

A kubelet that joined the old cluster holds three pieces of the old trust:

* ``/etc/kubernetes/kubelet.conf``: the old CA embedded (``certificate-authority-data``), and a
  client certificate reference (``/var/lib/kubelet/pki/kubelet-client-current.pem``);
* ``kubelet-client-current.pem``: a client certificate for ``system:node:<name>`` signed by the old
  CA, so the new API server rejects it (the node goes NotReady);
* the kubelet's ``clientCAFile`` (``authentication.x509.clientCAFile`` in
  ``/var/lib/kubelet/config.yaml``, kubeadm: ``/etc/kubernetes/pki/ca.crt``): the old CA, so the
  kubelet rejects the API server's ``apiserver-kubelet-client`` certificate (``kubectl logs``/``exec``
  fail).

Re-trust replaces all three in place, keeping the Node object and every running container:
the new CA, and a client certificate **issued directly by the new CA** (the same as ``kubeadm init``
does for the control-plane node's own kubelet.conf) rather than a TLS bootstrap. Why direct
issuance: the bootstrap path needs a bootstrap token, a ``bootstrap-kubelet.conf``, the kubelet to
start without a valid ``kubelet.conf`` and the controller-manager's CSR approver and signer, i.e. more
moving parts in the minutes that matter; the direct path needs only the CA key, which the recovering
node holds anyway. The kubelet rotates the certificate itself later (``rotateCertificates``).

Everything here is pure: bytes and dicts in, files and verdicts out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

import yaml
from cryptography import x509

from kuberevive.core import guard as guardcore
from kuberevive.core import pki, versions, yamlfmt
from kuberevive.core.kubeconfig import Kubeconfig, render_kubeconfig
from kuberevive.core.manifests import parse_manifest, render_manifest
from kuberevive.core.redact import redact_url
from kuberevive.errors import KubereviveError
from kuberevive.model import paths, yamlload
from kuberevive.model.config import KubeadmConfig

# The node paths of model/paths as the strings the remote commands and kubeconfig fields take.
NODES_GROUP = "system:nodes"


@dataclass(frozen=True)
class NodeTrustFiles:
    """What one node gets: the CA at the kubelet's ``clientCAFile``, a new dated client pem (cert + key,
    0600) that ``kubelet-client-current.pem`` is pointed at, and a kubelet.conf that refers to it."""

    node: str
    server: str
    ca_path: str
    ca_cert: bytes
    pem_path: str
    pem: bytes
    kubeconfig: bytes

    def summary(self) -> list[str]:
        return [
            f"{self.ca_path} (0644): the new cluster CA",
            f"{self.pem_path} (0600): client certificate for system:node:{self.node} from the new CA",
            f"{paths.KUBELET_CLIENT_CURRENT} -> {self.pem_path}",
            f"{paths.KUBELET_CONF} (0600): server {redact_url(self.server)}, the new CA, the client certificate above",
        ]


def kubelet_conf_server(kubelet_conf: bytes | None, default: str) -> str:
    """The API server URL the node's kubelet used (its kubelet.conf), else ``default``."""
    if not kubelet_conf:
        return default
    try:
        cluster, _user = Kubeconfig.from_yaml(kubelet_conf).current()
    except (KubereviveError, ValueError, KeyError, TypeError, AttributeError):
        return default
    server = cluster.server or ""
    return server if server.startswith("https://") else default


def kubelet_healthz(kubelet_config_yaml: bytes | None) -> tuple[str, int] | None:
    """``healthzBindAddress`` and ``healthzPort`` of the kubelet's configuration (the kubelet's defaults
    127.0.0.1:10248 when unset); None when the endpoint is turned off (port 0)."""
    try:
        doc = yamlload.load(kubelet_config_yaml) if kubelet_config_yaml else None
    except yaml.YAMLError:
        doc = None
    doc = doc if isinstance(doc, dict) else {}
    address, port = doc.get("healthzBindAddress") or "127.0.0.1", doc.get("healthzPort", 10248)
    if not isinstance(address, str) or not isinstance(port, int) or isinstance(port, bool):
        return "127.0.0.1", 10248
    return (address, port) if port > 0 else None


def client_ca_file(kubelet_config_yaml: bytes | None) -> str:
    """``authentication.x509.clientCAFile`` of the kubelet's configuration (kubeadm's default if unset)."""
    if not kubelet_config_yaml:
        return str(paths.CA_CRT)
    try:
        doc = yamlload.load(kubelet_config_yaml)
    except yaml.YAMLError:
        return str(paths.CA_CRT)
    if not isinstance(doc, dict):
        return str(paths.CA_CRT)
    value = ((doc.get("authentication") or {}).get("x509") or {}).get("clientCAFile")
    return str(value) if isinstance(value, str) and value.startswith("/") else str(paths.CA_CRT)


def node_trust_files(
    cfg: KubeadmConfig,
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    node_name: str,
    server: str,
    ca_path: str,
    now: datetime,
    stamp: str,
) -> NodeTrustFiles:
    """A client certificate for ``system:node:<node_name>`` (O=system:nodes, clientAuth) from the new CA,
    valid as long as kubeadm makes leaf certificates, and the kubelet.conf kubeadm's kubelet-finalize
    leaves (client-certificate and client-key both ``kubelet-client-current.pem``)."""
    ca_cert = pki.load_certificate(ca_cert_pem, "the cluster CA certificate")
    ca_key = pki.load_private_key(ca_key_pem, "the cluster CA key")
    key = pki.generate_private_key(cfg.cluster.encryption_algorithm)
    user = f"system:node:{node_name}"
    cert = pki.issue_certificate(
        common_name=user,
        organization=(NODES_GROUP,),
        usages=(pki.KeyUsage.CLIENT_AUTH,),
        public_key=key.public_key(),
        ca_cert=ca_cert,
        ca_key=ca_key,
        not_before=ca_cert.not_valid_before_utc,
        not_after=now + cfg.cluster.certificate_validity,
    )
    cert_pem, key_pem = pki.encode_certificate_pem(cert), pki.encode_private_key_pem(key)
    doc: dict[str, Any] = yamlload.load(
        render_kubeconfig(
            cfg.cluster.cluster_name,
            server,
            ca_cert_pem,
            user,
            cert_pem,
            key_pem,
            preferences=versions.profile(cfg.cluster.kubernetes_version).kubeconfig_preferences,
        )
    )
    doc["users"][0]["user"] = {
        "client-certificate": str(paths.KUBELET_CLIENT_CURRENT),
        "client-key": str(paths.KUBELET_CLIENT_CURRENT),
    }
    return NodeTrustFiles(
        node=node_name,
        server=server,
        ca_path=ca_path,
        ca_cert=ca_cert_pem,
        pem_path=f"{paths.KUBELET_PKI}/kubelet-client-{stamp}.pem",
        pem=cert_pem + key_pem,
        kubeconfig=yamlfmt.dump(doc).encode(),
    )


# ------------------------------------------------------------------------------------- lost kubelet credentials
#
# A node whose kubelet can no longer authenticate (a worker that lost /etc/kubernetes: its kubelet has no
# kubelet.conf and crash-loops; or a client certificate that expired or comes from another CA) stops posting
# its status. Two signals together decide that recover repairs it, because each alone is ambiguous:
#
# 1. the API: the node's Lease in kube-node-lease has expired (not renewed for its leaseDurationSeconds, 40 s;
#    a kubelet renews it every 10 s, and a kubelet restart takes seconds), or the Node is not Ready with a
#    heartbeat older than STALE_HEARTBEAT. The Lease expires before the node-lifecycle controller marks the
#    Node Unknown (grace period 50 s) and long before a NotReady toleration runs out (300 s by default), so
#    the repair can come before any eviction;
# 2. its files, read over SSH: kubelet.conf or the kubelet's client CA file missing or not the cluster's CA,
#    or the client certificate missing, expired, not signed by the cluster CA or not for system:node:<name>.
#
# A node whose files are fine (a network problem, a stopped kubelet, a full disk) is reported and left alone:
# new credentials would not help it.

STALE_HEARTBEAT = timedelta(seconds=40)


def _time(raw: object, tz: tzinfo | None) -> datetime | None:
    text = str(raw or "")
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=tz)
        except ValueError:
            continue
    return None


def unreporting_nodes(
    nodes: list[dict[str, Any]], leases: list[dict[str, Any]], me: str, now: datetime
) -> list[tuple[str, str]]:
    """Nodes other than ``me`` (and not control-plane nodes) whose Lease expired, or that are not Ready with a
    heartbeat older than :data:`STALE_HEARTBEAT`: (name, why)."""
    renewed: dict[str, tuple[datetime | None, int]] = {}
    for lease in leases:
        spec = lease.get("spec") or {}
        name = str((lease.get("metadata") or {}).get("name") or "")
        renewed[name] = (_time(spec.get("renewTime"), now.tzinfo), int(spec.get("leaseDurationSeconds") or 40))
    out = []
    for n in nodes:
        meta = n.get("metadata") or {}
        name = str(meta.get("name") or "")
        if not name or name == me or "node-role.kubernetes.io/control-plane" in (meta.get("labels") or {}):
            continue
        renew, duration = renewed.get(name, (None, 40))
        if renew is not None and (now - renew).total_seconds() > duration:
            out.append((name, f"its Lease was last renewed {int((now - renew).total_seconds())} s ago"))
            continue
        ready = [c for c in (n.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"]
        if not ready:
            out.append((name, "no Ready condition"))
            continue
        cond = ready[0]
        if cond.get("status") == "True":
            continue
        raw = str(cond.get("lastHeartbeatTime") or "")
        beat = _time(raw, now.tzinfo)
        if beat is None:
            out.append((name, f"Ready={cond.get('status')}, unreadable heartbeat {raw!r}"))
        elif now - beat >= STALE_HEARTBEAT:
            age = int((now - beat).total_seconds())
            out.append((name, f"Ready={cond.get('status')}, last heartbeat {raw} ({age} s ago)"))
    return out


def trust_problems(
    node_name: str,
    ca_cert_pem: bytes,
    client_ca: bytes | None,
    kubelet_conf: bytes | None,
    client_pem: bytes | None,
    now: datetime,
) -> list[str]:
    """What keeps this node's kubelet from authenticating to (or trusting) the cluster; empty when nothing."""
    ca = pki.load_certificate(ca_cert_pem, "the cluster CA certificate")
    problems = []
    if client_ca is None:
        problems.append("the kubelet's client CA file is missing")
    elif not _same_certificate(client_ca, ca):
        problems.append("the kubelet's client CA file is not the cluster CA")
    if kubelet_conf is None:
        problems.append(f"{paths.KUBELET_CONF} is missing")
        return problems
    try:
        cluster, user = Kubeconfig.from_yaml(kubelet_conf).current()
    except (KubereviveError, ValueError, KeyError, TypeError, AttributeError):
        problems.append(f"{paths.KUBELET_CONF} is unreadable")
        return problems
    if cluster.certificate_authority_data is None or not _same_certificate(cluster.certificate_authority_data, ca):
        problems.append(f"{paths.KUBELET_CONF} does not embed the cluster CA")
    pem = user.client_certificate_data or client_pem
    if pem is None:
        problems.append("the kubelet's client certificate is missing")
        return problems
    try:
        cert = pki.load_certificate(pem, "the kubelet's client certificate")
    except KubereviveError:
        problems.append("the kubelet's client certificate is unreadable")
        return problems
    if not pki.verify_signed_by(cert, ca):
        problems.append("the kubelet's client certificate is not signed by the cluster CA")
    if now > cert.not_valid_after_utc:
        problems.append("the kubelet's client certificate has expired")
    cn = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    if cn != [f"system:node:{node_name}"]:
        problems.append(f"the kubelet's client certificate is for {cn}, not system:node:{node_name}")
    return problems


def _same_certificate(pem: bytes, ca: x509.Certificate) -> bool:
    try:
        return pki.load_certificate(pem, "a CA certificate") == ca
    except KubereviveError:
        return False


def ready_since(node: dict[str, Any], since: datetime) -> tuple[bool, str]:
    """The Node is Ready with a heartbeat at or after ``since`` (a status posted by a kubelet that the new
    control plane accepts), and (reason)."""
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") != "Ready":
            continue
        raw = c.get("lastHeartbeatTime")
        try:
            beat = datetime.strptime(str(raw), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=since.tzinfo)
        except ValueError:
            return False, f"Ready={c.get('status')} with an unreadable heartbeat {raw!r}"
        fresh = beat >= since
        return c.get("status") == "True" and fresh, f"Ready={c.get('status')}, last heartbeat {raw}"
    return False, "no Ready condition"


def is_ready(node: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (node.get("status") or {}).get("conditions") or []
    )


__all__ = [
    "STALE_HEARTBEAT",
    "NodeTrustFiles",
    "client_ca_file",
    "is_ready",
    "kubelet_conf_server",
    "node_trust_files",
    "ready_since",
    "trust_problems",
    "unreporting_nodes",
]


# ------------------------------------------------------------------------------------- eviction guard

EVICTION_TAINTS = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")


def guard_manifest(content: bytes) -> bytes:
    """The kube-controller-manager manifest with the eviction guard on (:func:`kuberevive.core.guard.guard`)."""
    return render_manifest(guardcore.guard(parse_manifest(content.decode()))).encode()


def unguard_manifest(content: bytes) -> bytes:
    """The kube-controller-manager manifest with the eviction guard off again."""
    return render_manifest(guardcore.unguard(parse_manifest(content.decode()))).encode()


def eviction_taints(nodes: list[dict[str, Any]]) -> list[str]:
    """``node (taint)`` for every NoExecute not-ready/unreachable taint: pods there would be evicted at once."""
    out = []
    for n in nodes:
        for t in (n.get("spec") or {}).get("taints") or []:
            if t.get("key") in EVICTION_TAINTS and t.get("effect") == "NoExecute":
                out.append(f"{n['metadata']['name']} ({t['key']})")
    return out
