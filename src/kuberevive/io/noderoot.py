"""The only code that writes a node's files. Every node path goes through a root prefix.

Guarantees:

* atomic writes (temporary file in the same directory, ``fsync``, ``rename``), created with the
  final mode from the start, so a key is never readable by others, not even for a moment;
* parent directories created with kubeadm's modes when missing (existing ones are not chmod-ed);
* a file that already exists with other content is never overwritten unless ``force``; then it is
  first moved aside, with its mode, to ``/var/lib/kuberevive/backup/<timestamp>/<original path>``
  (outside ``/etc/kubernetes/manifests``, where the kubelet would run any file as a static pod);
* all or nothing: conflicts are checked before the first write, and a failure part-way restores
  every file that was moved aside and removes every file that was created.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath

from kuberevive.errors import ExistingFileError, NodeFsError
from kuberevive.model.artifacts import Artifact

BACKUP_DIR = PurePosixPath("/var/lib/kuberevive/backup")

#: Modes kubeadm gives to directories it creates (only applied when the directory is missing).
DIR_MODES: dict[PurePosixPath, int] = {
    PurePosixPath("/etc/kubernetes"): 0o755,
    PurePosixPath("/etc/kubernetes/pki"): 0o755,
    PurePosixPath("/etc/kubernetes/pki/etcd"): 0o755,
    PurePosixPath("/etc/kubernetes/manifests"): 0o700,
    PurePosixPath("/var/lib/etcd"): 0o700,
    PurePosixPath("/var/lib/kubelet"): 0o700,
    PurePosixPath("/var/lib/kuberevive"): 0o700,
}
DEFAULT_DIR_MODE = 0o755


class WriteAction(StrEnum):
    CREATE = "create"
    REPLACE = "replace"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class WriteResult:
    artifact: Artifact
    action: WriteAction
    moved_aside_to: PurePosixPath | None = None


@dataclass
class NodeRoot:
    """A node's filesystem seen through ``prefix`` (``/`` on a real node, a temp dir in tests)."""

    prefix: Path = field(default_factory=lambda: Path("/"))

    def host_path(self, node_path: PurePosixPath | str) -> Path:
        p = PurePosixPath(node_path)
        if not p.is_absolute():
            raise ValueError(f"node paths are absolute: {p}")
        return self.prefix.joinpath(*p.parts[1:])

    # -- reading -------------------------------------------------------------------------

    def exists(self, node_path: PurePosixPath | str) -> bool:
        return self.host_path(node_path).exists()

    def is_placeholder_dir(self, node_path: PurePosixPath | str) -> bool:
        """An empty directory (not a symlink) where a file belongs: what the container runtime leaves when a
        static pod's container (re)starts while its hostPath file is gone (e.g. controller-manager.conf)."""
        host = self.host_path(node_path)
        return host.is_dir() and not host.is_symlink() and not any(host.iterdir())

    def read(self, node_path: PurePosixPath | str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        try:
            return self.host_path(node_path).read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise NodeFsError(f"{node_path} is a directory, expected a file", "move it away and run again") from None
        except NotADirectoryError:
            raise NodeFsError(
                f"a parent of {node_path} is a file, expected a directory", "move that file away and run again"
            ) from None
        except PermissionError:
            raise NodeFsError(f"cannot read {node_path}: permission denied", "run kuberevive as root") from None

    def read_many(self, node_paths: Iterable[PurePosixPath]) -> dict[PurePosixPath, bytes]:
        out: dict[PurePosixPath, bytes] = {}
        for p in node_paths:
            data = self.read(p)
            if data is not None:
                out[p] = data
        return out

    def read_tree(self, node_dir: PurePosixPath | str) -> dict[PurePosixPath, bytes]:
        """Every regular file below ``node_dir`` (not following symlinked directories)."""
        base = self.host_path(node_dir)
        out: dict[PurePosixPath, bytes] = {}
        if not base.is_dir():
            return out
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                host = Path(dirpath) / name
                if host.is_file():
                    rel = host.relative_to(self.prefix)
                    try:
                        out[PurePosixPath("/", *rel.parts)] = host.read_bytes()
                    except (FileNotFoundError, IsADirectoryError):  # replaced while walking: not a file now
                        continue
        return out

    # -- planning ------------------------------------------------------------------------

    def plan(self, artifacts: Iterable[Artifact], force: bool = False) -> list[WriteResult]:
        """What :meth:`write_all` would do, without doing it. Raises on conflicts unless ``force``."""
        results: list[WriteResult] = []
        conflicts: list[str] = []
        for a in artifacts:
            current = self.read(a.path)
            if current is None:
                results.append(WriteResult(a, WriteAction.CREATE))
            elif current == a.content and self._mode(a.path) == a.mode:
                results.append(WriteResult(a, WriteAction.UNCHANGED))
            else:
                results.append(WriteResult(a, WriteAction.REPLACE))
                conflicts.append(str(a.path))
        if conflicts and not force:
            shown = ", ".join(conflicts[:3]) + (f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else "")
            raise ExistingFileError(
                f"{len(conflicts)} file(s) already exist with other content: {shown}; nothing was written",
                "pass --force to replace them (the old files are moved aside with a timestamp)",
            )
        return results

    def _mode(self, node_path: PurePosixPath) -> int:
        return stat.S_IMODE(self.host_path(node_path).stat().st_mode)

    # -- writing -------------------------------------------------------------------------

    def write_all(
        self, artifacts: Iterable[Artifact], force: bool = False, now: datetime | None = None
    ) -> list[WriteResult]:
        """Write every artifact, all or nothing (see the module docstring)."""
        planned = self.plan(list(artifacts), force=force)
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
        backup_root = BACKUP_DIR / stamp
        done: list[WriteResult] = []
        created_dirs: list[Path] = []
        try:
            for r in planned:
                if r.action is WriteAction.UNCHANGED:
                    done.append(r)
                    continue
                aside = None
                if r.action is WriteAction.REPLACE:
                    aside = backup_root / r.artifact.path.relative_to("/")
                    self._move_aside(r.artifact.path, aside, created_dirs)
                    # recorded before the write, so a failing write still restores the original
                    done.append(WriteResult(r.artifact, r.action, aside))
                    self.atomic_write(r.artifact.path, r.artifact.content, r.artifact.mode, created_dirs)
                else:
                    self.atomic_write(r.artifact.path, r.artifact.content, r.artifact.mode, created_dirs)
                    done.append(WriteResult(r.artifact, r.action))
        except OSError as exc:
            self._rollback(done, created_dirs)
            raise NodeFsError(
                f"cannot write {exc.filename or 'a file'}: {exc.strerror or exc}; every change was rolled back",
                "check free space and permissions, then run again",
            ) from exc
        return done

    def atomic_write(
        self, node_path: PurePosixPath, content: bytes, mode: int, created_dirs: list[Path] | None = None
    ) -> None:
        target = self.host_path(node_path)
        self._ensure_parent(node_path, created_dirs if created_dirs is not None else [])
        tmp = target.with_name(f".{target.name}.kuberevive-tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fchmod(fh.fileno(), mode)  # the umask may have narrowed the mode given to open()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        self._fsync_dir(target.parent)

    def move_aside(self, node_path: PurePosixPath, now: datetime | None = None) -> PurePosixPath | None:
        """Move one file (or symlink) to the timestamped backup directory; returns its new node path."""
        if not os.path.lexists(self.host_path(node_path)):
            return None
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = BACKUP_DIR / stamp / node_path.relative_to("/")
        self._move_aside(node_path, aside, [])
        return aside

    def _move_aside(self, node_path: PurePosixPath, aside: PurePosixPath, created_dirs: list[Path]) -> None:
        self._ensure_parent(aside, created_dirs)
        _move(self.host_path(node_path), self.host_path(aside))

    def _ensure_parent(self, node_path: PurePosixPath, created_dirs: list[Path]) -> None:
        if not self.prefix.is_dir():
            raise FileNotFoundError(2, "the root directory does not exist", str(self.prefix))
        missing: list[PurePosixPath] = []
        parent = node_path.parent
        while parent != parent.parent and not self.host_path(parent).exists():
            missing.append(parent)
            parent = parent.parent
        for d in reversed(missing):
            mode = DIR_MODES.get(d, DEFAULT_DIR_MODE)
            host = self.host_path(d)
            host.mkdir(mode=mode)
            os.chmod(host, mode)
            created_dirs.append(host)

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rollback(self, done: list[WriteResult], created_dirs: list[Path]) -> None:
        # best effort: a failure here must not hide the error that caused the rollback (a file that cannot be
        # put back stays in the backup directory)
        for r in reversed(done):
            target = self.host_path(r.artifact.path)
            if r.action is WriteAction.CREATE:
                with contextlib.suppress(OSError):
                    target.unlink()
            elif r.action is WriteAction.REPLACE and r.moved_aside_to is not None:
                with contextlib.suppress(OSError):
                    _move(self.host_path(r.moved_aside_to), target)
        for d in reversed(created_dirs):
            with contextlib.suppress(OSError):
                d.rmdir()


def _move(src: Path, dst: Path) -> None:
    """``rename``, or across file systems (/etc, /var, /var/lib/kubelet are often separate mounts):
    copy with mode and times (a symlink is re-created as a symlink), fsync, then unlink the source."""
    try:
        os.replace(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():  # e.g. an empty directory the container runtime left where a file belongs
        shutil.copytree(src, dst, symlinks=True)
        shutil.rmtree(src)
        return
    else:
        shutil.copy2(src, dst, follow_symlinks=False)
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    src.unlink()
