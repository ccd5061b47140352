"""The recovery journal and lock, and the CLI's refusals, on a temporary root (no cluster)."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path, PurePosixPath

import pytest

from kuberevive.cli.app import main
from kuberevive.cli.env import Environment
from kuberevive.errors import PlanError
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.artifacts import Artifact, ArtifactKind
from kuberevive.run.journal import JOURNAL, Journal, recovery_lock


def test_journal_round_trip_and_finish_drops_keys(tmp_path: Path) -> None:
    root = NodeRoot(tmp_path)
    j = Journal.new(root, identity={"node_name": "cp1"}, token="abcdef.0123456789abcdef")
    art = Artifact(PurePosixPath("/etc/kubernetes/pki/ca.key"), 0o600, ArtifactKind.PRIVATE_KEY, "k", b"KEY")
    j.record_artifacts("certs", [art])
    j.mark("certs", "done")
    host = root.host_path(JOURNAL)
    assert stat.S_IMODE(host.stat().st_mode) == 0o600
    again = Journal.load(root)
    assert again is not None and again.step_done("certs") and again.artifacts("certs") == [art]
    again.finish()
    text = host.read_text()
    assert "KEY" not in text and "abcdef" not in text
    data = json.loads(text)
    assert data["status"] == "done" and data["artifacts"]["certs"][0]["path"] == "/etc/kubernetes/pki/ca.key"


def test_damaged_journal_is_reported(tmp_path: Path) -> None:
    root = NodeRoot(tmp_path)
    root.atomic_write(JOURNAL, b"{not json", 0o600)
    with pytest.raises(PlanError, match="not valid JSON"):
        Journal.load(root)


def test_second_run_is_refused_while_the_lock_is_held(tmp_path: Path) -> None:
    root = NodeRoot(tmp_path)
    with (
        recovery_lock(root),
        pytest.raises(PlanError, match="another 'kuberevive recover' is running"),
        recovery_lock(root),
    ):
        pass
    with recovery_lock(root):  # released
        pass


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), Environment(stdout=out, stderr=err, environ={}))
    return code, out.getvalue(), err.getvalue()


def test_cli_on_a_machine_that_is_not_a_kubeadm_node(tmp_path: Path) -> None:
    code, out, err = _cli("recover", "--root", str(tmp_path))
    assert code == 1 and out == ""
    assert "this is not a kubeadm node" in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_cli_ca_from_must_hold_something(tmp_path: Path) -> None:
    code, _out, err = _cli("recover", "--root", str(tmp_path), "--ca-from", str(tmp_path))
    assert code == 1 and "holds none of" in err
