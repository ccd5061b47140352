"""The process environment a command runs in, injectable for tests (httpie's ``Environment`` idea)."""

from __future__ import annotations

import enum
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from kuberevive import logs
from kuberevive.cli import render

if TYPE_CHECKING:
    from kuberevive.model.document import Document


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 64  # EX_USAGE: apart from every command's own codes (diagnose's 1-3 are findings)
    UNEXPECTED = 70
    INTERRUPTED = 130


def is_live_root(root: str | Path) -> bool:
    """Whether ``--root`` is this machine's own ``/``: the tool then runs on the node itself, so systemctl, crictl
    and ip act on it. The one place that decides it (a host's ``live``); nothing else infers it from a path."""
    return Path(root).resolve() == Path("/")


@dataclass
class Environment:
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    output: str = "json"
    """``-o yaml`` makes :meth:`json` print YAML."""

    @property
    def colors(self) -> bool:
        return render.colours(self.stdout, self.environ)

    @property
    def width(self) -> int | None:
        """Columns of stdout to fit lines into, or None (not a terminal and no ``COLUMNS``)."""
        return render.terminal_width(self.stdout, self.environ)

    def line(self, text: str, indent: str = "", hang: str | None = None) -> None:
        """``text`` on stdout, wrapped to :attr:`width` with a hanging indent (see :func:`render.wrap`)."""
        for part in render.wrap(text, self.width, indent, hang):
            print(part, file=self.stdout)

    def out(self, text: str = "") -> None:
        print(text, file=self.stdout)

    def json(self, document: Document) -> None:
        """The machine-readable document (made by :func:`kuberevive.model.document.stamp`, so it has its ``schema``
        and ``kind``): JSON, or YAML with ``-o yaml``."""
        from kuberevive.model.document import Document  # kept off the path of --help

        if not isinstance(document, Document):  # mypy says so too; this keeps an untyped caller honest
            raise TypeError("Environment.json prints only a stamped Document")
        data = dict(document)
        if self.output == "yaml":
            import yaml  # only when asked for: kept off the path of --help

            yaml.safe_dump(data, self.stdout, sort_keys=False)
            return
        json.dump(data, self.stdout, indent=2, sort_keys=False)
        self.stdout.write("\n")

    def progress(self, text: str) -> None:
        """A progress line: through the run's log (:mod:`kuberevive.logs`) to stderr, so that ``--json`` on stdout
        stays machine-readable, with a timestamp."""
        self._say(logs.progress, text, "")

    def warning(self, text: str) -> None:
        self._say(logs.warning, text, "warning: ")

    def error(self, text: str) -> None:
        """The run's failure in one line; it names the run's log file when there is one."""
        path = logs.log_file()
        self._say(logs.error, f"{text} (log: {path})" if path else text, "kuberevive: error: ")

    def _say(self, log: Callable[[str], None], text: str, prefix: str) -> None:
        if logs.configured():  # the CLI's main() configured it for this run
            log(text)
        else:
            print(f"{prefix}{text}", file=self.stderr, flush=True)
