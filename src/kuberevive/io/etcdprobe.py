"""Read the facts of the etcd safety preflight (:mod:`kuberevive.core.etcdsafety`) from a node: its etcd
manifest, its data directory (names, sizes, the WAL's snapshot records, the v3 store's members; read in chunks
and pages, never whole) and, when it answers, its etcd over mTLS (status, alarms, members). Read-only."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

from kuberevive.core import etcdsafety as safety
from kuberevive.core.manifests import manifest_flags, parse_manifest
from kuberevive.errors import ConfigError, KubereviveError
from kuberevive.io.etcd import EtcdClient
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model import paths

READ_BYTES = 1 << 20
T = TypeVar("T")
MAX_WAL_FILES = 64


@dataclass(frozen=True)
class EtcdSettings:
    """What the etcd manifest says about this node's member."""

    name: str
    data_dir: PurePosixPath
    client_url: str
    quota_bytes: int
    image_tag: str


def settings(root: NodeRoot, manifest: bytes | None = None) -> EtcdSettings | None:
    """The member's settings from ``manifest`` (else the node's etcd manifest); None without one."""
    data = manifest if manifest is not None else root.read(paths.ETCD_MANIFEST)
    if data is None:
        return None
    try:
        pod = parse_manifest(data)
        flags = manifest_flags(pod)
    except ConfigError:
        return None
    image = ""
    with contextlib.suppress(KeyError, IndexError, TypeError, AttributeError):
        image = str(pod["spec"]["containers"][0].get("image", ""))
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    client = flags.get("listen-client-urls") or flags.get("advertise-client-urls") or "https://127.0.0.1:2379"
    return EtcdSettings(
        name=flags.get("name", "default"),
        data_dir=PurePosixPath(flags.get("data-dir") or paths.ETCD_DATA_DIR),
        client_url=client.split(",")[0],
        quota_bytes=safety.effective_quota(flags.get("quota-backend-bytes")),
        image_tag=tag,
    )


def _open_regular(path: Path) -> int | None:
    """A read-only descriptor of a regular file (no FIFO, device or symlink waited on), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _names(directory: Path, suffix: str) -> tuple[str, ...]:
    try:
        return tuple(sorted(n for n in os.listdir(directory) if n.endswith(suffix)))
    except OSError:
        return ()


def data_dir(root: NodeRoot, node_dir: PurePosixPath) -> safety.DataDir:
    """The listing of a data directory and the snapshot records of its WAL files (read in chunks)."""
    host = root.host_path(node_dir)
    if not host.is_dir():
        return safety.DataDir(str(node_dir), exists=False)
    wal_dir, snap_dir = host / "member" / "wal", host / "member" / "snap"
    wals, snaps = _names(wal_dir, ".wal"), _names(snap_dir, ".snap")
    db = snap_dir / "db"
    db_size = -1
    with contextlib.suppress(OSError):
        st = db.lstat()
        db_size = st.st_size if stat.S_ISREG(st.st_mode) else -1
    records: list[tuple[int, int]] = []
    for name in wals[-MAX_WAL_FILES:]:
        fd = _open_regular(wal_dir / name)
        if fd is None:
            continue
        scanner = safety.WalScanner()
        try:
            while not scanner.done and (chunk := os.read(fd, READ_BYTES)):
                scanner.feed(chunk)
        except OSError:
            pass
        finally:
            os.close(fd)
        records += scanner.snapshots
    return safety.DataDir(str(node_dir), True, wals, snaps, db_size >= 0, max(db_size, 0), tuple(records))


def _read_db(root: NodeRoot, db: PurePosixPath, parse: Callable[[Callable[[int, int], bytes]], T]) -> T | None:
    """``parse(read)`` of the bbolt file ``db`` read page by page with ``pread``; None when it cannot be read."""
    fd = _open_regular(root.host_path(db))
    if fd is None:
        return None
    read: Callable[[int, int], bytes] = lambda offset, size: os.pread(fd, size, offset)  # noqa: E731
    try:
        return parse(read)
    except (ValueError, OSError, IndexError, struct.error):
        return None
    finally:
        os.close(fd)


def stored_members(root: NodeRoot, db: PurePosixPath) -> tuple[safety.Member, ...] | None:
    """The v3 store's members from a bbolt file (page by page); None when it cannot be read as one."""
    return _read_db(root, db, safety.stored_members)


def stored_revision(root: NodeRoot, db: PurePosixPath) -> int | None:
    """The current revision of the etcd v3 store ``db`` (a data directory's ``member/snap/db`` or a snapshot), read
    along its rightmost pages; None when it cannot be read as one."""
    return _read_db(root, db, safety.stored_revision)


#: How long reading values from a stopped member's data may take before the caller does without them.
STORED_VALUES_SECONDS = 2.0


def stored_values(
    root: NodeRoot,
    data_dir: PurePosixPath,
    keys: Sequence[str],
    budget: float = STORED_VALUES_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, bytes] | None:
    """The newest value of each of ``keys`` (absent: no such key) as etcd will serve it once it starts on
    ``data_dir``, read from the files of a member that does not run: its db holds every entry up to its
    ``consistent_index``, and etcd applies the WAL's later entries again when it starts, so the values are sure
    only when no such entry names one of the keys. None when that is not sure: the db or a WAL file unreadable or
    torn, ``budget`` seconds spent, or a later entry (or a torn last record) naming a key."""
    deadline = clock() + budget
    needles = [k.encode() for k in keys]

    def parse(read: Callable[[int, int], bytes]) -> tuple[int, dict[bytes, bytes]]:
        return safety.consistent_index(read), safety.latest_values(read, needles, lambda: clock() > deadline)

    got = _read_db(root, data_dir / "member" / "snap" / "db", parse)
    if got is None:
        return None
    applied, values = got
    wal_dir = root.host_path(data_dir / "member" / "wal")
    names = _names(wal_dir, ".wal")
    # <seq>-<index>.wal: the raft index of the file's first entry; entries after ``applied`` can only be in the
    # last file that starts at or before it and in the files after that
    start = 0
    for i, name in enumerate(names):
        try:
            first = int(name.removesuffix(".wal").split("-")[1], 16)
        except (IndexError, ValueError):
            return None
        if first <= applied:
            start = i
    if not names:
        return None
    for name in names[start:]:
        fd = _open_regular(wal_dir / name)
        if fd is None:
            return None
        scanner = safety.WalScanner(needles, applied)
        try:
            if not _unlocked(fd):  # etcd runs on these files (it locks its WAL files): they are being written
                return None
            while not scanner.done and (chunk := os.read(fd, READ_BYTES)):
                scanner.feed(chunk)
                if clock() > deadline:
                    return None
        except OSError:
            return None
        finally:
            os.close(fd)
        scanner.finish()
        if scanner.broken or scanner.mentioned:
            return None
    return {k.decode(): v for k, v in values.items()}


def _unlocked(fd: int) -> bool:
    """Whether no process holds a write lock on the file: a running etcd locks each WAL file it uses (an OFD lock
    on Linux, which POSIX record locks see; a shared lock is tried and at once released)."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return False
    fcntl.lockf(fd, fcntl.LOCK_UN)
    return True


def client_for(root: NodeRoot, url: str, timeout: float = 5.0) -> EtcdClient | None:
    """An mTLS client of the node's etcd with its healthcheck (else apiserver) client certificate."""
    ca = root.read(paths.ETCD_CA_CRT)
    for base in (paths.ETCD_HEALTHCHECK_CLIENT, paths.APISERVER_ETCD_CLIENT):
        cert, key = root.read(f"{base}.crt"), root.read(f"{base}.key")
        if ca and cert and key:
            return EtcdClient(url, ca, cert, key, timeout=timeout)
    return None


def facts(root: NodeRoot, *, live: bool = True, manifest: bytes | None = None, with_data: bool = True) -> safety.Facts:
    """Everything the preflight can know about this node's etcd (an unreachable etcd is no error: its checks
    then do not run)."""
    s = settings(root, manifest)
    f = safety.Facts()
    if s is None:
        return f
    f.local_name, f.quota_bytes, f.target_version = s.name, s.quota_bytes, s.image_tag
    if with_data:
        f.data_dir = data_dir(root, s.data_dir)
    if live:
        client = None
        with contextlib.suppress(KubereviveError):
            client = client_for(root, s.client_url)
        if client is not None:
            with contextlib.suppress(KubereviveError):
                f.status = client.safety_status()
                f.members = tuple(client.members())
    if with_data and f.members is not None and f.data_dir is not None and f.data_dir.has_db:
        f.stored_members = stored_members(root, s.data_dir / "member" / "snap" / "db")
    return f
