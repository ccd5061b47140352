"""Steps 16-21 (recover part 2): the rest of the cluster follows a new trust. The other nodes' kubelets are
re-trusted in place over SSH, kubelet-serving CSRs approved, CA-derived objects updated, token-using workloads
restarted after a new sa.key, the eviction guard removed, and the final report.

What each step decides comes from the journal's ``trust`` record, written by the ``certs`` step: whether the
cluster CA, the front-proxy CA and ``sa.key`` are new (then the other nodes, the CA-derived objects and the
token-using workloads must follow) or kept (then they are only checked).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from kuberevive.core import guard as guardcore
from kuberevive.core import recover as rcore
from kuberevive.core import retrust as core
from kuberevive.core import satokens
from kuberevive.core.kubeconfig import control_plane_url
from kuberevive.errors import PlanError
from kuberevive.io import csr_approve, restarts_apply, trust_apply
from kuberevive.io.kubeapi import KubeApi
from kuberevive.model.artifacts import Artifact, ArtifactKind
from kuberevive.model.inventory import InventoryNode, from_node_objects
from kuberevive.model.paths import CONTROLLER_MANAGER_MANIFEST as KCM_MANIFEST
from kuberevive.model.recover import Report
from kuberevive.run.context import StepContext
from kuberevive.run.journal import NodeRetrust
from kuberevive.run.retrust import retrust_in_place
from kuberevive.run.steps import cluster
from kuberevive.waiting import wait_for

KCM_LEASE = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager"
GUARD_TIMEOUT = 180.0
KCM_CONTAINER = "kube-controller-manager"
TAINT_TIMEOUT = 120.0


def retrust_nodes(ctx: StepContext, i: int) -> None:
    j = ctx.journal
    opts = ctx.options
    api = ctx.api()
    me = ctx.identity.node_name
    nodes = [n for n in api.get("/api/v1/nodes").get("items") or [] if n["metadata"]["name"] != me]
    states = j.retrust
    if not nodes:
        ctx.progress("      no other nodes")
        return
    if j.trust is None or not j.trust.new_ca:
        for n in nodes:
            states[n["metadata"]["name"]] = NodeRetrust("kept", "the cluster CA was kept: it trusts it")
        j.save()
        ctx.progress(f"      the cluster CA was kept: {len(nodes)} other node(s) still trust it, nothing to change")
        return
    if opts.skip_retrust:
        for n in nodes:
            name = n["metadata"]["name"]
            if name not in states or states[name].state != "done":
                why = "--skip-retrust: re-join it with the kubeadm join command recover prints"
                states[name] = NodeRetrust("skipped", why)
        j.save()
        ctx.progress(f"      --skip-retrust: {len(nodes)} node(s) left to be re-joined")
        return
    if ctx.faults.retrust_delay > 0:
        ctx.progress(f"      KUBEREVIVE_RETRUST_DELAY: waiting {ctx.faults.retrust_delay:.0f} s first")
        ctx.sleep(ctx.faults.retrust_delay)
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
        elif "node-role.kubernetes.io/control-plane" in (n["metadata"].get("labels") or {}):
            why = "another control-plane node: re-join it as a control-plane node (not handled by recover)"
        else:
            todo.append(target)
            continue
        states[name] = NodeRetrust("failed", why)
        failed.append(f"{name}: {why}")
    cfg = ctx.final_cfg()
    ca, key = ctx.ca_pair()
    if todo:
        ctx.progress(f"      re-trusting {', '.join(n.name for n in todo)} over SSH")
        for name, r in retrust_in_place(api, cfg, ca, key, opts, todo).items():
            if r.ok:
                states[name] = NodeRetrust("done", seconds=round(r.seconds, 1))
                ctx.messages.extend(r.value or [])
                ctx.progress(f"      {name}: re-trusted and Ready ({r.seconds:.1f} s)")
            else:
                states[name] = NodeRetrust("failed", r.error)
                failed.append(f"{name}: {r.error}")
                ctx.progress(f"      {name}: FAILED: {r.error}")
    j.save()
    if failed:
        raise PlanError(
            f"{len(failed)} node(s) could not be re-trusted: {'; '.join(failed)[:600]}",
            "fix the node's SSH access (--ssh-key, --known-hosts, --inventory) and run 'kuberevive recover --apply' "
            "again (it resumes here; the eviction guard stays on), or re-join them with "
            f"'{ctx.join_command()}' and run it again with --skip-retrust",
        )


def serving_csrs(ctx: StepContext, i: int) -> None:
    api = ctx.api()
    decisions, objects = csr_approve.review_serving_csrs(api)
    approvals = csr_approve.approve_csrs(api, decisions, objects)
    refused = [d for d in decisions if not d.approve and not (objects[d.name].get("status") or {}).get("conditions")]
    ctx.journal.csrs = {
        "approved": [a.name for a in approvals if a.ok],
        "left_pending": [{"name": d.name, "why": d.summary()} for d in refused],
    }
    ctx.journal.save()
    ctx.progress(f"      {sum(a.ok for a in approvals)} kubelet-serving CSR(s) approved, {len(refused)} left pending")
    for d in refused:
        ctx.progress(f"      left pending: {d.summary()}")


def trust_objects(ctx: StepContext, i: int) -> None:
    cfg = ctx.final_cfg()
    on_node = ctx.on_node(cfg)
    ca, _key = rcore.ca_pair(cfg, on_node)
    fp = on_node.get(PurePosixPath(cfg.cluster.certificates_dir) / "front-proxy-ca.crt")
    api = ctx.api()
    plan = trust_apply.read_trust_plan(api, ca, fp, control_plane_url(cfg))
    applied = trust_apply.apply_trust_plan(api, plan)
    ok = [a for a in applied if a.ok]
    other = [a for a in applied if not a.ok]
    ctx.journal.trust_objects = {
        "changed": [f"{a.action} {a.ref}" for a in ok],
        "not_changed": [f"{a.ref}: {a.message}" for a in other],
    }
    ctx.journal.save()
    ctx.progress(f"      {len(ok)} CA-derived object(s) updated, {len(plan.current)} already current")
    for a in other:
        ctx.progress(f"      not changed: {a.ref}: {a.message}")


def sa_tokens(ctx: StepContext, i: int) -> None:
    j = ctx.journal
    if j.trust is None or not j.trust.new_sa:
        j.sa_tokens = {"results": [], "namespaces": {}, "why": "sa.key kept"}
        j.save()
        ctx.progress("      sa.key was kept: every ServiceAccount token stays valid, no workload restarted")
        return
    cfg = ctx.final_cfg()
    sa_pub = ctx.root.read(PurePosixPath(cfg.cluster.certificates_dir) / "sa.pub") or b""
    cutoff = datetime.fromtimestamp(j.timings.get("started", ctx.clock()), UTC)
    api = ctx.api()
    plan = restarts_apply.read_restart_plan(api, cutoff, satokens.key_ids(sa_pub), ctx.options.restart_bare_pods)
    results = restarts_apply.apply_restart_plan(api, plan, ctx.progress)
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


def _lease_holder(api: KubeApi) -> str:
    lease = api.get_or_none(KCM_LEASE)
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


#: How often remove-guard looks: the node list while taints remain (usually gone already: one look), the runtime's
#: containers and the lease until the guarded instance stopped (a crictl call each: not more often, the new
#: controller-manager starts on the same cores), then the lease alone (one small GET) until the new one leads.
TAINT_POLL = 0.5
STOP_POLL = 0.5
LEAD_POLL = 0.2


def remove_guard(ctx: StepContext, i: int) -> None:
    """Put the normal controller-manager manifest back once no node carries an eviction taint."""
    j = ctx.journal
    if j.guard != "on":
        ctx.progress("      the eviction guard was not used")
        return
    api = ctx.api()
    started = ctx.monotonic()

    def untainted() -> tuple[bool, str]:
        left = core.eviction_taints(api.get("/api/v1/nodes").get("items") or [])
        return not left, "NoExecute taints on " + ", ".join(left)

    try:
        wait_for(
            "nodes free of NoExecute not-ready/unreachable taints",
            TAINT_TIMEOUT,
            untainted,
            TAINT_POLL,
            clock=ctx.monotonic,
            sleep=ctx.sleep,
        )
    except PlanError as exc:
        raise PlanError(
            f"the eviction guard stays on: {exc.message}",
            "their pods would be evicted at once without it; re-trust those nodes or re-join them with "
            f"'{ctx.join_command()}', then run 'kuberevive recover --apply' again to put the normal "
            "controller-manager back",
        ) from exc
    current = ctx.root.read(KCM_MANIFEST)
    if current is None:
        raise PlanError(f"{KCM_MANIFEST} is missing although the guard is on", "run 'kuberevive recover --apply' again")
    normal = core.unguard_manifest(current)
    holder = _lease_holder(api)
    cri = ctx.identity.cri_socket
    # the guarded instance's containers, listed before the swap: only once none of them runs may its lease be
    # released for it (none listed, e.g. a resumed run that swapped already: the lease is waited out instead)
    guarded = {c.id for c in ctx.host.containers(KCM_CONTAINER, cri)} if normal != current else set()
    if normal != current:
        art = Artifact(KCM_MANIFEST, 0o600, ArtifactKind.MANIFEST, "kube-controller-manager static Pod", normal)
        for r in ctx.root.write_all([art], force=True):  # the guarded manifest is moved aside first
            ctx.messages.append(f"{KCM_MANIFEST} (guarded) moved aside to {r.moved_aside_to}")
    swapped = ctx.monotonic()
    j.timing("guard_manifest_swapped", ctx.clock())
    deadline = swapped + GUARD_TIMEOUT
    leader = ""

    def new_holder(lease: dict[str, Any]) -> str:
        now_holder = str((lease.get("spec") or {}).get("holderIdentity") or "")
        return now_holder if now_holder and now_holder != holder else ""

    def stopped_and_released() -> tuple[bool, str]:
        """Done once another instance holds the lease, or the guarded one stopped and its lease was released."""
        nonlocal leader
        lease = api.get_or_none(KCM_LEASE) or {}
        leader = new_holder(lease)
        if leader:
            return True, f"lease holder {leader}"
        # stopped: the runtime lists a kube-controller-manager container, none of them the guarded one's (an
        # empty list proves nothing: crictl may have failed; the kubelet stops the old one before it starts the
        # new one)
        running = {c.id for c in ctx.host.containers(KCM_CONTAINER, cri)}
        stopped = bool(running - guarded) and not running & guarded
        body = guardcore.released_lease(lease, holder, ctx.facts.hostname, stopped, ctx.utcnow())
        if body is None:
            state = "stopped" if stopped else "still runs"
            return False, f"lease holder {holder or '-'}; the guarded kube-controller-manager {state}"
        if not api.replace_if_unchanged(KCM_LEASE, body):  # a successor's lease is never overwritten
            return True, "the lease changed meanwhile (a successor took it)"
        ctx.progress("      the guarded kube-controller-manager stopped: its leader lease released for it")
        return True, "released"

    if guarded:
        wait_for(
            "the normal kube-controller-manager to lead (the guarded one stopped first)",
            GUARD_TIMEOUT,
            stopped_and_released,
            STOP_POLL,
            clock=ctx.monotonic,
            sleep=ctx.sleep,
        )
    released = ctx.monotonic()
    j.timing("guard_stopped", ctx.clock())

    def normal_leads() -> tuple[bool, str]:
        nonlocal leader
        leader = leader or new_holder(api.get_or_none(KCM_LEASE) or {})
        return bool(leader), f"lease holder {leader or '-'}"

    wait_for(
        "the normal kube-controller-manager to lead",
        max(0.0, deadline - ctx.monotonic()),
        normal_leads,
        LEAD_POLL,
        clock=ctx.monotonic,
        sleep=ctx.sleep,
    )
    j.timing("guard_off", ctx.clock())
    j.guard = "off"
    j.save()
    ctx.progress(
        f"      the normal kube-controller-manager leads again after {ctx.monotonic() - swapped:.1f} s (taint "
        f"eviction back on): taints checked in {swapped - started:.1f} s, the guarded instance stopped "
        f"{released - swapped:.1f} s after the swap, the new one led {ctx.monotonic() - released:.1f} s later"
    )


def report(ctx: StepContext, i: int) -> None:
    cluster.upload_certs(ctx)  # for the control-plane join command printed with the report
    api = ctx.api()
    j = ctx.journal
    rep = Report(guard=j.guard or "off")
    for n in api.get("/api/v1/nodes").get("items") or []:
        name = n["metadata"]["name"]
        ready = core.is_ready(n)
        state = j.retrust[name].state if name in j.retrust else "this node"
        rep.nodes.append({"name": name, "ready": ready, "retrust": state})
        if not ready:
            rep.problems.append(f"node {name} is not Ready")
    for c in api.get(csr_approve.CSR_PATH).get("items") or []:
        if not (c.get("status") or {}).get("conditions"):
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
    ctx.report = rep.as_dict()
    n_ready = len([n for n in rep.nodes if n["ready"]])
    ctx.progress(
        f"      {n_ready}/{len(rep.nodes)} node(s) Ready, {len(rep.pending_csrs)} pending CSR(s), "
        f"{sum(1 for v in rep.token_reviews.values() if v['authenticated'])}/{len(rep.token_reviews)} TokenReview(s) ok"
    )
