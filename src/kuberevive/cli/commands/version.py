"""``kuberevive version [-o json|yaml]``: this program's version (``--version`` prints the same line)."""

from __future__ import annotations

import argparse
import platform
import sys

from kuberevive import __version__
from kuberevive.cli.commands import summary
from kuberevive.cli.env import Environment, ExitStatus
from kuberevive.model.document import VERSION, stamp


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "version",
        allow_abbrev=False,
        help=summary("version"),
        description="Print kuberevive's version, the Python it runs on and whether it is the single executable.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, env: Environment) -> int:
    body = {
        "version": __version__,
        "python": platform.python_version(),
        "platform": f"{sys.platform}/{platform.machine()}",
        "single_executable": bool(getattr(sys, "frozen", False)),
    }
    if args.json:
        env.json(stamp(VERSION, body))
    else:
        env.out(f"kuberevive {__version__} (python {body['python']}, {body['platform']})")
    return int(ExitStatus.OK)
