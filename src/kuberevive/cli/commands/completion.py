"""``kuberevive completion bash|zsh``: a shell completion script generated from the parsers (no network)."""

from __future__ import annotations

import argparse

from kuberevive.cli.commands import summary
from kuberevive.cli.env import Environment, ExitStatus


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "completion",
        allow_abbrev=False,
        help=summary("completion"),
        description="Print a completion script for bash or zsh: every command, subcommand and option, with "
        "directory and file completion where a DIR or FILE is asked for. It is static (no Python runs at TAB, no "
        "network); generate it again after an upgrade.",
    )
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete in")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, env: Environment) -> int:
    from kuberevive.cli.app import build_parser  # every command's parser (imports them all: fine, not at --help)
    from kuberevive.cli.completion import SHELLS

    env.stdout.write(SHELLS[args.shell](build_parser()))
    return int(ExitStatus.OK)
