"""``kuberevive recover [--apply] [--ca-from DIR] [--config FILE] [--root DIR] [--json]``.

Without ``--apply``: print the plan (every file, process and object, with why) and change nothing.
With ``--apply``: execute it step by step (resumable; see :mod:`kuberevive.run.recover`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kuberevive.cli.commands import summary
from kuberevive.cli.commands.backup import add_from_backup_args, kept_from_backup
from kuberevive.cli.commands.generate import read_config_file
from kuberevive.cli.env import Environment, ExitStatus, is_live_root
from kuberevive.core.recover import KEPT_FILES
from kuberevive.core.salvage import parse_peer
from kuberevive.errors import ConfigError
from kuberevive.io.host import LocalHost
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.document import RECOVERY_PLAN, RECOVERY_RESULT, Document, stamp
from kuberevive.model.inventory import Inventory, load_inventory
from kuberevive.model.recover import RecoveryPlan, RetrustOptions
from kuberevive.run.recover import RecoveryResult, apply_recovery, plan_recovery


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "recover",
        allow_abbrev=False,
        help=summary("recover"),
        description="Rebuild this control-plane node from its surviving etcd data and kubelet state, with the "
        "cluster's real configuration read from etcd. Without --apply, print the plan and change nothing.",
    )
    p.add_argument("--apply", action="store_true", help="execute the plan (resumes an interrupted recovery)")
    p.add_argument(
        "--ca-from",
        metavar="DIR",
        help="keep the trust material found in DIR (laid out like /etc/kubernetes/pki: "
        + ", ".join(KEPT_FILES)
        + ") instead of creating new CAs and service-account keys",
    )
    add_from_backup_args(p)  # --from-backup FILE (kuberevive backup)
    p.add_argument("--config", metavar="FILE", help="kubeadm configuration; must match what etcd holds")
    g = p.add_argument_group("the other nodes (healthy control-plane peers; when the cluster CA is new, every node)")
    add_peer_args(g)
    add_node_access_args(g)
    g.add_argument(
        "--skip-retrust",
        action="store_true",
        help="do not touch the other nodes; re-join them yourself with the printed 'kubeadm join' command",
    )
    g.add_argument(
        "--no-eviction-guard",
        action="store_true",
        help="run kube-controller-manager normally during the recovery (pods on nodes that cannot report yet are "
        "evicted after their NotReady toleration)",
    )
    g.add_argument(
        "--restart-bare-pods",
        action="store_true",
        help="also evict pods without a controller whose ServiceAccount token was signed by a lost sa.key",
    )
    p.add_argument("--root", default="/", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run, run_log="recover")


def add_node_access_args(g: argparse._ActionsContainer) -> None:
    """How to reach the other nodes over SSH (recover, certs check --all-nodes); see :func:`node_access`."""
    g.add_argument(
        "--inventory",
        metavar="FILE",
        help="nodes and how to reach them: kuberevive's format or an Ansible/kubespray inventory (docs/inventory.md); "
        "default: the cluster's Node objects, at their first InternalIP",
    )
    g.add_argument("--ssh-user", default="root", metavar="USER", help="SSH user (default root)")
    g.add_argument("--ssh-port", type=int, default=22, metavar="PORT", help="SSH port (default 22)")
    g.add_argument(
        "--ssh-key", action="append", default=[], metavar="FILE", help="SSH private key (repeatable; default: agent)"
    )
    g.add_argument(
        "--known-hosts",
        action="append",
        default=[],
        metavar="FILE",
        help="known_hosts file the nodes' host keys are checked against (default ~/.ssh/known_hosts)",
    )
    g.add_argument("--ssh-concurrency", type=int, default=8, metavar="N", help="nodes reached at once (default 8)")


def add_peer_args(g: argparse._ActionsContainer) -> None:
    """``--peer NAME=ADDRESS`` (recover, diagnose): healthy control-plane nodes holding the trust material."""
    g.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="NAME=ADDRESS",
        help="a healthy control-plane node of this cluster, reached over SSH (repeatable): its CAs and sa.key are "
        "checked and copied instead of new ones (default: the inventory's other control-plane nodes)",
    )


def node_access(args: argparse.Namespace, **more: Any) -> RetrustOptions:
    """The options :func:`add_node_access_args` added, as RetrustOptions (plus ``more`` fields)."""
    return RetrustOptions(
        inventory=_read_inventory(args.inventory) if args.inventory else None,
        ssh_user=args.ssh_user,
        ssh_port=args.ssh_port,
        identity_files=tuple(args.ssh_key),
        known_hosts=tuple(args.known_hosts),
        concurrency=max(1, args.ssh_concurrency),
        peers=tuple(parse_peer(p, args.ssh_port) for p in getattr(args, "peer", [])),
        **more,
    )


def read_kept(directory: str) -> dict[str, bytes]:
    base = Path(directory)
    if not base.is_dir():
        raise ConfigError(
            f"--ca-from {directory} is not a directory", "pass a directory laid out like /etc/kubernetes/pki"
        )
    kept: dict[str, bytes] = {}
    for rel in KEPT_FILES:
        f = base / rel
        if f.is_file():
            try:
                kept[rel] = f.read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read {f}: {exc.strerror}", "check the permissions") from None
    if not kept:
        raise ConfigError(
            f"--ca-from {directory} holds none of {', '.join(KEPT_FILES)}",
            "pass the directory that holds ca.crt and ca.key",
        )
    return kept


def _read_inventory(path: str) -> Inventory:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the inventory {path}: {exc.strerror}", "check the path") from None
    return load_inventory(text, path)


def run(args: argparse.Namespace, env: Environment) -> int:
    root = NodeRoot(Path(args.root))
    host = LocalHost(root, live=is_live_root(args.root))
    kept = read_kept(args.ca_from) if args.ca_from else kept_from_backup(args, env, root)
    config_text = read_config_file(args.config) if args.config else None
    if not args.apply:
        plan = plan_recovery(host, kept, config_text, env.environ, options=node_access(args))
        if args.json:
            env.json(plan_document(plan))
        else:
            _print_plan(env, plan)
        return int(ExitStatus.OK)
    options = node_access(
        args,
        skip_retrust=args.skip_retrust,
        eviction_guard=not args.no_eviction_guard,
        restart_bare_pods=args.restart_bare_pods,
    )
    result = apply_recovery(host, kept, config_text, progress=env.progress, environ=env.environ, options=options)
    if args.json:
        env.json(result_document(result))
    else:
        _print_result(env, result)
    return int(ExitStatus.OK)


def plan_document(plan: RecoveryPlan) -> Document:
    """``recover --json`` without ``--apply``."""
    return stamp(RECOVERY_PLAN, {"apply": False, "plan": plan.as_dict()})


def result_document(result: RecoveryResult) -> Document:
    """``recover --apply --json``."""
    return stamp(RECOVERY_RESULT, {"apply": True, **result.as_dict()})


def _print_plan(env: Environment, plan: RecoveryPlan) -> None:
    if not plan.steps:
        env.line(f"nothing to recover on this node: {plan.nothing_to_do}.", "", "    ")
        if plan.node_repairs:
            for name, why in plan.node_repairs:
                env.line(f"node {name}: its kubelet no longer reports ({why})", "", "    ")
            for note in plan.notes:
                env.line(f"note: {note}", "", "    ")
            env.out(
                "nothing was changed; run 'kuberevive recover --apply' (with --ssh-key/--known-hosts) to repair them."
            )
        return
    ident = plan.identity
    if ident is not None:
        env.line(f"recovery plan for node {ident.node_name} ({ident.advertise_address}:{ident.bind_port})", "", "    ")
        for what, where in ident.sources:
            env.line(f"{what}: from {where}", "  ", "      ")
    for note in plan.notes:
        env.line(f"note: {note}", "", "    ")
    for i, s in enumerate(plan.steps, start=1):
        done = "  (done)" if s.id in plan.done_steps else ""
        env.line(f"[{s.kind.value}] {s.title}{done}", f"{i:2}. ", "      ")
        env.line(f"why: {s.why}", "      ", "          ")
        for f in s.files:
            env.line(f"file: {f}", "      ", "          ")
        for o in s.objects:
            env.line(f"object: {o}", "      ", "          ")
        if s.verify:
            env.line(f"verify: {s.verify}", "      ", "          ")
    env.line("nothing was changed; run 'kuberevive recover --apply' to execute this plan.")


def _print_result(env: Environment, result: RecoveryResult) -> None:
    if not result.plan.steps:
        env.line(f"nothing to recover on this node: {result.plan.nothing_to_do}.", "", "    ")
        repair = result.report.get("node_repair")
        if repair:
            for m in result.messages:
                env.line(f"note: {m}", "", "    ")
            for name in repair["repaired"]:
                env.line(
                    f"node {name}: repaired in place (cluster CA, client certificate, kubelet.conf) and Ready",
                    "",
                    "    ",
                )
            for line in repair["left_alone"]:
                env.line(f"node {line}", "", "    ")
        return
    for m in result.messages:
        env.line(f"note: {m}", "", "    ")
    t = result.timings
    env.line(f"recovered in {len(result.applied)} step(s) this run.", "", "    ")
    if "start_to_api_ready_s" in t:
        env.out(
            f"time from start to API ready: {t['start_to_api_ready_s']} s "
            f"(components alone: {t.get('components_alone_s', '?')} s; etcd ready {t.get('etcd_start_s', '?')} s "
            f"after its manifest, the API server {t.get('apiserver_start_s', '?')} s after its own); whole recovery "
            f"{t.get('start_to_done_s', '?')} s"
        )
    if "etcd_container_to_healthy_s" in t and "apiserver_container_to_ready_s" in t:
        env.out(
            f"  of which the kubelet noticing the manifests: etcd {t['etcd_kubelet_pickup_s']} s, "
            f"API server {t['apiserver_kubelet_pickup_s']} s; the containers themselves: "
            f"etcd {t['etcd_container_to_healthy_s']} s, API server {t['apiserver_container_to_ready_s']} s"
        )
    _print_report(env, result.report)
    env.out("the operator's kubeconfig is /etc/kubernetes/admin.conf.")
    env.out("join (or re-join) the other nodes with:")
    env.out(f"  {result.join_command}")  # one line, whatever the width: it is copied and pasted
    if result.control_plane_join_command:
        env.out("join a new control-plane node with (its certificate key expires with the kubeadm-certs Secret, 2 h):")
        env.out(f"  {result.control_plane_join_command}")


def _print_report(env: Environment, report: dict[str, Any]) -> None:
    if not report:
        return
    env.out("report:")
    for n in report.get("nodes") or []:
        env.line(
            f"node {n['name']}: {'Ready' if n['ready'] else 'NOT Ready'} (re-trust: {n['retrust']})", "  ", "      "
        )
    pending = report.get("pending_csrs") or []
    env.out(f"  pending CSRs: {len(pending)}" + "".join(f"\n    {c['name']} ({c['signer']})" for c in pending))
    for ref, tr in (report.get("token_reviews") or {}).items():
        env.line(
            f"TokenReview of a fresh token for {ref}: {'ok' if tr['authenticated'] else 'FAILED'} {tr['detail']}",
            "  ",
            "      ",
        )
    for a in report.get("aggregated_apis") or []:
        env.line(f"aggregated API {a['name']}: {'Available' if a['available'] else 'NOT Available'}", "  ", "      ")
    env.line(f"eviction guard: {report.get('eviction_guard')}", "  ", "      ")
    phases = report.get("phases_s") or {}
    if phases:
        env.out("  phases (s): " + ", ".join(f"{k} {v}" for k, v in phases.items()))
    for p in report.get("problems") or []:
        env.line(f"problem: {p}", "  ", "      ")
