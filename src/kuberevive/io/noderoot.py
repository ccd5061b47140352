"""The only code that reads and writes a node's files. Every node path goes through a root prefix.

Node paths are resolved the way a ``chroot`` into the root would resolve them (:meth:`NodeRoot.host_path`):
normalised lexically (``/..`` is ``/``), every symlink inside the root followed *relative to the root* (an
absolute target such as kubeadm's ``kubelet-client-current.pem -> /var/lib/kubelet/pki/...`` is looked up under
the root, not on the machine running the tool), so no read or write can leave the root, whatever the node's
files or configuration say.

Reads (:meth:`NodeRoot.read`) open regular files only, without blocking (a FIFO or a device is an error,
never a hang) and with a size limit.

Write guarantees:

* atomic writes (temporary file in the same directory, ``fsync``, ``rename``), created with the
  final mode from the start, so a key is never readable by others, not even for a moment;
* parent directories created with kubeadm's modes when missing (existing ones are not chmod-ed);
* a file that already exists with other content is never overwritten unless ``force``; then it is
  first moved aside, with its mode, to ``/var/lib/kuberevive/backup/<timestamp>/<original path>``
  (outside ``/etc/kubernetes/manifests``, where the kubelet would run any file as a static pod);
* all or nothing: conflicts are checked before the first write, and a failure part-way restores
  every file that was moved aside and removes every file that was created.

One lock per node (:meth:`NodeRoot.lock`, ``flock`` on :data:`paths.NODE_LOCK`) keeps every command that writes a set
of files (``generate``, ``recover``) apart; the kernel drops it when the process dies. Under it, temporary files
that only this tool names (``.<name>.kuberevive-tmp-<pid>``) are stale and :meth:`NodeRoot.remove_stale_tmp`
removes them.

Test hooks (:meth:`NodeRoot.with_test_hooks`, from the environment): ``KUBEREVIVE_TEST_FSYNC_DELAY=<seconds>``
slows every ``fsync`` (a busy disk); ``KUBEREVIVE_TEST_KILL_AFTER_WRITE=<n>`` makes the process SIGKILL itself at
the n-th write event (each atomic write has two: its temporary file written, then renamed into place).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import signal
import stat
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import TextIO

from kuberevive import logs
from kuberevive.errors import ExistingFileError, KubereviveError, NodeFsError
from kuberevive.model import paths
from kuberevive.model.artifacts import Artifact

#: Temporary files of :meth:`NodeRoot.atomic_write` and :meth:`NodeRoot.replace_symlink` (and nothing else).
TMP_NAME = re.compile(r"\..+\.kuberevive-tmp-[0-9]+")

#: Modes kubeadm gives to directories it creates (only applied when the directory is missing).
DIR_MODES: dict[PurePosixPath, int] = {
    paths.KUBERNETES_DIR: 0o755,
    paths.PKI_DIR: 0o755,
    paths.ETCD_PKI_DIR: 0o755,
    paths.MANIFESTS_DIR: 0o700,
    paths.KUBERNETES_TMP_DIR: 0o700,
    paths.ETCD_DATA_DIR: 0o700,
    paths.KUBELET_DIR: 0o700,
    paths.STATE_DIR: 0o700,
    paths.GENERATE_PENDING.parent: 0o700,
    paths.RECOVER_DIR: 0o700,
}
DEFAULT_DIR_MODE = 0o755

#: Largest file :meth:`NodeRoot.read` returns: every kubeadm file is far smaller (etcd's database is never read
#: whole); a bigger file, or an endless one such as ``/dev/zero``, is an error instead of exhausted memory.
MAX_READ_BYTES = 16 << 20
#: Symlinks followed while resolving one path before it counts as a loop (Linux's limit).
MAX_SYMLINKS = 40


def backup_stamp(now: datetime | None = None) -> str:
    """The name of one run's directory under :data:`paths.BACKUP_DIR`: the UTC time to the microsecond."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")


def lock_record(pid: int, command: str) -> bytes:
    """What the holder of the node's lock writes into it: its pid and command."""
    return f"{pid} {command}\n".encode()


def lock_held(
    error: type[KubereviveError], record: bytes, command: str, lock: PurePosixPath = paths.NODE_LOCK
) -> KubereviveError:
    """The error for a node lock held by another run, naming it from its :func:`lock_record`."""
    holder = record.decode(errors="replace").split()
    pid, other = (holder[0] if holder else ""), (holder[1] if len(holder) > 1 else command)
    return error(
        f"another 'kuberevive {other}' is running on this node (lock {lock} held" + (f" by pid {pid})" if pid else ")"),
        "wait for it to finish; a killed run releases the lock by itself",
    )


def missing_parents_modes(node_path: PurePosixPath | str) -> list[tuple[PurePosixPath, int]]:
    """Every directory above ``node_path``, outermost first, with the mode kubeadm gives it when it is made."""
    chain: list[PurePosixPath] = []
    parent = normalise(node_path).parent
    while parent != parent.parent:
        chain.append(parent)
        parent = parent.parent
    return [(d, DIR_MODES.get(d, DEFAULT_DIR_MODE)) for d in reversed(chain)]


def normalise(node_path: PurePosixPath | str) -> PurePosixPath:
    """A node path normalised lexically: absolute, no ``.`` or empty parts, ``..`` clamped at ``/`` (as at a
    chroot's root). Raises ``ValueError`` for a relative path or a NUL byte."""
    text = str(node_path)
    if not text.startswith("/"):
        raise ValueError(f"node paths are absolute: {text}")
    if "\0" in text:
        raise ValueError(f"a node path holds a NUL byte: {text!r}")
    parts: list[str] = []
    for comp in text.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if parts:
                parts.pop()
            continue
        parts.append(comp)
    return PurePosixPath("/", *parts)


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
    fsync_delay: float = 0.0
    """Test hook: seconds to wait before every ``fsync``."""
    kill_after_write: int | None = None
    """Test hook: SIGKILL this process at that write event (1-based)."""
    _write_events: int = field(default=0, repr=False, compare=False)

    @classmethod
    def with_test_hooks(cls, prefix: Path, environ: Mapping[str, str]) -> NodeRoot:
        """A root with the test hooks ``environ`` sets (see the module docstring)."""
        delay = environ.get("KUBEREVIVE_TEST_FSYNC_DELAY", "")
        kill = environ.get("KUBEREVIVE_TEST_KILL_AFTER_WRITE", "")
        return cls(prefix, fsync_delay=float(delay) if delay else 0.0, kill_after_write=int(kill) if kill else None)

    def host_path(self, node_path: PurePosixPath | str, follow: bool = True) -> Path:
        """Where ``node_path`` is on this machine, resolved inside the root (see the module docstring).

        Every symlink on the way is followed relative to the root; the last one only with ``follow`` (a write, a
        move or an ``lstat`` acts on the link itself). The result never leaves the root. Raises
        :class:`NodeFsError` on a symlink loop.
        """
        pending = deque(normalise(node_path).parts[1:])
        done: list[str] = []
        links = 0
        missing = False  # below a missing directory nothing can be a symlink: the rest is lexical
        while pending:
            comp = pending.popleft()
            if comp == "..":
                if done:
                    done.pop()
                continue
            if comp in ("", "."):
                continue
            if missing or (not pending and not follow):
                done.append(comp)
                continue
            host = self.prefix.joinpath(*done, comp)
            try:
                st = os.lstat(host)
            except (FileNotFoundError, NotADirectoryError):
                missing = True
                done.append(comp)
                continue
            except OSError as exc:
                raise NodeFsError(
                    f"cannot look up {node_path}: {exc.strerror}", "check the node's files and permissions"
                ) from exc
            if not stat.S_ISLNK(st.st_mode):
                done.append(comp)
                continue
            links += 1
            if links > MAX_SYMLINKS:
                raise NodeFsError(
                    f"cannot resolve {node_path}: too many levels of symbolic links (a loop)",
                    "fix or move the looping symlink aside",
                )
            target = os.readlink(host)
            if target.startswith("/"):
                done = []
            pending.extendleft(reversed(target.split("/")))
        return self.prefix.joinpath(*done)

    def node_path_of(self, host: Path) -> PurePosixPath:
        """The node path of a host path below the root (as :meth:`host_path` and :meth:`walk` give them)."""
        return PurePosixPath("/", *host.relative_to(self.prefix).parts)

    # -- reading -------------------------------------------------------------------------

    def exists(self, node_path: PurePosixPath | str) -> bool:
        return self.host_path(node_path).exists()

    def lstat(self, node_path: PurePosixPath | str) -> os.stat_result | None:
        """The ``lstat`` of ``node_path`` itself (a symlink is not followed), or None when it does not exist."""
        try:
            return os.lstat(self.host_path(node_path, follow=False))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def stat(self, node_path: PurePosixPath | str) -> os.stat_result | None:
        """The ``stat`` of what ``node_path`` resolves to inside the root, or None when it does not exist."""
        try:
            return os.lstat(self.host_path(node_path))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def readlink(self, node_path: PurePosixPath | str) -> str | None:
        """The target of the symlink at ``node_path`` as written, or None when it is not a symlink."""
        try:
            return os.readlink(self.host_path(node_path, follow=False))
        except (FileNotFoundError, NotADirectoryError, OSError):
            return None

    def is_placeholder_dir(self, node_path: PurePosixPath | str) -> bool:
        """An empty directory (not a symlink) where a file belongs: what the container runtime leaves when a
        static pod's container (re)starts while its hostPath file is gone (e.g. controller-manager.conf)."""
        host = self.host_path(node_path, follow=False)
        return host.is_dir() and not host.is_symlink() and not any(host.iterdir())

    def read(self, node_path: PurePosixPath | str, limit: int = MAX_READ_BYTES) -> bytes | None:
        """The bytes of the regular file at ``node_path`` (resolved inside the root), or None when it does not
        exist. A directory, FIFO, socket or device, or a file larger than ``limit``, is a :class:`NodeFsError`:
        the file is opened without blocking and never read past ``limit``."""
        try:
            host = self.host_path(node_path)
            fd = os.open(host, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
        except FileNotFoundError:
            return None
        except IsADirectoryError as exc:
            raise NodeFsError(f"{node_path} is a directory, expected a file", "move it away and run again") from exc
        except NotADirectoryError as exc:
            raise NodeFsError(
                f"a parent of {node_path} is a file, expected a directory", "move that file away and run again"
            ) from exc
        except PermissionError as exc:
            raise NodeFsError(f"cannot read {node_path}: permission denied", "run kuberevive as root") from exc
        except OSError as exc:
            raise NodeFsError(f"cannot read {node_path}: {exc.strerror}", "check the file, then run again") from exc
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise NodeFsError(f"{node_path} is a directory, expected a file", "move it away and run again")
            if not stat.S_ISREG(st.st_mode):
                raise NodeFsError(
                    f"{node_path} is not a regular file (a {file_kind(st.st_mode)})", "move it away and run again"
                )
            if st.st_size > limit:
                raise NodeFsError(
                    f"{node_path} is {st.st_size} bytes, larger than any file kuberevive reads ({limit})",
                    "move it away and run again",
                )
            chunks: list[bytes] = []
            size = 0
            while size <= limit:
                chunk = os.read(fd, min(1 << 20, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > limit:
                raise NodeFsError(f"{node_path} grew past {limit} bytes while read", "move it away and run again")
            return b"".join(chunks)
        except OSError as exc:
            raise NodeFsError(f"cannot read {node_path}: {exc.strerror}", "check the file, then run again") from exc
        finally:
            os.close(fd)

    def read_existing(self, node_path: PurePosixPath | str) -> bytes:
        """:meth:`read` for a file that must exist: a missing one is ``FileNotFoundError`` (a reader callback
        for code that takes host-style readers, such as a kubeconfig's ``certificate-authority`` file)."""
        data = self.read(node_path)
        if data is None:
            raise FileNotFoundError(2, "No such file or directory", str(node_path))
        return data

    def read_many(self, node_paths: Iterable[PurePosixPath]) -> dict[PurePosixPath, bytes]:
        out: dict[PurePosixPath, bytes] = {}
        for p in node_paths:
            data = self.read(p)
            if data is not None:
                out[p] = data
        return out

    def walk(self, node_dir: PurePosixPath | str, limit: int | None = None) -> Iterator[PurePosixPath]:
        """Node paths of the entries below ``node_dir`` (directories first, each level sorted), not descending
        into symlinked directories; at most ``limit`` of them."""
        node_dir = normalise(node_dir)
        base = self.host_path(node_dir)
        if not base.is_dir():
            return
        count = 0
        for dirpath, dirs, names in os.walk(base):
            dirs.sort()
            rel = Path(dirpath).relative_to(base)
            for name in sorted(dirs) + sorted(names):
                count += 1
                if limit is not None and count > limit:
                    return
                yield node_dir.joinpath(*rel.parts, name)

    def read_tree(self, node_dir: PurePosixPath | str) -> dict[PurePosixPath, bytes]:
        """Every regular file below ``node_dir`` (a symlink to a file inside the root counts as that file;
        symlinked directories, FIFOs, devices and files that vanish while walking are skipped)."""
        out: dict[PurePosixPath, bytes] = {}
        for p in self.walk(node_dir):
            st = self.stat(p)
            if st is None or not stat.S_ISREG(st.st_mode) or st.st_size > MAX_READ_BYTES:
                continue  # not a file (or not one kubeadm writes: far too big)
            try:
                data = self.read(p)
            except NodeFsError:
                if self.lstat(p) is None:  # replaced while walking: not a file now
                    continue
                raise
            if data is not None:
                out[p] = data
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
        backup_root = paths.BACKUP_DIR / backup_stamp(now)
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
        except NodeFsError:
            self._rollback(done, created_dirs)
            raise
        except OSError as exc:
            self._rollback(done, created_dirs)
            raise NodeFsError(
                f"cannot write {exc.filename or 'a file'}: {exc.strerror or exc}; every change was rolled back",
                "check free space and permissions, then run again",
            ) from exc
        return done

    def atomic_write(
        self,
        node_path: PurePosixPath,
        content: bytes,
        mode: int,
        created_dirs: list[Path] | None = None,
        *,
        replace: bool = True,
    ) -> None:
        """Write one file atomically with its final mode (a symlink at ``node_path`` is replaced, not followed).

        With ``replace=False`` nothing that exists at ``node_path`` is ever replaced, not even one created
        concurrently: the file is put in place with ``link`` (which fails if the name exists) and
        :class:`ExistingFileError` is raised."""
        logs.node_changes()
        self._ensure_parent(node_path, created_dirs if created_dirs is not None else [])
        target = self.host_path(node_path, follow=False)
        tmp = target.with_name(f".{target.name}.kuberevive-tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fchmod(fh.fileno(), mode)  # the umask may have narrowed the mode given to open()
                self._fsync(fh.fileno())
            self._write_event()
            if replace:
                os.replace(tmp, target)
            else:
                try:
                    os.link(tmp, target, follow_symlinks=False)
                except FileExistsError as exc:
                    raise ExistingFileError(
                        f"{node_path} already exists; nothing was written", "choose another name, or move it away"
                    ) from exc
                tmp.unlink()
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        self._fsync_dir(target.parent)
        self._write_event()

    def _write_event(self) -> None:
        self._write_events += 1
        if self.kill_after_write is not None and self._write_events == self.kill_after_write:
            os.kill(os.getpid(), signal.SIGKILL)

    def _fsync(self, fd: int) -> None:
        if self.fsync_delay:
            time.sleep(self.fsync_delay)
        os.fsync(fd)

    def replace_symlink(self, node_path: PurePosixPath, target: str) -> None:
        """Point the symlink at ``node_path`` to ``target`` atomically (a new link renamed over the old one).
        ``target`` is written as given (on the node an absolute target means the node's own path)."""
        logs.node_changes()
        self._ensure_parent(node_path, [])
        link = self.host_path(node_path, follow=False)
        tmp = link.with_name(f".{link.name}.kuberevive-tmp-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(target, tmp)
        try:
            os.replace(tmp, link)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        self._fsync_dir(link.parent)

    def open_log(self, node_path: PurePosixPath) -> TextIO:
        """A new file to append a run's log to (0600, line-buffered); never an existing file or a symlink."""
        self.ensure_dir(node_path.parent)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.host_path(node_path, follow=False), flags, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def ensure_dir(self, node_dir: PurePosixPath) -> Path:
        """Create ``node_dir`` and its missing parents (kubeadm's modes); returns its host path."""
        node_dir = normalise(node_dir)
        self._ensure_parent(node_dir / "x", [])
        return self.host_path(node_dir)

    def move_aside(self, node_path: PurePosixPath, now: datetime | None = None) -> PurePosixPath | None:
        """Move one file (or symlink) to the timestamped backup directory; returns its new node path."""
        if not os.path.lexists(self.host_path(node_path, follow=False)):
            return None
        aside = paths.BACKUP_DIR / backup_stamp(now) / normalise(node_path).relative_to("/")
        self._move_aside(node_path, aside, [])
        return aside

    def rename(self, node_path: PurePosixPath, new_path: PurePosixPath) -> None:
        """Give a file, symlink or directory (etcd's data directory) a new name on the same file system: one
        ``rename``, atomic, the inode kept; never over something that exists, never a copy across file systems;
        missing parents of ``new_path`` made with kubeadm's modes, both directories fsync-ed."""
        src, dst = self.host_path(node_path, follow=False), self.host_path(new_path, follow=False)
        if not os.path.lexists(src):
            raise NodeFsError(f"cannot rename {node_path} to {new_path}: {node_path} does not exist", "run again")
        if os.path.lexists(dst):
            raise NodeFsError(
                f"cannot rename {node_path} to {new_path}: that exists already; nothing was moved",
                f"move {new_path} away, then run again",
            )
        logs.node_changes()
        self._ensure_parent(new_path, [])
        try:
            os.rename(src, dst)
        except OSError as exc:
            raise NodeFsError(
                f"cannot rename {node_path} to {new_path}: {exc.strerror}; nothing was moved",
                "check the node's file systems (both must be on the same one), then run again",
            ) from exc
        self._fsync_dir(dst.parent)
        if src.parent != dst.parent:
            self._fsync_dir(src.parent)

    def _move_aside(self, node_path: PurePosixPath, aside: PurePosixPath, created_dirs: list[Path]) -> None:
        logs.node_changes()
        self._ensure_parent(aside, created_dirs)
        _move(self.host_path(node_path, follow=False), self.host_path(aside, follow=False))

    def _ensure_parent(self, node_path: PurePosixPath, created_dirs: list[Path]) -> None:
        """Create the missing directories above ``node_path``, each where the root-relative resolution of its
        node path puts it (so a symlinked directory inside the root is honoured and never left)."""
        if not self.prefix.is_dir():
            raise FileNotFoundError(2, "the root directory does not exist", str(self.prefix))
        for d, mode in missing_parents_modes(node_path):
            host = self.host_path(d)
            if os.path.lexists(host):  # a directory, or a file that the write will then report
                continue
            link = self.readlink(d)
            if link is not None:  # as mkdir -p in a chroot: a dangling link is not made into a directory
                raise NodeFsError(
                    f"{d} is a symlink to {link}, which does not exist on the node; nothing was written",
                    "create the directory it points to (or replace the link with a directory), then run again",
                )
            try:
                host.mkdir(mode=mode)
            except FileExistsError:
                if host.is_dir():  # another run made it meanwhile (two commands starting at once): not ours
                    continue
                raise
            os.chmod(host, mode)
            created_dirs.append(host)

    def _fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    # -- the node's lock and what a killed run leaves ----------------------------------------

    @contextlib.contextmanager
    def lock(self, command: str, error: type[KubereviveError] = NodeFsError) -> Iterator[None]:
        """Hold the node's lock (:data:`paths.NODE_LOCK`) for a whole run of ``command``, or raise ``error`` at once
        when another run holds it. The lock file records the holder's pid and command."""
        try:
            self.ensure_dir(paths.NODE_LOCK.parent)
            fd = os.open(
                self.host_path(paths.NODE_LOCK, follow=False),
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
        except OSError as exc:
            raise error(
                f"cannot open the node's lock {paths.NODE_LOCK}: {exc.strerror}; nothing was written",
                f"make {paths.NODE_LOCK.parent} a writable directory, then run again",
            ) from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise lock_held(error, os.pread(fd, 128, 0), command) from exc
            os.ftruncate(fd, 0)
            os.pwrite(fd, lock_record(os.getpid(), command), 0)
            yield
        finally:
            os.close(fd)

    def remove_stale_tmp(self, node_dirs: Iterable[PurePosixPath]) -> list[PurePosixPath]:
        """Remove the temporary files this tool names (:data:`TMP_NAME`) in ``node_dirs``: under :meth:`lock` no
        other run is writing, so each is left by a killed run. Nothing else is touched. Returns what was removed."""
        removed: list[PurePosixPath] = []
        for d in sorted(set(map(normalise, node_dirs))):
            try:
                host = self.host_path(d)
                names = sorted(os.listdir(host)) if host.is_dir() else []
            except (OSError, NodeFsError):
                continue
            for name in names:
                if not TMP_NAME.fullmatch(name):
                    continue
                st = os.lstat(host / name)
                if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                    (host / name).unlink()
                    removed.append(d / name)
        return removed

    def remove_own(self, node_path: PurePosixPath) -> None:
        """Remove a file this tool created for itself (a record of an unfinished run), and its directory when that
        is now empty; never a node's file."""
        host = self.host_path(node_path, follow=False)
        with contextlib.suppress(FileNotFoundError):
            host.unlink()
        with contextlib.suppress(OSError):
            host.parent.rmdir()  # only when empty

    def _rollback(self, done: list[WriteResult], created_dirs: list[Path]) -> None:
        # best effort: a failure here must not hide the error that caused the rollback (a file that cannot be
        # put back stays in the backup directory)
        for r in reversed(done):
            with contextlib.suppress(OSError, NodeFsError):
                target = self.host_path(r.artifact.path, follow=False)
                if r.action is WriteAction.CREATE:
                    target.unlink()
                elif r.action is WriteAction.REPLACE and r.moved_aside_to is not None:
                    _move(self.host_path(r.moved_aside_to, follow=False), target)
        for d in reversed(created_dirs):
            with contextlib.suppress(OSError):
                d.rmdir()


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages: FIFO, socket, device."""
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _move(src: Path, dst: Path) -> None:
    """``rename``, or across file systems (/etc, /var, /var/lib/kubelet are often separate mounts):
    copy with mode, owner and times (a symlink is re-created as a symlink), fsync, then unlink the source."""
    try:
        os.replace(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    st = os.lstat(src)
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    elif src.is_dir():  # e.g. an empty directory the container runtime left where a file belongs
        shutil.copytree(src, dst, symlinks=True)
        shutil.rmtree(src)
        return
    else:
        shutil.copy2(src, dst, follow_symlinks=False)
        if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):  # as mv does: the owner stays (chown as root)
            os.chown(dst, st.st_uid, st.st_gid)
            os.chmod(dst, stat.S_IMODE(st.st_mode))  # chown clears set-id bits
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    src.unlink()
