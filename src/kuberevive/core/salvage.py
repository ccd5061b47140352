"""Salvaging the trust material of a control-plane node from a healthy peer (issue 12: one master of an HA
stacked-etcd cluster lost ``/etc/kubernetes``, the others are healthy).

Minting new CAs on that node would be wrong: its etcd member could no longer talk to its peers (another etcd
CA) and every other node would have to be re-trusted. Instead the cluster's own CAs and ``sa.key`` are copied
from a peer (read only, over SSH), after three checks that the material is the cluster's and whole:

* every file of :data:`SALVAGE_FILES` is there, each CA certificate is a valid CA whose key belongs to it, and
  ``sa.pub`` belongs to ``sa.key`` (:func:`material_problems`);
* this node's surviving kubelet client certificate (when there is one) was issued by the peer's ``ca.crt``;
* the peer's API server serves with a certificate that ``ca.crt`` verifies (a TLS handshake, done by io).

Everything after is the normal local recovery with the SAME CAs: leaf certificates with this node's SANs, the
kubeconfigs, the manifests with this node's address, and the etcd member restarted on its own data as a
member of the existing cluster (:func:`initial_cluster`: what ``kubeadm join --control-plane`` writes).

Pure: file contents, manifests and member lists in, problems and artifacts out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from cryptography import x509

from kuberevive.core import pki, yamlfmt
from kuberevive.core.diagnose import Area, Finding, Severity
from kuberevive.core.kubeconfig import render_kubeconfig
from kuberevive.core.manifests import (
    APISERVER_ADVERTISE_ANNOTATION,
    ETCD_ADVERTISE_ANNOTATION,
    parse_manifest,
)
from kuberevive.core.netaddr import join_host_port, split_endpoint, url_host
from kuberevive.errors import ConfigError, PkiError, PlanError
from kuberevive.model import paths, yamlload
from kuberevive.model.artifacts import Artifact, ArtifactKind
from kuberevive.model.inventory import CONTROL_PLANE, InventoryNode
from kuberevive.model.recover import Step, StepKind

STEP_ID = "salvage-trust"
BRIDGE_STEP_ID = "kubelet-via-peer"

#: What is copied from the peer (pki-relative): the three CA pairs and the ServiceAccount key pair.
SALVAGE_FILES = paths.TRUST_FILES

DEFAULT_API_PORT = 6443


@dataclass(frozen=True)
class PeerEndpoints:
    """Where a peer's API server and etcd answer, from the annotations kubeadm puts on their manifests."""

    api_host: str
    api_port: int
    etcd_client_url: str

    @property
    def api(self) -> str:
        """The API server's ``host:port`` (an IPv6 host in brackets)."""
        return join_host_port(self.api_host, self.api_port)


def _annotation(data: bytes, key: str) -> str:
    pod = parse_manifest(data)
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(key)
    return str(value) if value else ""


def peer_endpoints(peer: str, apiserver_yaml: bytes | None, etcd_yaml: bytes | None) -> PeerEndpoints:
    """The peer's API endpoint and etcd client URL, from its kube-apiserver and etcd manifests.

    PlanError (naming the peer) when a manifest is missing or carries no kubeadm annotation: the peer is then
    not a healthy kubeadm control-plane node with stacked etcd."""
    todo = "pass --peer with a healthy control-plane node of this cluster"
    if apiserver_yaml is None or etcd_yaml is None:
        missing = paths.APISERVER_MANIFEST if apiserver_yaml is None else paths.ETCD_MANIFEST
        raise PlanError(f"peer {peer} has no {missing}: it is not a healthy stacked control-plane node", todo)
    try:
        api = _annotation(apiserver_yaml, APISERVER_ADVERTISE_ANNOTATION)
        etcd = _annotation(etcd_yaml, ETCD_ADVERTISE_ANNOTATION)
        split = split_endpoint(api)
        if split is None or not split[0] or not split[1]:
            raise ValueError(api)
        host, port = split[0], int(split[1])
    except (ConfigError, ValueError):
        raise PlanError(
            f"peer {peer}: its kube-apiserver or etcd manifest lacks kubeadm's advertise-address annotation", todo
        ) from None
    if not etcd.startswith("https://"):
        raise PlanError(f"peer {peer}: its etcd manifest advertises no https client URL ({etcd or 'none'})", todo)
    return PeerEndpoints(host, port, etcd.split(",")[0])


def material_problems(
    files: Mapping[str, bytes | None], now: datetime, kubelet_client_pem: bytes | None = None
) -> list[str]:
    """Why the peer's trust material cannot be used (empty: it can). ``files``: pki-relative name -> bytes
    (None when the peer does not have it); ``kubelet_client_pem``: this node's surviving kubelet client
    certificate, which the cluster CA must have issued."""
    problems = [f"{name} is missing" for name in SALVAGE_FILES if files.get(name) is None]
    if problems:
        return problems
    cas: dict[str, x509.Certificate] = {}
    for cert_name, key_name in paths.CA_PAIRS:
        try:
            cert = pki.load_certificate(files[cert_name] or b"", cert_name)
            key = pki.load_private_key(files[key_name] or b"", key_name)
        except PkiError as exc:
            problems.append(exc.message)
            continue
        if not pki.is_ca_certificate(cert):
            problems.append(f"{cert_name} is not a CA certificate")
        elif not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            problems.append(f"{cert_name} is not valid now (valid until {cert.not_valid_after_utc:%Y-%m-%d})")
        elif not pki.key_matches_certificate(key, cert):
            problems.append(f"{key_name} does not belong to {cert_name}")
        else:
            cas[cert_name] = cert
    try:
        sa_key = pki.load_private_key(files["sa.key"] or b"", "sa.key")
        if not pki.public_key_matches(sa_key, pki.load_public_key(files["sa.pub"] or b"", "sa.pub")):
            problems.append("sa.pub does not belong to sa.key")
    except PkiError as exc:
        problems.append(exc.message)
    ca = cas.get("ca.crt")
    if kubelet_client_pem is not None and ca is not None:
        try:
            kubelet = pki.load_certificate(kubelet_client_pem, str(paths.KUBELET_CLIENT_CURRENT))
        except PkiError:
            kubelet = None  # unreadable here: nothing to compare with
        if kubelet is not None and not pki.verify_signed_by(kubelet, ca):
            problems.append(
                f"its ca.crt did not issue this node's kubelet client certificate ({paths.KUBELET_CLIENT_CURRENT}): "
                "it belongs to another cluster"
            )
    return problems


def salvage_artifacts(certificates_dir: str, material: Mapping[str, bytes], peer: str) -> list[Artifact]:
    """The peer's trust material as this node's files, with kubeadm's modes (keys and sa.pub 0600)."""
    cdir = PurePosixPath(certificates_dir)
    return [trust_artifact(cdir, name, material[name], f"{name} from peer {peer}") for name in SALVAGE_FILES]


def trust_artifact(cdir: PurePosixPath, name: str, data: bytes, why: str) -> Artifact:
    """A trust file (pki-relative ``name``) with kubeadm's mode: keys and ``sa.pub`` 0600, certificates 0644."""
    if name.endswith(".key"):
        mode, kind = pki.MODE_KEY, ArtifactKind.PRIVATE_KEY
    elif name.endswith(".pub"):
        mode, kind = pki.MODE_PUBLIC_KEY, ArtifactKind.PUBLIC_KEY
    else:
        mode, kind = pki.MODE_CERT, ArtifactKind.CERTIFICATE
    return Artifact(cdir / name, mode, kind, why, data)


def initial_cluster(
    members: Sequence[tuple[str, Sequence[str]]], node_name: str, advertise_address: str
) -> tuple[tuple[str, str], ...]:
    """``--initial-cluster`` of a member that rejoins its peers: (name, first peer URL) of every member in
    etcd's order, as ``kubeadm join --control-plane`` writes it. ``members``: (name, peer URLs) from the peer's
    etcd. PlanError when this node is no longer a member (its data would then start a stranger)."""
    mine = [m for m in members if m[0] == node_name]
    if not mine:
        names = ", ".join(m[0] or "(unstarted)" for m in members)
        raise PlanError(
            f"the cluster's etcd has no member named {node_name} (members: {names}): this node was removed "
            "from etcd, so its data cannot rejoin",
            "add it back with 'etcdctl member add' on a healthy peer, or remove its data dir and join it again "
            "with 'kubeadm join --control-plane'",
        )
    urls = list(mine[0][1])
    if not any(advertise_address in u for u in urls):
        raise PlanError(
            f"etcd member {node_name} has peer URLs {urls}, not this node's address {advertise_address}",
            "run recover on the node that owns this member, or pass --config",
        )
    return tuple((name, str(u[0])) for name, u in members if name and u)


def candidates(
    explicit: Sequence[InventoryNode], inventory: Sequence[InventoryNode], node_name: str
) -> tuple[InventoryNode, ...]:
    """The peers to try, in order: those named with ``--peer``, else the inventory's other control-plane
    nodes."""
    if explicit:
        return tuple(p for p in explicit if p.name != node_name)
    return tuple(n for n in inventory if n.is_control_plane and n.name != node_name)


def parse_peer(text: str, port: int = 22) -> InventoryNode:
    """``NAME=ADDRESS`` (``--peer``) as a control-plane inventory node; ConfigError when malformed."""
    name, sep, address = text.partition("=")
    if not sep or not name.strip() or not address.strip() or "=" in address:
        raise ConfigError(
            f"--peer {text!r} is not NAME=ADDRESS", "name a healthy control-plane node, e.g. --peer cp1=10.0.0.11"
        )
    return InventoryNode(name.strip(), address.strip(), port=port, roles=frozenset({CONTROL_PLANE}))


def bridge_kubelet_conf(cluster_name: str, server: str, ca_pem: bytes, node_name: str) -> bytes:
    """A kubelet.conf that reaches ``server`` (a healthy peer's API server) with the kubelet's surviving client
    certificate (``kubelet-client-current.pem``), trusting the salvaged ``ca.crt``: the kubelet keeps its Node
    Ready (and its pods from being evicted) while this node's own API server is being rebuilt."""
    user = f"system:node:{node_name}"
    doc: dict[str, Any] = yamlload.load(render_kubeconfig(cluster_name, server, ca_pem, user, b"", b""))
    current = str(paths.KUBELET_CLIENT_CURRENT)
    doc["users"][0]["user"] = {"client-certificate": current, "client-key": current}
    return yamlfmt.dump(doc).encode()


def bridge_step(node_name: str) -> Step:
    return Step(
        BRIDGE_STEP_ID,
        StepKind.PROCESS,
        "the kubelet reports through the peer's API server meanwhile",
        "a control-plane kubelet talks to its own API server, which is gone: its Node would turn NotReady and the "
        "healthy peers' controller-managers would evict its pods. With the salvaged ca.crt and its surviving "
        "client certificate it reaches the peer's API server instead until this node's runs again (the "
        "kubelet-client step writes kubeadm's kubelet.conf back); restarting it keeps its containers",
        (str(paths.KUBELET_CONF), str(paths.MANIFESTS_DIR) + "/"),
        objects=("systemctl restart kubelet",),
        verify=f"node {node_name} Ready with a heartbeat after the restart (asked through the peer)",
    )


def salvage_step(peers: Sequence[str], certificates_dir: str) -> Step:
    cdir = PurePosixPath(certificates_dir)
    return Step(
        STEP_ID,
        StepKind.WRITE,
        f"trust material from peer {' or '.join(peers)}",
        "the other control-plane nodes are healthy: the cluster's CAs and sa.key are copied from the first peer "
        "that passes the checks (read only; nothing is written there) instead of new ones, so this etcd member "
        "rejoins its peers on its own data and nothing else in the cluster is re-trusted",
        tuple(str(cdir / n) for n in SALVAGE_FILES),
        objects=tuple(f"{p}:{cdir}/{{{','.join(SALVAGE_FILES)}}} (read over SSH)" for p in peers),
        verify="every file present; each CA certificate valid and matching its key; sa.pub matches sa.key; this "
        "node's kubelet client certificate issued by ca.crt; the peer's API server serves with ca.crt (TLS "
        "handshake)",
    )


def peer_finding(peer: InventoryNode, problem: str | None) -> Finding:
    """``diagnose --peer``: whether ``peer`` holds usable trust material (``problem`` None) or why not."""
    subject = f"peer {peer.name} ({peer.address})"
    if problem is None:
        return Finding(
            "recovery.peer-trust",
            Severity.INFO,
            Area.RECOVERY,
            subject,
            "holds the cluster's trust material: the CA pairs and sa.key/sa.pub match, this node's kubelet "
            "certificate was issued by its CA, and its API server serves with that CA",
            f"if this node lost /etc/kubernetes: kuberevive recover --apply --peer {peer.name}={peer.address}",
        )
    return Finding(
        "recovery.peer-unusable",
        Severity.WARNING,
        Area.RECOVERY,
        subject,
        f"cannot give its trust material: {problem}",
        "fix the SSH access (--ssh-key, --known-hosts) or the peer, or name another healthy control-plane node "
        "with --peer NAME=ADDRESS",
    )


def member_peers(
    members: Sequence[tuple[str, Sequence[str]]], node_name: str, port: int = 22
) -> tuple[InventoryNode, ...]:
    """The other members of this node's etcd cluster (name, peer URLs; as its surviving data records them) as
    candidate control-plane peers, each at the host of its first peer URL; unnamed (never started) members and
    members without a usable URL are left out."""
    out = []
    for name, urls in members:
        host = next((url_host(u) for u in urls if url_host(u)), None)
        if name and name != node_name and host:
            out.append(InventoryNode(name, host, port=port, roles=frozenset({CONTROL_PLANE})))
    return tuple(out)


def peer_flags(peers: Sequence[InventoryNode]) -> str:
    """``--peer NAME=ADDRESS`` for each peer, as recover and diagnose take them."""
    return " ".join(f"--peer {p.name}={p.address}" for p in peers)


def etcd_peers_finding(data_dir: str, peers: Sequence[InventoryNode]) -> Finding:
    """``diagnose``: the other etcd members this node's data lists, the peers to try (with the SSH options)."""
    names = ", ".join(f"{p.name} ({p.address})" for p in peers)
    return Finding(
        "recovery.etcd-peers",
        Severity.INFO,
        Area.RECOVERY,
        data_dir,
        f"the etcd data lists {len(peers)} other member(s): {names}; a healthy one can give this node the "
        "cluster's trust material",
        f"check them: kuberevive diagnose {peer_flags(peers)} --ssh-key KEY --known-hosts FILE; if this node lost "
        f"/etc/kubernetes: kuberevive recover --apply {peer_flags(peers)} --ssh-key KEY --known-hosts FILE",
        (("peers", tuple(f"{p.name}={p.address}" for p in peers)),),
    )
