"""The etcd safety preflight's pure checks (core/etcdsafety.py): each problem named, each fix given; the WAL and
bbolt readers against bytes laid out as etcd and bbolt write them (real files: integration/test_etcd_safety.py)."""

from __future__ import annotations

import json
import struct

import pytest

from kuberevive.core import etcdsafety as s
from kuberevive.errors import EtcdError


def M(mid: str, name: str = "", learner: bool = False) -> s.Member:
    return s.Member(mid, name, (f"https://10.0.0.{int(mid, 16) % 250}:2380",), (), learner)


@pytest.mark.parametrize(
    ("running", "target", "ids"),
    [
        ("3.5.24", "3.6.5-0", [s.VERSION_UPGRADE]),
        ("3.5.25", "v3.6.8", [s.VERSION_UPGRADE]),
        ("3.5.26", "3.6.5-0", []),
        ("3.5.24", "3.5.24-0", []),
        ("3.6.8", "3.6.5-0", []),
        ("3.6.8", "3.5.24-0", [s.VERSION_DOWNGRADE]),
        ("garbage", "3.6.5-0", []),
    ],
)
def test_version_path(running: str, target: str, ids: list[str]) -> None:
    assert [p.id for p in s.check_version(running, target)] == ids


def test_nospace_alarm_is_a_refusal_with_the_guided_salvage() -> None:
    [p] = s.check_alarms([("a1", "NOSPACE")], [M("a1", "cp1")])
    assert p.id == s.NOSPACE and p.severity == s.REFUSE and "cp1" in p.message
    assert p.salvage == "kuberevive etcd-salvage nospace --apply"
    assert [x.id for x in s.check_alarms([("a1", "CORRUPT")])] == [s.CORRUPT]
    assert s.check_alarms([]) == []


@pytest.mark.parametrize(
    ("size", "quota", "ids"),
    [(100, 1000, []), (800, 1000, [s.DB_NEAR_QUOTA]), (1000, 1000, [s.DB_QUOTA]), (3 << 30, 0, [s.DB_QUOTA])],
)
def test_quota(size: int, quota: int, ids: list[str]) -> None:
    assert [p.id for p in s.check_quota(size, quota)] == ids


def test_effective_quota_is_etcds_default_when_unset() -> None:
    assert s.effective_quota(None) == s.effective_quota("0") == s.effective_quota("x") == 2 << 30
    assert s.effective_quota("8589934592") == 8 << 30


def test_learner_unstarted_missing_and_zombie_members() -> None:
    live = (M("a1", "cp1"), M("b2", "cp2", learner=True), M("c3"))
    ids = [p.id for p in s.check_learners(live)]
    assert ids == [s.LEARNER]
    assert "etcdctl member promote b2" in s.check_learners(live)[0].fix
    found = s.check_membership(live, "cp9", stored=(M("a1", "cp1"), M("dd", "gone")))
    assert [p.id for p in found] == [s.UNSTARTED, s.NOT_A_MEMBER, s.ZOMBIE]
    assert "gone" in found[2].message
    assert s.check_membership((M("a1", "cp1"),), "cp1", stored=(M("a1", "cp1"),)) == []


def test_member_lists_must_agree() -> None:
    same = {"cp1": (M("a1", "cp1"), M("b2", "cp2")), "cp2": (M("b2", "cp2"), M("a1", "cp1"))}
    assert s.check_member_lists(same) == []
    differ = {"cp1": (M("a1", "cp1"), M("b2", "cp2")), "cp2": (M("b2", "cp2"),)}
    [p] = s.check_member_lists(differ)
    assert p.id == s.LISTS_DIFFER and "cp2: 1 member(s)" in p.message


def test_single_member_restore() -> None:
    assert s.check_single_member((M("a1", "cp1"),), "cp1") == []
    [p] = s.check_single_member((M("a1", "cp1"), M("b2", "cp2")), "cp1")
    assert p.id == s.MULTI_MEMBER and "cp2" in p.message


def test_data_dir_problems() -> None:
    wal0 = ("0000000000000000-0000000000000000.wal",)
    purged = ("0000000000000003-0000000000000190.wal",)
    snap = s.snap_file_name(2, 300)
    assert snap == "0000000000000002-000000000000012c.snap"
    assert s.wal_first_index(purged + wal0) == 0 and s.wal_first_index(purged) == 0x190
    assert s.check_data_dir(s.DataDir("/d", exists=False)) == []
    assert s.check_data_dir(s.DataDir("/d", True, wal0, (), True, 4096, ((0, 0),))) == []
    # no db: fatal once a snapshot (or a purged WAL) means etcd needs the db; a whole WAL is replayed
    assert [p.id for p in s.check_data_dir(s.DataDir("/d", True, wal0, (snap,), False, 0, ((2, 300),)))] == [s.NO_DB]
    assert [p.id for p in s.check_data_dir(s.DataDir("/d", True, purged, (), False))] == [s.NO_DB]
    assert s.check_data_dir(s.DataDir("/d", True, wal0, (), False)) == []
    assert [p.id for p in s.check_data_dir(s.DataDir("/d", True, (), (), True, 4096))] == [s.NO_WAL]
    ok = s.DataDir("/d", True, purged, (snap,), True, 4096, ((2, 300),))
    assert s.check_data_dir(ok) == []
    # the .snap is gone: fatal only when the WAL no longer starts at 0
    assert s.check_data_dir(s.DataDir("/d", True, wal0, (), True, 4096, ((0, 0), (2, 300)))) == []
    [p] = s.check_data_dir(s.DataDir("/d", True, purged, (), True, 4096, ((2, 300),)))
    assert p.id == s.SNAP_MISSING and snap in p.message
    assert p.salvage == "kuberevive restore-etcd --snapshot /d/member/snap/db --skip-hash-check"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _record(rtype: int, data: bytes) -> bytes:
    rec = b"\x08" + _varint(rtype) + b"\x10" + _varint(12345) + b"\x1a" + _varint(len(data)) + data
    pad = (8 - len(rec) % 8) % 8
    length = len(rec) | ((0x80 | pad) << 56 if pad else 0)
    return struct.pack("<Q", length) + rec + b"\0" * pad


def test_wal_scanner_finds_snapshot_records_across_chunks() -> None:
    snap = b"\x08" + _varint(300) + b"\x10" + _varint(2)
    wal = _record(1, b"meta") + _record(5, b"") + _record(2, b"x" * 1000) + _record(5, snap) + b"\0" * 64
    scanner = s.WalScanner()
    for i in range(0, len(wal), 7):
        scanner.feed(wal[i : i + 7])
    assert scanner.snapshots == [(0, 0), (2, 300)] and scanner.done


def test_a_wal_files_records_end_at_its_first_zero_length() -> None:
    records = _record(1, b"meta") + _record(2, b"x" * 1000) + _record(2, b"y" * 3)
    wal = records + b"\0" * 4096

    def read(at: int, size: int) -> bytes:
        return wal[at : at + size]

    assert s.wal_written_end(read, len(wal)) == len(records)  # etcd's decoder stops there too
    assert s.wal_written_end(read, 8) == 8  # past the limit before the end: read up to the limit
    assert s.wal_written_end(lambda at, size: records[at : at + size], len(records)) == len(records)
    assert s.wal_written_end(lambda at, size: records[at : at + size], 10**6) is None  # short read: unknown
    assert s.wal_written_end(lambda at, size: b"\xff" * size, 4096) is None  # not WAL records


def _bolt(members: dict[bytes, bytes], page: int = 4096) -> bytes:
    """A minimal bbolt file: two meta pages, a root leaf holding the bucket ``members`` inline."""

    def leaf(items: list[tuple[int, bytes, bytes]]) -> bytes:
        head = struct.pack("<QHHI", 0, 0x02, len(items), 0)
        elems, data = b"", b""
        for i, (flags, k, v) in enumerate(items):
            pos = 16 * (len(items) - i) + len(data)
            elems += struct.pack("<IIII", flags, pos, len(k), len(v))
            data += k + v
        return head + elems + data

    inline = struct.pack("<QQ", 0, 0) + leaf([(0, k, v) for k, v in sorted(members.items())])
    root = leaf([(0x01, b"members", inline), (0x01, b"key", struct.pack("<QQ", 0, 0) + leaf([]))])
    buf = bytearray(page * 4)
    for pgid, txid in ((0, 1), (1, 2)):
        meta = struct.pack("<QHHI", pgid, 0x04, 0, 0) + struct.pack(
            "<IIIIQQQQQ", 0xED0CDAED, 2, page, 0, 3 if txid == 2 else 2, 0, 0, 4, txid
        )
        buf[pgid * page : pgid * page + len(meta)] = meta
    buf[3 * page : 3 * page + len(root)] = root
    buf[2 * page : 2 * page + 16] = struct.pack("<QHHI", 2, 0x02, 0, 0)  # the older meta's (empty) root
    return bytes(buf)


def test_stored_members_from_a_bbolt_file() -> None:
    doc = {"id": 0xA1, "peerURLs": ["https://10.0.0.1:2380"], "name": "cp1", "isLearner": True}
    db = _bolt({b"a1": json.dumps(doc).encode(), b"b2": json.dumps({"id": 0xB2, "peerURLs": []}).encode()})
    reads: list[int] = []

    def read(offset: int, size: int) -> bytes:
        reads.append(size)
        return db[offset : offset + size]

    members = s.stored_members(read)
    assert members == (
        s.Member("a1", "cp1", ("https://10.0.0.1:2380",), (), True),
        s.Member("b2", "", (), (), False),
    )
    assert max(reads) <= 4096  # page by page, never the whole file
    with pytest.raises(ValueError):
        s.stored_members(lambda o, n: b"\0" * n)


def test_preflight_and_refuse_name_every_problem() -> None:
    facts = s.Facts(
        status=s.Status("https://x", "3.5.24", "a1", 10, alarms=(("a1", "NOSPACE"),)),
        members=(M("a1", "cp1"), M("b2", "cp2", learner=True)),
        local_name="cp1",
        quota_bytes=1000,
        target_version="3.6.5-0",
    )
    problems = s.preflight(facts)
    assert [p.id for p in problems] == [s.VERSION_UPGRADE, s.NOSPACE, s.LEARNER]
    with pytest.raises(EtcdError) as err:
        s.refuse(problems, "etcd restart")
    assert err.value.message.startswith("etcd restart refused [etcd-upgrade-path]")
    assert "etcd-nospace" in err.value.message and "nothing was changed" in err.value.message
    s.refuse(problems, "x", allowed=[s.VERSION_UPGRADE, s.NOSPACE, s.LEARNER])  # nothing left: no error
    s.refuse([s.Problem("w", s.WARN, "m", "f")], "x")


def test_restore_preflight() -> None:
    facts = s.Facts(members=(M("a1", "cp1"), M("b2", "cp2")), local_name="cp1", quota_bytes=1 << 20)
    assert [p.id for p in s.restore_preflight(facts, 2 << 20)] == [s.DB_QUOTA, s.MULTI_MEMBER]
    assert s.restore_preflight(s.Facts(quota_bytes=1 << 20), 4096) == []
