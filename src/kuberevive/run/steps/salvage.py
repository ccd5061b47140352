"""Step 0 when healthy control-plane peers are given: the cluster's CAs and sa.key salvaged from one of them
(:mod:`kuberevive.core.salvage`), and the etcd member list this member rejoins.

The peer is only read (over SSH: its pki and two manifests) and its API server greeted with a TLS handshake;
nothing is written there. The files are recorded in the journal before they are written here (keys 0600, a
replaced file moved aside), so a run killed in this step writes exactly the same bytes when resumed.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import PurePosixPath

from kuberevive.core import allmasters, salvage
from kuberevive.core.retrust import ready_since
from kuberevive.errors import KubereviveError, PlanError
from kuberevive.model import paths
from kuberevive.model.artifacts import Artifact, ArtifactKind
from kuberevive.model.inventory import InventoryNode
from kuberevive.run.context import StepContext, etcd_client_files
from kuberevive.run.peers import check_peer
from kuberevive.run.steps.kubelet import ensure_manifests_dir, restart_kubelet
from kuberevive.waiting import QUICK, wait_for

NOTHING_WRITTEN = "nothing was written on this node or on the peers"
BRIDGE_TIMEOUT = 120.0


def _peers(ctx: StepContext) -> list[InventoryNode]:
    """The peers the plan named (journal), as the options reach them (--peer, else the inventory)."""
    inventory = ctx.options.inventory.nodes if ctx.options.inventory is not None else ()
    known = {n.name: n for n in salvage.candidates(ctx.options.peers, inventory, ctx.identity.node_name)}
    names = ctx.journal.salvage_from or []
    missing = [name for name in names if name not in known]
    if missing:
        raise PlanError(
            f"the recovery salvages trust material from {', '.join(missing)}, but this run was not told how to reach "
            "it",
            "run 'kuberevive recover --apply' again with the same --peer (or --inventory) options",
        )
    return [known[name] for name in names]


def salvage_trust(ctx: StepContext, i: int) -> None:
    cfg = ctx.bootstrap_cfg()
    cdir = PurePosixPath(cfg.cluster.certificates_dir)

    def compute() -> list[Artifact]:
        try:
            kubelet_pem = ctx.root.read(paths.KUBELET_CLIENT_CURRENT)  # the cluster CA must have issued it
        except KubereviveError:
            kubelet_pem = None
        failures = []
        for peer in _peers(ctx):
            try:
                material, endpoints = check_peer(
                    peer, ctx.options, str(cdir), ctx.utcnow(), kubelet_pem, ctx.fx.peer_files, ctx.fx.verify_tls
                )
            except KubereviveError as exc:  # unreachable, unreadable, or failed a check
                failures.append(f"{peer.name} ({peer.address}): {exc.message}")
                ctx.progress(f"      peer {peer.name} cannot be used: {exc.message}")
                continue
            ctx.journal.salvage_peer = peer.name
            ctx.journal.peer_etcd_url = endpoints.etcd_client_url
            ctx.journal.peer_api = endpoints.api
            ctx.progress(
                f"      peer {peer.name}: trust material complete, pairs match, its API server serves with its CA"
            )
            return salvage.salvage_artifacts(str(cdir), material, peer.name)
        raise PlanError(
            "no peer could give its trust material: " + "; ".join(failures) + f"; {NOTHING_WRITTEN}",
            "fix the SSH access (--ssh-key, --known-hosts) or name a healthy control-plane node with --peer "
            "NAME=ADDRESS, then run 'kuberevive recover --apply' again",
        )

    ctx.write_step_files(salvage.STEP_ID, i, compute)


def kubelet_via_peer(ctx: StepContext, i: int) -> None:
    """The kubelet reaches the peer's API server with its surviving client certificate (salvage.bridge_step)."""
    cfg = ctx.bootstrap_cfg()
    try:
        client_pem = ctx.root.read(paths.KUBELET_CLIENT_CURRENT)
    except KubereviveError:
        client_pem = None
    if client_pem is None or not ctx.journal.peer_api:
        ctx.progress("      the kubelet has no client certificate to reach the peer with: left as it is")
        return
    ca = ctx.root.read(PurePosixPath(cfg.cluster.certificates_dir) / "ca.crt")
    if ca is None:
        raise PlanError("pki/ca.crt is missing although salvage-trust is done", "run recover --apply again")
    server = f"https://{ctx.journal.peer_api}"
    conf = salvage.bridge_kubelet_conf(cfg.cluster.cluster_name, server, ca, ctx.identity.node_name)
    why = f"kubelet.conf through peer {ctx.journal.salvage_peer} (until this node's API server runs)"
    art = Artifact(paths.KUBELET_CONF, 0o600, ArtifactKind.KUBECONFIG, why, conf)
    ctx.write_step_files(salvage.BRIDGE_STEP_ID, i, lambda: [art])
    ensure_manifests_dir(ctx)  # watched from the start: the kubelet sees etcd.yaml at once
    since = ctx.utcnow().replace(microsecond=0) - timedelta(seconds=1)
    restart_kubelet(ctx)
    api = ctx.fx.kubeconfig_api(ctx.root, conf)
    node = f"/api/v1/nodes/{ctx.identity.node_name}"
    wait_for(
        f"node {ctx.identity.node_name} Ready through {server}",
        BRIDGE_TIMEOUT,
        lambda: ready_since(api.get(node), since),
    )
    ctx.progress(f"      the kubelet reports through {server}: node {ctx.identity.node_name} Ready")


def wait_own_api_server(ctx: StepContext, timeout: float) -> None:
    """With healthy peers, the control-plane endpoint (a load balancer) answers /readyz through them at once: wait
    for this node's own API server too (kubeadm's kubelet.conf names it), before requests can land on it."""
    if not ctx.journal.salvage_from:
        return
    conf = ctx.root.read(paths.KUBELET_CONF)
    if conf is None:
        raise PlanError(f"{paths.KUBELET_CONF} is missing although kubelet-client is done", "run recover again")
    own = ctx.fx.kubeconfig_api(ctx.root, conf)
    wait_for(
        f"this node's API server ({own.shown}/readyz)", timeout, own.readyz, QUICK, clock=ctx.monotonic, sleep=ctx.sleep
    )


def etcd_members(ctx: StepContext) -> tuple[tuple[str, str], ...]:
    """(name, peer URL) of every member of the cluster this etcd member rejoins, read once from the peer's etcd
    with this node's etcd client certificate and kept in the journal; in the all-masters case this node and the
    other masters (their names and addresses); empty otherwise."""
    if ctx.journal.masters:
        return allmasters.initial_cluster([ctx.identity, *ctx.journal.masters])
    if not ctx.journal.salvage_from:
        return ()
    if ctx.journal.etcd_members is None:
        url = ctx.journal.peer_etcd_url
        if not url:
            raise PlanError("the journal names no peer etcd although salvage-trust is done", "run recover again")
        ca, cert, key = etcd_client_files(ctx.root, ctx.bootstrap_cfg())
        members = ctx.fx.peer_etcd_client(url, ca, cert, key).members()
        joined = salvage.initial_cluster(
            [(m.name, m.peer_urls) for m in members], ctx.identity.node_name, ctx.identity.advertise_address
        )
        ctx.journal.etcd_members = [[name, url] for name, url in joined]
        ctx.journal.save()
        ctx.progress(f"      etcd members (from {url}): {', '.join(name for name, _ in joined)}")
    return tuple((m[0], m[1]) for m in ctx.journal.etcd_members)
