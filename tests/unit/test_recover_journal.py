"""The recovery journal and lock, and the CLI's refusals, on a temporary root (no cluster)."""

from __future__ import annotations

import io
import json
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from kuberevive.cli.app import main
from kuberevive.cli.env import Environment
from kuberevive.errors import PlanError
from kuberevive.io.host import LocalHost
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.artifacts import Artifact, ArtifactKind
from kuberevive.model.recover import TrustFlags
from kuberevive.run.journal import JOURNAL, NodeRetrust, RecoveryJournal, recovery_lock
from kuberevive.run.recover import plan_recovery
from tests.unit.test_recover import STORED


def test_journal_round_trip_and_finish_drops_keys(tmp_path: Path) -> None:
    root = NodeRoot(tmp_path)
    j = RecoveryJournal.new(root, token="abcdef.0123456789abcdef")
    art = Artifact(PurePosixPath("/etc/kubernetes/pki/ca.key"), 0o600, ArtifactKind.PRIVATE_KEY, "k", b"KEY")
    j.record_artifacts("certs", [art])
    j.mark("certs", "done")
    host = root.host_path(JOURNAL)
    assert stat.S_IMODE(host.stat().st_mode) == 0o600
    again = RecoveryJournal.load(root)
    assert again is not None and again.step_done("certs") and again.artifacts("certs") == [art]
    again.finish_with({})
    text = host.read_text()
    assert "KEY" not in text and "abcdef" not in text
    data = json.loads(text)
    assert data["status"] == "done" and data["artifacts"]["certs"][0]["path"] == "/etc/kubernetes/pki/ca.key"


def test_damaged_journal_is_reported(tmp_path: Path) -> None:
    root = NodeRoot(tmp_path)
    root.atomic_write(JOURNAL, b"{not json", 0o600)
    with pytest.raises(PlanError, match="not valid JSON"):
        RecoveryJournal.load(root)


def test_second_run_is_refused_while_the_lock_is_held(tmp_path: Path) -> None:
    host = LocalHost(NodeRoot(tmp_path), live=False)
    with (
        recovery_lock(host),
        pytest.raises(PlanError, match="another 'kuberevive recover' is running"),
        recovery_lock(host),
    ):
        pass
    with recovery_lock(host):  # released
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


MAIN_JOURNAL = Path(__file__).parent / "data" / "recover-journal-main-v1.json"
"""A running recovery's journal exactly as the dict-based journal (before the typed one) wrote it."""


def _install(root: Path, doc: dict[str, object]) -> None:
    NodeRoot(root).atomic_write(JOURNAL, json.dumps(doc).encode(), 0o600)


def test_a_journal_written_by_the_untyped_code_loads_into_typed_fields(tmp_path: Path) -> None:
    _install(tmp_path, json.loads(MAIN_JOURNAL.read_text()))
    j = RecoveryJournal.load(NodeRoot(tmp_path))
    assert j is not None and j.status == "running"
    assert j.identity is not None and j.identity.node_name == "cp1" and j.identity.bind_port == 6443
    assert j.identity.sources == (("node name", "/etc/hostname"),)
    assert j.token == "abcdef.0123456789abcdef" and j.kubelet_stamp == "2026-12-04-20-00-00"
    assert j.kept_bytes() == {"ca.crt": b"CA"} and j.cluster_ca_bytes() == b"OLDCA"
    assert j.config is not None and j.config.kubelet is None and "ClusterConfiguration" in j.config.cluster
    assert j.trust == TrustFlags(new_ca=True, new_front_proxy=True, new_sa=False) and j.guard == "on"
    assert j.retrust == {"w1": NodeRetrust("done", seconds=4.2), "w2": NodeRetrust("failed", "no route")}
    assert j.done_steps() == ("etcd-certs", "etcd-manifest", "etcd-ready", "read-config")
    assert not j.step_done("certs") and j.steps["certs"].state == "started"
    assert j.timing("etcd_manifest_written") == 1796414401.0
    key = PurePosixPath("/etc/kubernetes/pki/etcd/ca.key")
    assert j.artifacts("etcd-certs") == [Artifact(key, 0o600, ArtifactKind.PRIVATE_KEY, "etcd CA key", b"KEYBYTES")]
    assert j.changed_files == ["/etc/kubernetes/pki/etcd/ca.key"]
    # saved again, the document keeps the same keys and values (the untyped code's "kubelet": null aside)
    j.save()
    again = json.loads(NodeRoot(tmp_path).read_existing(JOURNAL))
    old = json.loads(MAIN_JOURNAL.read_text())
    old["config"].pop("kubelet")
    assert again == old


def test_a_journal_written_by_the_untyped_code_resumes(tmp_path: Path) -> None:
    doc = json.loads(MAIN_JOURNAL.read_text())
    doc["config"]["cluster"] = STORED
    _install(tmp_path, doc)
    plan = plan_recovery(LocalHost(NodeRoot(tmp_path), live=False), {}, None, environ={})
    assert plan.identity is not None and plan.identity.node_name == "cp1"
    assert plan.done_steps == ("etcd-certs", "etcd-manifest", "etcd-ready", "read-config")
    assert any(n.startswith("resuming the recovery started at ") for n in plan.notes)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(surprise=1), "has an unknown format (field 'surprise')"),
        (lambda d: d.update(version=2), "has an unknown format"),
        (lambda d: d["steps"].update(x={"state": "done", "when": 1}), "has an unknown format"),
        (lambda d: d.update(identity={"node_name": "cp1"}), "has an unknown format"),
    ],
)
def test_a_journal_of_an_unknown_shape_is_refused_in_one_line(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    doc = json.loads(MAIN_JOURNAL.read_text())
    change(doc)
    _install(tmp_path, doc)
    code, out, err = _cli("recover", "--root", str(tmp_path))
    assert code == 1 and out == "" and message in err
    assert err.count("\n") == 1 and err.startswith("kuberevive: error: ") and "Traceback" not in err


def test_finish_drops_the_token_and_kept_keys_and_reloads(tmp_path: Path) -> None:
    _install(tmp_path, json.loads(MAIN_JOURNAL.read_text()))
    j = RecoveryJournal.load(NodeRoot(tmp_path))
    assert j is not None
    j.finish_with({"start_to_done_s": 1.0})
    text = NodeRoot(tmp_path).read_existing(JOURNAL).decode()
    assert "abcdef.0123456789abcdef" not in text and "S0VZQllURVM=" not in text and '"Q0E="' not in text
    done = RecoveryJournal.load(NodeRoot(tmp_path))
    assert done is not None and done.status == "done" and sorted(done.kept) == ["ca.crt"]
    assert done.artifacts("etcd-certs") is None and done.result_timings == {"start_to_done_s": 1.0}
