"""Values read from a stopped etcd member's files (``io/etcdprobe.stored_values``: its bbolt db and WAL) against
what the real etcd serves once started on the same data: recover reads kube-system/kubeadm-config that way so it
can start the API server together with etcd. Each etcd build of :mod:`tests.integration.etcdbin`."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest

from kuberevive.core import etcdsafety as s
from kuberevive.core.generate import Target, generate
from kuberevive.io import etcdprobe
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.config import NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config
from tests.integration.etcdbin import BUILDS, Member, etcd_bin

pytestmark = pytest.mark.integration
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
KEY = "/registry/configmaps/kube-system/kubeadm-config"
GONE = "/registry/configmaps/kube-system/gone"
DATA = PurePosixPath("/var/lib/etcd")


@pytest.fixture(params=list(BUILDS))
def member(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Member]:
    root = tmp_path / "node"
    root.mkdir()
    facts = NodeFacts(hostname="etcd-node")
    cfg = load_kubeadm_config((CONFIGS / "defaults.yaml").read_text(), facts)
    NodeRoot(root).write_all(generate(Target.CERTS, cfg, facts, datetime.now(UTC), {}).artifacts)
    m = Member(etcd_bin(request.param), root, "n1", root / "var/lib/etcd")
    yield m
    m.stop()


def _served(m: Member, key: str) -> str | None:
    m.start()
    m.wait_healthy()
    out = m.etcdctl("get", key, "--print-value-only").stdout
    m.stop()
    return out.rstrip("\n") if out else None


def test_the_newest_value_is_read_and_a_deleted_key_is_absent(member: Member) -> None:
    member.start()
    member.wait_healthy()
    for i in range(300):  # enough revisions for branch pages
        member.etcdctl("put", f"/registry/other/k{i:03}", "x" * 200)
    member.etcdctl("put", KEY, "first")
    member.etcdctl("put", GONE, "soon deleted")
    member.etcdctl("put", KEY, "second")
    member.etcdctl("del", GONE)
    member.stop()
    root = NodeRoot(member.root)
    got = etcdprobe.stored_values(root, DATA, [KEY, GONE, "/registry/none"])
    assert got == {KEY: b"second"}
    assert _served(member, KEY) == "second"  # what etcd serves on the same files
    # the applied index is read from the db (a fresh member applies a few entries of its own before any put)
    read = etcdprobe._read_db(root, DATA / "member/snap/db", s.consistent_index)
    assert read is not None and read > 300


def test_a_value_only_in_the_wal_makes_the_read_unsure(member: Member) -> None:
    """etcd killed before its backend committed the last put (a 10 s batch interval): the db still has the old
    value and the WAL the new one. The read must not return the old value; once etcd has started (and applied
    the WAL) and stopped cleanly, the new value is read."""
    member.start(extra=("--backend-batch-interval=10s",))
    member.wait_healthy()
    member.etcdctl("put", KEY, "old")
    member.stop()
    member.start(extra=("--backend-batch-interval=10s", "--backend-batch-limit=100000"))
    member.wait_healthy()
    member.etcdctl("put", KEY, "new")
    assert member.proc is not None
    member.proc.send_signal(signal.SIGKILL)
    member.proc.wait()
    member.proc = None
    root = NodeRoot(member.root)
    stale = etcdprobe._read_db(root, DATA / "member/snap/db", lambda r: s.latest_values(r, [KEY.encode()]))
    assert stale == {KEY.encode(): b"old"}  # the db alone would be wrong: this test can fail
    assert etcdprobe.stored_values(root, DATA, [KEY]) is None
    # an entry after the applied index that names another key does not make this key unsure
    assert etcdprobe.stored_values(root, DATA, ["/registry/configmaps/kube-system/other"]) == {}
    assert _served(member, KEY) == "new"
    assert etcdprobe.stored_values(root, DATA, [KEY]) == {KEY: b"new"}


def test_no_db_no_values_and_the_time_budget_is_kept(member: Member) -> None:
    root = NodeRoot(member.root)
    assert etcdprobe.stored_values(root, DATA, [KEY]) is None  # nothing there yet
    member.start()
    member.wait_healthy()
    member.etcdctl("put", KEY, "v")
    time.sleep(1)  # past the backend's 100 ms batch: the db has the put, read alone it would give "v"
    assert etcdprobe.stored_values(root, DATA, [KEY]) is None  # etcd runs (it holds its WAL's lock)
    member.stop()
    ticks = iter(range(1000))
    assert etcdprobe.stored_values(root, DATA, [KEY], budget=0.5, clock=lambda: float(next(ticks))) is None
    assert etcdprobe.stored_values(root, DATA, [KEY]) == {KEY: b"v"}
