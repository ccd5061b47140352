"""``kuberevive diagnose [--root DIR] [--config FILE] [--kubeconfig FILE] [--json]``: read-only findings.

Exit codes: 0 healthy, 1 warnings, 2 errors, 3 could not run (also: not a kubeadm node).
"""

from __future__ import annotations

import argparse

from kuberevive.cli import render
from kuberevive.cli.commands import summary
from kuberevive.cli.commands.recover import add_node_access_args, add_peer_args, node_access
from kuberevive.cli.env import Environment, is_live_root
from kuberevive.core.diagnose import (
    AREA_ORDER,
    DEFAULT_EXPIRY_WARNING_DAYS,
    PART_OF,
    Options,
    Report,
    Severity,
    diagnose,
)
from kuberevive.core.salvage import candidates, etcd_peers_finding, member_peers
from kuberevive.errors import CollectError, KubereviveError
from kuberevive.io.snapshot import collect
from kuberevive.model.paths import KUBELET_CLIENT_CURRENT
from kuberevive.run.peers import peer_findings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "diagnose",
        allow_abbrev=False,
        help=summary("diagnose"),
        description="Check every kubeadm artifact, file modes (CIS 1.1.x/4.1.x), what survives for a recovery, "
        "and, with a working API, the cluster's copies of the CA. Exit 0 healthy, 1 warnings, 2 errors, "
        "3 could not run.",
    )
    p.add_argument("--root", default="/", metavar="DIR", help="the node's root directory (default /)")
    p.add_argument("--config", metavar="FILE", help="the kubeadm configuration (default: reconstructed)")
    p.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig for the API checks (default: admin.conf)")
    p.add_argument(
        "--expiry-warning-days",
        type=_days,
        default=DEFAULT_EXPIRY_WARNING_DAYS,
        metavar="N",
        help=f"warn about certificates expiring within N days (default {DEFAULT_EXPIRY_WARNING_DAYS})",
    )
    p.add_argument("--cis-strict", action="store_true", help="count CIS deviations that kubeadm itself makes")
    p.add_argument("--offline", action="store_true", help="no network: no API, server probes or image listing")
    p.add_argument("-a", "--all", action="store_true", help="also list the checks that passed")
    p.add_argument("--json", action="store_true", help="machine-readable output (schema in docs/diagnose.md)")
    g = p.add_argument_group("healthy control-plane peers (which of them hold the cluster's trust material)")
    add_peer_args(g)
    add_node_access_args(g)
    p.set_defaults(func=run)


MAX_EXPIRY_WARNING_DAYS = 36500


def _days(text: str) -> int:
    """``--expiry-warning-days``: a whole number of days from 0 to 100 years (D-O999: a usage error, not exit 70)."""
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {text[:20]!r}") from None
    if not 0 <= days <= MAX_EXPIRY_WARNING_DAYS:
        raise argparse.ArgumentTypeError(f"{text[:20]} is not between 0 and {MAX_EXPIRY_WARNING_DAYS} days")
    return days


def run(args: argparse.Namespace, env: Environment) -> int:
    try:
        snap = collect(
            args.root,
            config_file=args.config,
            kubeconfig=args.kubeconfig,
            offline=args.offline,
            live=is_live_root(args.root),
        )
    except CollectError:
        raise
    except KubereviveError as exc:  # any failure is "could not run" (3), never a findings code (1 is warnings)
        raise CollectError(exc.message, exc.hint) from exc
    report = diagnose(snap, Options(expiry_warning_days=args.expiry_warning_days, cis_strict=args.cis_strict))
    access = node_access(args)
    inventory = access.inventory.nodes if access.inventory is not None else ()
    peers = candidates(access.peers, inventory, report.hostname)
    if peers and not args.offline:
        cdir = report.config.config.cluster.certificates_dir if report.config.config else "/etc/kubernetes/pki"
        kubelet_pem = snap.content(KUBELET_CLIENT_CURRENT)
        report.findings += peer_findings(kubelet_pem, peers, access, cdir, snap.now)
    elif not peers and snap.etcd is not None:  # the other members its etcd data lists: the peers to try
        me = report.config.config.node_name if report.config.config else report.hostname
        others = member_peers(snap.etcd.member_peer_urls, me)
        if others:
            report.findings.append(etcd_peers_finding(str(snap.etcd.data_dir), others))
    if args.json:
        env.json(report.as_json())
    else:
        render_human(report, env, show_ok=args.all)
    return report.exit_code


__all__ = ["CollectError", "register", "render_human", "run"]


#: The sections of the human view, most urgent first.
_SECTIONS = (
    (Severity.ERROR, "ERRORS", render.RED),
    (Severity.WARNING, "WARNINGS", render.YELLOW),
    (Severity.INFO, "INFO", render.CYAN),
    (Severity.OK, "PASSED", render.GREEN),
)
_AREA_WIDTH = max(len(a.value) for a in AREA_ORDER) + 1


def render_human(report: Report, env: Environment, show_ok: bool = False) -> None:
    """Errors first, then warnings, info (and passed checks with ``show_ok``), each line fitted to the terminal:
    ``area  subject: message`` and under it ``-> what to do``."""
    colors = env.colors

    def paint(colour: str, text: str) -> str:
        return f"{colour}{text}{render.RESET}" if colors else text

    env.line(paint(render.BOLD, f"kuberevive diagnose: {report.hostname} (root {report.root})"))
    env.line(f"role: {report.role}", "  ", "    ")
    env.line(f"configuration: {report.config.source}", "  ", "    ")
    if report.addresses:
        env.line(f"addresses: {', '.join(report.addresses)}", "  ", "    ")
    hang = " " * (2 + _AREA_WIDTH)
    # per-file findings of one root cause (the lost /etc/kubernetes) are listed only with -a
    covered = [] if show_ok else [f for f in report.findings if f.detail(PART_OF)]
    for severity, title, colour in _SECTIONS:
        items = [f for f in report.findings if f.severity is severity and f not in covered]
        if not items or (severity is Severity.OK and not show_ok):
            continue
        env.out()
        env.out(paint(render.BOLD + colour, f"{title} ({len(items)})"))
        for f in sorted(items, key=lambda f: AREA_ORDER.index(f.area)):
            env.line(f"{f.subject}: {f.message}", f"  {f.area.value:<{_AREA_WIDTH}}", hang)
            if f.hint and severity.rank >= Severity.WARNING.rank:
                env.line(f"-> {f.hint}", hang, hang + "   ")
    if covered:
        env.out()
        env.line(f"{len(covered)} missing files are part of the first error; -a lists them", "", "  ")
    passed = [f for f in report.findings if f.severity is Severity.OK]
    if passed and not show_ok:
        per_area = ", ".join(
            f"{area.value} {n}" for area in AREA_ORDER if (n := sum(1 for f in passed if f.area is area))
        )
        env.out()
        env.line(f"passed: {len(passed)} checks ({per_area}); -a lists them", "", "  ")
    env.out()
    counts = report.counts()
    verdict = ""
    if report.ca_verdict is not None:
        verdict = "; CA can be kept" if report.ca_verdict[0] else "; a new CA is needed"
    errors = f"{counts['error'] - len(covered)} error(s) (+{len(covered)} missing files)" if covered else ""
    summary = (
        f"{report.status}: {errors or str(counts['error']) + ' error(s)'}, {counts['warning']} warning(s), "
        f"{counts['info']} info, "
        f"{counts['ok']} passed{verdict}"
    )
    colour = next(c for sev, _title, c in _SECTIONS if sev is report.worst)
    for part in render.wrap(summary, env.width, "", "  "):
        env.out(paint(render.BOLD + colour, part))
