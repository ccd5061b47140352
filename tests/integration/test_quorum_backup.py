"""``quorum-restore --backup`` against a real etcd: a backup made by ``backup create --etcd-snapshot`` of a running
etcd, its snapshot decrypted by the shared path (restore-etcd's, :func:`kuberevive.io.backupfile.backup_snapshot`)
into a 0600 temporary file, its revision read as ``--snapshot``'s, restored by quorum-restore's own restore step
(the real ``etcdutl``: hash checked, revision bumped), and the keys there when etcd runs on
the restored data. A wrong passphrase, another cluster's node and a plain snapshot given as ``--backup`` are one
clear error each, with nothing changed and no temporary file left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path, PurePosixPath

import pytest

from kuberevive.core import quorum as q
from kuberevive.core.backup import Secret
from kuberevive.errors import BackupError, PlanError
from kuberevive.io.host import LocalHost
from kuberevive.io.noderoot import NodeRoot
from kuberevive.io.transport import Result
from kuberevive.run import quorum as run
from kuberevive.run.context import Faults
from tests.integration.etcdbin import Member, etcd_bin, manifest_for
from tests.integration.test_backup_cli import make_node, tree

pytestmark = pytest.mark.integration

PASSPHRASE = "quorum backup passphrase"
DATA_DIR = PurePosixPath("/var/lib/etcd")


def kuberevive(*args: str, passphrase: str = PASSPHRASE) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"KUBEREVIVE_PASSPHRASE": passphrase}
    return subprocess.run(
        [sys.executable, "-m", "kuberevive", *args], capture_output=True, text=True, timeout=300, check=False, env=env
    )


SINK_DIR = ".etcd.kuberevive-snapshot"


def _leftovers(root: Path) -> list[str]:
    """The decrypted snapshots on the node (and their 0700 directory: removed once empty)."""
    sink = root / "var/lib" / SINK_DIR
    return [p.name for p in sink.iterdir()] if sink.is_dir() else ([SINK_DIR] if sink.exists() else [])


KILLED = """
import contextlib, sys, time
from pathlib import Path
from kuberevive.core.backup import Secret
from kuberevive.io.noderoot import NodeRoot
from kuberevive.run import quorum as run
node = NodeRoot(Path(sys.argv[1]))
journal = run.QuorumJournal.load(node, run.JOURNAL)
with contextlib.ExitStack() as stack:
    snap = run._resumed_source(stack, node, journal, run.BackupSource(sys.argv[2], Secret(sys.argv[3])), print)
    print("decrypted", snap.path, flush=True)
    time.sleep(600)  # killed here
"""


class RootedHost(LocalHost):
    """This node under a temporary root: commands run with their absolute node paths under the root (etcdutl from
    the build), so quorum-restore's restore step runs unchanged against the real etcdutl."""

    def __init__(self, root: NodeRoot, bin_dir: Path) -> None:
        super().__init__(root, live=False, name="cp1")
        self.bin_dir = bin_dir

    def run(self, argv: Sequence[str], input: bytes | None = None, timeout: float = 60) -> Result:
        def under_root(arg: str) -> str:
            flag, eq, value = arg.rpartition("=") if arg.startswith("--") else ("", "", arg)
            return f"{flag}{eq}{self.root.host_path(value)}" if value.startswith("/") else arg

        assert argv[0] == "etcdutl", argv
        return super().run([str(self.bin_dir / "etcdutl"), *map(under_root, argv[1:])], input, timeout)


def _unlocked(files: dict[str, tuple[int, bytes | None]]) -> dict[str, tuple[int, bytes | None]]:
    """The tree without the run lock (every command takes it: its content is the holder's pid)."""
    return {k: v for k, v in files.items() if k != "var/lib/kuberevive/recover/lock"}


def test_a_backup_of_a_real_etcd_is_decrypted_and_restored_with_its_keys(tmp_path: Path) -> None:
    bin_dir = etcd_bin("etcd-3.5.24")
    root = make_node(tmp_path, "node")
    etcd = Member(bin_dir, root, "cp1", tmp_path / "etcd-data")
    (root / "etc/kubernetes/manifests/etcd.yaml").write_bytes(manifest_for(etcd, "3.5.24-0"))
    etcd.start()
    try:
        etcd.wait_healthy()
        for i in range(40):
            etcd.etcdctl("put", f"/registry/quorum/k{i}", f"value-{i}")
        revision = int(
            json.loads(etcd.etcdctl("get", "/registry/quorum/k0", "-w", "json").stdout)["header"]["revision"]
        )
        backup = tmp_path / "kuberevive-backup-cp1.age"
        made = kuberevive("backup", "create", "--root", str(root), "--out", str(backup), "--etcd-snapshot", "--json")
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["etcd_snapshot_bytes"], made.stdout
    finally:
        etcd.stop()

    # the plan's path: decrypted (streamed) into a 0600 file beside the data directory, its revision read
    source = run.BackupSource(str(backup), Secret(passphrase=PASSPHRASE))
    warnings: list[str] = []
    node = NodeRoot(root)
    with run.backup_snapshot(node, source, DATA_DIR, warnings.append) as snap:
        tmp = root / snap.path.lstrip("/")
        assert snap.backup == str(backup) and snap.path == f"/var/lib/{SINK_DIR}/snapshot-{os.getpid()}.db"
        assert tmp.is_file() and tmp.stat().st_mode & 0o777 == 0o600 and tmp.parent.stat().st_mode & 0o777 == 0o700
        assert snap.revision == revision
        donor = q.MasterEtcd(
            node="cp1", address="127.0.0.1", member="cp1", peer_url=etcd.peer_url, client_url=etcd.endpoint,
            data_dir=str(DATA_DIR), has_data=False, revision=None, healthy=False, why="",
        )  # fmt: skip
        cp2 = q.MasterEtcd(**{**asdict(donor), "node": "cp2", "member": "cp2"})
        planned = q.plan([donor, cp2], "cp1", snapshot=snap)
        assert planned.document()["donor"]["backup"] == str(backup)
        assert planned.source("S") == (snap.path, False)  # the backup's snapshot has etcd's sha256 trailer: checked
        # quorum-restore's own restore step, on this node (the tmp root) with the real etcdutl
        journal = run.QuorumJournal.new(
            node,
            run.JOURNAL,
            stamp="S",
            local="cp1",
            manifests={"cp1": {"etcd": manifest_for(etcd, "3.5.24-0").decode()}},
        )
        executor = run.QuorumExecutor(
            planned, journal, lambda _m: RootedHost(node, bin_dir), lambda _url: None, lambda _m, _p: (True, ""),  # type: ignore[arg-type,return-value]
            lambda _s: None, run.QuorumResult(planned.document()), Faults(),
        )  # fmt: skip
        executor.step_restore_donor("")
        assert (root / "var/lib/etcd/member/snap/db").is_file()
    assert not tmp.exists() and _leftovers(root) == []  # the tool's own temporary file, removed at the end

    # etcd on the restored data: every key, at a revision after the backup's (bumped)
    after = Member(bin_dir, root, "cp1", root / "var/lib/etcd", client=etcd.client, peer=etcd.peer)
    after.start()
    try:
        after.wait_healthy()
        got = json.loads(after.etcdctl("get", "--prefix", "/registry/quorum/", "-w", "json").stdout)
        assert got["count"] == 40
        assert int(got["header"]["revision"]) > revision
    finally:
        after.stop()

    # refusals: one error, nothing changed, no temporary file
    before = tree(root)
    with (
        pytest.raises(BackupError),
        run.backup_snapshot(node, run.BackupSource(str(backup), Secret("wrong")), DATA_DIR, print),
    ):
        pass
    other = make_node(tmp_path, "other")
    other_before = tree(other)
    with (
        pytest.raises(BackupError, match="another cluster"),
        run.backup_snapshot(NodeRoot(other), source, DATA_DIR, print),
    ):
        pass
    plain = tmp_path / "etcd.db"
    plain.write_bytes((root / "var/lib/etcd/member/snap/db").read_bytes())
    not_a_backup = run.BackupSource(str(plain), Secret(PASSPHRASE))
    with (
        pytest.raises(PlanError, match="is not a kuberevive backup"),
        run.backup_snapshot(node, not_a_backup, DATA_DIR, print),
    ):
        pass
    assert tree(root) == before and tree(other) == other_before and _leftovers(root) == _leftovers(other) == []

    # the same refusals from the command (before it reaches any other master): one line, exit 1
    wrong = kuberevive("quorum-restore", "--backup", str(backup), "--root", str(root), passphrase="wrong")
    foreign = kuberevive("quorum-restore", "--backup", str(backup), "--root", str(other), "--apply")
    for result, fragment in ((wrong, "passphrase"), (foreign, "another cluster")):
        assert result.returncode == 1, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("kuberevive: error:")]
        assert len(errors) == 1 and fragment in errors[0] and "Traceback" not in result.stderr, result.stderr
    assert _unlocked(tree(root)) == _unlocked(before)
    # --apply recorded its decrypted file before it existed (removed with the file): that change has the run's log
    logs = {k for k in tree(other).keys() - other_before.keys() if k.startswith("var/lib/kuberevive/log/")}
    assert [Path(k).name.split("-2")[0] for k in logs if k.endswith(".log")] == ["quorum-restore"]
    assert {k: v for k, v in _unlocked(tree(other)).items() if k not in logs} == _unlocked(other_before)
    assert _leftovers(root) == _leftovers(other) == []

    # a resumed run that still restores decrypts the backup again, the file recorded in the journal before it exists;
    # SIGKILLed meanwhile, the file stays (cluster Secrets in plaintext) until the next run removes it
    journal = run.QuorumJournal.new(
        node, run.JOURNAL, stamp="K", local="cp1", masters=[asdict(donor), asdict(cp2)], snapshot="/gone",
        snapshot_revision=revision, backup=str(backup),
    )  # fmt: skip
    for step in ("stop-control-plane", "keep-data"):
        journal.mark(step, "done")
    with subprocess.Popen(
        [sys.executable, "-c", KILLED, str(root), str(backup), PASSPHRASE], stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line.startswith("decrypted "), line
            left = PurePosixPath(line.split()[1])
            recorded = run.QuorumJournal.load(node, run.JOURNAL)
            assert recorded is not None and recorded.temporary == [str(left)] and recorded.snapshot == str(left)
        finally:
            child.kill()
    assert _leftovers(root) == [left.name]  # what a kill leaves
    assert run.remove_leftovers(node) == [str(left)]
    assert _leftovers(root) == []
    after_kill = run.QuorumJournal.load(node, run.JOURNAL)
    assert after_kill is not None and after_kill.temporary == [] and after_kill.status == "running"
