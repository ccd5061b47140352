"""Peers found from the etcd member list (issue 12): on a control plane whose etcd data survives, the other members
its db records (names and peer URLs, read from the raw bytes without starting etcd) are the candidate peers.
``diagnose`` lists them with the exact ``--peer`` flags; ``recover`` names them in the plan and ``--apply`` refuses
before anything is written (a new CA would cut this member off its peers) unless a peer is given."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path, PurePosixPath

import pytest

from kuberevive.cli.app import main
from kuberevive.cli.env import Environment
from kuberevive.core import diagnose as d
from kuberevive.core import salvage
from kuberevive.errors import PlanError
from kuberevive.io.noderoot import NodeRoot
from kuberevive.io.snapshot import etcd_data
from kuberevive.run.journal import RecoveryJournal
from kuberevive.run.recover import plan_recovery
from tests.unit.test_executor import ADDRESS, Cluster
from tests.unit.test_salvage import CP0, CP2, HaCluster, Peer

DB = PurePosixPath("/var/lib/etcd/member/snap/db")


def membership(name: str, address: str, member_id: int) -> bytes:
    """A member record as etcd stores it in its members bucket (and in WAL entries)."""
    return json.dumps(
        {"id": member_id, "peerURLs": [f"https://{address}:2380"], "name": name, "clientURLs": []},
        separators=(",", ":"),
    ).encode()


def three_members() -> bytes:
    """The raw bytes of a 3-member db: records among binary page data, one unstarted (unnamed) member."""
    return b"\x00\x01".join(
        [
            b"\xff" * 64,
            membership("cp0", CP0, 1),
            membership("cp1", ADDRESS, 2),
            membership("cp2", CP2, 3),
            b'{"id":4,"peerURLs":["https://172.30.2.99:2380"],"name":"","clientURLs":[]}',
            b"\xfe" * 64,
        ]
    )


def test_the_member_records_give_names_and_peer_urls_and_this_node_is_left_out() -> None:
    members = d.etcd_members(three_members())
    assert members["cp0"] == (f"https://{CP0}:2380",) and members["cp2"] == (f"https://{CP2}:2380",)
    assert d.etcd_member_names(three_members()) == {"cp0", "cp1", "cp2", ""}
    peers = salvage.member_peers(sorted(members.items()), "cp1")
    assert [(p.name, p.address, p.is_control_plane) for p in peers] == [("cp0", CP0, True), ("cp2", CP2, True)]
    assert salvage.peer_flags(peers) == f"--peer cp0={CP0} --peer cp2={CP2}"
    assert salvage.member_peers([("cp1", (f"https://{ADDRESS}:2380",))], "cp1") == ()  # a single member: none


def test_a_removed_member_is_not_a_peer() -> None:
    """A removed member's record may linger in free pages of the db; its id in members_removed (hex -> "removed")
    says it is gone."""
    raw = three_members() + b"\x00\x10" + format(3, "x").encode() + b"removed\x00"
    assert set(d.etcd_members(raw)) == {"cp0", "cp1", ""}
    assert d.etcd_removed_ids(b"\x0012a4removed") == {0x12A4} and d.etcd_removed_ids(b"unremoved") == set()


def test_removed_ids_are_what_the_members_removed_pattern_finds_in_any_bytes() -> None:
    """etcd_removed_ids searches the word, not every byte (the regex took 11 s per 16 MiB of a lab db): it finds
    exactly what the pattern ``(?<![0-9a-f])([0-9a-f]{1,16})removed`` finds, on random mixes of hex runs (longer
    than an id too), the word, and other bytes."""
    pattern = re.compile(rb"(?<![0-9a-f])([0-9a-f]{1,16})removed")
    rnd = random.Random(17)
    pieces = (b"removed", b"ed", b"d", b"x", b"\x00", b"Removed")
    for _ in range(5000):
        chunk = b"".join(
            rnd.choice(pieces) if rnd.random() < 0.5 else bytes(rnd.choices(b"0123456789abcdef", k=rnd.randint(0, 20)))
            for _ in range(rnd.randint(0, 8))
        )
        assert d.etcd_removed_ids(chunk) == {int(m.group(1), 16) for m in pattern.finditer(chunk)}, chunk
    assert d.etcd_removed_ids(b"8e9e05c52164694dremoved\x00abremoved") == {0x8E9E05C52164694D, 0xAB}
    assert d.etcd_removed_ids(b"18e9e05c52164694dremoved") == set()  # 17 hex digits: not an id


def test_the_node_s_data_dir_is_read_without_etcd(tmp_path: Path) -> None:
    root = NodeRoot(tmp_path)
    root.atomic_write(DB, three_members(), 0o600)
    data = etcd_data(root, PurePosixPath("/var/lib/etcd"))
    assert data.has_member and dict(data.member_peer_urls)["cp2"] == (f"https://{CP2}:2380",)
    wal = PurePosixPath("/var/lib/etcd/member/wal/0000000000000000-0000000000000000.wal")
    root.atomic_write(wal, b"\x001removed", 0o600)  # cp0 (id 1) removed, recorded in another file
    assert "cp0" not in dict(etcd_data(root, PurePosixPath("/var/lib/etcd")).member_peer_urls)  # across files


def test_a_wal_file_is_read_up_to_the_end_of_its_records_only(tmp_path: Path) -> None:
    """A WAL file is 64 MB preallocated, its records fill the first few: the member scan reads those (0.24 s for
    the file before, 6 ms after, on the lab) and what lies past the first zero length, which etcd never reads,
    names no member."""
    from tests.unit.test_etcdsafety import _record

    root = NodeRoot(tmp_path)
    root.atomic_write(DB, membership("cp1", ADDRESS, 2), 0o600)
    records = _record(1, b"meta") + _record(2, b"\x00" + membership("cp2", CP2, 3))
    beyond = b"\0" * 64 + membership("cp0", CP0, 1)  # not a record etcd reads
    wal = PurePosixPath("/var/lib/etcd/member/wal/0000000000000000-0000000000000000.wal")
    root.atomic_write(wal, records + beyond + b"\0" * 4096, 0o600)
    members = dict(etcd_data(root, PurePosixPath("/var/lib/etcd")).member_peer_urls)
    assert set(members) == {"cp1", "cp2"}


def test_recover_names_the_peers_and_apply_refuses_before_anything_is_written(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    c.root.atomic_write(DB, three_members(), 0o600)
    plan = plan_recovery(c.host, {}, None, environ={}, effects=c.effects())
    note = next(n for n in plan.notes if "other member(s)" in n)
    assert f"cp0 ({CP0}), cp2 ({CP2})" in note and f"--peer cp0={CP0} --peer cp2={CP2}" in note
    before = c.files()
    with pytest.raises(PlanError, match="etcd data lists 2 other member") as err:
        c.recover()
    assert "nothing was changed" in err.value.message and f"--peer cp0={CP0}" in err.value.hint
    assert c.files() == before and RecoveryJournal.load(c.root) is None
    assert not any(cmd.startswith(("systemctl restart", "crictl stop")) for cmd in c.host.commands)


def test_with_a_peer_the_members_are_the_ones_etcd_rejoins(tmp_path: Path) -> None:
    peer = Peer("cp0", CP0)
    c = HaCluster(tmp_path, peer)
    c.kubelet_cert_from(peer.pki)
    c.root.atomic_write(DB, three_members(), 0o600)
    plan = plan_recovery(c.host, {}, None, environ={}, effects=c.fx(), options=c.options)
    assert not any("other member(s)" in n for n in plan.notes) and plan.steps[0].id == "salvage-trust"
    assert c.recover().applied[0] == "salvage-trust"


def test_diagnose_lists_the_other_members_as_peers_with_the_flags(tmp_path: Path) -> None:
    root = NodeRoot(tmp_path)
    root.atomic_write(DB, three_members(), 0o600)
    root.atomic_write(PurePosixPath("/etc/hostname"), b"cp1\n", 0o644)
    out, err = io.StringIO(), io.StringIO()
    main(["diagnose", "--root", str(tmp_path), "--offline", "--json"], Environment(stdout=out, stderr=err, environ={}))
    findings = {f["id"]: f for f in json.loads(out.getvalue())["findings"]}
    assert "recovery.etcd-peers" in findings, err.getvalue()
    f = findings["recovery.etcd-peers"]
    assert f["details"]["peers"] == [f"cp0={CP0}", f"cp2={CP2}"]
    assert f"kuberevive recover --apply --peer cp0={CP0} --peer cp2={CP2}" in f["hint"]
