"""Text that fits the terminal (standard library only: ``textwrap`` and the terminal's size).

A terminal's lines are wrapped at ``COLUMNS`` when set, else at the terminal's width; output piped into a file
or ``grep`` is never wrapped (one line per item). Colour is for a terminal only, and never with ``NO_COLOR``.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping
from typing import TextIO

#: Narrower than this, wrapping helps nobody.
MIN_WIDTH = 20

RED, YELLOW, CYAN, GREEN, BOLD, RESET = "\033[31m", "\033[33m", "\033[36m", "\033[32m", "\033[1m", "\033[0m"


def isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def terminal_width(stream: TextIO, environ: Mapping[str, str]) -> int | None:
    """Columns to wrap ``stream``'s lines at, or None (see the module docstring)."""
    if not isatty(stream):
        return None
    columns = environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) >= MIN_WIDTH:
        return int(columns)
    try:
        return max(MIN_WIDTH, os.get_terminal_size(stream.fileno()).columns)
    except (OSError, ValueError):
        return None


def colours(stream: TextIO, environ: Mapping[str, str]) -> bool:
    return isatty(stream) and "NO_COLOR" not in environ and environ.get("TERM") != "dumb"


def wrap(text: str, width: int | None, indent: str = "", hang: str | None = None) -> list[str]:
    """``text`` as lines of at most ``width`` columns, the first starting with ``indent``, the others with ``hang``
    (default ``indent``); one line when ``width`` is None. A word longer than a line is cut (a long path)."""
    hang = indent if hang is None else hang
    if width is None:
        return [indent + text]
    if width - len(hang) < MIN_WIDTH:
        hang = hang[: max(0, width - MIN_WIDTH)]
    return textwrap.wrap(
        text,
        width,
        initial_indent=indent,
        subsequent_indent=hang,
        break_long_words=True,
        break_on_hyphens=False,
    ) or [indent.rstrip()]
