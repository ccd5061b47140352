"""``kuberevive diagnose [--root DIR] [--config FILE] [--kubeconfig FILE] [--json]``: read-only findings.

Exit codes: 0 healthy, 1 warnings, 2 errors, 3 could not run (also: not a kubeadm node).
"""

from __future__ import annotations

import argparse
from itertools import groupby

from kuberevive.cli.env import Environment, is_live_root
from kuberevive.core.diagnose import AREA_ORDER, DEFAULT_EXPIRY_WARNING_DAYS, Options, Report, Severity, diagnose
from kuberevive.errors import CollectError
from kuberevive.io.snapshot import collect

_COLOURS = {
    Severity.OK: "\033[32m",
    Severity.INFO: "\033[36m",
    Severity.WARNING: "\033[33m",
    Severity.ERROR: "\033[31m",
}
_RESET = "\033[0m"
_BOLD = "\033[1m"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "diagnose",
        allow_abbrev=False,
        help="report what is wrong with a kubeadm node and what survives for a recovery (read-only)",
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
    report = diagnose(snap, Options(expiry_warning_days=args.expiry_warning_days, cis_strict=args.cis_strict))
    if args.json:
        env.json(report.as_json())
    else:
        render_human(report, env, show_ok=args.all)
    return report.exit_code


__all__ = ["CollectError", "register", "render_human", "run"]


def render_human(report: Report, env: Environment, show_ok: bool = False) -> None:
    colors = env.colors

    def paint(sev: Severity, text: str) -> str:
        return f"{_COLOURS[sev]}{text}{_RESET}" if colors else text

    def bold(text: str) -> str:
        return f"{_BOLD}{text}{_RESET}" if colors else text

    env.out(bold(f"kuberevive diagnose: {report.hostname} (root {report.root})"))
    env.out(f"  role: {report.role}")
    env.out(f"  configuration: {report.config.source}")
    if report.addresses:
        env.out(f"  addresses: {', '.join(report.addresses)}")
    findings = sorted(report.findings, key=lambda f: AREA_ORDER.index(f.area))
    for area, group in groupby(findings, key=lambda f: f.area):
        items = list(group)
        shown = [f for f in items if show_ok or f.severity is not Severity.OK]
        passed = len(items) - len([f for f in items if f.severity is not Severity.OK])
        env.out()
        env.out(bold(f"{area.value.upper()}") + (f"  ({passed} passed)" if passed and not show_ok else ""))
        width = max((len(f.subject) for f in shown), default=0)
        width = min(width, 60)
        for f in shown:
            env.out(f"  {paint(f.severity, f'{f.severity.value:<7}')} {f.subject:<{width}}  {f.message}")
            if f.hint and f.severity.rank >= Severity.WARNING.rank:
                env.out(f"  {'':<7} {'':<{width}}  -> {f.hint}")
    env.out()
    counts = report.counts()
    verdict = ""
    if report.ca_verdict is not None:
        verdict = "; CA can be kept" if report.ca_verdict[0] else "; a new CA is needed"
    summary = (
        f"{report.status}: {counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info, "
        f"{counts['ok']} passed{verdict}"
    )
    env.out(bold(paint(report.worst, summary)))
