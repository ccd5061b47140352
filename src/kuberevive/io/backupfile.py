"""Backups on the node: collect the files, take the etcd snapshot, write/read the encrypted file, restore.

The archive is built and decrypted in memory (:mod:`kuberevive.core.backup`); the only bytes this module
writes to disk are the age ciphertext (atomically, mode 0600) and, on restore, the node's own files
through :class:`NodeRoot` (kept aside when replaced).

Entry points for other commands::

    contents = open_backup(path, passphrase=..., identity=...)   # BackupContents: files, pki, metadata, snapshot
    restore_files(contents, root, only_missing=True)             # put back what the node lacks
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

from kuberevive import PASSPHRASE_ENV as PASSPHRASE_ENV
from kuberevive import logs
from kuberevive.core import backup as core
from kuberevive.core.backup import BackupContents, BackupFile, NodeIdentity, Secret, TrustEvidence
from kuberevive.core.kubeconfig import Kubeconfig
from kuberevive.core.manifests import manifest_flags, parse_manifest
from kuberevive.errors import (
    BackupError,
    ConfigError,
    EtcdError,
    KubeApiError,
    KubereviveError,
    NodeFsError,
)
from kuberevive.io import nodefacts
from kuberevive.io.noderoot import NodeRoot, WriteResult
from kuberevive.model import paths

if TYPE_CHECKING:
    from kuberevive.io.etcd import EtcdClient

BACKUP_SUFFIX = ".age"
BACKUP_PREFIX = "kuberevive-backup-"
DEFAULT_BACKUP_DIR = Path(paths.BACKUPS_DIR)
"""Where ``backup create`` writes when ``--out`` is a directory; not ``/var/lib/kuberevive/backup``, which
holds the files kuberevive moved aside."""
MAX_BACKUP_BYTES = 4 << 30


# ------------------------------------------------------------------------------- secrets


def _read_secret_file(path: str, what: str) -> str:
    """The text of a passphrase or identity file (a FIFO is read too, so ``<(...)`` works)."""
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BackupError(
            f"cannot read the {what} file {path}: {getattr(exc, 'strerror', None) or exc}",
            "check the path and permissions",
        ) from exc


def read_secret(
    environ: dict[str, str],
    passphrase_file: str | None = None,
    recipients: tuple[str, ...] = (),
    identity_file: str | None = None,
) -> Secret:
    """The passphrase (``--passphrase-file``, else ``$KUBEREVIVE_PASSPHRASE``), recipients and identities."""
    passphrase = None
    if passphrase_file:
        passphrase = _read_secret_file(passphrase_file, "passphrase").rstrip("\r\n")
        if not passphrase:
            raise BackupError(f"the passphrase file {passphrase_file} is empty", "write the passphrase into it")
    elif environ.get(PASSPHRASE_ENV):
        passphrase = environ[PASSPHRASE_ENV]
    identities: tuple[str, ...] = ()
    if identity_file:
        text = _read_secret_file(identity_file, "identity")
        identities = tuple(line.strip() for line in text.splitlines() if line.strip().startswith("AGE-SECRET-KEY-"))
        if not identities:
            raise BackupError(f"{identity_file} holds no AGE-SECRET-KEY- line", "pass the file age-keygen wrote")
    for value in (passphrase or "", *identities):
        logs.hide(value)  # never in the run's log, whatever message may carry it
    return Secret(passphrase=passphrase, recipients=recipients, identities=identities)


# ------------------------------------------------------------------------------- collect


def _mode(root: NodeRoot, p: PurePosixPath) -> int:
    return stat.S_IMODE(root.host_path(p).stat().st_mode)


def _read_exact(root: NodeRoot, p: PurePosixPath) -> bytes | None:
    """A file for the backup: None when it does not exist; anything but a regular file of at most
    :data:`core.MAX_FILE_BYTES` (a FIFO, a device, a link to ``/dev/zero``) is refused, never waited on, since a
    backup must be exact (adversarial B-C6, B-C7)."""
    try:
        return root.read(p, limit=core.MAX_FILE_BYTES)
    except NodeFsError as exc:
        raise BackupError(
            f"cannot back up {p}: {exc.message}; nothing was written",
            f"a backup holds every file exactly: fix or move {p} away (on the node: {root.host_path(p)}), then run "
            "backup create again",
        ) from exc


def collect_node_files(root: NodeRoot) -> list[BackupFile]:
    """Every file under /etc/kubernetes plus the kubelet's configuration, with their modes.

    Directories (and symlinks to directories, which are not descended into) are skipped; every other entry
    must be a regular file (:func:`_read_exact`); a dangling symlink is skipped."""
    files = []
    for p in root.walk(paths.KUBERNETES_DIR):
        if ".kuberevive-tmp-" in p.name:
            continue
        st = root.stat(p)
        if st is None or stat.S_ISDIR(st.st_mode):
            continue
        data = _read_exact(root, p)
        if data is not None:
            files.append(BackupFile(p, _mode(root, p), data))
    for p in core.KUBELET_FILES:
        data = _read_exact(root, p)
        if data is not None:
            files.append(BackupFile(p, _mode(root, p), data))
    return sorted(files, key=lambda f: f.path)


def node_identity(
    root: NodeRoot, files: list[BackupFile], node_name: str | None = None, *, live: bool
) -> tuple[NodeIdentity, list[str]]:
    """Node name (``node_name`` if given, else the kubelet client certificate CN, the kubelet's
    ``--hostname-override``, the etcd member name, else the hostname), addresses; and warnings for a fallback.

    Falling back to the hostname is warned about (with ``--node-name`` as the override), and loudly when under
    another root the hostname is this machine's (:func:`nodefacts.hostname`)."""
    host = nodefacts.hostname(root, live=live)
    by_path = {f.path: f.content for f in files}
    name = node_name or ""
    addresses: list[str] = []
    cert = by_path.get(paths.KUBELET_CLIENT_CURRENT) or _read_optional(root, paths.KUBELET_CLIENT_CURRENT)
    if cert and not name:
        from kuberevive.core import pki

        try:
            cn = pki.load_certificate(cert, str(paths.KUBELET_CLIENT_CURRENT)).subject.rfc4514_string()
            m = re.search(r"CN=system:node:([^,]+)", cn)
            name = m.group(1) if m else ""
        except KubereviveError:
            pass
    flags_env = by_path.get(paths.KUBEADM_FLAGS, b"").decode(errors="replace")
    for key in ("node-ip", "hostname-override"):
        m = re.search(rf"--{key}=([^\s\"]+)", flags_env)
        if m and key == "node-ip":
            addresses.extend(a for a in m.group(1).split(",") if a)
        elif m and not name:
            name = m.group(1)
    if paths.ETCD_MANIFEST in by_path:
        try:
            flags = manifest_flags(parse_manifest(by_path[paths.ETCD_MANIFEST]))
            name = name or flags.get("name", "")
        except ConfigError:
            pass
    apiserver = by_path.get(paths.APISERVER_MANIFEST)
    if apiserver:
        try:
            adv = manifest_flags(parse_manifest(apiserver)).get("advertise-address")
            if adv and adv not in addresses:
                addresses.append(adv)
        except ConfigError:
            pass
    warnings = []
    if not name:
        name = host.name.lower()
    if name == host.name.lower() and host.borrowed:
        warnings.append(
            f"the node name {name!r} is {host.source}, not necessarily the node's"
            f" (no kubelet client certificate, --hostname-override or etcd member name under {root.prefix}); "
            "pass --node-name NAME if the node is called otherwise"
        )
    return NodeIdentity(node_name=name, hostname=host.name, addresses=tuple(addresses)), warnings


def _read_optional(root: NodeRoot, p: PurePosixPath) -> bytes | None:
    """A file that only helps (e.g. to name the node): None when it is missing or not a readable regular file."""
    try:
        return root.read(p, limit=core.MAX_FILE_BYTES)
    except NodeFsError:
        return None


def fetch_kubeadm_config(root: NodeRoot) -> tuple[bytes | None, str]:
    """The ClusterConfiguration of the kubeadm-config ConfigMap (via admin.conf), or None and why not."""
    from kuberevive.io.kubeapi import KubeApi

    admin = _read_optional(root, paths.ADMIN_CONF)
    if admin is None:
        return None, "none: no /etc/kubernetes/admin.conf to reach the API"
    try:
        api = KubeApi.from_kubeconfig(admin, read_file=root.read_existing, timeout=5.0)
        cm = api.get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
    except KubeApiError as exc:
        return None, f"none: the API is not reachable ({exc.message})"
    text = (cm.get("data") or {}).get("ClusterConfiguration") if isinstance(cm, dict) else None
    if not text:
        return None, "none: the kubeadm-config ConfigMap has no ClusterConfiguration"
    return str(text).encode(), "api: kube-system/kubeadm-config ConfigMap"


def take_etcd_snapshot(root: NodeRoot) -> bytes:
    """A snapshot from the node's local etcd in memory (small databases; :func:`spooled_etcd_snapshot` streams)."""
    return _local_etcd(root).snapshot()


@contextlib.contextmanager
def spooled_etcd_snapshot(root: NodeRoot, directory: Path) -> Iterator[core.StreamedSnapshot]:
    """Stream a snapshot of the node's etcd into a spool file in ``directory`` (0600, removed at the end), encrypted
    with a key that never leaves memory (:class:`~kuberevive.core.agestream.AgeWriter` without header): the
    snapshot is never whole in memory and no plaintext of it is ever written."""
    from kuberevive.core.agestream import AgeReader, AgeWriter

    client = _local_etcd(root)
    key = secrets.token_bytes(16)
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
    spool = directory / f".kuberevive-etcd-snapshot.kuberevive-tmp-{os.getpid()}"
    try:
        fd = os.open(spool, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise BackupError(
            f"cannot write the snapshot spool {spool}: {exc.strerror}; nothing was written",
            "check free space and permissions of the backup directory",
        ) from exc
    try:
        with os.fdopen(fd, "wb") as fh, AgeWriter(fh, file_key=key) as w:
            digest = client.snapshot_to(w)  # type: ignore[arg-type]
        trailer = digest.finish()

        def reopen() -> BinaryIO:
            return AgeReader(spool.open("rb"), key, str(spool))  # type: ignore[return-value]

        yield core.StreamedSnapshot(digest.size, digest.sha256, trailer, reopen)
    finally:
        spool.unlink(missing_ok=True)  # our own spool, made in this run


#: The name of a :func:`snapshot_sink` file (``snapshot-<pid>.db``) and of its directory (``.<data-dir
#: name>.kuberevive-snapshot``): only such a file is ever removed as a leftover (:func:`remove_snapshot_sink`).
SINK_FILE = re.compile(r"snapshot-[0-9]+\.db")
SINK_DIR = re.compile(r"\..+\.kuberevive-snapshot")

Record = Callable[[PurePosixPath], None]
"""Told a :func:`snapshot_sink` file's node path before the file exists (a journal records it first)."""


def snapshot_sink_path(data_dir: PurePosixPath, pid: int | None = None) -> PurePosixPath:
    """Where :func:`snapshot_sink` decrypts for process ``pid`` (default this one): ``snapshot-<pid>.db`` in the
    0700 directory ``.<data-dir name>.kuberevive-snapshot`` beside the etcd data directory."""
    return (
        data_dir.parent / f".{data_dir.name}.kuberevive-snapshot" / f"snapshot-{os.getpid() if pid is None else pid}.db"
    )


def is_snapshot_sink(node_path: PurePosixPath | str) -> bool:
    """``node_path`` names a :func:`snapshot_sink` file (the tool's own; nothing else may be removed as one)."""
    p = PurePosixPath(node_path)
    return p.is_absolute() and bool(SINK_FILE.fullmatch(p.name)) and bool(SINK_DIR.fullmatch(p.parent.name))


def remove_snapshot_sink(root: NodeRoot, node_path: PurePosixPath | str) -> bool:
    """Remove a :func:`snapshot_sink` file a killed run left (and its directory once empty); a path that is not
    one is left alone. Whether something was removed."""
    p = PurePosixPath(node_path)
    if not is_snapshot_sink(p) or root.lstat(p) is None:
        return False
    root.remove_own(p)
    return True


@contextlib.contextmanager
def snapshot_sink(
    root: NodeRoot, data_dir: PurePosixPath, record: Record | None = None
) -> Iterator[tuple[Path, BinaryIO]]:
    """A file beside the etcd data directory (same disk, which holds etcd's data in plaintext anyway) for the
    snapshot a backup carries, so ``etcdutl`` can read it without it ever being whole in memory: mode 0600 in a
    0700 directory of its own (:func:`snapshot_sink_path`), ``record``-ed before it exists, and removed (with the
    directory once empty) when the context ends."""
    node_path = snapshot_sink_path(data_dir)
    directory = root.host_path(node_path.parent, follow=False)
    directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    st = directory.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise BackupError(
            f"{node_path.parent} is not a directory; nothing was changed",
            f"move {node_path.parent} away, then run again",
        )
    os.chmod(directory, 0o700)  # one a killed run of an older version left with another mode
    if record is not None:
        record(node_path)
    path = directory / node_path.name
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        with contextlib.suppress(OSError):
            directory.rmdir()  # only when empty
        raise BackupError(f"cannot write {path}: {exc.strerror}; nothing was changed", "check free space") from exc
    try:
        with os.fdopen(fd, "w+b") as fh:
            yield path, fh
    finally:
        root.remove_own(node_path)  # made in this run; its directory too once empty


@dataclass
class BackupSnapshot:
    """The etcd snapshot of a kuberevive backup, decrypted into a :func:`snapshot_sink` file."""

    path: Path
    """The decrypted snapshot (host path; 0600, removed when the context ends)."""
    node_path: PurePosixPath
    """The same file as a path on the node."""
    contents: BackupContents
    warnings: list[str]
    """From :func:`check_same_cluster` (e.g. nothing to compare): for the caller to show."""


@contextlib.contextmanager
def backup_snapshot(
    root: NodeRoot,
    backup: Path,
    secret: Secret,
    data_dir: PurePosixPath,
    *,
    allow_foreign: bool = False,
    ca_cert_hash: str | None = None,
    allow_unauthenticated: bool = False,
    record: Record | None = None,
) -> Iterator[BackupSnapshot]:
    """Decrypt the etcd snapshot of the backup ``backup`` into a 0600 file beside ``data_dir`` (:func:`snapshot_sink`,
    ``record``-ed before it exists; a binary age file chunk by chunk, never whole in memory; an armored one, made
    elsewhere, in memory), after the same ties to this
    cluster as ``backup restore`` (:func:`check_same_cluster`: a forged snapshot would become the cluster's state).
    A wrong key, a damaged file, a backup of another cluster or one without a snapshot: one BackupError, and the
    file is gone again. Used by ``restore-etcd`` and ``quorum-restore --backup``."""
    head = read_head(backup)
    with snapshot_sink(root, data_dir, record) as (sink_path, sink):
        if head.startswith(core.AGE_MAGIC):  # binary age: decrypted and written out chunk by chunk
            with backup.open("rb") as src:
                contents = core.open_archive_stream(
                    src, secret, str(backup), snapshot_sink=sink, allow_unauthenticated=allow_unauthenticated
                )
            has_snapshot = contents.etcd_snapshot_streamed is not None
        else:  # armored (made elsewhere): read in memory
            contents = core.open_archive(
                read_backup_bytes(backup), secret, str(backup), allow_unauthenticated=allow_unauthenticated
            )
            has_snapshot = contents.etcd_snapshot is not None
            sink.write(contents.etcd_snapshot or b"")
        sink.flush()
        warnings = check_same_cluster(
            contents, root, allow_foreign, ca_cert_hash=ca_cert_hash, allow_unauthenticated=allow_unauthenticated
        )
        if not has_snapshot:
            raise BackupError(
                f"the backup {backup} has no etcd snapshot", "use a backup made with backup create --etcd-snapshot"
            )
        yield BackupSnapshot(sink_path, snapshot_sink_path(data_dir), contents, warnings)


def _local_etcd(root: NodeRoot) -> EtcdClient:
    """A client of the node's local etcd, over mTLS with the healthcheck (or apiserver) client cert."""
    from kuberevive.io import etcdprobe

    settings = etcdprobe.settings(root)
    client = etcdprobe.client_for(root, settings.client_url if settings else "https://127.0.0.1:2379", timeout=10.0)
    if client is None:
        raise EtcdError(
            "there is no etcd client certificate on this node (etcd/healthcheck-client or apiserver-etcd-client)",
            "run backup create without --etcd-snapshot, or on a control-plane node with local etcd",
        )
    return client


# --------------------------------------------------------------------------------- files


def backup_name(node: str, created: datetime, seq: int = 0) -> str:
    """``kuberevive-backup-<node>-<UTC time>.age``: the node's name is what ``list`` and ``prune`` group by
    (characters outside ``[A-Za-z0-9._-]`` become ``_``, so a name is never a path). A second backup of the same
    node within the same second gets ``seq`` 1, 2, ... (``...Z.1.age``), so it never needs to replace the first."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", node)[:200] or "_"
    suffix = f".{seq}" if seq else ""
    return f"{BACKUP_PREFIX}{safe}-{created.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}{suffix}{BACKUP_SUFFIX}"


#: How many backups of one node :func:`free_backup_name` tries within one second before giving up.
MAX_SAME_SECOND = 100


def free_backup_name(directory: Path, node: str, created: datetime) -> Path:
    """The first :func:`backup_name` of ``node`` at ``created`` that nothing in ``directory`` holds yet."""
    for seq in range(MAX_SAME_SECOND):
        target = directory / backup_name(node, created, seq)
        if not os.path.lexists(target):
            return target
    raise BackupError(
        f"{directory} already holds {MAX_SAME_SECOND} backups of {node} made in the same second; nothing was written",
        "run again in a second",
    )


def out_target(out: str) -> tuple[Path, bool]:
    """Where ``--out`` points, and whether it is a directory (a name is then chosen per node and time).

    The rule: a path that ends in ``/`` or is an existing directory is a directory (created ``0700`` when
    missing); anything else is a file, and must end in ``.age``, so that ``--out /backups/cp1`` meant as a new
    directory never becomes a file."""
    path = Path(out)
    if out.endswith("/") or path.is_dir():
        return path, True
    if path.suffix != BACKUP_SUFFIX:
        raise BackupError(
            f"--out {out} is not an existing directory, and a backup file name must end in {BACKUP_SUFFIX}",
            f"pass --out {out}/ (with the trailing slash) to write into a new directory {out}, or a file name "
            f"such as {out}{BACKUP_SUFFIX}",
        )
    return path, False


def write_backup(path: Path, ciphertext: bytes, *, force: bool = False, now: datetime | None = None) -> Path | None:
    """:func:`write_backup_stream` of ciphertext in memory."""
    return write_backup_stream(path, lambda fh: fh.write(ciphertext), force=force, now=now)


def write_backup_stream(
    path: Path, produce: Callable[[BinaryIO], object], *, force: bool = False, now: datetime | None = None
) -> Path | None:
    """Write what ``produce`` writes (the ciphertext, chunk by chunk) into a temporary file beside ``path``
    (mode 0600, the parent directory created 0700 if missing), then link it into place: all or nothing.

    Nothing is ever replaced: an existing ``path`` (whatever it is) is refused, unless ``force``; then it is
    first moved aside to ``<path>.replaced-<UTC time>``, which is returned. A file that appears at ``path``
    meanwhile is refused too (the link does not replace)."""
    target = path.absolute()
    aside = None
    tmp = target.with_name(f".{target.name}.kuberevive-tmp-{os.getpid()}")
    try:
        if not target.parent.exists():
            target.parent.mkdir(mode=0o700, parents=True)
        if os.path.lexists(target):
            if not force:
                raise BackupError(
                    f"{path} already exists; nothing was written",
                    "pass another --out, or --force to move the old file aside (to <name>.replaced-<time>)",
                )
            stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
            aside = target.with_name(f"{target.name}.replaced-{stamp}")
            if os.path.lexists(aside):
                raise BackupError(f"{aside} already exists; nothing was written", "run again")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            produce(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if aside is not None:
            os.rename(target, aside)
        try:
            os.link(tmp, target)
        except FileExistsError as exc:
            raise BackupError(
                f"{path} appeared while the backup was written; nothing was written", "pass another --out"
            ) from exc
        dfd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise BackupError(
            f"cannot write {path}: {exc.strerror or exc}; nothing was written", "check free space and permissions"
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()  # our own temporary file (linked into place, or abandoned)
    return aside


def read_backup_bytes(path: Path) -> bytes:
    """The bytes of a backup (or snapshot) file: a regular file of at most :data:`MAX_BACKUP_BYTES`, opened without
    blocking (a FIFO or a device, e.g. a link to ``/dev/zero``, is one error, never a hang: B-V15, B-V16)."""
    try:
        data = NodeRoot(Path("/")).read(PurePosixPath(path.absolute()), limit=MAX_BACKUP_BYTES)
    except NodeFsError as exc:
        raise BackupError(
            f"cannot read the backup {path}: {exc.message}", "pass a backup file (see backup list)"
        ) from exc
    if data is None:
        raise BackupError(f"the backup {path} does not exist", "check the path")
    return data


def _open_input(path: Path) -> int:
    """A descriptor of a regular input file, opened without blocking (no FIFO or device waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError as exc:
        raise BackupError(f"the backup {path} does not exist", "check the path") from exc
    except OSError as exc:
        raise BackupError(f"cannot read the backup {path}: {exc.strerror}", "check the path") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BackupError(
            f"cannot read the backup {path}: it is not a regular file", "pass a backup file (see backup list)"
        )
    return fd


def read_head(path: Path, size: int = 512) -> bytes:
    """The first bytes of a backup or snapshot file (:func:`_open_input`)."""
    fd = _open_input(path)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def check_snapshot_file(path: Path, chunk: int = 1 << 20) -> int:
    """Check a snapshot file's sha256 trailer reading it in chunks (never whole); returns its size."""
    digest = core.SnapshotDigest()
    fd = _open_input(path)
    try:
        while data := os.read(fd, chunk):
            digest.update(data)
    finally:
        os.close(fd)
    digest.finish()
    return digest.size


def open_backup(
    path: Path | str,
    passphrase: str | None = None,
    identity: str | None = None,
    secret: Secret | None = None,
    *,
    allow_unauthenticated: bool = False,
) -> BackupContents:
    """Decrypt and verify a backup in memory. ``identity`` is the text of an age identity file.

    A recipient-mode backup must be signed by its CA unless ``allow_unauthenticated`` (:func:`core.open_archive`).
    """
    p = Path(path)
    if secret is None:
        ids = tuple(x.strip() for x in (identity or "").splitlines() if x.strip().startswith("AGE-SECRET-KEY-"))
        secret = Secret(passphrase=passphrase, identities=ids)
    return core.open_archive(read_backup_bytes(p), secret, str(p), allow_unauthenticated=allow_unauthenticated)


@dataclass(frozen=True)
class ListedBackup:
    path: Path
    size: int
    modified: datetime
    encryption: str
    node: str
    created: datetime | None
    seq: int = 0  # the n-th backup of this node within the second of ``created``


_NAME_RE = re.compile(
    rf"^{BACKUP_PREFIX}(?P<node>.+)-(?P<stamp>\d{{8}}T\d{{6}}Z)(?:\.(?P<seq>[1-9][0-9]*))?{re.escape(BACKUP_SUFFIX)}$"
)


def name_node(name: str) -> str | None:
    """The node a backup file name (:func:`backup_name`) belongs to, or None for any other name."""
    m = _NAME_RE.match(name)
    return m.group("node") if m else None


def list_backups(directory: Path) -> list[ListedBackup]:
    """kuberevive backups in ``directory``, oldest first (by the time in their names); nothing is decrypted.

    A backup is a regular file (not a symlink) named :func:`backup_name` whose first bytes are an age header;
    nothing else in the directory is ever listed (so never pruned)."""
    if not directory.is_dir():
        raise BackupError(f"the backup directory {directory} does not exist", "check the path")
    out = []
    for entry in directory.iterdir():
        m = _NAME_RE.match(entry.name)
        if not m:
            continue
        head = _head(entry)
        if head is None or not core.is_age_file(head[1]):
            continue
        st, data = head
        created = datetime.strptime(m.group("stamp"), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        out.append(
            ListedBackup(
                path=entry,
                size=st.st_size,
                modified=datetime.fromtimestamp(st.st_mtime, UTC),
                encryption="passphrase (scrypt)" if b"\n-> scrypt " in data else "recipient (X25519)",
                node=m.group("node"),
                created=created,
                seq=int(m.group("seq") or 0),
            )
        )
    return sorted(out, key=lambda b: (b.created or b.modified, b.seq, b.path.name))


def _head(entry: Path) -> tuple[os.stat_result, bytes] | None:
    """The stat and first 512 bytes of a regular file (not a symlink, FIFO or device), or None."""
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        return (st, os.read(fd, 512)) if stat.S_ISREG(st.st_mode) else None
    except OSError:
        return None
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Pruned:
    removed: list[ListedBackup]
    kept: list[ListedBackup]


def prune_backups(directory: Path, keep: int, *, node: str | None = None, dry_run: bool = False) -> Pruned:
    """Delete all but the newest ``keep`` backups **of each node** in ``directory`` (only ``node``'s when given);
    with ``dry_run`` only say which. Files that are not kuberevive backups (:func:`list_backups`) are never
    touched."""
    if keep < 1:
        raise BackupError("--keep must be at least 1", "pass --keep N with N >= 1")
    by_node: dict[str, list[ListedBackup]] = {}
    for b in list_backups(directory):
        by_node.setdefault(b.node, []).append(b)
    removed: list[ListedBackup] = []
    kept: list[ListedBackup] = []
    for name, backups in sorted(by_node.items()):
        if node is not None and name != node:
            continue
        removed += backups[: max(0, len(backups) - keep)]
        kept += backups[max(0, len(backups) - keep) :]
    if not dry_run:
        for b in removed:
            try:
                b.path.unlink()
            except FileNotFoundError:
                continue  # pruned meanwhile by another node's run
            except OSError as exc:
                raise BackupError(
                    f"cannot remove {b.path}: {exc.strerror}", "check the directory's permissions"
                ) from exc
    return Pruned(removed, kept)


# ------------------------------------------------------------------------------- restore


def trust_evidence(root: NodeRoot) -> list[TrustEvidence]:
    """Certificates that show which CA this node's survivors trust (kubelet client cert, kubeconfig CAs)."""

    out = []
    cert = root.read(paths.KUBELET_CLIENT_CURRENT)
    if cert:
        out.append(TrustEvidence(f"the kubelet client certificate {paths.KUBELET_CLIENT_CURRENT}", cert))
    ca = root.read(paths.CA_CRT)
    if ca:
        out.append(TrustEvidence(f"{paths.CA_CRT} on the node", ca))
    for conf in (paths.KUBELET_CONF, paths.BOOTSTRAP_KUBELET_CONF):
        data = root.read(conf)
        if not data:
            continue
        try:
            out.extend(TrustEvidence(f"the CA in {conf}", ca) for ca in Kubeconfig.from_yaml(data).cluster_cas())
        except ConfigError:
            continue
    return out


def check_same_cluster(
    contents: BackupContents,
    root: NodeRoot,
    allow_foreign: bool,
    *,
    ca_cert_hash: str | None = None,
    allow_unauthenticated: bool = False,
) -> list[str]:
    """Raise unless the backup's CA is the one this node trusts (and the pinned ``ca_cert_hash``, if given);
    returns warnings (e.g. nothing to compare). See :func:`core.same_cluster`."""
    return core.same_cluster(
        contents,
        trust_evidence(root),
        allow_foreign=allow_foreign,
        ca_cert_hash=ca_cert_hash,
        allow_unauthenticated=allow_unauthenticated,
    )


def restore_files(
    contents: BackupContents, root: NodeRoot, only_missing: bool = True, now: datetime | None = None
) -> list[WriteResult]:
    """Write the backup's files that are missing on the node (all of them, old ones kept aside, if not
    ``only_missing``). All or nothing, through :meth:`NodeRoot.write_all`."""
    placeholders = [p for p in contents.files if root.is_placeholder_dir(p)]
    existing = {p: None if p in placeholders else root.read(p) for p in contents.files}
    artifacts = core.restore_artifacts(contents, existing, only_missing=only_missing)
    # An empty directory where a file belongs is what the container runtime leaves when a static pod's
    # container starts while its hostPath file is gone (e.g. controller-manager.conf): it holds nothing.
    removed = []
    try:
        for p in placeholders:
            root.host_path(p, follow=False).rmdir()
            removed.append(p)
        return root.write_all(artifacts, force=not only_missing, now=now)
    except BaseException:
        for p in removed:
            if not root.host_path(p, follow=False).exists():
                root.host_path(p, follow=False).mkdir()
        raise
