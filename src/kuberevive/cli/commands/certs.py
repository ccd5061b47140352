"""``kuberevive certs check`` and ``kuberevive certs renew`` (docs/certs.md).

``check`` exit codes: 0 all fine, 3 something expires within ``--expiry-warning-days``, 4 something is expired,
invalid or missing, 1 it could not run.
"""

from __future__ import annotations

import argparse

from kuberevive.cli.commands import summary
from kuberevive.cli.commands.recover import add_node_access_args, node_access
from kuberevive.cli.env import Environment, is_live_root
from kuberevive.core import certs
from kuberevive.model.document import CERTS_RENEW_PLAN, CERTS_RENEW_RESULT, stamp
from kuberevive.run import renew


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "certs",
        allow_abbrev=False,
        help=summary("certs"),
        description="Check (read-only) or renew the certificates and kubeconfig credentials of a kubeadm "
        "control-plane node, the kubelet's included. See docs/certs.md.",
    )
    cmds = p.add_subparsers(dest="certs_command", metavar="ACTION")
    cmds.required = True

    c = cmds.add_parser(
        "check",
        allow_abbrev=False,
        help="every certificate with its expiry, signer and status (read-only)",
        description="List every certificate and kubeconfig client credential of this control-plane node (like "
        "'kubeadm certs check-expiration', plus the kubelet's). Exit 0 all fine, 3 something expires within "
        "the warning period, 4 something is expired, invalid or missing, 1 it could not run.",
    )
    common_args(c)
    c.add_argument("--json", action="store_true", help="machine-readable output (schema in docs/certs.md)")
    g = c.add_argument_group("--all-nodes: the kubelet certificates of every other node, over SSH")
    g.add_argument("--all-nodes", action="store_true", help="also check every other node's kubelet certificates")
    add_node_access_args(g)
    c.set_defaults(func=run_check)

    r = cmds.add_parser(
        "renew",
        allow_abbrev=False,
        help="renew expired or expiring certificates with the existing CAs (plan unless --apply)",
        description="Renew every expired, expiring or invalid leaf certificate, kubeconfig client certificate and "
        "the kubelet's client certificate of this control-plane node with the CAs on disk, then restart the "
        "control-plane static pods and wait for the API server; with --all-nodes also every other node's kubelet "
        "client certificate, over SSH. Without --apply: the plan, nothing changes.",
    )
    common_args(r)
    r.add_argument("--apply", action="store_true", help="do it (default: print the plan and change nothing)")
    r.add_argument("--all", action="store_true", help="renew every leaf and credential, also the valid ones")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    g = r.add_argument_group("--all-nodes: the kubelet client certificates of every other node, over SSH")
    g.add_argument(
        "--all-nodes", action="store_true", help="also renew every other node's kubelet client certificate in place"
    )
    add_node_access_args(g)
    r.set_defaults(func=run_renew, run_log="certs-renew")


def common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default="/", metavar="DIR", help="the node's root directory (default /)")
    p.add_argument("--config", metavar="FILE", help="the kubeadm configuration (default: reconstructed)")
    p.add_argument(
        "--expiry-warning-days",
        type=int,
        default=certs.DEFAULT_EXPIRY_WARNING_DAYS,
        metavar="N",
        help=f"'expiring' means within N days (default {certs.DEFAULT_EXPIRY_WARNING_DAYS})",
    )


def run_check(args: argparse.Namespace, env: Environment) -> int:
    report, cfg = renew.read_report(args.root, args.config, args.expiry_warning_days, live=is_live_root(args.root))
    if args.all_nodes:
        report = renew.check_other_nodes(report, args.root, node_access(args), env.progress, cfg)
    if args.json:
        env.json(report.as_json())
    else:
        render_table(report, env)
    return report.exit_code


def _table(env: Environment, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        env.out("   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def _row(item: certs.CertItem, *, authority: bool) -> list[str]:
    expires = certs.kubeadm_date(item.not_after) if item.not_after is not None else "-"
    row = [item.name, expires, item.residual or "-"]
    if authority:
        row.append(item.authority or "-")
    row += ["yes" if item.externally_managed else "no", item.status.value]
    return row


def _leaf_tables(items: list[certs.CertItem], env: Environment) -> None:
    """kubeadm's two tables (leaves and kubeconfigs, then CAs) for one node's items."""
    leaves = [i for i in items if i.group in (certs.Group.CERTIFICATE, certs.Group.KUBECONFIG)]
    cas = [i for i in items if i.group is certs.Group.CA]
    head = ["CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "CERTIFICATE AUTHORITY", "EXTERNALLY MANAGED", "STATUS"]
    _table(env, head, [_row(i, authority=True) for i in leaves])
    env.out()
    _table(
        env,
        ["CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL TIME", "EXTERNALLY MANAGED", "STATUS"],
        [_row(i, authority=False) for i in cas],
    )
    env.out()


def render_table(report: certs.CertsReport, env: Environment) -> None:
    env.out(f"certs check: node {report.node_name} (root {report.root}), configuration: {report.config_source}")
    env.out()
    _leaf_tables([i for i in report.items if i.node is None], env)
    peers: dict[str, list[certs.CertItem]] = {}
    for i in report.items:
        if i.node is not None and i.group is not certs.Group.KUBELET:
            peers.setdefault(i.node, []).append(i)
    for name, its in peers.items():  # --all-nodes: each other control-plane node, read over SSH
        env.out(f"control-plane node {name} (over SSH):")
        env.out()
        _leaf_tables(its, env)
    kubelet = [i for i in report.items if i.group is certs.Group.KUBELET]
    head = ["NODE", "KUBELET", "EXPIRES", "RESIDUAL TIME", "CERTIFICATE AUTHORITY", "EXTERNALLY MANAGED", "STATUS"]
    _table(env, head, [[i.node or report.node_name, *_row(i, authority=True)] for i in kubelet])
    problems = [(i, p) for i in report.items if i.counts for p in i.problems]
    if problems:
        env.out()
        for item, p in problems:
            where = f"{item.node}: " if item.node else ""
            env.out(f"{item.status.value}: {where}{item.name} ({item.path}): {p}")
    env.out()
    summary = {
        certs.EXIT_OK: "all certificates are valid",
        certs.EXIT_EXPIRING: f"something expires within {report.warning_days} days: run 'kuberevive certs renew'",
        certs.EXIT_EXPIRED: "something is expired, invalid or missing: run 'kuberevive certs renew'",
    }[report.exit_code]
    env.out(summary)


def render_nodes(result: renew.RenewResult, env: Environment) -> None:
    """``--all-nodes``: each other node's kubelet certificates and what is done there."""
    if result.nodes_note:
        env.out(f"other nodes: {result.nodes_note}")
    if result.nodes:
        env.out("other nodes (--all-nodes):")
    for n in result.nodes or []:
        client, serving = n["client"], n["serving"]
        if not n["reached"]:
            env.out(f"  {n['node']}: not reached: {'; '.join(n['notes'])}")
            continue
        if n.get("control_plane") is not None:
            renewed = ", ".join(n["control_plane"]) or "nothing"
            env.out(f"  {n['node']}: control-plane node: renew {renewed}; its control plane restarted after this one's")
        what = "renew the kubelet client certificate" if n["renew_client"] else "keep the kubelet client certificate"
        env.out(f"  {n['node']}: {what} ({client['status']}, {client['not_after'] or '-'}, {client['path']})")
        if serving is not None:
            action = "move it aside (the kubelet makes a new one)" if n["new_serving"] else "keep it"
            env.out(f"  {n['node']}: serving certificate {serving['status']} ({serving['path']}): {action}")
        for note in n["notes"]:
            env.out(f"  {n['node']}: {note}")


def render_renew(result: renew.RenewResult, env: Environment, applied: bool) -> None:
    if not result.steps:
        env.out("certs renew: nothing to renew (every certificate is valid beyond the warning period)")
        render_nodes(result, env)
        return
    head = "certs renew" + (" (resumed)" if result.resumed else "") + f": configuration from {result.config_source}"
    env.out(head)
    for t in result.targets:
        env.out(f"  {t['name']:<26} {t['status']:<9} {t['not_after'] or '-':<21} {t['path']}")
    render_nodes(result, env)
    if result.validity:
        env.out(f"validity of the new certificates: {result.validity}")
    render_steps(env, result.steps, renew.STEP_TITLES, result.messages, applied, "renew")
    if applied:
        admin = (
            " (admin.conf too: copy it again where you use a copy)"
            if any(t["name"] == "admin.conf" for t in result.targets)
            else ""
        )
        env.out(f"renewed {len(result.targets)} item(s) on this node{admin} in {result.seconds} s")


def render_steps(
    env: Environment, steps: list[str], titles: dict[str, str], messages: list[str], applied: bool, verb: str
) -> None:
    """The steps (planned or done) and the messages of a plan-or-apply command."""
    env.out("steps:" if not applied else "done:")
    for s in steps:
        env.out(f"  {s:<22} {titles[s]}")
    for m in messages:
        env.out(f"  {m}")
    if not applied:
        env.out(f"this is the plan; nothing was changed. Run again with --apply to {verb}.")


def run_renew(args: argparse.Namespace, env: Environment) -> int:
    live = is_live_root(args.root)
    options = node_access(args) if args.all_nodes else None
    if args.apply:
        result = renew.apply(
            args.root, args.config, args.expiry_warning_days, args.all, env.progress, live=live, options=options
        )
    else:
        result = renew.plan(
            args.root,
            args.config,
            args.expiry_warning_days,
            args.all,
            live=live,
            options=options,
            progress=env.progress,
        )
    if args.json:
        env.json(
            stamp(
                CERTS_RENEW_RESULT if args.apply else CERTS_RENEW_PLAN, {"apply": bool(args.apply), **result.as_dict()}
            )
        )
    else:
        render_renew(result, env, bool(args.apply))
    return 0
