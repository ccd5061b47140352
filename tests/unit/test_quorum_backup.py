"""``quorum-restore --backup``: the plan names the backup and keeps the snapshot's hash check, the journal remembers
the backup for a resumed run, and the refusals come before anything changes (the real backup, decrypted by
restore-etcd's code path and restored by etcdutl, is in tests/integration/test_quorum_backup.py)."""

from __future__ import annotations

import contextlib
import io
import os
import stat
from dataclasses import asdict
from pathlib import Path, PurePosixPath

import pytest

from kuberevive.cli.commands import quorum_restore
from kuberevive.cli.env import Environment
from kuberevive.core import quorum as q
from kuberevive.core.backup import Secret
from kuberevive.errors import BackupError, PlanError
from kuberevive.io import backupfile
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.document import QUORUM_PLAN, QUORUM_RESULT, stamp
from kuberevive.model.recover import RetrustOptions
from kuberevive.run import quorum as run
from tests.documents import validate

TMP = "/var/lib/.etcd.kuberevive-snapshot/snapshot-4242.db"
BACKUP = "/var/backups/kuberevive-backup-cp2-20261205T080000Z.age"


def _m(node: str, revision: int | None) -> q.MasterEtcd:
    return q.MasterEtcd(
        node=node, address=f"10.0.0.{node[-1]}", member=node, peer_url=f"https://10.0.0.{node[-1]}:2380",
        client_url=f"https://10.0.0.{node[-1]}:2379", data_dir="/var/lib/etcd", has_data=revision is not None,
        revision=revision, healthy=False, why="unreachable",
    )  # fmt: skip


MASTERS = [_m("cp1", 5400), _m("cp2", 1), _m("cp3", None)]


def test_the_plan_names_the_backup_and_restores_its_snapshot_with_the_hash_check() -> None:
    p = q.plan(MASTERS, "cp2", snapshot=q.Snapshot(TMP, 5000, backup=BACKUP))
    assert p.donor.node == "cp2"
    assert p.source("S") == (TMP, False)  # the backup's snapshot has etcd's sha256 trailer: checked
    doc = p.document()
    assert doc["donor"] == {
        "node": "cp2", "revision": 5000, "data_dir": "/var/lib/etcd", "snapshot": TMP, "backup": BACKUP,
    }  # fmt: skip
    assert doc["notes"][0].startswith(f"donor cp2 (this node) restores the etcd snapshot of the backup {BACKUP} ")
    assert "(revision 5000)" in doc["notes"][0]
    assert any("the db of cp1 is newer than the snapshot" in n for n in doc["notes"])
    validate(stamp(QUORUM_PLAN, doc))  # the documented schemas (the plan, and the result that embeds it)
    validate(stamp(QUORUM_RESULT, run.QuorumResult(doc, resumed=False).as_dict()))
    # a plain --snapshot: no backup in the document
    assert q.plan(MASTERS, "cp2", snapshot=q.Snapshot("/x.db", 5000)).document()["donor"]["backup"] is None


def test_a_backup_without_an_etcd_v3_store_is_refused() -> None:
    with pytest.raises(PlanError, match="is not an etcd snapshot"):
        q.plan(MASTERS, "cp2", snapshot=q.Snapshot(TMP, None, backup=BACKUP))


def _journal(tmp_path: Path, *done: str) -> run.QuorumJournal:
    j = run.QuorumJournal.new(
        NodeRoot(tmp_path), run.JOURNAL, stamp="S", local="cp2", masters=[asdict(m) for m in MASTERS],
        snapshot=TMP, snapshot_revision=5000, backup=BACKUP,
    )  # fmt: skip
    for key in done:
        j.mark(key, "done")
    return j


def test_the_journal_remembers_the_backup(tmp_path: Path) -> None:
    _journal(tmp_path)
    loaded = run.QuorumJournal.load(NodeRoot(tmp_path), run.JOURNAL)
    assert loaded is not None
    assert (loaded.backup, loaded.snapshot, loaded.snapshot_revision) == (BACKUP, TMP, 5000)


def test_a_resumed_run_past_the_restore_needs_no_key(tmp_path: Path) -> None:
    journal = _journal(tmp_path, "stop-control-plane", "keep-data", "restore-donor")
    with contextlib.ExitStack() as stack:
        snap = run._resumed_source(stack, NodeRoot(tmp_path), journal, None, lambda _s: None)
    assert snap == q.Snapshot(TMP, 5000, backup=BACKUP)
    planned = q.plan(MASTERS, "cp2", resumed=True, snapshot=snap)
    assert planned.document()["donor"]["backup"] == BACKUP


def test_a_resumed_run_that_still_restores_asks_for_the_backup_again(tmp_path: Path) -> None:
    journal = _journal(tmp_path, "stop-control-plane", "keep-data")
    before = (tmp_path / str(run.JOURNAL).lstrip("/")).read_bytes()
    with contextlib.ExitStack() as stack, pytest.raises(PlanError, match=r"from the backup .* has not restored it"):
        run._resumed_source(stack, NodeRoot(tmp_path), journal, None, lambda _s: None)
    assert (tmp_path / str(run.JOURNAL).lstrip("/")).read_bytes() == before


def test_snapshot_and_backup_exclude_each_other_and_a_plain_file_is_no_backup(tmp_path: Path) -> None:
    plain = tmp_path / "etcd.db"
    plain.write_bytes(b"\0" * 8192)
    source = run.BackupSource(str(plain), Secret(passphrase="x"))
    with contextlib.ExitStack() as stack:
        with pytest.raises(PlanError, match="exclude each other"):
            run._source(stack, NodeRoot(tmp_path), "/x.db", source, None, lambda _s: None)
        with pytest.raises(PlanError, match="is not a kuberevive backup"):
            run._source(stack, NodeRoot(tmp_path), None, source, None, lambda _s: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["etcd.db"]  # no temporary file, nothing created


def test_the_printed_plan_names_the_backup_and_the_revision() -> None:
    out = io.StringIO()
    doc = q.plan(MASTERS, "cp2", snapshot=q.Snapshot(TMP, 5000, backup=BACKUP)).document()
    quorum_restore._print_plan(Environment(stdout=out, stderr=io.StringIO(), environ={}), doc)
    assert f"donor: cp2 (revision 5000, from the etcd snapshot of the backup {BACKUP})" in out.getvalue()


# -- the decrypted snapshot never outlives the operation ----------------------------------------------------------

DATA_DIR = PurePosixPath("/var/lib/etcd")
SINK_DIR = "var/lib/.etcd.kuberevive-snapshot"


def test_the_decrypted_snapshot_is_0600_in_a_0700_directory_recorded_first_and_removed(tmp_path: Path) -> None:
    node = NodeRoot(tmp_path)
    (tmp_path / SINK_DIR).mkdir(parents=True, mode=0o755)  # a directory an older version left with another mode
    recorded: list[tuple[PurePosixPath, bool]] = []
    with backupfile.snapshot_sink(node, DATA_DIR, lambda p: recorded.append((p, node.exists(p)))) as (path, fh):
        fh.write(b"cluster secrets in plaintext")
        want = PurePosixPath(f"/{SINK_DIR}/snapshot-{os.getpid()}.db")
        assert recorded == [(want, False)]  # recorded before the file exists
        assert path == node.host_path(want) and backupfile.is_snapshot_sink(want)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / SINK_DIR).stat().st_mode) == 0o700
    assert not path.exists() and not (tmp_path / SINK_DIR).exists()  # the file, then its empty directory


def test_a_symlink_where_the_directory_belongs_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o755)
    (tmp_path / "var/lib").mkdir(parents=True)
    (tmp_path / SINK_DIR).symlink_to(tmp_path / "elsewhere")
    recorded: list[PurePosixPath] = []
    with (
        pytest.raises(BackupError, match="is not a directory"),
        backupfile.snapshot_sink(NodeRoot(tmp_path), DATA_DIR, recorded.append),
    ):
        pass
    assert recorded == [] and list((tmp_path / "elsewhere").iterdir()) == []
    assert stat.S_IMODE((tmp_path / "elsewhere").stat().st_mode) == 0o755


def _left(tmp_path: Path, pid: int) -> str:
    """A decrypted snapshot as a run killed with SIGKILL leaves it."""
    p = backupfile.snapshot_sink_path(DATA_DIR, pid)
    host = tmp_path / str(p).lstrip("/")
    host.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    host.write_bytes(b"cluster secrets in plaintext")
    host.chmod(0o600)
    return str(p)


def test_the_next_run_removes_what_a_killed_run_left_and_only_that(tmp_path: Path) -> None:
    node = NodeRoot(tmp_path)
    admin = tmp_path / "etc/kubernetes/admin.conf"
    admin.parent.mkdir(parents=True)
    admin.write_text("not the tool's")
    # killed during the restore (its journal records the file) and killed while planning (before its journal)
    journal = _journal(tmp_path, "stop-control-plane", "keep-data")
    journal.temporary = [_left(tmp_path, 4242), "/etc/kubernetes/admin.conf", "/var/lib/etcd"]  # a tampered record
    journal.save()
    planning = run.QuorumJournal(root=node, path=run.PLANNING, status="planning")
    planning.record_temporary(PurePosixPath(_left(tmp_path, 4343)))
    progress: list[str] = []
    # the resumed run, here stopping at once (this root has no etcd), removes both first, under the node's lock
    with pytest.raises(PlanError, match=r"etcd\.yaml is missing"):
        run.apply(str(tmp_path), RetrustOptions(), progress.append)
    assert not (tmp_path / SINK_DIR).exists()
    assert [m.split(":")[0] for m in progress] == [
        f"removed /{SINK_DIR}/snapshot-4343.db",
        f"removed /{SINK_DIR}/snapshot-4242.db",
    ]
    assert admin.read_text() == "not the tool's"  # a recorded path that is not the tool's file stays
    assert not node.exists(run.PLANNING)
    loaded = run.QuorumJournal.load(node, run.JOURNAL)
    assert loaded is not None and loaded.temporary == [] and loaded.status == "running"
    assert run.remove_leftovers(node) == []  # nothing left to remove
