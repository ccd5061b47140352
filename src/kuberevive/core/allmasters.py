"""Pure planning of the all-masters case: every control-plane node of a stacked-etcd HA cluster lost
``/etc/kubernetes`` (etcd data and kubelets survive) and no healthy peer holds the trust material to salvage.

The order (docs/recover.md, "All masters lost"):

1. ONE new etcd CA, minted here (the ``etcd-certs`` step);
2. ``masters-etcd``: on every other master, over SSH, that CA and its own etcd server/peer/healthcheck
   certificates (its SANs) and its etcd manifest as ``kubeadm join --control-plane`` writes it (the member name,
   peer URL and data dir of that node), so the members form a majority: etcd answers only with quorum;
3. ``etcd-ready`` + ``etcd-quorum``: this member healthy, then every reachable member healthy (endpoint health);
4. ``read-config``: the ClusterConfiguration from etcd; ONE new cluster CA, front-proxy CA and ``sa.key`` here;
5. ``masters-control-plane``: on every other master, those CAs and ``sa.*``, its leaf certificates (its own
   SANs), kubeconfigs and static Pod manifests as kubeadm wrote them for that node (its advertise address;
   kubelet.conf, controller-manager.conf and scheduler.conf name its own API server, admin.conf the
   control-plane endpoint), its kubelet re-trusted in place (new client certificate, restarted, containers kept);
   its kube-controller-manager waits for 6 while the eviction guard is on;
6. the workers as in the single-master case, then ``masters-controller-managers`` once the guard is off.

Nothing here touches a node: the executor (``run/steps/ha.py``) reads and writes through hosts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import PurePosixPath

from kuberevive.core import recover as core
from kuberevive.core import salvage
from kuberevive.errors import PlanError
from kuberevive.model import paths
from kuberevive.model.artifacts import Artifact
from kuberevive.model.config import KubeadmConfig, NodeFacts
from kuberevive.model.recover import NodeIdentity, Step, StepKind

MASTERS_ETCD = "masters-etcd"
QUORUM = "etcd-quorum"
MASTERS_CONTROL_PLANE = "masters-control-plane"
MASTERS_KCM = "masters-controller-managers"
STEP_IDS = (MASTERS_ETCD, QUORUM, MASTERS_CONTROL_PLANE, MASTERS_KCM)

ETCD_PEER_PORT = 2380
ETCD_CLIENT_PORT = 2379
KCM = "kube-controller-manager"
CONTROL_PLANE = ("etcd", "kube-apiserver", KCM, "kube-scheduler")


def trust_lost(files: Mapping[str, bytes | None]) -> bool:
    """Whether a peer lost its trust material: none of the CA pairs or sa.* is there (the seed disaster)."""
    return all(files.get(name) is None for name in paths.TRUST_FILES)


def master_identity(local: NodeIdentity, name: str, address: str, kubelet_client_cn: str | None) -> NodeIdentity:
    """Another master of the same cluster: its name and address (from ``--peer``/``--inventory``, checked against
    the CN of its surviving kubelet client certificate); the data dir, CRI socket, versions and image are
    cluster-wide (ClusterConfiguration.etcd.local.dataDir; the same kubeadm made every master)."""
    if kubelet_client_cn is not None and kubelet_client_cn != f"system:node:{name}":
        raise PlanError(
            f"the kubelet of control-plane node {name} ({address}) has a client certificate for {kubelet_client_cn}",
            "name each control-plane node as its Node object is named (--peer NAME=ADDRESS or --inventory)",
        )
    return NodeIdentity(
        name,
        address,
        local.bind_port,
        local.cri_socket,
        local.etcd_data_dir,
        local.kubernetes_version,
        local.etcd_image,
        (("node name and address", "--peer / --inventory"),),
    )


def peer_url(identity: NodeIdentity) -> str:
    host = f"[{identity.advertise_address}]" if ":" in identity.advertise_address else identity.advertise_address
    return f"https://{host}:{ETCD_PEER_PORT}"


def client_url(identity: NodeIdentity) -> str:
    return peer_url(identity).removesuffix(f":{ETCD_PEER_PORT}") + f":{ETCD_CLIENT_PORT}"


def initial_cluster(masters: Sequence[NodeIdentity]) -> tuple[tuple[str, str], ...]:
    """``--initial-cluster`` of every member: (name, peer URL) of each master, this node first."""
    return tuple((m.node_name, peer_url(m)) for m in masters)


def check_members(members: Sequence[tuple[str, Sequence[str]]], masters: Sequence[NodeIdentity]) -> None:
    """PlanError unless etcd's member list is exactly the masters (names and peer URLs): the data dirs belong to
    the nodes the plan writes their manifests for."""
    want = {m.node_name: peer_url(m) for m in masters}
    have = {name: tuple(urls) for name, urls in members}
    if set(have) != set(want) or any(want[n] not in have[n] for n in want):
        shown = ", ".join(f"{n} {list(u)}" for n, u in sorted(have.items()))
        raise PlanError(
            f"etcd's members ({shown}) are not the control-plane nodes recover was given "
            f"({', '.join(f'{n} {u}' for n, u in sorted(want.items()))})",
            "name every control-plane node (--peer NAME=ADDRESS for each, or --inventory) as etcd knows it",
        )


def trust_artifacts(
    cfg: KubeadmConfig, material: Mapping[str, bytes], names: Sequence[str], here: str
) -> list[Artifact]:
    """Copies of this node's trust files (pki-relative ``names``) for another master, with kubeadm's modes."""
    cdir = PurePosixPath(cfg.cluster.certificates_dir)
    out = []
    for name in names:
        data = material.get(name)
        if data is None:
            raise PlanError(f"{cdir / name} is missing here although its step is done", "run recover --apply again")
        out.append(salvage.trust_artifact(cdir, name, data, f"{name}, the same as on {here}"))
    return out


ETCD_TRUST = ("etcd/ca.crt", "etcd/ca.key")
CLUSTER_TRUST = tuple(n for n in paths.TRUST_FILES if n not in ETCD_TRUST)


def etcd_artifacts(
    cfg: KubeadmConfig,
    facts: NodeFacts,
    now: datetime,
    etcd_ca: Mapping[str, bytes],
    members: Sequence[tuple[str, str]],
    here: str,
) -> list[Artifact]:
    """One master's etcd files: the shared etcd CA, its own server/peer/healthcheck (and apiserver-etcd-client)
    certificates, and its etcd manifest as a member of the existing cluster. ``cfg``: that node's
    configuration."""
    cdir = PurePosixPath(cfg.cluster.certificates_dir)
    kept = {cdir / n: etcd_ca[n] for n in ETCD_TRUST}
    certs = [a for a in core.etcd_pki_artifacts(cfg, now, {}, kept) if str(a.path.relative_to(cdir)) not in ETCD_TRUST]
    return trust_artifacts(cfg, etcd_ca, ETCD_TRUST, here) + certs + core.manifests_for(cfg, facts, ("etcd",), members)


def control_plane_artifacts(
    cfg: KubeadmConfig,
    facts: NodeFacts,
    now: datetime,
    trust: Mapping[str, bytes],
    etcd_files: Sequence[Artifact],
    members: Sequence[tuple[str, str]],
    stamp: str,
    with_controller_manager: bool,
    here: str,
) -> tuple[list[Artifact], core.KubeletFiles]:
    """One master's files after quorum: the shared CAs and sa.* (every trust file), its leaf certificates,
    kubeconfigs and static Pod manifests, and its kubelet's new client certificate and kubelet.conf (returned
    apart: the pem is written first, then ``kubelet-client-current.pem`` repointed, then kubelet.conf).
    ``etcd_files``: what the etcd phase wrote there (reused when still valid). ``cfg``: that node's stored
    configuration."""
    cdir = PurePosixPath(cfg.cluster.certificates_dir)
    on_node = {a.path: a.content for a in etcd_files}
    kept = {cdir / n: trust[n] for n in paths.TRUST_FILES}
    shared = trust_artifacts(cfg, trust, paths.TRUST_FILES, here)
    shared_paths = {a.path for a in shared}
    leaves = [a for a in core.pki_artifacts(cfg, now, on_node, kept) if a.path not in shared_paths]
    etcd_leaves = [a for a in etcd_files if a.path.suffix in (".crt", ".key") and a.path not in shared_paths]
    leaf_paths = {a.path for a in leaves}
    leaves += [a for a in etcd_leaves if a.path not in leaf_paths]
    ca, key = trust["ca.crt"], trust["ca.key"]
    kubeconfigs = core.control_plane_kubeconfigs(cfg, now, ca, key, {})
    comps = CONTROL_PLANE if with_controller_manager else tuple(c for c in CONTROL_PLANE if c != KCM)
    manifests = core.manifests_for(cfg, facts, comps, members)
    kubelet = core.kubelet_files(cfg, ca, key, now, stamp)
    return shared + leaves + kubeconfigs + manifests, kubelet


def controller_manager_artifact(cfg: KubeadmConfig, facts: NodeFacts) -> Artifact:
    """A master's kube-controller-manager manifest, as kubeadm writes it."""
    (art,) = core.manifests_for(cfg, facts, (KCM,))
    return art


def _on(masters: Sequence[NodeIdentity], files: Sequence[str]) -> tuple[str, ...]:
    return tuple(f"{m.node_name}:{f}" for m in masters for f in files)


def plan_steps(masters: Sequence[NodeIdentity], certificates_dir: str) -> dict[str, Step]:
    """The all-masters steps, by id (``core.recover.plan_steps`` places them). ``masters``: the OTHER masters."""
    cdir = PurePosixPath(certificates_dir)
    names = ", ".join(m.node_name for m in masters)
    k = PurePosixPath("/etc/kubernetes")
    etcd_files = [
        str(cdir / n)
        for n in ("etcd/ca.crt", "etcd/ca.key", "etcd/server.*", "etcd/peer.*", "etcd/healthcheck-client.*")
    ]
    etcd_files.append(str(k / "manifests/etcd.yaml"))
    cp_files = [str(cdir / n) for n in (*CLUSTER_TRUST, "apiserver.*", "apiserver-kubelet-client.*")]
    cp_files += [str(cdir / "front-proxy-client.*"), str(cdir / "apiserver-etcd-client.*")]
    cp_files += [str(k / n) for n in ("admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf")]
    cp_files += [str(k / "manifests/kube-apiserver.yaml"), str(k / "manifests/kube-scheduler.yaml")]
    cp_files += [str(k / "kubelet.conf"), str(paths.KUBELET_PKI / "kubelet-client-<timestamp>.pem")]
    return {
        MASTERS_ETCD: Step(
            MASTERS_ETCD,
            StepKind.REMOTE,
            f"etcd on the other masters ({names}): the same new etcd CA, each member's own certificates and manifest",
            "every master lost its files, so no peer has trust material to salvage: ONE etcd CA (minted here in the "
            "step before) must sign every member's certificates, and each member restarts on its surviving data "
            "with its own name, peer URL and data dir; etcd answers only once a majority runs",
            _on(masters, etcd_files),
            objects=tuple(f"{m.node_name}: member {m.node_name} at {peer_url(m)}" for m in masters),
        ),
        QUORUM: Step(
            QUORUM,
            StepKind.WAIT,
            "wait for etcd quorum: every member healthy",
            "the configuration is read from etcd next, and every API server needs its member",
            verify="GET /health on each member's client URL over mTLS",
        ),
        MASTERS_CONTROL_PLANE: Step(
            MASTERS_CONTROL_PLANE,
            StepKind.REMOTE,
            f"the other masters' control planes ({names}): the same CAs and sa.key, own certificates, kubeconfigs, "
            "manifests, kubelet re-trusted in place",
            "each master gets the CAs and sa.* made here (byte-identical), leaf certificates with its own SANs, "
            "kubeconfigs and manifests as kubeadm wrote them for it (its advertise address; its kubelet, "
            "controller-manager and scheduler talk to its own API server), and a kubelet client certificate of "
            "the new CA (kubelet restarted, containers kept); its kube-controller-manager follows once the eviction "
            "guard is off",
            _on(masters, cp_files),
            objects=tuple(f"{m.node_name}: systemctl restart kubelet" for m in masters),
            verify="each master's own API server /readyz, its Node Ready after the restart",
        ),
        MASTERS_KCM: Step(
            MASTERS_KCM,
            StepKind.REMOTE,
            f"the other masters' kube-controller-manager ({names})",
            "written last, as kubeadm writes it, once taint-based eviction is back: during the recovery only this "
            "node's (guarded) controller-manager may hold the leader lease",
            _on(masters, [str(k / "manifests/kube-controller-manager.yaml")]),
        ),
    }
