"""etcd safety preflight: the checks to pass before a restore, a member change or an etcd restart (pure).

Every check is one function of facts passed in (an etcd's status, its member lists, its alarms, the listing of
its data directory, the records of its WAL) and returns the :class:`Problem` s it finds, each named by an id
with what is wrong and the fix (or the guided salvage). :func:`refuse` turns the problems that block an
operation into one :class:`~kuberevive.errors.EtcdError`: nothing is ever changed silently.

The facts are read by :mod:`kuberevive.io.etcdprobe` (over mTLS, and from the data directory without etcd);
``diagnose`` reports the same problems as findings (``etcd-*`` ids, :func:`kuberevive.core.diagnose`).

Where a rule comes from:

- a 3.5 member goes to 3.6 only from 3.5.26 or newer: older 3.5 releases can hold "zombie members" (removed in
  the v2 store, still in the v3 store) that 3.6, which reads membership from the v3 store only, brings back
  (etcd blog "zombie members upgrade", 2025);
- ``NOSPACE``: the database reached ``--quota-backend-bytes`` (default 2 GiB); etcd then refuses every write
  until the space is reclaimed (compact, defragment) or the quota raised, and the alarm disarmed by hand;
- a learner is not a voting member: a control plane that counts it, or a second member change while one is
  not promoted yet, risks quorum (etcd runtime reconfiguration; kubeadm joins as learner since v1.29);
- a WAL that records a raft snapshot whose ``.snap`` file is gone, or a WAL without its ``db``, does not start;
  its ``member/snap/db`` can still be restored as a snapshot without the sha256 trailer
  (``etcdutl snapshot restore --skip-hash-check``).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from kuberevive.errors import EtcdError

REFUSE = "refuse"
WARN = "warn"

DEFAULT_QUOTA_BYTES = 2 << 30
"""etcd's ``--quota-backend-bytes`` when the flag is absent or 0 (kubeadm does not set it)."""
QUOTA_WARN_FRACTION = 0.8
MIN_35_FOR_36 = (3, 5, 26)

# problem ids (also diagnose's finding ids)
VERSION_UPGRADE = "etcd-upgrade-path"
VERSION_DOWNGRADE = "etcd-downgrade"
NOSPACE = "etcd-nospace"
CORRUPT = "etcd-corrupt"
DB_QUOTA = "etcd-db-over-quota"
DB_NEAR_QUOTA = "etcd-db-near-quota"
LEARNER = "etcd-learner-not-promoted"
UNSTARTED = "etcd-member-unstarted"
NOT_A_MEMBER = "etcd-member-not-in-cluster"
ZOMBIE = "etcd-zombie-member"
LISTS_DIFFER = "etcd-member-lists-differ"
MULTI_MEMBER = "etcd-multi-member"
NO_DB = "etcd-data-no-db"
NO_WAL = "etcd-data-no-wal"
SNAP_MISSING = "etcd-data-snap-missing"


@dataclass(frozen=True)
class Problem:
    id: str
    severity: str
    """:data:`REFUSE` (the operation is refused) or :data:`WARN`."""
    message: str
    fix: str
    salvage: str = ""
    """The guided salvage (a kuberevive command line), when there is one."""

    def as_json(self) -> dict[str, str]:
        return {"id": self.id, "severity": self.severity, "message": self.message, "fix": self.fix,
                "salvage": self.salvage}  # fmt: skip


@dataclass(frozen=True)
class Member:
    """One etcd member as the member list (live: ``MemberList``; stored: the v3 store's ``members`` bucket) shows it."""

    id: str
    name: str
    peer_urls: tuple[str, ...] = ()
    client_urls: tuple[str, ...] = ()
    is_learner: bool = False


@dataclass(frozen=True)
class Status:
    """An etcd's ``Maintenance.Status`` and alarms."""

    endpoint: str
    version: str
    member_id: str
    db_size: int
    db_size_in_use: int = 0
    is_learner: bool = False
    alarms: tuple[tuple[str, str], ...] = ()
    """(member id, alarm) for every raised alarm of the cluster (``NOSPACE``, ``CORRUPT``)."""


@dataclass(frozen=True)
class DataDir:
    """What a data directory holds (file names only) and the raft snapshots its WAL records."""

    path: str
    exists: bool
    wal_files: tuple[str, ...] = ()
    snap_files: tuple[str, ...] = ()
    has_db: bool = False
    db_size: int = 0
    wal_snapshots: tuple[tuple[int, int], ...] = ()
    """(term, index) of every snapshot record in the WAL."""


@dataclass
class Facts:
    """Everything the preflight knows; a check runs only when its facts are there."""

    status: Status | None = None
    members: tuple[Member, ...] | None = None
    stored_members: tuple[Member, ...] | None = None
    """The v3 store's view (``members`` bucket of the db), for zombie members."""
    other_lists: dict[str, tuple[Member, ...]] = field(default_factory=dict)
    """node -> member list as each other node's etcd sees it."""
    local_name: str = ""
    quota_bytes: int = 0
    target_version: str = ""
    """The etcd version the operation will run (the manifest's image tag), "" when unknown."""
    data_dir: DataDir | None = None


# ------------------------------------------------------------------------------------- versions


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``3.5.24``, ``v3.6.8``, ``3.6.5-0`` (an image tag) -> (3, 6, 5); None when it does not parse."""
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", text.strip())
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def check_version(running: str, target: str) -> list[Problem]:
    """A 3.5 -> 3.6 step needs 3.5.26 or newer; a step down a minor is not a restart (etcd refuses it)."""
    cur, new = parse_version(running), parse_version(target)
    if cur is None or new is None:
        return []
    if cur[:2] == (3, 5) and new[:2] >= (3, 6) and cur < MIN_35_FOR_36:
        return [
            Problem(
                VERSION_UPGRADE,
                REFUSE,
                f"etcd {running} would be moved to {target}: a 3.5 member must run 3.5.26 or newer before 3.6 "
                "(older 3.5 releases can hold removed 'zombie' members that 3.6 brings back)",
                "run this member (and every other) with etcd 3.5.26 or newer first (image 3.5.26-0 or later), "
                "wait until it is healthy, then move to 3.6",
            )
        ]
    if new[:2] < cur[:2]:
        return [
            Problem(
                VERSION_DOWNGRADE,
                REFUSE,
                f"etcd {running}'s data would be run by the older etcd {target}",
                "use an etcd image of the same minor as the data (or follow etcd's downgrade procedure first)",
            )
        ]
    return []


# ------------------------------------------------------------------------------- space and alarms


def effective_quota(flag_value: str | int | None) -> int:
    """``--quota-backend-bytes`` as etcd applies it (absent, 0 or unreadable: 2 GiB)."""
    try:
        value = int(flag_value or 0)
    except ValueError:
        return DEFAULT_QUOTA_BYTES
    return value if value > 0 else DEFAULT_QUOTA_BYTES


def salvage_nospace_command() -> str:
    return "kuberevive etcd-salvage nospace --apply"


def check_alarms(alarms: Iterable[tuple[str, str]], members: Sequence[Member] = ()) -> list[Problem]:
    names = {m.id: m.name or m.id for m in members}
    out = []
    for member_id, alarm in alarms:
        who = names.get(member_id, member_id)
        if alarm == "NOSPACE":
            out.append(
                Problem(
                    NOSPACE,
                    REFUSE,
                    f"etcd member {who} raised the NOSPACE alarm: the database reached its quota and every write "
                    "is refused",
                    "reclaim the space: compact the history, defragment every member, raise --quota-backend-bytes "
                    "if the data needs it, then disarm the alarm",
                    salvage_nospace_command(),
                )
            )
        elif alarm == "CORRUPT":
            out.append(
                Problem(
                    CORRUPT,
                    REFUSE,
                    f"etcd member {who} raised the CORRUPT alarm: its data differs from the other members'",
                    "remove that member and add it again with an empty data directory (or restore every member "
                    "from one snapshot)",
                )
            )
    return out


def check_quota(db_size: int, quota: int) -> list[Problem]:
    """The database file against the quota: at the quota a NOSPACE alarm follows; near it, a warning."""
    q = effective_quota(quota)
    if db_size >= q:
        return [
            Problem(
                DB_QUOTA,
                REFUSE,
                f"the etcd database is {db_size} bytes, at or over --quota-backend-bytes={q}",
                "compact and defragment (the file shrinks to what is in use), or raise --quota-backend-bytes in "
                "the etcd manifest",
                salvage_nospace_command(),
            )
        ]
    if db_size >= q * QUOTA_WARN_FRACTION:
        return [
            Problem(
                DB_NEAR_QUOTA,
                WARN,
                f"the etcd database is {db_size} bytes, {100 * db_size // q}% of --quota-backend-bytes={q}",
                "compact and defragment soon, or raise --quota-backend-bytes",
            )
        ]
    return []


# ------------------------------------------------------------------------------------- membership


def check_learners(members: Sequence[Member]) -> list[Problem]:
    return [
        Problem(
            LEARNER,
            REFUSE,
            f"etcd member {m.name or m.id} (id {m.id}) is a learner, not yet promoted to a voting member",
            f"wait until it has caught up and promote it (etcdctl member promote {m.id}), or remove it "
            f"(etcdctl member remove {m.id}); then run again",
        )
        for m in members
        if m.is_learner
    ]


def check_membership(
    members: Sequence[Member], local_name: str = "", stored: Sequence[Member] | None = None
) -> list[Problem]:
    """The live member list: unstarted members, this node's member missing, and (with the v3 store's view)
    zombie members: in the v3 store but not in the live list."""
    out = []
    for m in members:
        if not m.name:
            out.append(
                Problem(
                    UNSTARTED,
                    REFUSE,
                    f"etcd member {m.id} ({', '.join(m.peer_urls) or 'no peer URL'}) was added but never started",
                    f"start the etcd it was added for, or remove it (etcdctl member remove {m.id}); then run again",
                )
            )
    if local_name and members and local_name not in {m.name for m in members}:
        out.append(
            Problem(
                NOT_A_MEMBER,
                REFUSE,
                f"this node's etcd member {local_name!r} is not in the cluster's member list "
                f"({', '.join(sorted(m.name or m.id for m in members))})",
                "its data directory belongs to a removed member: move it aside and add the node again as a new "
                "member (or restore it from a snapshot)",
            )
        )
    if stored is not None:
        live = {m.id for m in members}
        for z in stored:
            if z.id not in live:
                out.append(
                    Problem(
                        ZOMBIE,
                        REFUSE,
                        f"etcd member {z.name or z.id} (id {z.id}) is in the v3 store but not in the live member "
                        "list: a 'zombie' member that etcd 3.6 would bring back",
                        "restart every member with etcd 3.5.26 or newer (it syncs the v3 store) before any upgrade "
                        "or member change, then check again",
                    )
                )
    return out


def check_member_lists(lists: Mapping[str, Sequence[Member]]) -> list[Problem]:
    """Member lists as several nodes' etcds see them must be the same set of ids (else: split brain or a
    member restored alone into a new cluster)."""
    views = {node: frozenset(m.id for m in ms) for node, ms in lists.items()}
    if len(set(views.values())) <= 1:
        return []
    shown = "; ".join(f"{node}: {len(ids)} member(s) {', '.join(sorted(ids))}" for node, ids in sorted(views.items()))
    return [
        Problem(
            LISTS_DIFFER,
            REFUSE,
            f"the nodes' etcds disagree on the member list ({shown})",
            "the etcds no longer form one cluster: keep the data of the member with the highest revision, restore "
            "it on one node and re-grow the others one at a time with empty data directories",
        )
    ]


def check_single_member(members: Sequence[Member], local_name: str) -> list[Problem]:
    """Restoring one member from a snapshot makes a new one-member cluster: with other members alive that is
    a split brain (the others keep the old cluster id)."""
    others = [m.name or m.id for m in members if m.name != local_name]
    if not others:
        return []
    return [
        Problem(
            MULTI_MEMBER,
            REFUSE,
            f"this etcd has other members ({', '.join(sorted(others))}): restoring this member alone would make a "
            "new one-member cluster beside them (split brain)",
            "remove the other members first (etcdctl member remove ID) or restore every member from the same "
            "snapshot (etcd's disaster-recovery guide)",
        )
    ]


def restore_preflight(facts: Facts, snapshot_db_size: int) -> list[Problem]:
    """The checks before ``restore-etcd``: the data directory's own problems are what the restore salvages, so
    they do not count; the running etcd's version against the manifest's image, the snapshot against the quota
    and the live membership do."""
    out: list[Problem] = []
    if facts.status is not None and facts.target_version:
        out += check_version(facts.status.version, facts.target_version)
    if facts.quota_bytes:
        out += [p for p in check_quota(snapshot_db_size, facts.quota_bytes) if p.severity == REFUSE]
    if facts.members is not None:
        out += check_single_member(facts.members, facts.local_name)
    return out


# ------------------------------------------------------------------------------------ data directory


def snap_file_name(term: int, index: int) -> str:
    """etcd's raft snapshot file name (``snap.Snapshotter``)."""
    return f"{term:016x}-{index:016x}.snap"


def wal_first_index(names: Iterable[str]) -> int | None:
    """The raft index the oldest WAL file starts at (``<seq>-<index>.wal``, hex); None without one."""
    found = []
    for n in names:
        m = re.fullmatch(r"([0-9a-f]{16})-([0-9a-f]{16})\.wal", n)
        if m:
            found.append(int(m.group(2), 16))
    return min(found) if found else None


def check_data_dir(d: DataDir) -> list[Problem]:
    """A data directory that etcd cannot start from, as etcd loads it: the newest raft snapshot (``.snap``) that
    the WAL records, then the db at least that far, then the WAL from there. A WAL that still starts at index 0
    needs no snapshot (etcd replays it whole)."""
    if not d.exists or not (d.wal_files or d.snap_files or d.has_db):
        return []
    salvage = f"kuberevive restore-etcd --snapshot {d.path}/member/snap/db --skip-hash-check"
    recorded = [(t, i) for t, i in d.wal_snapshots if i > 0]
    present = set(d.snap_files)
    matching = [(t, i) for t, i in recorded if snap_file_name(t, i) in present]
    first = wal_first_index(d.wal_files)
    if d.wal_files and not d.has_db and (matching or (first or 0) > 0):
        return [
            Problem(
                NO_DB,
                REFUSE,
                f"{d.path} has a WAL and raft snapshots but no member/snap/db: etcd will not start (it cannot find "
                "the database its snapshot refers to)",
                "restore a snapshot or a kuberevive backup with restore-etcd (the data directory is kept aside)",
            )
        ]
    if d.has_db and not d.wal_files:
        return [
            Problem(
                NO_WAL,
                REFUSE,
                f"{d.path} has member/snap/db but no WAL: etcd cannot start from it as it is",
                "restore the db as a snapshot (the old data directory is kept aside)",
                salvage,
            )
        ]
    if recorded and not matching and (first or 0) > 0:
        t, i = max(recorded, key=lambda ti: ti[1])
        return [
            Problem(
                SNAP_MISSING,
                REFUSE,
                f"{d.path}'s WAL starts at index {first} after raft snapshot {snap_file_name(t, i)}, which is not in "
                "member/snap: etcd will not start",
                "restore the member's db as a snapshot (the old data directory is kept aside)",
                salvage,
            )
        ]
    return []


# WAL records (etcd server/storage/wal): an 8-byte little-endian length (the top byte's low 3 bits are the
# padding when its top bit is set), then a walpb.Record {type=1, crc=2, data=3}; snapshotType is 5 and its data a
# walpb.Snapshot {index=1, term=2}. A zero length is the preallocated end of the file.
_WAL_SNAPSHOT_TYPE = 5
#: An entryType record's data is a raftpb.Entry {Type=1, Term=2, Index=3, Data=4}.
_WAL_ENTRY_TYPE = 2


def wal_written_end(read: Callable[[int, int], bytes], limit: int) -> int | None:
    """Where the records of a WAL file end: the offset of its first zero length (the preallocated rest, where
    etcd's own decoder stops), found by stepping from length to length (``read(offset, size)``); ``limit`` when
    none is found before it. None when the file is not a sequence of WAL records up to there (a size past
    :attr:`WalScanner.MAX_RECORD`, a short read): nothing can be said of where it ends."""
    pos = 0
    while pos < limit:
        head = read(pos, 8)
        if len(head) < 8:
            return None
        (raw,) = struct.unpack("<Q", head)
        if raw == 0:
            return pos
        size = raw & 0x00FF_FFFF_FFFF_FFFF
        if size > WalScanner.MAX_RECORD:
            return None
        pos += 8 + size + ((raw >> 56) & 0x7 if raw >> 63 else 0)
    return limit


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data):
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    raise ValueError("truncated varint")


def _fields(data: bytes) -> dict[int, int | bytes]:
    out: dict[int, int | bytes] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            out[num], pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            out[num], pos = data[pos : pos + size], pos + size
        elif wire == 1:
            out[num], pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == 5:
            out[num], pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"wire type {wire}")
    return out


class WalScanner:
    """Feed a WAL file's bytes in chunks; :attr:`snapshots` collects the (term, index) snapshot records and, given
    ``needles``, :attr:`mentioned` which of them an entry after index ``after`` carries."""

    MAX_RECORD = 64 << 20

    def __init__(self, needles: Iterable[bytes] = (), after: int = 0) -> None:
        self._buf = bytearray()
        self.snapshots: list[tuple[int, int]] = []
        self.done = False
        self.broken = False
        """A record that is not a walpb.Record or a size past :attr:`MAX_RECORD`: what follows was not read."""
        self.needles = tuple(needles)
        self.after = after
        self.mentioned: set[bytes] = set()
        """Which of ``needles`` the data of an entry with an index above ``after`` contains (raw bytes: a Put,
        a Txn or a Delete of a key carries the key as it is)."""

    def feed(self, chunk: bytes) -> None:
        if self.done:
            return
        self._buf += chunk
        while len(self._buf) >= 8:
            (raw,) = struct.unpack_from("<Q", self._buf)
            if raw == 0:
                self.done = True
                return
            size = raw & 0x00FF_FFFF_FFFF_FFFF
            pad = (raw >> 56) & 0x7 if raw >> 63 else 0
            if size > self.MAX_RECORD:
                self.done = self.broken = True  # torn or not a WAL: stop, what was found stands
                return
            if len(self._buf) < 8 + size + pad:
                return
            rec = bytes(self._buf[8 : 8 + size])
            del self._buf[: 8 + size + pad]
            try:
                fields = _fields(rec)
                data = fields.get(3, b"")
                data = data if isinstance(data, bytes) else b""
                if fields.get(1) == _WAL_SNAPSHOT_TYPE:
                    snap = _fields(data)
                    index, term = snap.get(1, 0), snap.get(2, 0)
                    if isinstance(index, int) and isinstance(term, int):
                        self.snapshots.append((term, index))
                elif fields.get(1) == _WAL_ENTRY_TYPE and self.needles:
                    entry = _fields(data)
                    index, payload = entry.get(3, 0), entry.get(4, b"")
                    if isinstance(index, int) and index > self.after and isinstance(payload, bytes):
                        self.mentioned.update(n for n in self.needles if n in payload)
            except ValueError:
                self.done = self.broken = True
                return

    def finish(self) -> None:
        """At the end of the file: a torn last record (etcd drops it when it starts) counts as mentioning what its
        bytes contain, so a caller that must be sure errs on the safe side."""
        self.mentioned.update(n for n in self.needles if n in self._buf)


# ---------------------------------------------------------------------------- the v3 store (bbolt)

_BOLT_MAGIC = 0xED0CDAED
_LEAF, _BRANCH, _META = 0x02, 0x01, 0x04
_BUCKET_LEAF = 0x01


class _Bolt:
    """A bbolt file read through ``read(offset, size)``, page by page (never whole): its newest meta's root."""

    def __init__(self, read: Callable[[int, int], bytes]) -> None:
        head = read(0, 4096)
        if len(head) < 64:
            raise ValueError("not a bbolt file")
        self.read = read
        self.page_size = struct.unpack_from("<I", head, 24)[0]
        if self.page_size < 512 or self.page_size > 1 << 16:
            raise ValueError("not a bbolt file")
        metas = []
        for pgid in (0, 1):
            page = read(pgid * self.page_size, self.page_size)
            if len(page) < 80:
                continue
            magic, _version, _ps, _flags, root, _seq, _free, _max, txid = struct.unpack_from("<IIIIQQQQQ", page, 16)
            if magic == _BOLT_MAGIC:
                metas.append((txid, root))
        if not metas:
            raise ValueError("not a bbolt file")
        self.root = max(metas)[1]

    def page_at(self, pgid: int) -> bytes:
        size = self.page_size
        p = self.read(pgid * size, size)
        overflow = struct.unpack_from("<I", p, 12)[0]
        return self.read(pgid * size, size * (1 + overflow)) if overflow else p

    def walk(self, page: bytes, base: int, out: dict[bytes, tuple[int, bytes]]) -> None:
        """Every leaf element under the page at ``page[base:]``: key -> (flags, value)."""
        for eflags, key, value in self.each(page, base):
            out[key] = (eflags, value)

    def each(self, page: bytes, base: int, depth: int = 0) -> Iterator[tuple[int, bytes, bytes]]:
        """(flags, key, value) of every leaf element under the page at ``page[base:]``, in key order, one page in
        memory per level."""
        if depth > 64:
            raise ValueError("bbolt tree too deep")
        flags, count = struct.unpack_from("<HH", page, base + 8)
        elems = base + 16
        if flags & _BRANCH:
            for i in range(count):
                _pos, _ksize, child = struct.unpack_from("<IIQ", page, elems + 16 * i)
                yield from self.each(self.page_at(child), 0, depth + 1)
        elif flags & _LEAF:
            for i in range(count):
                eflags, pos, ksize, vsize = struct.unpack_from("<IIII", page, elems + 16 * i)
                start = elems + 16 * i + pos
                yield eflags, page[start : start + ksize], page[start + ksize : start + ksize + vsize]
        else:
            raise ValueError(f"unexpected bbolt page flags {flags:#x}")

    def last_key(self, page: bytes, base: int) -> bytes | None:
        """The greatest key under the page at ``page[base:]``: the rightmost path only."""
        for _depth in range(64):
            flags, count = struct.unpack_from("<HH", page, base + 8)
            if count == 0:
                return None
            last = base + 16 + 16 * (count - 1)
            if flags & _BRANCH:
                page, base = self.page_at(struct.unpack_from("<IIQ", page, last)[2]), 0
            elif flags & _LEAF:
                _eflags, pos, ksize, _vsize = struct.unpack_from("<IIII", page, last)
                return page[last + pos : last + pos + ksize]
            else:
                raise ValueError(f"unexpected bbolt page flags {flags:#x}")
        raise ValueError("bbolt tree too deep")

    def bucket_page(self, name: bytes) -> tuple[bytes, int] | None:
        """The root page of the top-level bucket ``name`` and where it starts in it; None without the bucket."""
        top: dict[bytes, tuple[int, bytes]] = {}
        self.walk(self.page_at(self.root), 0, top)
        entry = top.get(name)
        if entry is None or not entry[0] & _BUCKET_LEAF:
            return None
        value = entry[1]
        broot = struct.unpack_from("<Q", value, 0)[0]
        return (value, 16) if broot == 0 else (self.page_at(broot), 0)  # inline: its page follows the header


def bolt_bucket(read: Callable[[int, int], bytes], name: bytes) -> dict[bytes, bytes]:
    """Every key and value of the top-level bucket ``name`` of a bbolt file, read through ``read(offset, size)``
    (pages only: the file is never read whole). Raises ValueError when it is not a bbolt file."""
    bolt = _Bolt(read)
    found = bolt.bucket_page(name)
    if found is None:
        return {}
    out: dict[bytes, tuple[int, bytes]] = {}
    bolt.walk(*found, out)
    return {k: v for k, (f, v) in out.items() if not f & _BUCKET_LEAF}


def _revision_of(key: bytes) -> int:
    """The main revision of an mvcc key (``revToBytes``: 8 bytes big-endian, ``_``, 8 bytes sub revision)."""
    if len(key) < 8:
        raise ValueError("not an etcd revision key")
    return int.from_bytes(key[:8], "big")


def stored_revision(read: Callable[[int, int], bytes]) -> int:
    """The current revision of an etcd v3 store (a data directory's ``member/snap/db``, or a snapshot): the
    greatest revision in bucket ``key`` (read along its rightmost pages only), or the finished compaction's when
    that is greater (a compacted tombstone). ValueError when it is not an etcd db."""
    bolt = _Bolt(read)
    found = bolt.bucket_page(b"key")
    if found is None:
        raise ValueError("no 'key' bucket: not an etcd v3 store")
    last = bolt.last_key(*found)
    compacted = bolt_bucket(read, b"meta").get(b"finishedCompactRev")
    return max(_revision_of(last) if last else 0, _revision_of(compacted) if compacted else 0)


def consistent_index(read: Callable[[int, int], bytes]) -> int:
    """The raft index of the last entry applied to the v3 store (bucket ``meta``, ``consistent_index``: 8 bytes
    big-endian, written in the same bbolt transaction as the entry's changes). Entries of the WAL after it are
    applied again when etcd starts. ValueError without it."""
    value = bolt_bucket(read, b"meta").get(b"consistent_index")
    if value is None or len(value) != 8:
        raise ValueError("no consistent_index in bucket 'meta': not an etcd v3 store")
    return int.from_bytes(value, "big")


def latest_values(
    read: Callable[[int, int], bytes], keys: Iterable[bytes], expired: Callable[[], bool] = lambda: False
) -> dict[bytes, bytes]:
    """The value of the newest revision of each of ``keys`` in an etcd v3 store (bucket ``key``: revision ->
    mvccpb.KeyValue {key=1, create_revision=2, mod_revision=3, version=4, value=5, lease=6}); a key whose newest
    revision is a tombstone (a revision key ending in ``t``) or that has none is left out. Every revision is
    visited, as etcd does when it builds its index at start; ``expired()`` is asked every page and raises
    ValueError("time budget") when true. ValueError when it is not an etcd db."""
    wanted = frozenset(keys)
    bolt = _Bolt(read)
    found = bolt.bucket_page(b"key")
    if found is None:
        raise ValueError("no 'key' bucket: not an etcd v3 store")
    newest: dict[bytes, tuple[bytes, bytes | None]] = {}
    checked = 0
    for eflags, rev, value in bolt.each(*found):
        checked += 1
        if checked % 256 == 0 and expired():
            raise ValueError("time budget")
        if eflags & _BUCKET_LEAF or not any(k in value for k in wanted):
            continue
        kv = _fields(value)
        key = kv.get(1)
        if not isinstance(key, bytes) or key not in wanted:
            continue
        tombstone = len(rev) == 18 and rev[17:] == b"t"
        order = rev[:17]
        if key not in newest or order > newest[key][0]:
            data = kv.get(5, b"")
            newest[key] = (order, None if tombstone else (data if isinstance(data, bytes) else b""))
    return {k: v for k, (_order, v) in newest.items() if v is not None}


def stored_members(read: Callable[[int, int], bytes]) -> tuple[Member, ...]:
    """The members of the v3 store (bucket ``members``: key the id in hex, value the member as JSON)."""
    out = []
    for key, value in sorted(bolt_bucket(read, b"members").items()):
        try:
            doc = json.loads(value)
        except ValueError:
            continue
        mid = doc.get("id")
        out.append(
            Member(
                id=f"{mid:x}" if isinstance(mid, int) else key.decode(errors="replace"),
                name=str(doc.get("name") or ""),
                peer_urls=tuple(doc.get("peerURLs") or ()),
                client_urls=tuple(doc.get("clientURLs") or ()),
                is_learner=bool(doc.get("isLearner")),
            )
        )
    return tuple(out)


# ------------------------------------------------------------------------------------------ preflight


def preflight(facts: Facts) -> list[Problem]:
    """Every check whose facts are known, in the order an operator should fix them."""
    out: list[Problem] = []
    if facts.data_dir is not None:
        out += check_data_dir(facts.data_dir)
    if facts.status is not None:
        if facts.target_version:
            out += check_version(facts.status.version, facts.target_version)
        out += check_alarms(facts.status.alarms, facts.members or ())
        if not any(p.id == NOSPACE for p in out):
            out += check_quota(facts.status.db_size, facts.quota_bytes)
    elif facts.data_dir is not None and facts.data_dir.has_db and facts.quota_bytes:
        out += check_quota(facts.data_dir.db_size, facts.quota_bytes)
    if facts.members is not None:
        out += check_learners(facts.members)
        out += check_membership(facts.members, facts.local_name, facts.stored_members)
        if facts.other_lists:
            out += check_member_lists({"this node": facts.members, **facts.other_lists})
    return out


def refuse(problems: Sequence[Problem], operation: str, *, allowed: Iterable[str] = ()) -> None:
    """Raise one :class:`EtcdError` naming every refusing problem (minus ``allowed`` ids); nothing was changed."""
    ok = set(allowed)
    blocking = [p for p in problems if p.severity == REFUSE and p.id not in ok]
    if not blocking:
        return
    first = blocking[0]
    names = ", ".join(p.id for p in blocking)
    more = f" (and {len(blocking) - 1} more: {names})" if len(blocking) > 1 else ""
    hint = first.fix + (f"; guided salvage: {first.salvage}" if first.salvage else "")
    raise EtcdError(f"{operation} refused [{first.id}]: {first.message}{more}; nothing was changed", hint)
