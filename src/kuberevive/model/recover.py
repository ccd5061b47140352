"""Data of ``kuberevive recover``: what the node shows, who it is, and the plan (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kuberevive.model.inventory import Inventory, InventoryNode


@dataclass(frozen=True)
class NodeEvidence:
    """What survives on the node, gathered by :func:`kuberevive.io.node.gather_evidence`."""

    hostname: str
    hostname_source: str = "the hostname"
    """Where ``hostname`` came from: under ``--root`` without a readable ``/etc/hostname`` it is this machine's
    (``kuberevive.io.nodefacts.hostname``), which the plan must say."""
    hostname_borrowed: bool = False
    kubelet_config_yaml: str | None = None
    """/var/lib/kubelet/config.yaml."""
    kubelet_instance_config_yaml: str | None = None
    """/var/lib/kubelet/instance-config.yaml (kubeadm v1.34+: the CRI socket, NodeLocalCRISocket)."""
    kubeadm_flags: tuple[tuple[str, str], ...] = ()
    """The ``--name=value`` flags of /var/lib/kubelet/kubeadm-flags.env, in order."""
    kubeadm_flags_present: bool = False
    kubelet_client_cn: str | None = None
    """Subject CN of /var/lib/kubelet/pki/kubelet-client-current.pem (``system:node:<name>``)."""
    etcd_data_dirs: tuple[str, ...] = ()
    """Candidate etcd data dirs that hold ``member/snap`` or ``member/wal``."""
    static_pod_log_dirs: tuple[str, ...] = ()
    """Names of directories under /var/log/pods (``<ns>_<pod>_<uid>``)."""
    addresses: tuple[str, ...] = ()
    """Global addresses of the node's interfaces."""
    default_address: str | None = None
    images: tuple[str, ...] = ()
    """Image references known to the container runtime (``repo/name:tag``)."""
    kubelet_version: str | None = None
    manifest_images: tuple[tuple[str, str], ...] = ()
    """(node path, image) of each surviving static Pod manifest under /etc/kubernetes/manifests."""
    kubelet_active: bool = False
    kubernetes_files: tuple[str, ...] = ()
    """Files present under /etc/kubernetes (absolute paths)."""

    def flag(self, name: str) -> str | None:
        values = [v for k, v in self.kubeadm_flags if k == name]
        return values[-1] if values else None


@dataclass(frozen=True)
class NodeIdentity:
    """Who this control-plane node is, recovered from the evidence (and later checked against etcd)."""

    node_name: str
    advertise_address: str
    bind_port: int
    cri_socket: str
    etcd_data_dir: str
    kubernetes_version: str
    etcd_image: str
    sources: tuple[tuple[str, str], ...] = ()
    """(what, where it came from), shown in the plan."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "node_name": self.node_name,
            "advertise_address": self.advertise_address,
            "bind_port": self.bind_port,
            "cri_socket": self.cri_socket,
            "etcd_data_dir": self.etcd_data_dir,
            "kubernetes_version": self.kubernetes_version,
            "etcd_image": self.etcd_image,
            "sources": dict(self.sources),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NodeIdentity:
        return cls(
            node_name=str(d["node_name"]),
            advertise_address=str(d["advertise_address"]),
            bind_port=int(d["bind_port"]),
            cri_socket=str(d["cri_socket"]),
            etcd_data_dir=str(d["etcd_data_dir"]),
            kubernetes_version=str(d["kubernetes_version"]),
            etcd_image=str(d["etcd_image"]),
            sources=tuple((str(k), str(v)) for k, v in (d.get("sources") or {}).items()),
        )


@dataclass(frozen=True)
class TrustFlags:
    """Which trust material the rest of the cluster sees as new after a recovery (then it must follow)."""

    new_ca: bool
    new_front_proxy: bool
    new_sa: bool


class StepKind(StrEnum):
    WRITE = "write-files"
    WAIT = "wait"
    READ = "read"
    API = "api-objects"
    PROCESS = "process"
    REMOTE = "other-nodes"


@dataclass(frozen=True)
class Step:
    id: str
    kind: StepKind
    title: str
    why: str
    files: tuple[str, ...] = ()
    objects: tuple[str, ...] = ()
    verify: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "title": self.title,
            "why": self.why,
            "files": list(self.files),
            "objects": list(self.objects),
            "verify": self.verify,
        }


@dataclass(frozen=True)
class RecoveryPlan:
    identity: NodeIdentity | None
    steps: tuple[Step, ...]
    done_steps: tuple[str, ...] = ()
    """Steps a resumed recovery already finished (from the journal)."""
    nothing_to_do: str = ""
    """Why there is nothing to do (a healthy node), when ``steps`` is empty."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    node_repairs: tuple[tuple[str, str], ...] = ()
    """With a healthy control plane: other nodes whose kubelet no longer reports (name, why); ``--apply``
    probes them over SSH and repairs those whose credentials are lost or stale."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity.as_dict() if self.identity else None,
            "nothing_to_do": self.nothing_to_do,
            "node_repairs": [{"name": n, "why": w} for n, w in self.node_repairs],
            "steps": [s.as_dict() | {"done": s.id in self.done_steps} for s in self.steps],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class RetrustOptions:
    """How recover reaches and treats the other nodes (command-line options; not kept in the journal)."""

    inventory: Inventory | None = None
    """Nodes and how to reach them; None: the cluster's Node objects (first InternalIP)."""
    ssh_user: str = "root"
    ssh_port: int = 22
    identity_files: tuple[str, ...] = ()
    known_hosts: tuple[str, ...] = ()
    concurrency: int = 8
    node_timeout: float = 300.0
    skip_retrust: bool = False
    """Leave the other nodes alone (they are to be re-joined with the printed command)."""
    eviction_guard: bool = True
    restart_bare_pods: bool = False
    peers: tuple[InventoryNode, ...] = ()
    """Healthy control-plane peers named with ``--peer NAME=ADDRESS``: the trust material is salvaged from the
    first that passes the checks (else the inventory's other control-plane nodes are tried)."""


@dataclass
class Report:
    """The final report: every node and its state, pending CSRs, TokenReviews, aggregated APIs, phase times."""

    nodes: list[dict[str, Any]] = field(default_factory=list)
    pending_csrs: list[dict[str, str]] = field(default_factory=list)
    token_reviews: dict[str, dict[str, Any]] = field(default_factory=dict)
    aggregated_apis: list[dict[str, Any]] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    guard: str = "off"
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "pending_csrs": self.pending_csrs,
            "token_reviews": self.token_reviews,
            "aggregated_apis": self.aggregated_apis,
            "phases_s": self.phases,
            "eviction_guard": self.guard,
            "problems": self.problems,
        }
