"""Odd files where a node's file belongs (issue 18, F7/F8): a FIFO, and a link to a real /dev/zero in the root."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def make_fifo(root: Path, path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def make_zero_link(root: Path, path: Path) -> None:
    """A link to /dev/zero, with a real /dev/zero (a character device: needs root) inside the root, where the
    link is resolved; outside the root it would simply be missing."""
    (root / "dev").mkdir(exist_ok=True)
    if not (root / "dev/zero").exists():
        os.mknod(root / "dev/zero", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    path.unlink(missing_ok=True)
    path.symlink_to("/dev/zero")
