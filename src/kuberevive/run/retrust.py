"""Recover part 2: the steps after the control plane is back that re-trust the rest of the cluster.

Called by :class:`kuberevive.run.recover.Executor` (one function per step, each resumable from the
journal). What each needs to decide comes from the journal's ``trust`` record, written by the
``certs`` step: whether the cluster CA, the front-proxy CA and ``sa.key`` are new (then the other
nodes, the CA-derived objects and the token-using workloads must follow) or kept (then they are
only checked).

Test hook: ``KUBEREVIVE_RETRUST_DELAY=<seconds>`` waits that long before re-trusting the other
nodes (a slow or unreachable fleet), so a test can let the node-monitor grace period and the pods'
NotReady tolerations run out while the eviction guard holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from kuberevive.core import guard as guardcore
from kuberevive.core import recover as rcore
from kuberevive.core import retrust as core
from kuberevive.core import satokens
from kuberevive.core.kubeconfig import control_plane_url
from kuberevive.core.manifests import parse_manifest, render_manifest
from kuberevive.errors import KubeApiError, PlanError
from kuberevive.io import csr_approve, restarts_apply, trust_apply
from kuberevive.io.kubeapi import KubeApi
from kuberevive.io.retrust_node import NodeTrustState, read_node_state, retrust_node
from kuberevive.io.transport import Deadline, NodeResult, SshTarget, SshTransport, Transport, run_on_nodes
from kuberevive.model.artifacts import Artifact, ArtifactKind
from kuberevive.model.config import KubeadmConfig
from kuberevive.model.inventory import Inventory, InventoryNode, from_node_objects
from kuberevive.run.journal import NodeRetrust
from kuberevive.run.waiting import wait_for as _wait

if TYPE_CHECKING:
    from kuberevive.run.recover import Executor

Progress = Callable[[str], None]

KCM_MANIFEST = PurePosixPath("/etc/kubernetes/manifests/kube-controller-manager.yaml")
KCM_LEASE = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager"
EVICTION_TAINTS = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
GUARD_TIMEOUT = 180.0
TAINT_TIMEOUT = 120.0


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


# ------------------------------------------------------------------------------------- guard


def guard_manifest(content: bytes) -> bytes:
    return render_manifest(guardcore.guard(parse_manifest(content.decode()))).encode()


def unguard_manifest(content: bytes) -> bytes:
    return render_manifest(guardcore.unguard(parse_manifest(content.decode()))).encode()


def _eviction_taints(nodes: list[dict[str, Any]]) -> list[str]:
    out = []
    for n in nodes:
        for t in (n.get("spec") or {}).get("taints") or []:
            if t.get("key") in EVICTION_TAINTS and t.get("effect") == "NoExecute":
                out.append(f"{n['metadata']['name']} ({t['key']})")
    return out


def _lease_holder(api: KubeApi) -> str:
    try:
        return str((api.get(KCM_LEASE).get("spec") or {}).get("holderIdentity") or "")
    except KubeApiError as exc:
        if exc.status == 404:
            return ""
        raise


def step_remove_guard(ex: Executor, i: int) -> None:
    """Put the normal controller-manager manifest back once no node carries an eviction taint."""

    j = ex.journal
    if j.guard != "on":
        ex.progress("      the eviction guard was not used")
        return
    api = ex._api()

    def untainted() -> tuple[bool, str]:
        left = _eviction_taints(api.get("/api/v1/nodes").get("items") or [])
        return not left, "NoExecute taints on " + ", ".join(left)

    try:
        _wait("nodes free of NoExecute not-ready/unreachable taints", TAINT_TIMEOUT, untainted, 2.0)
    except PlanError as exc:
        raise PlanError(
            f"the eviction guard stays on: {exc.message}",
            "their pods would be evicted at once without it; re-trust those nodes or re-join them with "
            f"'{ex.join_command()}', then run 'kuberevive recover --apply' again to put the normal "
            "controller-manager back",
        ) from None
    current = ex.root.read(KCM_MANIFEST)
    if current is None:
        raise PlanError(f"{KCM_MANIFEST} is missing although the guard is on", "run 'kuberevive recover --apply' again")
    normal = unguard_manifest(current)
    holder = _lease_holder(api)
    if normal != current:
        art = Artifact(KCM_MANIFEST, 0o600, ArtifactKind.MANIFEST, "kube-controller-manager static Pod", normal)
        for r in ex.root.write_all([art], force=True):  # the guarded manifest is moved aside first
            ex.result.messages.append(f"{KCM_MANIFEST} (guarded) moved aside to {r.moved_aside_to}")

    def normal_leads() -> tuple[bool, str]:
        now_holder = _lease_holder(api)
        return bool(now_holder) and now_holder != holder, f"lease holder {now_holder or '-'}"

    took = _wait("the normal kube-controller-manager to lead", GUARD_TIMEOUT, normal_leads, 2.0)
    j.guard = "off"
    j.save()
    ex.progress(f"      the normal kube-controller-manager leads again after {took:.0f} s (taint eviction back on)")


# ------------------------------------------------------------------------------------- nodes


def connect(opts: RetrustOptions) -> Callable[[InventoryNode, Deadline], Transport]:
    """How to open an SSH transport to one node with ``opts`` (known_hosts, keys, user), within its deadline."""

    def to_node(node: InventoryNode, deadline: Deadline) -> Transport:
        target = SshTarget(
            node.name,
            node.address,
            port=node.port,
            user=node.user or opts.ssh_user,
            identity_files=(node.identity_file,) if node.identity_file else opts.identity_files,
            known_hosts=opts.known_hosts,
        )
        return SshTransport(target, deadline)

    return to_node


def step_retrust_nodes(ex: Executor, i: int) -> None:
    j = ex.journal
    opts = ex.options
    trust = j.trust
    api = ex._api()
    me = ex.ctx.identity.node_name
    nodes = [n for n in api.get("/api/v1/nodes").get("items") or [] if n["metadata"]["name"] != me]
    states = j.retrust
    if not nodes:
        ex.progress("      no other nodes")
        return
    if trust is None or not trust.new_ca:
        for n in nodes:
            states[n["metadata"]["name"]] = NodeRetrust("kept", "the cluster CA was kept: it trusts it")
        j.save()
        ex.progress(f"      the cluster CA was kept: {len(nodes)} other node(s) still trust it, nothing to change")
        return
    if opts.skip_retrust:
        for n in nodes:
            name = n["metadata"]["name"]
            if name not in states or states[name].state != "done":
                states[name] = NodeRetrust(
                    "skipped", "--skip-retrust: re-join it with the kubeadm join command recover prints"
                )
        j.save()
        ex.progress(f"      --skip-retrust: {len(nodes)} node(s) left to be re-joined")
        return
    delay = float(ex.environ.get("KUBEREVIVE_RETRUST_DELAY", "0") or 0)
    if delay > 0:
        ex.progress(f"      KUBEREVIVE_RETRUST_DELAY: waiting {delay:.0f} s first")
        time.sleep(delay)
    inventory = opts.inventory or from_node_objects(nodes, opts.ssh_user, opts.ssh_port)
    todo: list[InventoryNode] = []
    failed: list[str] = []
    for n in nodes:
        name = n["metadata"]["name"]
        if name in states and states[name].state == "done":
            continue
        target = inventory.get(name)
        if target is None:
            why = dict(inventory.skipped).get(name, f"not in the inventory ({inventory.source})")
            states[name] = NodeRetrust("failed", why)
            failed.append(f"{name}: {why}")
        elif "node-role.kubernetes.io/control-plane" in (n["metadata"].get("labels") or {}):
            why = "another control-plane node: re-join it as a control-plane node (not handled by recover)"
            states[name] = NodeRetrust("failed", why)
            failed.append(f"{name}: {why}")
        else:
            todo.append(target)
    cfg = ex.ctx.final_cfg()
    ca, key = rcore.ca_pair(cfg, ex._on_node(cfg))
    if todo:
        ex.progress(f"      re-trusting {', '.join(n.name for n in todo)} over SSH")
        results = _retrust_in_place(api, cfg, ca, key, opts, todo)
        for name, r in results.items():
            if r.ok:
                states[name] = NodeRetrust("done", seconds=round(r.seconds, 1))
                ex.result.messages.extend(r.value or [])
                ex.progress(f"      {name}: re-trusted and Ready ({r.seconds:.1f} s)")
            else:
                states[name] = NodeRetrust("failed", r.error)
                failed.append(f"{name}: {r.error}")
                ex.progress(f"      {name}: FAILED: {r.error}")
    j.save()
    if failed:
        raise PlanError(
            f"{len(failed)} node(s) could not be re-trusted: {'; '.join(failed)[:600]}",
            "fix the node's SSH access (--ssh-key, --known-hosts, --inventory) and run 'kuberevive recover --apply' "
            "again (it resumes here; the eviction guard stays on), or re-join them with "
            f"'{ex.join_command()}' and run it again with --skip-retrust",
        )


def _retrust_in_place(
    api: KubeApi,
    cfg: KubeadmConfig,
    ca: bytes,
    key: bytes,
    opts: RetrustOptions,
    todo: list[InventoryNode],
    probe: Callable[[InventoryNode, NodeTrustState], list[str]] | None = None,
) -> dict[str, NodeResult[list[str]]]:
    """Over SSH, in parallel: the cluster CA at each kubelet's clientCAFile, a client certificate from it,
    kubelet.conf, the kubelet restarted; done when the Node is Ready with a heartbeat after the restart.

    ``probe`` (the node-repair mode) looks at the node's files first: when it finds nothing wrong the node
    is left untouched and the result says so (a ``ProbeClean`` error)."""
    now = datetime.now(UTC)
    backup_stamp = now.strftime("%Y%m%dT%H%M%S.%fZ")  # as NodeRoot names its backup directories
    pem_stamp = now.strftime("%Y-%m-%d-%H-%M-%S")  # as the kubelet names kubelet-client-<stamp>.pem
    default_server = control_plane_url(cfg)

    def one(node: InventoryNode, t: Transport) -> list[str]:
        state = read_node_state(t)
        found: list[str] = []
        if probe is not None:
            found = probe(node, state)
            if not found:
                raise ProbeClean(
                    f"{node.name}: its kubelet's files are in order (cluster CA, kubelet.conf, a valid client "
                    "certificate), so new credentials would not help; left untouched",
                    "look at the node itself: its kubelet (journalctl -u kubelet), network and disk",
                )
        server = core.kubelet_conf_server(state.kubelet_conf, default_server)
        files = core.node_trust_files(cfg, ca, key, node.name, server, state.client_ca_path, now, pem_stamp)
        since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
        moved = retrust_node(t, files, backup_stamp)
        path = f"/api/v1/nodes/{node.name}"
        _wait(f"node {node.name} Ready", opts.node_timeout, lambda: core.ready_since(api.get(path), since), 1.0)
        return [*(f"{node.name}: {p}" for p in found), *moved]

    return run_on_nodes(
        todo,
        one,
        connect(opts),
        name=lambda n: n.name,
        concurrency=opts.concurrency,
        timeout=opts.node_timeout + 60,
    )


class ProbeClean(PlanError):
    """The node's kubelet files are fine: repair would not help."""


@dataclass
class NodeRepair:
    """Run on a healthy control plane: nodes whose kubelet no longer reports, probed and repaired in place."""

    candidates: list[tuple[str, str]]
    repaired: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    """Not repaired on purpose: its kubelet files are in order, or it is not in the inventory."""
    failed: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidates": [{"name": n, "why": w} for n, w in self.candidates],
            "repaired": self.repaired,
            "left_alone": self.left,
            "failed": self.failed,
        }


def repair_nodes(
    api: KubeApi,
    cfg: KubeadmConfig,
    ca: bytes,
    key: bytes,
    candidates: list[tuple[str, str]],
    opts: RetrustOptions,
    progress: Progress,
) -> NodeRepair:
    """Probe each candidate over SSH and repair those whose kubelet credentials are lost or stale, exactly
    as the re-trust step does after a new CA; the others are reported and left alone."""
    out = NodeRepair(candidates)
    nodes = api.get("/api/v1/nodes").get("items") or []
    inventory = opts.inventory or from_node_objects(nodes, opts.ssh_user, opts.ssh_port)
    todo = []
    for name, _why in candidates:
        target = inventory.get(name)
        if target is None:
            out.left.append(
                f"{name}: {dict(inventory.skipped).get(name, f'not in the inventory ({inventory.source})')}"
            )
        else:
            todo.append(target)

    clean: set[str] = set()

    def probe(node: InventoryNode, state: NodeTrustState) -> list[str]:
        pem = state.client_pem
        found = core.trust_problems(node.name, ca, state.client_ca, state.kubelet_conf, pem, datetime.now(UTC))
        if not found:
            clean.add(node.name)
        return found

    if todo:
        progress(f"probing {', '.join(n.name for n in todo)} over SSH")
        for name, r in _retrust_in_place(api, cfg, ca, key, opts, todo, probe).items():
            if r.ok:
                out.repaired.append(name)
                out.messages.extend(r.value or [])
                progress(f"  {name}: repaired in place and Ready ({r.seconds:.1f} s)")
            elif name in clean:
                out.left.append(f"{name}: {r.error}")
                progress(f"  {name}: left alone: {r.error}")
            else:
                out.failed.append(f"{name}: {r.error}")
                progress(f"  {name}: FAILED: {r.error}")
    return out


# ------------------------------------------------------------------------------------- objects


def step_serving_csrs(ex: Executor, i: int) -> None:
    api = ex._api()
    decisions, objects = csr_approve.review_serving_csrs(api)
    approvals = csr_approve.approve_csrs(api, decisions, objects)
    refused = [d for d in decisions if not d.approve and not (objects[d.name].get("status") or {}).get("conditions")]
    ex.journal.csrs = {
        "approved": [a.name for a in approvals if a.ok],
        "left_pending": [{"name": d.name, "why": d.summary()} for d in refused],
    }
    ex.journal.save()
    ex.progress(f"      {sum(a.ok for a in approvals)} kubelet-serving CSR(s) approved, {len(refused)} left pending")
    for d in refused:
        ex.progress(f"      left pending: {d.summary()}")


def step_trust_objects(ex: Executor, i: int) -> None:
    cfg = ex.ctx.final_cfg()
    on_node = ex._on_node(cfg)
    ca, _key = rcore.ca_pair(cfg, on_node)
    fp = on_node.get(PurePosixPath(cfg.cluster.certificates_dir) / "front-proxy-ca.crt")
    api = ex._api()
    plan = trust_apply.read_trust_plan(api, ca, fp, control_plane_url(cfg))
    applied = trust_apply.apply_trust_plan(api, plan)
    ok = [a for a in applied if a.ok]
    other = [a for a in applied if not a.ok]
    ex.journal.trust_objects = {
        "changed": [f"{a.action} {a.ref}" for a in ok],
        "not_changed": [f"{a.ref}: {a.message}" for a in other],
    }
    ex.journal.save()
    ex.progress(f"      {len(ok)} CA-derived object(s) updated, {len(plan.current)} already current")
    for a in other:
        ex.progress(f"      not changed: {a.ref}: {a.message}")


def step_sa_tokens(ex: Executor, i: int) -> None:
    j = ex.journal
    if j.trust is None or not j.trust.new_sa:
        j.sa_tokens = {"results": [], "namespaces": {}, "why": "sa.key kept"}
        j.save()
        ex.progress("      sa.key was kept: every ServiceAccount token stays valid, no workload restarted")
        return
    cfg = ex.ctx.final_cfg()
    sa_pub = ex.root.read(PurePosixPath(cfg.cluster.certificates_dir) / "sa.pub") or b""
    cutoff = datetime.fromtimestamp(j.timings.get("started", time.time()), UTC)
    api = ex._api()
    plan = restarts_apply.read_restart_plan(api, cutoff, satokens.key_ids(sa_pub), ex.options.restart_bare_pods)
    results = restarts_apply.apply_restart_plan(api, plan, ex.progress)
    record: dict[str, Any] = {
        "results": [
            {
                "action": r.action.action,
                "ref": r.action.ref,
                "outcome": r.outcome,
                "message": r.message,
                "seconds": round(r.seconds, 1),
            }
            for r in results
        ],
        "namespaces": {},
    }
    for ns, sa in plan.service_accounts:  # one ServiceAccount per namespace for the TokenReview
        record["namespaces"].setdefault(ns, sa)
    j.sa_tokens = record
    j.save()
    failed = [r for r in results if r.outcome == "failed"]
    if failed:
        raise PlanError(
            f"{len(failed)} workload restart(s) failed: "
            + "; ".join(f"{r.action.ref}: {r.message}" for r in failed)[:600],
            "look at those workloads (kubectl rollout status), then run 'kuberevive recover --apply' again",
        )


# ------------------------------------------------------------------------------------- report


def step_report(ex: Executor, i: int) -> None:
    api = ex._api()
    j = ex.journal
    rep = Report(guard=j.guard or "off")
    states = j.retrust
    for n in api.get("/api/v1/nodes").get("items") or []:
        name = n["metadata"]["name"]
        ready = core.is_ready(n)
        entry = {"name": name, "ready": ready, "retrust": states[name].state if name in states else "this node"}
        rep.nodes.append(entry)
        if not ready:
            rep.problems.append(f"node {name} is not Ready")
    csrs = api.get(csr_approve.CSR_PATH).get("items") or []
    for c in csrs:
        conds = (c.get("status") or {}).get("conditions") or []
        if not conds:
            rep.pending_csrs.append({"name": c["metadata"]["name"], "signer": c["spec"].get("signerName", "")})
    wanted: dict[str, str] = dict((j.sa_tokens or {}).get("namespaces") or {})
    for ns, (ok, why) in restarts_apply.token_review_per_namespace(api, wanted).items():
        rep.token_reviews[f"{ns}/{wanted.get(ns, '')}"] = {"authenticated": ok, "detail": why}
        if not ok:
            rep.problems.append(f"TokenReview of a fresh token in namespace {ns} failed: {why}")
    for s in api.get("/apis/apiregistration.k8s.io/v1/apiservices").get("items") or []:
        if not (s.get("spec") or {}).get("service"):
            continue  # served by kube-apiserver itself
        conds = {c.get("type"): c for c in (s.get("status") or {}).get("conditions") or []}
        available = (conds.get("Available") or {}).get("status") == "True"
        rep.aggregated_apis.append({"name": s["metadata"]["name"], "available": available})
        if not available:
            rep.problems.append(f"aggregated API {s['metadata']['name']} is not Available")
    for sid, st in j.steps.items():
        if st.seconds is not None:
            rep.phases[sid] = st.seconds
    j.report = rep.as_dict()
    j.save()
    ex.result.report = rep.as_dict()
    n_ready = len([n for n in rep.nodes if n["ready"]])
    ex.progress(
        f"      {n_ready}/{len(rep.nodes)} node(s) Ready, {len(rep.pending_csrs)} pending CSR(s), "
        f"{sum(1 for v in rep.token_reviews.values() if v['authenticated'])}/{len(rep.token_reviews)} TokenReview(s) ok"
    )
