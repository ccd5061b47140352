"""A node the tool acts on: the one it runs on, or another one over SSH. Both offer the same operations with
the same guarantees (those :class:`~kuberevive.io.noderoot.NodeRoot` gives today):

* node paths are absolute POSIX paths on *that* node (under ``--root`` for the local host);
* :meth:`Host.read` opens regular files only, with a size limit, and never blocks on a FIFO;
* :meth:`Host.write` is atomic (temporary file in the same directory, fsync, rename), created with its final
  mode from the start; missing parent directories are made with kubeadm's modes; an existing file with
  other content is first moved aside (:meth:`Host.move_aside`) and its new path returned;
* :meth:`Host.move_aside` moves a file or symlink, with its mode, to
  ``/var/lib/kuberevive/backup/<UTC timestamp>/<original path>`` on the same node, also when that is on
  another file system (copy, fsync, then remove the original);
* :meth:`Host.replace_symlink` swaps a symlink atomically (a new link renamed over the old one);
* commands run without a shell, with a timeout, and a non-zero exit is a result, not an error.

Whether a host is the real, running node (so ``systemctl``, ``crictl`` and ``ip`` act on it) is
:attr:`Host.live`: a property of the host object, never inferred from a path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Protocol

from kuberevive.io.transport import DEFAULT_TIMEOUT, Result


@dataclass(frozen=True)
class Container:
    """One CRI container as ``crictl ps`` shows it."""

    id: str
    name: str
    state: str
    created_at: float  # UNIX seconds
    pod_name: str = ""
    pod_namespace: str = ""


class Host(Protocol):
    """One node. ``name`` is its node name, used in messages."""

    name: str

    @property
    def live(self) -> bool:
        """True when this is a running node: units, containers and addresses are real and may be acted on."""
        ...

    def read(self, node_path: PurePosixPath) -> bytes | None:
        """The bytes of a regular file, ``None`` when nothing is there; a FIFO, a device or a file over the
        size limit is a :class:`~kuberevive.errors.NodeFsError`."""
        ...

    def exists(self, node_path: PurePosixPath) -> bool: ...

    def readlink(self, node_path: PurePosixPath) -> str | None:
        """The target of a symlink, ``None`` when ``node_path`` is not a symlink."""
        ...

    def write(self, node_path: PurePosixPath, content: bytes, mode: int) -> PurePosixPath | None:
        """Write one file atomically with its final mode; an existing file with other content is moved aside
        first and its new path returned (``None`` when nothing was moved). Same content: nothing is done."""
        ...

    def move_aside(self, node_path: PurePosixPath, now: datetime | None = None) -> PurePosixPath | None:
        """Move a file or symlink to the timestamped backup directory; its new path, or ``None`` if absent."""
        ...

    def replace_symlink(self, node_path: PurePosixPath, target: str) -> None: ...

    def run(self, argv: Sequence[str], input: bytes | None = None, timeout: float = DEFAULT_TIMEOUT) -> Result:
        """Run ``argv`` on the node (no shell); a non-zero exit is a :class:`Result`, not an error."""
        ...

    def restart_unit(self, unit: str) -> None:
        """``systemctl restart unit``; a failure is a :class:`~kuberevive.errors.KubereviveError` naming it."""
        ...

    def containers(self, name: str | None = None) -> list[Container]:
        """The running CRI containers (only those called exactly ``name`` when given)."""
        ...
