"""``kuberevive replace-control-plane NODE``: a stacked-etcd control-plane node whose machine is gone for good
(its etcd data, ``/etc/kubernetes`` and kubelet state), replaced by a fresh machine, from a healthy master.

The safe order (operators-needs §2; what ``kubeadm join --control-plane`` does with EtcdLearnerMode): refuse
unless the healthy voting members keep a quorum without the lost one; remove the lost member; write the new
machine's files (the cluster's CAs and ``sa.key`` from this node, its own leaf certificates and kubeconfigs,
the static-pod manifests with etcd joining the existing cluster); add it as an etcd learner; start its kubelet;
promote the learner once it has caught up; wait for its API server and its Node.

Pure: members, health, file contents and the time in; decisions, refusals and artifacts out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

import yaml

from kuberevive.core import salvage
from kuberevive.core.generate import Target, generate
from kuberevive.core.manifests import joined_etcd_pod, manifest_path, render_manifest
from kuberevive.core.recover import kubelet_files
from kuberevive.errors import PlanError
from kuberevive.model import paths
from kuberevive.model.artifacts import Artifact, ArtifactKind
from kuberevive.model.config import KubeadmConfig, NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config

ETCD_PEER_PORT = 2380

#: Step id -> title, in the order they run (run/replace.py checks its step table against it).
STEP_TITLES = {
    "remove-member": "remove the lost etcd member",
    "prepare-node": "write the new machine's PKI, kubeconfigs, manifests and kubelet files (over SSH)",
    "add-learner": "add the new machine as an etcd learner",
    "start-kubelet": "start the new machine's kubelet (it runs etcd and the control plane)",
    "promote": "promote the learner once it has caught up",
    "api-ready": "wait for the new API server (/readyz)",
    "node-ready": "wait for the new Node to be Ready",
    "old-node": "delete the old Node object (the name changed)",
}

#: Files a joined control plane does not have (``kubeadm init`` only) or gets another way (kubelet.conf).
NOT_WRITTEN = (paths.SUPER_ADMIN_CONF, paths.KUBELET_CONF)


@dataclass(frozen=True)
class EtcdMember:
    id: str
    name: str
    peer_urls: tuple[str, ...]
    is_learner: bool = False
    healthy: bool = False
    why: str = ""
    """Why it is not healthy (its ``/health`` reason, "unreachable", "not started")."""


@dataclass(frozen=True)
class MemberVerdict:
    """What the membership allows: the lost member to remove (None: already gone) and the healthy voters."""

    lost: EtcdMember | None
    healthy: tuple[str, ...]
    voters: int


def peer_url(address: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{ETCD_PEER_PORT}"


def _names(members: Sequence[EtcdMember]) -> str:
    return ", ".join(m.name or m.id for m in members) or "none"


def _health(members: Sequence[EtcdMember]) -> str:
    return "; ".join(f"{m.name or m.id}: {'healthy' if m.healthy else m.why or 'unhealthy'}" for m in members)


def check_membership(members: Sequence[EtcdMember], node: str, new_address: str) -> MemberVerdict:
    """The lost member ``node`` may be removed and replaced: PlanError (why, and what to do) when not.

    Refused: the member still answers (the machine is not lost); the healthy voters (without it) have no quorum
    of the cluster now (then they also have none without it: removing needs a quorum); another learner is
    pending; the new peer URL belongs to another member. A learner at the new address (a run that stopped after
    adding it) is fine."""
    new_url = peer_url(new_address)
    lost = next((m for m in members if m.name == node and not m.is_learner), None)
    voters = [m for m in members if not m.is_learner]
    others = [m for m in voters if m is not lost]
    healthy = [m for m in others if m.healthy]
    if lost is not None and lost.healthy:
        raise PlanError(
            f"etcd member {node} ({', '.join(lost.peer_urls)}) is healthy: its machine is not lost, so it is not "
            "replaced",
            f"stop and wipe {node} first if it must be replaced, or run recover on {node} if only its files are broken",
        )
    require_quorum(voters, healthy, f"removing {node}")
    for m in members:
        if m is lost:
            continue
        if new_url in m.peer_urls and not (m.is_learner and m.name in ("", node)):
            raise PlanError(
                f"etcd member {m.name or m.id} already has the peer URL {new_url}",
                "pass the new machine's own address with --address",
            )
        if m.is_learner and new_url not in m.peer_urls:
            raise PlanError(
                f"etcd has a learner that is not promoted yet ({m.name or m.id}, {', '.join(m.peer_urls)})",
                "wait for it to be promoted, or remove it with 'etcdctl member remove', then run again",
            )
    return MemberVerdict(lost, tuple(m.name for m in healthy), len(voters))


def require_quorum(voters: Sequence[EtcdMember], healthy: Sequence[EtcdMember], what: str) -> None:
    """PlanError unless the ``healthy`` voters are a quorum of ``voters`` (``what`` needs one)."""
    quorum = len(voters) // 2 + 1
    if len(healthy) < quorum:
        raise PlanError(
            f"etcd has lost quorum: {len(healthy)} of {len(voters)} voting members healthy ({_health(voters)}), "
            f"{quorum} needed; {what} needs a quorum, and without one the cluster cannot agree to it",
            "bring a lost member back first (kuberevive recover on a node whose etcd data survived), or restore "
            "quorum with 'kuberevive quorum-restore' when every master's machine is there; then replace the "
            "remaining lost nodes one at a time",
        )


def resumed_membership(members: Sequence[EtcdMember], node: str) -> MemberVerdict:
    """A resumed replacement (the lost member is gone already): the voters must still have a quorum to add or
    promote the learner."""
    voters = [m for m in members if not m.is_learner]
    healthy = [m for m in voters if m.healthy]
    require_quorum(voters, healthy, f"resuming the replacement of {node}")
    return MemberVerdict(None, tuple(m.name for m in healthy), len(voters))


def initial_cluster(members: Sequence[EtcdMember], name: str, address: str) -> tuple[tuple[str, str], ...]:
    """``--initial-cluster`` of the new member after it was added: every member in etcd's order (the unstarted
    new one under its name), as ``kubeadm join --control-plane`` writes it."""
    url = peer_url(address)
    out = []
    for m in members:
        if url in m.peer_urls:
            out.append((name, url))
        elif m.name and m.peer_urls:
            out.append((m.name, m.peer_urls[0]))
    if (name, url) not in out:
        out.append((name, url))
    return tuple(out)


def new_node_config(
    cluster_configuration: str,
    kubelet_configuration: str | None,
    name: str,
    address: str,
    bind_port: int,
    cri_socket: str,
) -> KubeadmConfig:
    """The stored ClusterConfiguration (``kube-system/kubeadm-config``) with the new node's identity."""
    init = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "InitConfiguration",
        "localAPIEndpoint": {"advertiseAddress": address, "bindPort": bind_port},
        "nodeRegistration": {"name": name, "criSocket": cri_socket},
    }
    docs = [yaml.safe_dump(init), cluster_configuration]
    if kubelet_configuration:
        docs.append(kubelet_configuration)
    text = "---\n" + "\n---\n".join(d.strip("\n") for d in docs) + "\n"
    cfg = load_kubeadm_config(text, NodeFacts(hostname=name, default_address=address))
    if cfg.cluster.etcd_local is None:
        raise PlanError(
            "the cluster uses external etcd: replace-control-plane replaces stacked etcd members only",
            "join the new machine with 'kubeadm join --control-plane'",
        )
    return cfg


def kubeadm_flags(
    template: Sequence[tuple[str, str]], name: str, address: str, extra: Sequence[tuple[str, str]]
) -> bytes:
    """The new node's ``kubeadm-flags.env``: this node's flags (the cluster's CRI socket and sandbox image), its
    ``--node-ip`` and ``--hostname-override`` set to the new node's, then ``extra`` (``--kubelet-arg``, per node,
    like kubeadm's ``kubeletExtraArgs``) replacing a flag of the same name."""
    given = dict(extra)
    own = {"node-ip": address, "hostname-override": name}
    flags = [(k, own.get(k, v)) for k, v in template if k not in given]
    flags += [(k, v) for k, v in extra]
    return ('KUBELET_KUBEADM_ARGS="' + " ".join(f"--{k}={v}" for k, v in flags) + '"\n').encode()


def kubelet_configuration(config_map_yaml: str) -> bytes:
    """``/var/lib/kubelet/config.yaml``: the cluster's KubeletConfiguration (``kube-system/kubelet-config``)."""
    return config_map_yaml.encode() if config_map_yaml.endswith("\n") else (config_map_yaml + "\n").encode()


def node_artifacts(
    cfg: KubeadmConfig,
    trust: Mapping[str, bytes],
    source: str,
    now: datetime,
    stamp: str,
    members: Sequence[tuple[str, str]],
    kubelet_config: bytes,
    flags_env: bytes,
) -> list[Artifact]:
    """Every file of the new control-plane node: the trust material (``trust``: pki-relative name -> bytes, from
    ``source``), new leaf certificates for its name and address, its kubeconfigs (the kubelet's with a client
    certificate signed here, in a dated pem as kubeadm's kubelet-finalize leaves it), the static-pod manifests with
    etcd joining ``members``, and the kubelet's config.yaml and kubeadm-flags.env. The kubelet's pem is first; the
    ``kubelet-client-current.pem`` link to it is the caller's."""
    cdir = PurePosixPath(cfg.cluster.certificates_dir)
    trust_files = salvage.salvage_artifacts(cfg.cluster.certificates_dir, trust, source)
    existing = {cdir / n: data for n, data in trust.items()}
    generated = generate(Target.ALL, cfg, NodeFacts(hostname=cfg.node_name), now, existing)
    etcd_yaml = render_manifest(joined_etcd_pod(cfg, members)).encode()
    files = [
        dataclasses.replace(a, content=etcd_yaml) if a.path == manifest_path("etcd") else a
        for a in generated.artifacts
        if a.path not in NOT_WRITTEN
    ]
    kubelet = kubelet_files(cfg, trust["ca.crt"], trust["ca.key"], now, stamp)
    return [
        kubelet.pem,
        *trust_files,
        *files,
        kubelet.kubeconfig,
        Artifact(
            paths.KUBELET_CONFIG, 0o644, ArtifactKind.CONFIG, "the cluster's KubeletConfiguration", kubelet_config
        ),
        Artifact(paths.KUBEADM_FLAGS, 0o644, ArtifactKind.CONFIG, "the kubelet's kubeadm flags", flags_env),
    ]


def plan_steps(name_changed: bool) -> list[str]:
    steps = list(STEP_TITLES)
    return steps if name_changed else [s for s in steps if s != "old-node"]


def plan_document(
    node: str,
    new_name: str,
    address: str,
    verdict: MemberVerdict,
    steps: Sequence[str],
    files: Sequence[str],
    notes: Sequence[str],
) -> dict[str, Any]:
    return {
        "node": node,
        "new_name": new_name,
        "address": address,
        "lost_member": None
        if verdict.lost is None
        else {"id": verdict.lost.id, "name": verdict.lost.name, "peer_urls": list(verdict.lost.peer_urls)},
        "healthy_members": list(verdict.healthy),
        "voting_members": verdict.voters,
        "steps": [{"id": s, "title": STEP_TITLES[s]} for s in steps],
        "files": list(files),
        "notes": list(notes),
    }
