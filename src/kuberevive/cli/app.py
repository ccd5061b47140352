"""Entry point: parse, dispatch to one command module, turn errors into one line and an exit code.

Each module in ``kuberevive.cli.commands`` exposes ``register(subparsers)``; the parser it adds
sets ``func(args, env) -> int``. Expected failures (``KubereviveError``) print one line on stderr;
anything else prints "unexpected error" with a pointer to ``--traceback``.

Every parser is a :class:`Parser`: no abbreviated options (``--passphrase`` is never taken for
``--passphrase-file``) and a usage error for unknown arguments names the options only, never a value that
might be a secret. ``main`` removes ``KUBEREVIVE_PASSPHRASE`` from ``os.environ`` once the
:class:`Environment` has its copy, so no child process, ours or a library's, inherits it.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import os
import re
import sys
import traceback
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from typing import Any, NoReturn

from kuberevive import __version__
from kuberevive.cli.env import Environment, ExitStatus
from kuberevive.errors import KubereviveError
from kuberevive.io.backupfile import PASSPHRASE_ENV

#: Command modules, in the order ``--help`` lists them.
COMMANDS = ("generate", "diagnose", "certs", "ca", "recover", "backup", "restore_etcd", "lab")


#: What an unknown argument may be shown as: an option name (``--name``, ``-x``), never a value.
_OPTION_NAME = re.compile(r"--[A-Za-z0-9][A-Za-z0-9_-]*|-[A-Za-z0-9]")


def shown_arguments(extras: Sequence[str]) -> str:
    """Unknown command-line arguments as a usage error may show them: option names only.

    ``["--passphrase", "hunter2"]`` and ``["--passphrase=hunter2"]`` both give ``--passphrase (values not
    shown)``; a word that is not an option name (a value, a positional) is never printed.
    """
    names: list[str] = []
    hidden = False
    for word in extras:
        name, eq, _value = word.partition("=")
        if _OPTION_NAME.fullmatch(name):
            if name not in names:
                names.append(name)
            hidden = hidden or bool(eq)
        else:
            hidden = True
    return " ".join(names + (["(values not shown)"] if hidden else []))


#: Words of the command line that follow an unknown option (its value, maybe a secret), for :meth:`Parser.error`.
_UNKNOWN_VALUES: ContextVar[frozenset[str]] = ContextVar("kuberevive_unknown_values", default=frozenset())


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of ``parser`` and of its subparsers."""
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found


def _values_of_unknown_options(words: Sequence[str], known: set[str]) -> frozenset[str]:
    """The words right after an option that no parser knows (``--passphrase SECRET`` -> SECRET)."""
    hidden: set[str] = set()
    for word, following in itertools.pairwise(words):
        if word == "--":
            break
        if word.startswith("-") and "=" not in word and word not in known and not following.startswith("-"):
            hidden.add(following)
    return frozenset(hidden)


class Parser(argparse.ArgumentParser):
    """The parser of every command (``add_subparsers`` creates subparsers of the parent's class).

    Options are never abbreviated, and unknown arguments are reported by :func:`shown_arguments`. A word that
    follows an unknown option is not shown by any other usage error either: ``kuberevive --passphrase SECRET
    backup`` takes SECRET for the command, and says "invalid choice: (value not shown)".
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> Any:
        words = list(sys.argv[1:] if args is None else args)
        token = _UNKNOWN_VALUES.set(_values_of_unknown_options(words, _option_strings(self)))
        try:
            parsed, extras = self.parse_known_args(words, namespace)
            if extras:
                self.error(f"unrecognized arguments: {shown_arguments(extras)}")
        finally:
            _UNKNOWN_VALUES.reset(token)
        return parsed

    def error(self, message: str) -> NoReturn:
        """A usage error: usage and the reason on stderr, exit :attr:`ExitStatus.USAGE` (64, ``EX_USAGE``), a
        code no command uses for anything else (argparse's own 2 is diagnose's "errors found")."""
        for value in _UNKNOWN_VALUES.get():  # argparse puts the offending value after ": " ("invalid choice: 'x'")
            message = message.replace(f": {value!r}", ": (value not shown)")
        self.print_usage(sys.stderr)
        self.exit(int(ExitStatus.USAGE), f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="kuberevive",
        allow_abbrev=False,
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
    os.environ.pop(PASSPHRASE_ENV, None)  # env.environ keeps it for the commands; no child process gets it
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage and the reason (Parser.error: ExitStatus.USAGE)
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
