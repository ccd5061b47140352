"""The process environment a command runs in, injectable for tests (httpie's ``Environment`` idea)."""

from __future__ import annotations

import enum
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO


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

    @property
    def colors(self) -> bool:
        return self.stdout.isatty() and "NO_COLOR" not in self.environ

    def out(self, text: str = "") -> None:
        print(text, file=self.stdout)

    def json(self, data: Any) -> None:
        json.dump(data, self.stdout, indent=2, sort_keys=False)
        self.stdout.write("\n")

    def progress(self, text: str) -> None:
        """Progress lines go to stderr so that ``--json`` on stdout stays machine-readable."""
        print(text, file=self.stderr, flush=True)

    def error(self, text: str) -> None:
        print(f"kuberevive: error: {text}", file=self.stderr)
