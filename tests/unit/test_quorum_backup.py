"""``quorum-restore --backup``: the plan names the backup and keeps the snapshot's hash check, the journal remembers
the backup for a resumed run, and the refusals come before anything changes (the real backup, decrypted by
restore-etcd's code path and restored by etcdutl, is in tests/integration/test_quorum_backup.py)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict
from pathlib import Path

import pytest

from kuberevive.cli.commands import quorum_restore
from kuberevive.cli.env import Environment
from kuberevive.core import quorum as q
from kuberevive.core.backup import Secret
from kuberevive.errors import PlanError
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.document import QUORUM_PLAN, QUORUM_RESULT, stamp
from kuberevive.run import quorum as run
from tests.documents import validate

TMP = "/var/lib/.etcd.kuberevive-snapshot-4242"
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
