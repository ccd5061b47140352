"""Steps 1-4: etcd back on its surviving data with new etcd certificates, and the stored configuration read."""

from __future__ import annotations

import base64
import dataclasses
import re

from kuberevive.core import allmasters, versions
from kuberevive.core import recover as core
from kuberevive.errors import ConfigMismatch, EtcdError, PlanError
from kuberevive.model import paths
from kuberevive.run.context import StepContext
from kuberevive.run.journal import StoredConfig
from kuberevive.run.steps.kubelet import ensure_manifests_dir, kubelet_state, restart_kubelet, stop_orphaned_apiserver
from kuberevive.run.steps.restarts import restart_stale_components
from kuberevive.run.steps.salvage import etcd_members
from kuberevive.waiting import QUICK, wait_for

ETCD_TIMEOUT = 180.0
#: After this long without an etcd container running, the kubelet (which runs and has the manifest, or re-lists it
#: every 20 s) is restarted once more: a restarted kubelet lists the manifests directory and starts etcd at once.
KUBELET_KICK_AFTER = 60.0
#: From then on a failed probe also names the etcd container's and the kubelet's state (etcd takes 2-5 s to start),
#: asked at most every STATE_EVERY seconds.
STATE_AFTER = 10.0
STATE_EVERY = 2.0

_STALE_TLS = re.compile(
    r"unknown ca|bad certificate|not trusted by the etcd CA|certificate verify failed|alert internal error", re.I
)


def etcd_certs(ctx: StepContext, i: int) -> None:
    cfg = ctx.bootstrap_cfg()
    kept = core.kept_files(cfg, ctx.kept)
    now = ctx.utcnow()
    ctx.write_step_files("etcd-certs", i, lambda: core.etcd_pki_artifacts(cfg, now, ctx.on_node(cfg), kept))


def etcd_manifest(ctx: StepContext, i: int) -> None:
    cfg = ctx.bootstrap_cfg()
    members = etcd_members(ctx)  # a member that rejoins its peers (salvage), else a one-member cluster
    ensure_manifests_dir(ctx)  # noted when re-created: kubelet-start then restarts the kubelet
    unchanged = ctx.write_step_files("etcd-manifest", i, lambda: core.manifests_for(cfg, ctx.facts, ("etcd",), members))
    restart_stale_components(ctx, cfg, unchanged, ("etcd",))
    if ctx.journal.timing("etcd_manifest_written") is None:
        ctx.journal.timing("etcd_manifest_written", ctx.clock())


def etcd_ready(ctx: StepContext, i: int) -> None:
    client = ctx.etcd(ctx.bootstrap_cfg())
    restarted = kicked = False
    started = ctx.monotonic()
    looked_at, etcd_runs, kubelet = float("-inf"), False, ""  # the node's state: when last asked, what it showed

    def healthy() -> tuple[bool, str]:
        nonlocal restarted, kicked, looked_at, etcd_runs, kubelet
        try:
            return client.health()
        except EtcdError as exc:
            # an etcd that still runs with other certificates (an earlier, abandoned attempt): the kubelet
            # keeps it since its manifest is identical; restarting the container makes it load the new ones
            if not restarted and _STALE_TLS.search(exc.message):
                restarted = True
                if ctx.host.stop_containers("etcd", ctx.identity.cri_socket):
                    ctx.progress("      etcd ran with other certificates: its container was restarted")
            now = ctx.monotonic()
            if not ctx.host.live or now - started < STATE_AFTER:
                raise
            # what the node shows, in the last message (the one a timeout reports); asked at most every
            # STATE_EVERY seconds (a crictl and an HTTP request), not at every 0.2 s probe
            if now - looked_at >= STATE_EVERY:
                looked_at = now
                etcd_runs = bool(ctx.host.containers("etcd", ctx.identity.cri_socket))
                kubelet = kubelet_state(ctx)
            state = f"; etcd container {'running' if etcd_runs else 'not running'}, the kubelet {kubelet}"
            if not kicked and not etcd_runs and now - started >= KUBELET_KICK_AFTER:
                kicked = True
                ctx.progress(
                    f"      no etcd container runs {KUBELET_KICK_AFTER:.0f} s after its manifest (the kubelet "
                    f"{kubelet}): restarting the kubelet once more (running containers are kept)"
                )
                stop_orphaned_apiserver(ctx)
                restart_kubelet(ctx)
            raise EtcdError(exc.message + state, exc.hint) from exc

    wait_for("etcd", ETCD_TIMEOUT, healthy, QUICK, clock=ctx.monotonic, sleep=ctx.sleep)
    t = ctx.journal.timing("etcd_manifest_written")
    if t is not None and ctx.journal.timing("etcd_ready") is None:
        ctx.journal.timing("etcd_ready", ctx.clock())
    ctx.progress(f"      etcd is healthy: {client.status().get('version', '?')}")


def read_config(ctx: StepContext, i: int) -> None:
    client = ctx.etcd(ctx.bootstrap_cfg())
    members = client.members()
    mine = [m for m in members if m.name == ctx.identity.node_name]
    if ctx.journal.salvage_from and mine:  # a member of an HA cluster that rejoined its peers
        peer_urls = list(mine[0].peer_urls)
    elif ctx.journal.masters:  # every master lost its files: the members are exactly the masters
        allmasters.check_members([(m.name, m.peer_urls) for m in members], [ctx.identity, *ctx.journal.masters])
        peer_urls = list(mine[0].peer_urls)
    elif len(members) != 1:
        raise PlanError(
            f"etcd has {len(members)} members; without a healthy peer (--peer NAME=ADDRESS) recover handles a "
            "single stacked etcd member",
            "name a healthy control-plane node with --peer, or recover with etcdctl member remove/add first",
        )
    else:
        peer_urls = list(members[0].peer_urls)
    view = core.stored_view(ctx.identity, client.get, peer_urls)
    if ctx.journal.early_config:
        check_early_config(ctx, view)
        return
    stored = core.final_config(view.identity, view.cluster_yaml, view.kubelet_yaml)
    if ctx.given is not None:
        diffs = core.config_differences(ctx.given, stored)
        if diffs:
            raise ConfigMismatch(
                f"--config differs from the ClusterConfiguration stored in etcd: {'; '.join(diffs[:5])}",
                "fix the file or run without --config to use the stored configuration; "
                "the files this run wrote were moved aside",
            )
    if view.cluster_ca:
        ctx.journal.cluster_ca = base64.b64encode(view.cluster_ca).decode()
    ctx.identity = view.identity
    ctx.journal.identity = view.identity
    ctx.journal.config = StoredConfig(view.cluster_yaml, view.kubelet_yaml)
    ctx.journal.save()
    c = stored.cluster
    minor = versions.profile(c.kubernetes_version).version
    ctx.progress(
        f"      ClusterConfiguration {c.kubernetes_version} (files as kubeadm {minor} writes them): "
        f"pod subnet {c.networking.pod_subnet or '-'}, "
        f"service subnet {c.networking.service_subnet}, apiServer certSANs {list(c.api_server.cert_sans)}, "
        f"extraArgs {[f'{a.name}={a.value}' for a in c.api_server.extra_args]}"
    )


def check_early_config(ctx: StepContext, view: core.StoredView) -> None:
    """read-config of a run that took the configuration from etcd's data file before etcd ran (the API server was
    started with it, together with etcd): what the live etcd serves must be exactly that. It always is, since the
    file was read only when no entry of etcd's log after its db's applied index named a key read (see
    :func:`kuberevive.io.etcdprobe.stored_values`); should it differ, the API server is stopped at once (its
    manifest moved aside, its container stopped) before the files this run wrote are moved aside (ConfigMismatch):
    a control plane built from another configuration never keeps serving."""
    j = ctx.journal
    # the identity's sources only say where each value was read: their order is not kept by the journal
    mine = dataclasses.replace(j.identity, sources=()) if j.identity is not None else None
    early = (mine, j.config, j.cluster_ca_bytes())
    live = (
        dataclasses.replace(view.identity, sources=()),
        StoredConfig(view.cluster_yaml, view.kubelet_yaml),
        view.cluster_ca,
    )
    if early == live:
        ctx.progress("      etcd serves the configuration read from its data file: nothing to change")
        return
    if ctx.root.exists(paths.APISERVER_MANIFEST):
        ctx.move_aside(paths.APISERVER_MANIFEST)
    ctx.host.stop_containers("kube-apiserver", ctx.identity.cri_socket, grace=0)
    raise ConfigMismatch(
        "etcd serves another configuration (kubeadm-config, kubelet-config, cluster-info or this node's API server "
        "pod) than its data file held when this run read it: the API server was stopped and the files this run "
        "wrote were moved aside",
        "run 'kuberevive recover --apply' again: it reads the configuration from the running etcd",
    )
