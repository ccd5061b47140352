"""Plan a recovery and execute it step by step, each verified before the next, resumable through the journal.

Public entry points (the CLI uses these):

* :func:`plan_recovery` ``(host, kept, config_text=None)``: what would happen, changes nothing;
* :func:`apply_recovery` ``(host, kept, config_text=None, progress=print)``: do it.

``kept`` maps pki-relative paths (``ca.crt``, ``ca.key``, ``front-proxy-ca.*``, ``etcd/ca.*``,
``sa.key``, ``sa.pub``) to bytes: trust material to keep instead of creating it (``--ca-from DIR``,
or a backup). It only matters before the certificates are written; a resumed run reuses what the
first run wrote.

The executor (:class:`Executor`) runs :data:`kuberevive.run.steps.STEPS` over one
:class:`~kuberevive.run.context.StepContext`; the test hooks are :class:`~kuberevive.run.context.Faults`
(documented in docs/recover.md).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from kuberevive.core import allmasters, pki, salvage
from kuberevive.core import recover as core
from kuberevive.core.manifests import etcd_image
from kuberevive.core.retrust import unreporting_nodes
from kuberevive.errors import ConfigMismatch, EtcdError, KubeApiError, KubereviveError, PlanError
from kuberevive.io import etcdprobe, nodefacts
from kuberevive.io import node as nodeio
from kuberevive.io.host import LocalHost
from kuberevive.io.kubeapi import KubeApi
from kuberevive.io.noderoot import NodeRoot
from kuberevive.io.snapshot import etcd_data
from kuberevive.model import paths
from kuberevive.model.config import KubeadmConfig, NodeFacts
from kuberevive.model.inventory import InventoryNode
from kuberevive.model.kubeadm_yaml import load_kubeadm_config
from kuberevive.model.recover import NodeIdentity, RecoveryPlan, RetrustOptions, Step
from kuberevive.run import keys, retrust
from kuberevive.run.context import (
    Effects,
    Faults,
    Progress,
    RecoveryResult,
    StepContext,
    bootstrap_config,
    final_config,
)
from kuberevive.run.journal import JOURNAL, RecoveryJournal, StoredConfig, now_text, recovery_lock
from kuberevive.run.steps import STEPS
from kuberevive.run.steps import kubelet as kubelet_steps

# ------------------------------------------------------------------------------------- health


HEALTHY = "the control plane is healthy: every kubeadm file is in place and valid and the API server answers /readyz"


@dataclass
class _Health:
    """How the node stands before a new recovery: ``reason`` non-empty when nothing needs rebuilding."""

    reason: str = ""
    api: KubeApi | None = None
    cfg: KubeadmConfig | None = None
    verdicts: list[core.FileVerdict] = field(default_factory=list)


def _api_config(api: KubeApi, identity: NodeIdentity) -> KubeadmConfig:
    """The ClusterConfiguration (and KubeletConfiguration) the running API serves, joined with this node."""
    cm = api.get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
    cluster_yaml = (cm.get("data") or {}).get("ClusterConfiguration")
    if not cluster_yaml:
        raise PlanError("kube-system/kubeadm-config has no ClusterConfiguration", "pass --config")
    try:
        kcm = api.get("/api/v1/namespaces/kube-system/configmaps/kubelet-config")
        kubelet_yaml = (kcm.get("data") or {}).get("kubelet")
    except KubeApiError:
        kubelet_yaml = None
    try:
        pod = api.get(f"/api/v1/namespaces/kube-system/pods/kube-apiserver-{identity.node_name}")
        endpoint = ((pod.get("metadata") or {}).get("annotations") or {}).get(core.APISERVER_ENDPOINT_ANNOTATION)
    except KubeApiError:
        endpoint = None
    return core.final_config(core.refine_identity(identity, endpoint, []), cluster_yaml, kubelet_yaml)


def _files(root: NodeRoot, cfg: KubeadmConfig) -> dict[PurePosixPath, bytes]:
    return root.read_tree(cfg.cluster.certificates_dir) | root.read_tree("/etc/kubernetes")


def _health(host: LocalHost, facts: NodeFacts, fx: Effects) -> _Health:
    """Healthy: the files the seed disaster removes exist, /readyz answers, and every kubeadm file checks out
    against the ClusterConfiguration the API serves (a partial loss, e.g. only sa.key, is not healthy)."""
    root = host.root
    if any(not root.exists(p) for p in core.HEALTHY_FILES):
        return _Health()
    try:
        api = fx.api_client(root)
        if not api.readyz()[0]:
            return _Health()
        cfg = _api_config(api, core.identify(nodeio.gather_evidence(host)))
    except KubereviveError:
        return _Health()
    verdicts = core.survey_node(cfg, facts, _files(root, cfg), {}, fx.utcnow())
    # a manifest that differs from what kuberevive renders (another kubeadm version, a local edit) does not make
    # a working control plane "broken": only a missing one does
    bad = [v for v in verdicts if v.action != core.KEEP and (v.path.suffix != ".yaml" or v.why == "missing")]
    return _Health("" if bad else HEALTHY, api, cfg, bad)


def healthy_reason(host: LocalHost) -> str:
    """Non-empty (the reason) when the node's kubeadm files are all in place and valid and /readyz answers."""
    return _health(host, nodefacts.detect(host.root, live=host.live), Effects()).reason


def _node_repairs(health: _Health, me: str, now: datetime) -> tuple[tuple[str, str], ...]:
    assert health.api is not None
    try:
        nodes = health.api.get("/api/v1/nodes").get("items") or []
        leases = health.api.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases").get("items") or []
    except KubereviveError:
        return ()
    return tuple(unreporting_nodes(nodes, leases, me, now))


# ------------------------------------------------------------------------------------- planning


@dataclass
class _Prepared:
    """What planning found, enough to start (or resume) the run."""

    host: LocalHost
    identity: NodeIdentity
    given: KubeadmConfig | None
    kept: Mapping[str, bytes]
    facts: NodeFacts
    journal: RecoveryJournal | None = None
    salvage_from: tuple[str, ...] = ()
    """Healthy control-plane peers whose trust material the run takes (salvage-trust)."""
    etcd_peers: tuple[InventoryNode, ...] = ()
    """Without peers to salvage from: the other members this node's etcd data lists (--apply refuses)."""
    masters: tuple[NodeIdentity, ...] = ()
    """The other control-plane nodes, when every one lost its files too (the all-masters case)."""
    early: core.StoredView | None = None
    """The stored configuration, read from etcd's data files before etcd runs (:func:`_early_view`)."""

    def bootstrap_cfg(self) -> KubeadmConfig:
        return bootstrap_config(self.identity, self.given)


def _identity_from_config(cfg: KubeadmConfig) -> NodeIdentity:
    local = cfg.cluster.etcd_local
    if local is None:
        raise PlanError("recover handles stacked (local) etcd only; the configuration uses external etcd", "")
    return NodeIdentity(
        cfg.node_name,
        cfg.advertise_address,
        cfg.bind_port,
        cfg.init.node_registration.cri_socket,
        local.data_dir,
        cfg.cluster.kubernetes_version,
        etcd_image(cfg),
        (("everything", "--config"),),
    )


def _load_given(config_text: str | None, facts: NodeFacts) -> KubeadmConfig | None:
    return load_kubeadm_config(config_text, facts) if config_text is not None else None


def _prepare(
    host: LocalHost,
    kept: Mapping[str, bytes],
    config_text: str | None,
    environ: Mapping[str, str] | None,
    fx: Effects,
    options: RetrustOptions | None = None,
    probed: dict[str, Any] | None = None,
) -> tuple[_Prepared | None, RecoveryPlan]:
    """``probed``: what an earlier call of this run found on the peers (each SSH login costs) and what the node's
    programs said (:func:`kuberevive.io.node.gather_evidence`), reused."""
    root = host.root
    facts = nodefacts.detect(root, environ, live=host.live)
    journal = RecoveryJournal.load(root)
    if journal is not None and journal.status == "running":
        if journal.identity is None:
            raise PlanError(f"the journal {JOURNAL} has an unknown format (no identity)", "move it aside and run again")
        identity = journal.identity
        given = _load_given(config_text, facts) if config_text is not None else None
        recorded = journal.kept_bytes()
        if kept and recorded and dict(kept) != recorded:
            raise PlanError(
                "the kept trust material differs from the one the interrupted recovery started with",
                "run 'kuberevive recover --apply' again with the same --ca-from (or without it)",
            )
        salvage_from = tuple(journal.salvage_from or ())
        masters = tuple(journal.masters or ())
        ctx = _Prepared(host, identity, given, kept or recorded, facts, journal, salvage_from, masters=masters)
        cfg = final_config(identity, given, journal) if journal.config is not None else ctx.bootstrap_cfg()
        resuming = (f"resuming the recovery started at {journal.started_at} (journal {JOURNAL})",)
        return ctx, core.make_plan(
            identity,
            cfg,
            kept,
            journal.done_steps(),
            notes=resuming,
            salvage_from=salvage_from,
            extra=_masters_steps(masters, cfg),
            early=bool(journal.early_config),
        )
    health = _health(host, facts, fx)
    if health.reason:
        assert health.cfg is not None
        plan = core.make_plan(None, None, kept, healthy_reason=health.reason)
        repairs = _node_repairs(health, health.cfg.node_name, fx.utcnow())
        if not repairs:
            return None, plan
        note = (
            "other nodes whose kubelet no longer reports: --apply reads their kubelet files over SSH and repairs "
            "in place those whose credentials are lost or stale (the cluster CA, a client certificate, "
            "kubelet.conf; containers kept); the others are left alone"
        )
        return None, dataclasses.replace(plan, node_repairs=repairs, notes=(note,))
    evidence = nodeio.gather_evidence(host, probed.setdefault("programs", {}) if probed is not None else None)
    given = _load_given(config_text, facts)
    if given is None:
        identity = core.identify(evidence)
    else:  # --config names the node, its address and versions
        core.require_control_plane(evidence)
        identity = _identity_from_config(given)
    salvage_from = _salvage_from(options or RetrustOptions(), identity.node_name, kept)
    if salvage_from:
        etcd_peers: tuple[InventoryNode, ...] = ()
    elif probed is not None and "etcd_peers" in probed:  # etcd's files scanned once per run, not once per plan
        etcd_peers = probed["etcd_peers"]
    else:
        etcd_peers = _etcd_peers(root, identity)
        if probed is not None:
            probed["etcd_peers"] = etcd_peers
    if probed is not None and "masters" in probed:
        masters, lost_notes = probed["masters"], probed["notes"]
    else:
        masters, lost_notes = _lost_masters(options or RetrustOptions(), identity, salvage_from, fx)
        if probed is not None:
            probed.update(masters=masters, notes=lost_notes)
    if masters:
        salvage_from = ()
    ctx = _Prepared(host, identity, given, kept, facts, None, salvage_from, etcd_peers=etcd_peers, masters=masters)
    cfg = ctx.bootstrap_cfg()
    core.kept_files(cfg, kept)  # validate kept material before anything is written
    plain = given is None and not salvage_from and not masters and not etcd_peers
    if plain and probed is not None and "early" in probed:
        ctx.early = probed["early"]
    elif plain:
        ctx.early = _early_view(host, identity)
        if probed is not None:
            probed["early"] = ctx.early
    notes = [
        "the ClusterConfiguration is read from etcd (kube-system/kubeadm-config) once etcd runs; "
        "file lists below use kubeadm's default paths until then",
    ]
    if ctx.early is not None:
        ctx.identity = ctx.early.identity
        cfg = core.final_config(ctx.identity, ctx.early.cluster_yaml, ctx.early.kubelet_yaml)
        notes = [
            "the ClusterConfiguration was read from etcd's data file (kube-system/kubeadm-config; no entry of "
            "etcd's log after the file's applied index names it): every file is written before the kubelet starts "
            "etcd and the API server together; read-config checks it against etcd once etcd answers",
        ]
    notes.extend(lost_notes)
    if salvage_from:
        notes.append(
            f"healthy control-plane peers: {', '.join(salvage_from)}: the cluster's CAs and sa.key are taken from "
            "the first that passes the checks, nothing else in the cluster is re-trusted"
        )
    if etcd_peers:
        notes.append(f"{_several_members(etcd_peers)}; --apply refuses: {_peer_hint(etcd_peers)}")
    if not host.live:
        notes.append(
            f"{host.root.prefix} is not this machine's root: its kubelet is not checked or restarted; --apply expects "
            "a kubelet that watches its manifests directory to start etcd and the control plane"
        )
    elif not evidence.kubelet_active:
        notes.append(
            "the kubelet is not running (without its client CA file and kubelet.conf it cannot start, as after a "
            "reboot): kubelet-start writes missing ones provisionally and starts it, so it runs etcd"
        )
    present = [f for f in evidence.kubernetes_files if f != str(JOURNAL)]
    if present:
        notes.append(
            f"{len(present)} file(s) under /etc/kubernetes survive: each is kept when valid and consistent, "
            "otherwise moved aside and rebuilt; surviving CA keys and sa.key are always kept"
        )
        # judged against the configuration the API still serves, else (files only) the bootstrap one
        survey_cfg = health.cfg or cfg
        files = _files(root, survey_cfg)
        kept_paths = core.kept_files(survey_cfg, kept)
        verdicts = core.survey_node(survey_cfg, facts, files, kept_paths, fx.utcnow())
        for v in verdicts:
            if health.cfg is None and given is None and v.path.parent.name == "manifests":
                continue  # judged once the stored configuration is read (step 4)
            if v.path in files or v.action != core.KEEP:
                notes.append(v.line())
    return ctx, core.make_plan(
        ctx.identity,
        cfg,
        kept,
        notes=tuple(notes),
        salvage_from=salvage_from,
        extra=_masters_steps(masters, cfg),
        early=ctx.early is not None,
    )


def _early_view(host: LocalHost, identity: NodeIdentity) -> core.StoredView | None:
    """The stored configuration read from the files of this node's etcd member while it does not run, so that every
    file can be written before etcd starts; None (read-config reads it from etcd once it runs) when that is not
    sure: etcd runs (it writes its files), the node is not this machine, the files are unreadable or the read took
    too long (:func:`kuberevive.io.etcdprobe.stored_values`), a log entry not yet in the db names a key read, the
    member list is not exactly one member, or the configuration does not build."""
    if not host.live or host.containers("etcd", identity.cri_socket):
        return None
    data = PurePosixPath(identity.etcd_data_dir)
    values = etcdprobe.stored_values(host.root, data, core.stored_keys(identity.node_name))
    if values is None or core.KUBEADM_CONFIG_KEY not in values:
        return None
    members = etcdprobe.stored_members(host.root, data / "member" / "snap" / "db")
    if members is None or len(members) != 1:
        return None
    try:
        view = core.stored_view(identity, values.get, list(members[0].peer_urls))
        core.final_config(view.identity, view.cluster_yaml, view.kubelet_yaml)
    except KubereviveError:
        return None
    return view


def _masters_steps(masters: tuple[NodeIdentity, ...], cfg: KubeadmConfig) -> dict[str, Step] | None:
    """The all-masters steps of the plan (None: not that case)."""
    return allmasters.plan_steps(masters, cfg.cluster.certificates_dir) if masters else None


def _lost_masters(
    options: RetrustOptions, identity: NodeIdentity, peers: tuple[str, ...], fx: Effects
) -> tuple[tuple[NodeIdentity, ...], list[str]]:
    """The other masters when every reachable control-plane peer lost its trust material too (the all-masters
    case: no peer to salvage from), with notes for the plan; () when a peer still holds it (salvage) or none
    can be reached. Reads the peers' pki and kubelet client certificate over SSH; writes nothing."""
    if not peers:
        return (), []
    inventory = options.inventory.nodes if options.inventory is not None else ()
    nodes = salvage.candidates(options.peers, inventory, identity.node_name)
    cdir = PurePosixPath(bootstrap_config(identity, None).cluster.certificates_dir)
    wanted = [cdir / n for n in paths.TRUST_FILES] + [paths.KUBELET_CLIENT_CURRENT]
    cns: dict[str, str | None] = {}
    unreachable = []
    for node in nodes:
        try:
            got = fx.peer_files(node, options, wanted)
        except KubereviveError as exc:
            unreachable.append(f"{node.name} ({node.address}): {exc.message}")
            continue
        if not allmasters.trust_lost({n: got.get(cdir / n) for n in paths.TRUST_FILES}):
            return (), []  # a peer holds trust material: salvage-trust checks it
        cns[node.name] = nodeio.client_cn(got.get(paths.KUBELET_CLIENT_CURRENT))
    if not cns:
        return (), []
    masters = tuple(allmasters.master_identity(identity, n.name, n.address, cns.get(n.name)) for n in nodes)
    notes = [
        f"every control-plane peer lost its trust material too ({', '.join(cns)}): all masters are recovered from "
        "here in a quorum-safe order: ONE new etcd CA, every member's etcd first, quorum, then ONE new cluster CA, "
        "front-proxy CA and sa.key for all, each master's own certificates, kubeconfigs and manifests (over SSH)"
    ]
    if unreachable:
        notes.append(
            "not reachable now (recovered once reachable: run 'kuberevive recover --apply' again here): "
            + "; ".join(unreachable)
        )
    return masters, notes


def _etcd_peers(root: NodeRoot, identity: NodeIdentity) -> tuple[InventoryNode, ...]:
    """The other members this node's surviving etcd data lists (read only; issue 12: peers found automatically)."""
    data = etcd_data(root, PurePosixPath(identity.etcd_data_dir))
    return salvage.member_peers(data.member_peer_urls, identity.node_name)


def _several_members(peers: tuple[InventoryNode, ...]) -> str:
    names = ", ".join(f"{p.name} ({p.address})" for p in peers)
    return f"this node's etcd data lists {len(peers)} other member(s): {names}"


def _peer_hint(peers: tuple[InventoryNode, ...]) -> str:
    return (
        "take the cluster's trust material from a healthy one: kuberevive recover --apply "
        f"{salvage.peer_flags(peers)} --ssh-key KEY --known-hosts FILE"
    )


def _salvage_from(options: RetrustOptions, node_name: str, kept: Mapping[str, bytes]) -> tuple[str, ...]:
    """The peers to salvage trust material from: --peer, else the inventory's other control-plane nodes
    (none when --ca-from or a backup gives the material; both at once is refused)."""
    inventory = options.inventory.nodes if options.inventory is not None else ()
    if kept and options.peers:
        raise PlanError(
            "both --peer and --ca-from/--from-backup name the trust material to use",
            "pass one of them: --peer takes it from a healthy control-plane node",
        )
    if kept:
        return ()
    return tuple(p.name for p in salvage.candidates(options.peers, inventory, node_name))


def plan_recovery(
    host: LocalHost,
    kept: Mapping[str, bytes] | None = None,
    config_text: str | None = None,
    environ: Mapping[str, str] | None = None,
    effects: Effects | None = None,
    options: RetrustOptions | None = None,
) -> RecoveryPlan:
    """The recovery plan for this node. Reads only; writes nothing, starts nothing. ``options``: how the other
    nodes are reached (``--peer`` and ``--inventory`` name the peers to salvage trust material from)."""
    _ctx, plan = _prepare(host, kept or {}, config_text, environ, effects or Effects(), options)
    return plan


# ------------------------------------------------------------------------------------- executor


@dataclass
class Executor:
    """Runs the plan's steps in order over one context; each step is recorded in the journal as started and
    done, a step done before is skipped."""

    ctx: StepContext
    plan: RecoveryPlan
    applied: list[str] = field(default_factory=list)

    def run(self) -> RecoveryResult:
        ctx, journal = self.ctx, self.ctx.journal
        total = len(self.plan.steps)
        if any(s.id == kubelet_steps.STEP_ID for s in self.plan.steps):
            kubelet_steps.stop_ahead(ctx)
        try:
            for index, step in enumerate(self.plan.steps, start=1):
                if journal.step_done(step.id):
                    ctx.progress(f"[{index}/{total}] {step.title}: done before")
                    continue
                ctx.progress(f"[{index}/{total}] {step.title}")
                started = ctx.monotonic()
                journal.mark(step.id, "started")
                STEPS[step.id](ctx, index)
                journal.mark(step.id, "done", seconds=round(ctx.monotonic() - started, 3))
                self.applied.append(step.id)
                ctx.progress(f"      ok ({ctx.monotonic() - started:.1f} s)")
                ctx.faults.after(index)
        except Exception:
            kubelet_steps.start_again_after_failure(ctx)
            raise
        return self._finish()

    def _finish(self) -> RecoveryResult:
        ctx = self.ctx
        join = ctx.join_command()
        control_plane_join = ctx.control_plane_join_command(join)  # before the journal drops the key
        timings = result_timings(ctx.journal.timings, ctx.clock())
        ctx.journal.finish_with(timings)
        report = ctx.report or ctx.journal.report or {}  # a run killed right after the report step kept it
        return RecoveryResult(self.plan, self.applied, join, control_plane_join, timings, ctx.messages, report)


def result_timings(t: Mapping[str, float], now: float) -> dict[str, float]:
    """The phase durations the final result shows, from the journal's timestamps."""
    start = float(t.get("started", 0))
    timings: dict[str, float] = {}
    if "api_ready" in t:
        timings["start_to_api_ready_s"] = round(t["api_ready"] - start, 1)
    if "etcd_ready" in t and "etcd_manifest_written" in t:
        timings["etcd_start_s"] = round(t["etcd_ready"] - t["etcd_manifest_written"], 1)
    if "api_ready" in t and "control_plane_manifests_written" in t:
        timings["apiserver_start_s"] = round(t["api_ready"] - t["control_plane_manifests_written"], 1)
    if "etcd_start_s" in timings and "apiserver_start_s" in timings:
        if t["control_plane_manifests_written"] < t["etcd_ready"]:  # started together (the early order): one span
            first = min(t["etcd_manifest_written"], t["control_plane_manifests_written"])
            timings["components_alone_s"] = round(t["api_ready"] - first, 1)
        else:
            timings["components_alone_s"] = round(timings["etcd_start_s"] + timings["apiserver_start_s"], 1)
    # the same, split: the kubelet noticing the manifest vs. the container itself starting
    if "etcd_container_created" in t and "etcd_ready" in t and "etcd_manifest_written" in t:
        timings["etcd_kubelet_pickup_s"] = round(t["etcd_container_created"] - t["etcd_manifest_written"], 1)
        timings["etcd_container_to_healthy_s"] = round(t["etcd_ready"] - t["etcd_container_created"], 1)
    if "apiserver_container_created" in t and "control_plane_manifests_written" in t and "api_ready" in t:
        timings["apiserver_kubelet_pickup_s"] = round(
            t["apiserver_container_created"] - t["control_plane_manifests_written"], 1
        )
        timings["apiserver_container_to_ready_s"] = round(t["api_ready"] - t["apiserver_container_created"], 1)
    # remove-guard: the guarded controller-manager stopping after its manifest was swapped (and its lease released
    # for it), then the normal one taking the lease
    if "guard_manifest_swapped" in t and "guard_stopped" in t and "guard_off" in t:
        timings["guard_stop_s"] = round(t["guard_stopped"] - t["guard_manifest_swapped"], 1)
        timings["guard_lead_s"] = round(t["guard_off"] - t["guard_stopped"], 1)
    timings["start_to_done_s"] = round(now - start, 1)
    return timings


def _roll_back_written(ctx: StepContext) -> list[str]:
    """Move aside every file this recovery wrote (after a refusal), then the journal itself."""
    root, journal = ctx.root, ctx.journal
    moved = []
    stamp = ctx.utcnow()
    for items in journal.artifact_records.values():
        for item in items:
            p = PurePosixPath(item.path)
            data = root.read(p)
            if data is not None and data == item.content_bytes():
                aside = ctx.move_aside(p, stamp)
                moved.append(f"{p} -> {aside}")
    current = paths.KUBELET_CLIENT_CURRENT  # kubelet-client pointed it at a certificate moved aside just now
    target = root.readlink(current)
    if target is not None and any(f"{target} -> " in m for m in moved):
        moved.append(f"{current} -> {ctx.move_aside(current, stamp)}")
    ctx.move_aside(JOURNAL, stamp)
    return moved


def _repair_nodes(
    host: LocalHost, plan: RecoveryPlan, options: RetrustOptions, progress: Progress, fx: Effects
) -> RecoveryResult:
    """The control plane is healthy; other nodes' kubelets no longer report: probe them and repair in place."""
    root = host.root
    health = _health(host, nodefacts.detect(root, live=host.live), fx)
    if not health.reason or health.api is None or health.cfg is None:
        raise PlanError("the control plane changed while recover was starting", "run 'kuberevive recover' again")
    ca, key = core.ca_pair(health.cfg, _files(root, health.cfg))
    repair = retrust.repair_nodes(health.api, health.cfg, ca, key, list(plan.node_repairs), options, progress)
    if repair.failed:
        raise PlanError(
            f"{len(repair.failed)} node(s) could not be repaired: {'; '.join(repair.failed)[:600]}"
            + (f" (repaired: {', '.join(repair.repaired)})" if repair.repaired else ""),
            "fix the node's SSH access (--ssh-key, --known-hosts, --inventory), then run 'kuberevive recover --apply' "
            "again",
        )
    return RecoveryResult(plan, messages=repair.messages, report={"node_repair": repair.as_dict()})


@dataclass(frozen=True)
class _Planned:
    """The plan made before the recovery lock was taken, and the journal's bytes it was made from: planning again
    under the lock (about half a second of CPU before the first step: the node's state, etcd's files, the survey)
    is needed only when another run changed the journal meanwhile."""

    journal: bytes | None
    ctx: _Prepared
    plan: RecoveryPlan


def apply_recovery(
    host: LocalHost,
    kept: Mapping[str, bytes] | None = None,
    config_text: str | None = None,
    progress: Progress = print,
    environ: Mapping[str, str] | None = None,
    options: RetrustOptions | None = None,
    effects: Effects | None = None,
) -> RecoveryResult:
    """Plan and execute (or resume) the recovery under the node's recovery lock. ``effects``: the clients,
    clocks and fault hooks (default: the real ones, the hooks from ``environ``)."""
    env = dict(os.environ) if environ is None else dict(environ)
    fx = effects or Effects(faults=Faults.from_environ(env))
    root = host.root
    probed: dict[str, Any] = {}  # the peers are read over SSH once per run
    journal_bytes = root.read(JOURNAL)
    journal = RecoveryJournal.load(root)
    planned: _Planned | None = None
    try:
        if journal is None or journal.status != "running":
            # the keys are made while the run plans, of kubeadm's default algorithm until the plan says otherwise
            keys.make_ahead(keys.KEYS_GUESS, fx.background)  # unless the command line started them
            # a node that is not a kubeadm node (or healthy) is told so before the lock file is created
            ctx0, plan0 = _prepare(host, kept or {}, config_text, env, fx, options, probed)
            if ctx0 is None and plan0.node_repairs:
                with recovery_lock(host):
                    return _repair_nodes(host, plan0, options or RetrustOptions(), progress, fx)
            if ctx0 is None or not plan0.steps:
                return RecoveryResult(plan0)
            early = ctx0.early
            cfg0 = core.final_config(early.identity, early.cluster_yaml, early.kubelet_yaml) if early else None
            algorithm = (cfg0 or ctx0.bootstrap_cfg()).cluster.encryption_algorithm
            if algorithm != keys.KEYS_GUESS:
                pki.drop_spare_keys()
                keys.make_ahead(algorithm, fx.background)
            planned = _Planned(journal_bytes, ctx0, plan0)
        return _apply_locked(host, kept, config_text, env, fx, options, probed, progress, planned)
    finally:
        pki.drop_spare_keys()  # the keys made ahead and not used are forgotten with the run


def _apply_locked(
    host: LocalHost,
    kept: Mapping[str, bytes] | None,
    config_text: str | None,
    env: Mapping[str, str],
    fx: Effects,
    options: RetrustOptions | None,
    probed: dict[str, Any],
    progress: Progress,
    planned: _Planned | None = None,
) -> RecoveryResult:
    root = host.root
    with recovery_lock(host):
        ctx: _Prepared | None
        if planned is not None and root.read(JOURNAL) == planned.journal:
            ctx, plan = planned.ctx, planned.plan  # no other run took the lock since: the plan made before it stands
        else:
            ctx, plan = _prepare(host, kept or {}, config_text, env, fx, options, probed)
        if ctx is None or not plan.steps:
            return RecoveryResult(plan)
        if ctx.journal is None:
            if ctx.etcd_peers:  # a new CA would cut this member off its peers: refused before anything is written
                raise PlanError(
                    f"{_several_members(ctx.etcd_peers)}: a new cluster and etcd CA here would cut this member off "
                    "its peers, so nothing was changed",
                    _peer_hint(ctx.etcd_peers),
                )
            old = RecoveryJournal.load(root)
            if old is not None:  # a finished recovery, and the node broke again
                root.move_aside(JOURNAL)
            ctx.journal = RecoveryJournal.new(
                root,
                identity=ctx.identity,
                token=core.new_bootstrap_token(secrets.token_bytes),
                kubelet_stamp=fx.utcnow().strftime("%Y-%m-%d-%H-%M-%S"),
                kept={k: base64.b64encode(v).decode() for k, v in ctx.kept.items()},
                timings={"started": fx.clock()},
                salvage_from=list(ctx.salvage_from) or None,
                masters=list(ctx.masters) or None,
            )
            if ctx.early is not None:
                ctx.journal.config = StoredConfig(ctx.early.cluster_yaml, ctx.early.kubelet_yaml)
                ca = ctx.early.cluster_ca
                ctx.journal.cluster_ca = base64.b64encode(ca).decode() if ca else None
                ctx.journal.early_config = True
                ctx.journal.save()
        step_ctx = StepContext(
            host,
            ctx.identity,
            ctx.given,
            ctx.kept,
            ctx.facts,
            ctx.journal,
            options=options or RetrustOptions(),
            progress=progress,
            fx=fx,
        )
        try:
            return Executor(step_ctx, plan).run()
        except ConfigMismatch:
            _roll_back_written(step_ctx)
            raise
        except (EtcdError, KubeApiError) as exc:
            _close_unstarted(step_ctx)
            raise PlanError(
                f"recovery stopped at a step that talks to the cluster: {exc.message}",
                "fix the cause, then run 'kuberevive recover --apply' again: it resumes where it stopped",
            ) from exc
        except KubereviveError:
            _close_unstarted(step_ctx)
            raise


def _close_unstarted(ctx: StepContext) -> None:
    """A run refused before its first write (no usable peer, a check that failed) leaves no "running" journal
    behind: it is moved aside, so the next run plans afresh (e.g. with other --peer options) instead of resuming."""
    if ctx.journal.nothing_done():
        aside = ctx.move_aside(JOURNAL)
        ctx.progress(f"      nothing was written: the journal was moved aside to {aside}")


__all__ = ["Executor", "RecoveryResult", "apply_recovery", "healthy_reason", "now_text", "plan_recovery"]
