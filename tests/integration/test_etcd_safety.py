"""The etcd safety preflight and its salvages against real etcd 3.5.24 and 3.6.8 (tests/integration/etcdbin.py),
each member on loopback ports with kubeadm's certificates in a temporary node root:

- a NOSPACE member (a small --quota-backend-bytes, filled until etcd raises the alarm): found by the preflight,
  refused by name, then salvaged by ``kuberevive etcd-salvage nospace --apply`` (plan first: nothing changes);
- a member whose data dir lacks its raft ``.snap`` file: found from the WAL's snapshot records, the real etcd
  indeed does not start from it, and ``restore_etcd(... skip_hash_check=True)`` of its ``member/snap/db`` brings
  every key back;
- membership: a two-member cluster with an unstarted learner is refused by ``restore-etcd`` (split brain), two
  single-member clusters' lists disagree, a 3.5.24 member under a 3.6 image (or 3.6 data under a 3.5 image) is
  refused; the v3 store's members read from the real db (bbolt pages) equal the live member list.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest

from kuberevive.core import etcdsafety as s
from kuberevive.core.backup import etcd_member
from kuberevive.core.generate import Target, generate
from kuberevive.errors import EtcdError
from kuberevive.io import etcdprobe
from kuberevive.io.etcdrestore import restore_etcd
from kuberevive.io.host import LocalHost
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.config import NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config
from kuberevive.run.quorum import remote_reader
from tests.integration.etcdbin import BUILDS, Member, etcd_bin, manifest_for

pytestmark = pytest.mark.integration
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
LABELS = list(BUILDS)


@pytest.fixture(params=LABELS)
def build(request: pytest.FixtureRequest) -> tuple[str, Path]:
    return request.param, etcd_bin(request.param)


@pytest.fixture
def node(tmp_path: Path) -> Path:
    """A node root with kubeadm's certificates."""
    root = tmp_path / "node"
    root.mkdir()
    facts = NodeFacts(hostname="etcd-node")
    cfg = load_kubeadm_config((CONFIGS / "defaults.yaml").read_text(), facts)
    NodeRoot(root).write_all(generate(Target.CERTS, cfg, facts, datetime.now(UTC), {}).artifacts)
    return root


@pytest.fixture
def members() -> Iterator[list[Member]]:
    started: list[Member] = []
    yield started
    for m in started:
        m.stop()


def _member(build: tuple[str, Path], node: Path, name: str, started: list[Member], data: Path | None = None) -> Member:
    m = Member(build[1], node, name, data or node / "var/lib/etcd")
    started.append(m)
    return m


def _put_manifest(node: Path, member: Member, tag: str, extra: tuple[str, ...] = ()) -> None:
    path = node / "etc/kubernetes/manifests/etcd.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(manifest_for(member, tag, extra))


def _tag(label: str) -> str:
    return label.removeprefix("etcd-") + "-0"


def kuberevive(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kuberevive", *args], capture_output=True, text=True, timeout=600, check=False
    )


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ NOSPACE


def test_nospace_member_is_refused_then_salvaged(build: tuple[str, Path], node: Path, members: list[Member]) -> None:
    quota = 16 << 20
    m = _member(build, node, "n1", members)
    extra = (f"--quota-backend-bytes={quota}",)
    m.start(extra=extra)
    m.wait_healthy()
    _put_manifest(node, m, _tag(build[0]), extra)
    # fill: the same keys again and again (history the compaction can free) until etcd raises NOSPACE
    value = "x" * (256 << 10)
    for i in range(2000):
        put = m.etcdctl("put", f"/registry/fill/k{i % 8}", check=False, stdin=value)  # the value from stdin
        if put.returncode != 0:
            assert "database space exceeded" in put.stderr, put.stderr
            break
    else:
        pytest.fail("etcd never raised NOSPACE")
    assert "NOSPACE" in m.etcdctl("alarm", "list").stdout

    root = NodeRoot(node)
    facts = etcdprobe.facts(root)
    assert facts.status is not None and facts.status.version == build[0].removeprefix("etcd-")
    problems = s.preflight(facts)
    assert s.NOSPACE in [p.id for p in problems]
    with pytest.raises(EtcdError, match=r"refused \[etcd-nospace\]"):
        s.refuse(problems, "etcd restart")

    plan = kuberevive("etcd-salvage", "nospace", "--root", str(node))
    assert plan.returncode == 0, plan.stderr
    assert (
        "found [etcd-nospace]" in plan.stdout
        and "would compact" in plan.stdout
        and "nothing was changed" in plan.stdout
    )
    assert "NOSPACE" in m.etcdctl("alarm", "list").stdout  # the plan changed nothing

    done = kuberevive("etcd-salvage", "nospace", "--root", str(node), "--apply")
    assert done.returncode == 0, done.stderr
    assert "disarmed NOSPACE" in done.stdout and "writes accepted" in done.stdout
    assert m.etcdctl("alarm", "list").stdout.strip() == ""
    m.etcdctl("put", "/registry/after", "ok")
    assert m.etcdctl("get", "/registry/after", "--print-value-only").stdout.strip() == "ok"
    assert s.NOSPACE not in [p.id for p in s.preflight(etcdprobe.facts(root))]


# ------------------------------------------------------------------------------------ missing .snap file


def _filled(build: tuple[str, Path], node: Path, members: list[Member]) -> Member:
    """A member with 120 keys and raft snapshots (``--snapshot-count=20``), stopped, and a snapshot of it."""
    m = _member(build, node, "n1", members)
    m.start(extra=("--snapshot-count=20",))
    m.wait_healthy()
    for i in range(120):
        m.etcdctl("put", f"/registry/keep/k{i:03}", f"v{i}")
    m.etcdctl("snapshot", "save", str(node.parent / "before.db"))
    m.stop()
    assert sorted((m.data / "member/snap").glob("*.snap")), "etcd wrote no raft snapshot (.snap)"
    assert s.check_data_dir(etcdprobe.data_dir(NodeRoot(node), _node(m.data, node))) == []  # intact
    return m


def _restore_and_count(build: tuple[str, Path], node: Path, m: Member, members: list[Member], **kw: object) -> int:
    env_path = os.environ["PATH"]
    os.environ["PATH"] = f"{build[1]}:{env_path}"
    try:
        result = restore_etcd(NodeRoot(node), fallback_manifest=manifest_for(m, _tag(build[0])), **kw)  # type: ignore[arg-type]
    finally:
        os.environ["PATH"] = env_path
    assert result.old_data_dir is not None and (node / str(result.old_data_dir).lstrip("/") / "member").is_dir()
    m2 = _member(build, node, "n1", members)
    m2.client, m2.peer = m.client, m.peer
    m2.start(initial_cluster=f"n1={m.peer_url}")
    m2.wait_healthy()
    return len(m2.etcdctl("get", "/registry/keep/", "--prefix", "--keys-only").stdout.split())


def test_the_revision_read_from_the_db_is_etcds(build: tuple[str, Path], node: Path, members: list[Member]) -> None:
    """quorum-restore's donor choice: the revision read from a stopped member's db (its rightmost bbolt pages, with
    pread or with dd) is the one the live etcd reported, also after a compaction and a delete, and a restore with
    the revision bump starts above it."""
    m = _filled(build, node, members)
    db = _node(m.data, node) / "member/snap/db"
    m.start()
    m.wait_healthy()
    m.etcdctl("del", "/registry/keep/k000")
    status = json.loads(m.etcdctl("endpoint", "status", "-w", "json").stdout)
    live = int(status[0]["Status"]["header"]["revision"])
    m.etcdctl("compaction", str(live))
    m.stop()
    assert live > 120 and etcdprobe.stored_revision(NodeRoot(node), db) == live
    # as quorum-restore reads another master's db: page by page with dd (here through this machine's dd)
    host_db = PurePosixPath(str(node / str(db).lstrip("/")))
    assert s.stored_revision(remote_reader(LocalHost(NodeRoot(Path("/")), live=True), host_db)) == live
    assert etcdprobe.stored_revision(NodeRoot(node), _node(m.data, node) / "member/wal") is None  # not a db
    assert etcdprobe.stored_revision(NodeRoot(node.parent), PurePosixPath("/before.db")) == 121  # 1 + 120 puts
    restored = node / "restored"
    subprocess.run(
        [str(build[1] / "etcdutl"), *_restore_args(m, str(node / str(db).lstrip("/")), str(restored))],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    assert (etcdprobe.stored_revision(NodeRoot(node), PurePosixPath("/restored/member/snap/db")) or 0) > live


def _restore_args(m: Member, snapshot: str, target: str) -> list[str]:
    return etcd_member(
        {"name": "n1", "initial-advertise-peer-urls": m.peer_url, "initial-cluster": f"n1={m.peer_url}"}, "test"
    ).restore_args(snapshot, target, skip_hash_check=True)


def test_data_dir_without_its_db_is_refused_by_name_and_restored(
    build: tuple[str, Path], node: Path, members: list[Member]
) -> None:
    """etcd-io/etcd#14497's failure: the raft snapshots are there, the db they refer to is not."""
    m = _filled(build, node, members)
    (m.data / "member/snap/db").unlink()
    [problem] = s.check_data_dir(etcdprobe.data_dir(NodeRoot(node), _node(m.data, node)))
    assert problem.id == s.NO_DB
    with pytest.raises(EtcdError, match=r"etcd restart refused \[etcd-data-no-db\]"):
        s.refuse([problem], "etcd restart")
    m.start()  # the premise: the real etcd does not start from it
    assert not m.starts_within(60), "etcd started without its db"
    m.stop()
    assert _restore_and_count(build, node, m, members, snapshot=node.parent / "before.db") == 120


def test_data_dir_without_its_wal_is_salvaged_from_its_db(
    build: tuple[str, Path], node: Path, members: list[Member]
) -> None:
    """The guided salvage: the member's own member/snap/db restored without the hash check (no trailer)."""
    m = _filled(build, node, members)
    shutil.rmtree(m.data / "member/wal")
    [problem] = s.check_data_dir(etcdprobe.data_dir(NodeRoot(node), _node(m.data, node)))
    assert problem.id == s.NO_WAL and "--skip-hash-check" in problem.salvage
    count = _restore_and_count(build, node, m, members, snapshot=m.data / "member/snap/db", skip_hash_check=True)
    assert count == 120


def _node(host: Path, root: Path) -> PurePosixPath:
    return PurePosixPath("/") / host.relative_to(root)


# ---------------------------------------------------------------------------------------- membership


def test_restore_refuses_a_multi_member_etcd_and_members_read_from_the_db(
    build: tuple[str, Path], node: Path, members: list[Member]
) -> None:
    n1 = _member(build, node, "n1", members)
    n1.start()
    n1.wait_healthy()
    n2 = _member(build, node, "n2", members, data=node / "var/lib/etcd-n2")
    n1.etcdctl("member", "add", "n2", f"--peer-urls={n2.peer_url}")
    n2.start(initial_cluster=f"n1={n1.peer_url},n2={n2.peer_url}", state="existing")
    n2.wait_healthy()
    deadline = time.monotonic() + 120  # etcd refuses a change until n2 has been connected for a few seconds
    while (
        add := n1.etcdctl("member", "add", "n3", "--learner", "--peer-urls=https://127.0.0.1:1", check=False)
    ).returncode:
        assert time.monotonic() < deadline, add.stderr
        time.sleep(1)
    _put_manifest(node, n1, _tag(build[0]))
    root = NodeRoot(node)
    facts = etcdprobe.facts(root)
    assert facts.members is not None and len(facts.members) == 3
    ids = [p.id for p in s.preflight(facts)]
    assert s.LEARNER in ids and s.UNSTARTED in ids

    # the v3 store's members, read page by page from the real db, equal the live list (no zombie)
    live = {m.id for m in facts.members}
    deadline = time.monotonic() + 60  # etcd commits its backend in batches: poll until the db holds the change
    while (stored := etcdprobe.stored_members(root, _node(n1.data, node) / "member/snap/db")) is None or {
        m.id for m in stored
    } != live:
        assert time.monotonic() < deadline, (stored, live)
        time.sleep(0.5)
    assert s.ZOMBIE not in ids

    # restore-etcd on n1 would split the cluster: refused before anything is touched
    snap = node.parent / "snap.db"
    n1.etcdctl("snapshot", "save", str(snap))
    before = _tree(node / "var/lib/etcd") | _tree(node / "etc/kubernetes")
    env_path = os.environ["PATH"]
    os.environ["PATH"] = f"{build[1]}:{BUILDS['etcd-3.5.24']}:{env_path}"  # etcdutl, crictl
    try:
        if shutil.which("crictl") is None:
            pytest.skip("crictl is not built")
        with pytest.raises(EtcdError, match=r"restore-etcd refused \[etcd-multi-member\]"):
            restore_etcd(root, snap)
    finally:
        os.environ["PATH"] = env_path
    assert _tree(node / "var/lib/etcd") | _tree(node / "etc/kubernetes") == before


def test_two_clusters_member_lists_differ(build: tuple[str, Path], node: Path, members: list[Member]) -> None:
    a = _member(build, node, "n1", members, data=node / "var/lib/etcd-a")
    b = _member(build, node, "n1", members, data=node / "var/lib/etcd-b")  # same name, restored alone elsewhere
    for m in (a, b):
        m.start()
    for m in (a, b):
        m.wait_healthy()
    root = NodeRoot(node)
    lists = {}
    for label, m in (("cp1", a), ("cp2", b)):
        client = etcdprobe.client_for(root, m.endpoint)
        assert client is not None
        lists[label] = tuple(client.members())
    [p] = s.check_member_lists(lists)
    assert p.id == s.LISTS_DIFFER
    facts = s.Facts(members=lists["cp1"], other_lists={"cp2": lists["cp2"]}, local_name="n1")
    with pytest.raises(EtcdError, match=r"refused \[etcd-member-lists-differ\]"):
        s.refuse(s.preflight(facts), "member add")


def test_version_step_is_refused_before_anything_changes(
    build: tuple[str, Path], node: Path, members: list[Member]
) -> None:
    """A 3.5.24 member under a 3.6 image (3.5.26 is needed first), or 3.6 data under a 3.5 image."""
    m = _member(build, node, "n1", members)
    m.start()
    m.wait_healthy()
    other, expected = ("3.6.8-0", s.VERSION_UPGRADE) if build[0] == "etcd-3.5.24" else ("3.5.24-0", s.VERSION_DOWNGRADE)
    _put_manifest(node, m, other)
    snap = node.parent / "snap.db"
    m.etcdctl("snapshot", "save", str(snap))
    before = _tree(node)
    r = subprocess.run(
        [sys.executable, "-m", "kuberevive", "restore-etcd", "--snapshot", str(snap), "--root", str(node)],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "PATH": f"{build[1]}:{BUILDS['etcd-3.5.24']}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"restore-etcd refused [{expected}]" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2
    assert _tree(node) == before
