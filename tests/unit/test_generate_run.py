"""``generate``'s write of one set (run/generate.py) on a temporary root: the record of the set written first and
dropped at the end, a failed write rolled back with its record dropped, and an interrupted set finished by the
next run (or dropped when its files changed since, or when the record is damaged)."""

from __future__ import annotations

import contextlib
import errno
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path, PurePosixPath

import pytest

from kuberevive.core.generate import GenerateResult
from kuberevive.errors import KubereviveError, NodeFsError, PlanError
from kuberevive.io.host import LocalHost
from kuberevive.io.noderoot import NodeRoot, WriteAction, WriteResult
from kuberevive.model.artifacts import Artifact, ArtifactKind
from kuberevive.run.generate import PENDING, apply_generate, finish_interrupted, write_set
from kuberevive.run.journal import artifact_to_json

PKI = PurePosixPath("/etc/kubernetes/pki")
KEY = Artifact(PKI / "ca.key", 0o600, ArtifactKind.PRIVATE_KEY, "CA key", b"KEY\n")
CRT = Artifact(PKI / "ca.crt", 0o644, ArtifactKind.CERTIFICATE, "CA certificate", b"CRT\n")


@pytest.fixture
def root(tmp_path: Path) -> NodeRoot:
    return NodeRoot(tmp_path)


class RecordingRoot(NodeRoot):
    """A NodeRoot that shows what the record held when the set was written, and can fail the certificate's write
    (a full disk after the key was written)."""

    def __init__(self, prefix: Path, fail: bool = False) -> None:
        super().__init__(prefix)
        self.record_at_write: bytes | None = None
        self.fail = fail

    def write_all(
        self, artifacts: Iterable[Artifact], force: bool = False, now: datetime | None = None
    ) -> list[WriteResult]:
        self.record_at_write = self.read(PENDING)
        return super().write_all(artifacts, force=force, now=now)

    def atomic_write(
        self,
        node_path: PurePosixPath,
        content: bytes,
        mode: int,
        created_dirs: list[Path] | None = None,
        *,
        replace: bool = True,
    ) -> None:
        if self.fail and node_path == CRT.path:
            raise OSError(errno.ENOSPC, "No space left on device", str(node_path))
        super().atomic_write(node_path, content, mode, created_dirs, replace=replace)


def test_a_set_is_recorded_before_it_is_written_and_the_record_dropped_after(tmp_path: Path) -> None:
    root = RecordingRoot(tmp_path)
    done = write_set(root, [KEY, CRT], force=False)
    assert [r.action for r in done] == [WriteAction.CREATE, WriteAction.CREATE]
    assert root.record_at_write is not None
    record = json.loads(root.record_at_write)
    assert record == {"force": False, "artifacts": [artifact_to_json(KEY), artifact_to_json(CRT)]}
    assert root.read(PENDING) is None and root.read(KEY.path) == b"KEY\n"
    again = RecordingRoot(tmp_path)
    assert [r.action for r in write_set(again, [KEY, CRT], force=False)] == [WriteAction.UNCHANGED] * 2
    assert again.record_at_write is None  # nothing to write: not even recorded


def test_a_failed_write_is_rolled_back_and_leaves_no_record(tmp_path: Path) -> None:
    root = RecordingRoot(tmp_path, fail=True)
    with pytest.raises(NodeFsError, match="No space left"):
        write_set(root, [KEY, CRT], force=False)
    assert root.record_at_write is not None  # it was recorded before the write
    assert root.read(PENDING) is None and root.read(KEY.path) is None  # the key written first was removed again
    assert not root.host_path(PKI).exists()  # and the directories made for it


def _interrupted(root: NodeRoot, artifacts: list[Artifact], force: bool = False) -> None:
    """What a run killed after recording its set and writing part of it leaves."""
    record = {"force": force, "artifacts": [artifact_to_json(a) for a in artifacts]}
    root.atomic_write(PENDING, json.dumps(record).encode(), 0o600)
    root.write_all(artifacts[:1])


def test_an_interrupted_set_is_finished_by_the_next_run(root: NodeRoot) -> None:
    assert finish_interrupted(root) == []  # nothing recorded
    _interrupted(root, [KEY, CRT])
    assert finish_interrupted(root) == ["finished an interrupted run: 1 of its 2 file(s) were still to write"]
    assert (root.read(KEY.path), root.read(CRT.path), root.read(PENDING)) == (b"KEY\n", b"CRT\n", None)


def test_an_interrupted_set_whose_files_changed_since_is_left_alone(root: NodeRoot) -> None:
    _interrupted(root, [KEY, CRT])
    root.atomic_write(CRT.path, b"SOMEONE ELSE'S\n", 0o644)
    assert finish_interrupted(root) == [
        "files of an interrupted run were changed since; they are left as they are (its record was dropped)"
    ]
    assert root.read(CRT.path) == b"SOMEONE ELSE'S\n" and root.read(PENDING) is None


@pytest.mark.parametrize("record", [b"{not json", b'{"force": false}', b'{"force": 1, "artifacts": [{"path": 3}]}'])
def test_a_damaged_record_is_dropped_with_a_note(root: NodeRoot, record: bytes) -> None:
    root.atomic_write(PENDING, record, 0o600)
    assert finish_interrupted(root) == [f"the record of an interrupted run ({PENDING}) is damaged; it was dropped"]
    assert root.read(PENDING) is None


def test_an_unreadable_record_is_ignored_and_kept(root: NodeRoot) -> None:
    root.ensure_dir(PENDING)  # a directory where the record belongs
    notes = finish_interrupted(root)
    assert len(notes) == 1 and notes[0].startswith("the record of an interrupted run cannot be read (")
    assert root.host_path(PENDING).is_dir()


class RecordingHost(LocalHost):
    """The node, recording which commands took its lock through it."""

    def __init__(self, root: NodeRoot) -> None:
        super().__init__(root, live=False)
        self.locked: list[str] = []

    @contextlib.contextmanager
    def lock(self, command: str, error: type[KubereviveError] = NodeFsError) -> Iterator[None]:
        self.locked.append(command)
        with super().lock(command, error):
            yield


def test_generate_takes_the_nodes_lock_through_the_host_and_finishes_a_killed_run_first(root: NodeRoot) -> None:
    _interrupted(root, [KEY, CRT])
    host = RecordingHost(root)
    seen: list[bytes | None] = []

    def make() -> GenerateResult:
        seen.append(root.read(CRT.path))  # generated from the node as the finished set left it
        return GenerateResult(artifacts=[KEY, CRT])

    result, written, notes = apply_generate(host, str(PKI), make, force=False)
    assert host.locked == ["generate"]
    assert seen == [b"CRT\n"] and notes == ["finished an interrupted run: 1 of its 2 file(s) were still to write"]
    assert [r.action for r in written] == [WriteAction.UNCHANGED, WriteAction.UNCHANGED] and result.artifacts
    assert root.read(PENDING) is None


def test_generate_is_refused_while_another_run_holds_the_nodes_lock(root: NodeRoot) -> None:
    other = LocalHost(root, live=False)
    made: list[str] = []

    def make() -> GenerateResult:
        made.append("generated")
        return GenerateResult([KEY])

    refused = pytest.raises(NodeFsError, match="another 'kuberevive recover' is running on this node")
    with other.lock("recover", error=PlanError), refused:
        apply_generate(LocalHost(root, live=False), str(PKI), make, False)
    assert made == [] and root.read(KEY.path) is None
    _, written, _ = apply_generate(LocalHost(root, live=False), str(PKI), lambda: GenerateResult([KEY]), False)
    assert [r.action for r in written] == [WriteAction.CREATE] and root.read(KEY.path) == b"KEY\n"
