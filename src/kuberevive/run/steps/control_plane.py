"""Steps 5-11: the PKI, the kubeconfigs, the kubelet's client credentials, the control-plane static Pods, the
kubelet restarted, and the API server ready and answering admin.conf."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from kuberevive.core import guard as guardcore
from kuberevive.core import recover as core
from kuberevive.core import satokens
from kuberevive.core.retrust import guard_manifest
from kuberevive.errors import KubereviveError
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.artifacts import Artifact
from kuberevive.model.paths import KUBELET_CLIENT_CURRENT, KUBELET_PODS
from kuberevive.model.recover import TrustFlags
from kuberevive.run.context import StepContext
from kuberevive.run.steps.kubelet import drop_provisional, restart_kubelet
from kuberevive.run.steps.nodes import KCM_CONTAINER, KCM_LEASE
from kuberevive.run.steps.restarts import restart_stale_components
from kuberevive.run.steps.salvage import etcd_members, wait_own_api_server
from kuberevive.waiting import QUICK, wait_for

API_TIMEOUT = 300.0


def token_key_ids(root: NodeRoot, limit: int = 20) -> frozenset[str]:
    """The ``kid`` of ServiceAccount tokens the kubelet wrote into its pods' projected volumes (signed by the
    cluster's current sa.key): at most ``limit`` tokens are read."""
    kids: set[str] = set()
    read = 0
    for p in root.walk(KUBELET_PODS, limit=50_000):
        if p.name != "token" or "kubernetes.io~projected" not in p.parts or read >= limit:
            continue
        try:
            data = root.read(p, limit=64 * 1024)
            read += 1
            kid = satokens.jwt_header(data.decode()).get("kid") if data else None
        except (KubereviveError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(kid, str) and kid:
            kids.add(kid)
    return frozenset(kids)


def certs(ctx: StepContext, i: int) -> None:
    cfg = ctx.final_cfg()
    kept = core.kept_files(cfg, ctx.kept)
    now = ctx.utcnow()
    drop_provisional(ctx)  # kubelet-start's throwaway client CA must not be judged as the node's CA
    if ctx.journal.trust is None:  # before anything of this step is written
        usable = core.survey_pki(cfg, ctx.on_node(cfg) | kept, now).usable  # what survives valid
        changes = core.trust_changes(cfg, usable, ctx.journal.cluster_ca_bytes(), token_key_ids(ctx.root))
        ctx.journal.trust = TrustFlags(**changes)
        ctx.journal.save()
    ctx.write_step_files("certs", i, lambda: core.pki_artifacts(cfg, now, ctx.on_node(cfg), kept))


def kubeconfigs(ctx: StepContext, i: int) -> None:
    cfg = ctx.final_cfg()
    on_node = ctx.on_node(cfg)
    ca, key = core.ca_pair(cfg, on_node)
    now = ctx.utcnow()
    ctx.write_step_files("kubeconfigs", i, lambda: core.control_plane_kubeconfigs(cfg, now, ca, key, on_node))


def kubelet_client(ctx: StepContext, i: int) -> None:
    cfg = ctx.final_cfg()
    arts = ctx.journal.artifacts("kubelet-client")
    if arts is None:
        ca, key = core.ca_pair(cfg, ctx.on_node(cfg))
        files = core.kubelet_files(cfg, ca, key, ctx.utcnow(), ctx.journal.kubelet_stamp)
        arts = [files.pem, files.kubeconfig]
        ctx.journal.record_artifacts("kubelet-client", arts)
    pem, kubeconfig = arts
    ctx.root.write_all([pem], force=True)
    ctx.faults.mid(i)
    current = KUBELET_CLIENT_CURRENT
    aside = ctx.host.repoint_symlink(current, str(pem.path), ctx.utcnow())
    if aside is not None:
        ctx.messages.append(f"{current} (the previous one) moved aside to {aside}")
    ctx.root.write_all([kubeconfig], force=True)
    ctx.journal.timing("kubelet_client_written", ctx.clock())
    instance = core.kubelet_instance_config(cfg)
    if instance is not None and not ctx.root.exists(instance.path):  # a surviving one is the kubelet's: kept
        ctx.root.write_all([instance])
        ctx.messages.append(f"{instance.path} written: {instance.description}")


def control_plane_manifests(ctx: StepContext, i: int) -> None:
    cfg = ctx.final_cfg()
    comps = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
    trust = ctx.journal.trust
    guarded = trust is not None and trust.new_ca and ctx.options.eviction_guard

    members = etcd_members(ctx)

    def compute() -> list[Artifact]:
        arts = core.manifests_for(cfg, ctx.facts, comps, members)
        if not guarded:
            return arts
        return [
            dataclasses.replace(a, content=guard_manifest(a.content))
            if a.path.name == "kube-controller-manager.yaml"
            else a
            for a in arts
        ]

    if ctx.journal.guard is None:  # the journal knows the guard is on before the manifest exists
        ctx.journal.guard = "on" if guarded else "off"
        ctx.journal.save()
    unchanged = ctx.write_step_files("control-plane-manifests", i, compute)
    restart_stale_components(ctx, cfg, unchanged, ("kube-apiserver", "kube-controller-manager", "kube-scheduler"))
    if guarded:
        ctx.progress("      eviction guard on: kube-controller-manager runs without taint-eviction-controller")
    if ctx.journal.timing("control_plane_manifests_written") is None:
        ctx.journal.timing("control_plane_manifests_written", ctx.clock())


def kubelet_restart(ctx: StepContext, i: int) -> None:
    ctx.journal.timing("kubelet_restarted", ctx.clock())
    restart_kubelet(ctx)


def api_ready(ctx: StepContext, i: int) -> None:
    api = ctx.api()
    wait_for("the API server (/readyz)", API_TIMEOUT, api.readyz, QUICK, clock=ctx.monotonic, sleep=ctx.sleep)
    wait_own_api_server(ctx, API_TIMEOUT)
    release_dead_leader(ctx)
    if ctx.journal.timing("api_ready") is None:
        ctx.journal.timing("api_ready", ctx.clock())
        cri = ctx.identity.cri_socket
        for name, key in (("etcd", "etcd_container_created"), ("kube-apiserver", "apiserver_container_created")):
            created = ctx.host.container_created_at(name, cri)
            if created is not None:
                ctx.journal.timing(key, created)


def admin_check(ctx: StepContext, i: int) -> None:
    ctx.api().get("/api/v1/namespaces/kube-system")


def release_dead_leader(ctx: StepContext) -> None:
    """The controller-manager leader Lease of an instance that died before this recovery started, released so the
    controller-manager started in step 10 leads at its next try instead of 15-17 s after the API answers
    (:func:`kuberevive.core.guard.dead_leader_release` says when that is safe). Not when the cluster CA is new and
    the eviction guard is off: the nodes cannot report until they are re-trusted, and without the guard the
    sooner the node-lifecycle controller runs, the sooner their pods would be evicted."""
    j = ctx.journal
    if j.trust is not None and j.trust.new_ca and j.guard != "on":
        return
    started = j.timing("started")
    api = ctx.api()
    lease = api.get_or_none(KCM_LEASE)
    if started is None or not lease:
        return
    since = datetime.fromtimestamp(started, UTC)
    running = ctx.host.containers(KCM_CONTAINER, ctx.identity.cri_socket)
    fresh = bool(running) and all(c.created_at and c.created_at >= started for c in running)
    body = guardcore.dead_leader_release(lease, ctx.facts.hostname, since, fresh, ctx.utcnow())
    if body is None:
        return
    holder = (lease.get("spec") or {}).get("holderIdentity")
    if not api.replace_if_unchanged(KCM_LEASE, body):  # a holder that renewed meanwhile keeps its lease
        return
    ctx.progress(
        f"      the controller-manager leader lease of {holder}, an instance gone before this recovery, released: "
        "the new controller-manager leads at its next try instead of a lease period later"
    )
