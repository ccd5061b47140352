"""Entry point: parse, dispatch to one command module, turn errors into one line and an exit code.

Each module in ``kuberevive.cli.commands`` exposes ``register(subparsers)``; the parser it adds
sets ``func(args, env) -> int``. Expected failures (``KubereviveError``) print one line on stderr;
anything else prints "unexpected error" with a pointer to ``--traceback``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from kuberevive import __version__
from kuberevive.cli.env import Environment, ExitStatus
from kuberevive.errors import KubereviveError

#: Command modules, in the order ``--help`` lists them.
COMMANDS = ("generate", "diagnose", "recover", "backup", "restore_etcd", "lab")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kuberevive",
        description="Bring a kubeadm control plane back to life without disrupting running workloads.",
    )
    parser.add_argument("--version", action="version", version=f"kuberevive {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"kuberevive.cli.commands.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    env = env or Environment()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage and the reason
        return int(exc.code or 0) and int(ExitStatus.USAGE)
    try:
        return int(args.func(args, env))
    except KubereviveError as exc:
        if args.traceback:
            traceback.print_exc(file=env.stderr)
        env.error(str(exc))
        return int(getattr(exc, "exit_status", ExitStatus.ERROR))
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return int(ExitStatus.OK)
    except KeyboardInterrupt:
        env.error("interrupted.")
        return int(ExitStatus.INTERRUPTED)
    except Exception as exc:
        if args.traceback:
            traceback.print_exc(file=env.stderr)
        env.error(f"unexpected error: {type(exc).__name__}: {exc}. Run again with --traceback and report it.")
        return int(ExitStatus.UNEXPECTED)


if __name__ == "__main__":
    sys.exit(main())
