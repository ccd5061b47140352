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
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

from kuberevive import PASSPHRASE_ENV, __version__, logs
from kuberevive.cli import render
from kuberevive.cli.commands import COMMANDS, EXAMPLES, HIDDEN
from kuberevive.cli.env import Environment, ExitStatus
from kuberevive.errors import KubereviveError

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
        self.examples: tuple[str, ...] = ()

    def format_help(self) -> str:
        text = super().format_help()
        if self.examples:
            text += "\nExamples:\n" + "".join(f"  {line}\n" for line in self.examples)
        return text

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


def _global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """The options every command takes, before or after its name (``kuberevive diagnose --traceback``). Below the
    top level their default is "not given", so a value given before the command is not reset by its subparser."""
    default: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an error", **default)
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        help="progress, warnings and errors on stderr as text (default) or JSON lines",
        **({"default": "text"} if top else default),
    )


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += [sub, *_subparsers(sub)]
    return found


def build_parser(only: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """Every command's parser; with ``only``, just those commands' modules are imported (the others are listed
    by ``--help`` from :data:`COMMANDS` alone), so ``kuberevive --help`` and ``--version`` start fast."""
    parser = Parser(
        prog="kuberevive",
        allow_abbrev=False,
        description="Bring a kubeadm control plane back to life without disrupting running workloads.",
    )
    parser.add_argument("--version", action="version", version=f"kuberevive {__version__}")
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = set(COMMANDS) if only is None else set(only)
    for word, (module_name, summary) in COMMANDS.items():
        if word in wanted:
            importlib.import_module(f"kuberevive.cli.commands.{module_name}").register(sub)
        else:
            sub.add_parser(word, help=summary, add_help=False)  # listed by --help; never parsed (not asked for)
    sub._choices_actions[:] = [a for a in sub._choices_actions if a.dest not in HIDDEN]  # still works
    for p in [parser, *_subparsers(parser)]:
        if p is not parser:
            _global_options(p, top=False)
        _conventions(p)
    return parser


def _conventions(parser: argparse.ArgumentParser) -> None:
    """kubectl's and kubeadm's habits on every parser: ``--rootfs`` beside ``--root``, ``-o json|yaml`` beside
    ``--json``, and the ``Examples:`` block of :data:`EXAMPLES`."""
    options = parser._option_string_actions
    if "--root" in options and "--rootfs" not in options:
        options["--root"].option_strings = [*options["--root"].option_strings, "--rootfs"]
        options["--rootfs"] = options["--root"]
    if "--json" in options and "--output" not in options:
        parser.add_argument(
            "-o", "--output", choices=("json", "yaml"), help="machine-readable output: json (as --json) or yaml"
        )
    if isinstance(parser, Parser):
        parser.examples = EXAMPLES.get(parser.prog, ())


def _command_words(words: Sequence[str]) -> set[str]:
    """The command names on a command line: the modules to import (a value that happens to be one costs only time)."""
    return {w for w in words if w in COMMANDS}


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    env = env or Environment()
    os.environ.pop(PASSPHRASE_ENV, None)  # env.environ keeps it for the commands; no child process gets it
    words = list(sys.argv[1:] if argv is None else argv)
    if "recover" in words:  # its keys are made from now on, while its modules are imported and it plans
        from kuberevive.run import keys

        if keys.start_early(words):
            try:
                return _main(words, env)
            finally:
                keys.drop()  # those the run did not use (a refusal before it started, a usage error)
    return _main(words, env)


def _main(words: list[str], env: Environment) -> int:
    parser = build_parser(_command_words(words))
    try:
        args = parser.parse_args(words)
    except SystemExit as exc:  # argparse already printed usage and the reason (Parser.error: ExitStatus.USAGE)
        return int(exc.code or 0) and int(ExitStatus.USAGE)
    if getattr(args, "output", None):
        args.json, env.output = True, args.output
    width = render.terminal_width(env.stderr, env.environ)
    options = shown_arguments([w for w in words if w.startswith("-")])
    undo = logs.configure(
        env.stderr,
        args.log_format,
        tty=render.isatty(env.stderr),
        fit=None if width is None else lambda text, hang: render.wrap(text, width, "", hang),
        run_log=_run_log(args),
        header=f"kuberevive {__version__} {getattr(args, 'run_log', '')}, pid {os.getpid()}, options: {options}",
        secrets=[env.environ.get(PASSPHRASE_ENV, "")],
    )
    started, stdout = time.monotonic(), env.stdout
    if getattr(args, "run_log", None):
        env.stdout = logs.Tee(stdout)  # type: ignore[assignment]  # what the run prints goes into its log too
    code = int(ExitStatus.UNEXPECTED)
    try:
        code = _run(args, env)
        return code
    finally:
        logs.to_file(f"exit {code} after {time.monotonic() - started:.1f} s")
        env.stdout = stdout
        undo()


def _run_log(args: argparse.Namespace) -> tuple[str, Callable[[], TextIO]] | None:
    """Where this run keeps its log (``/var/lib/kuberevive/log/<command>-<UTC time>-<pid>.log`` under ``--root``),
    for the runs that change the node: a command that sets ``run_log``, without ``--dry-run`` and, when it has
    ``--apply``, with it. Read-only runs write nothing, not even a log."""
    name = getattr(args, "run_log", None)
    if not name or getattr(args, "dry_run", False) or not getattr(args, "apply", True):
        return None
    from kuberevive.io.noderoot import NodeRoot  # kept off the path of --help
    from kuberevive.model.paths import LOG_DIR

    root = NodeRoot(Path(getattr(args, "root", None) or "/"))
    node_path = LOG_DIR / f"{name}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}.log"
    return str(root.prefix / node_path.relative_to("/")), lambda: root.open_log(node_path)


def _run(args: argparse.Namespace, env: Environment) -> int:
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
