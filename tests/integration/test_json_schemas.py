"""One JSON contract (issue 15, docs/json.md): the real ``--json`` output of every command, run in temporary roots,
matches the JSON Schema its ``kind`` names (``kuberevive/schemas``, read as package data), and each schema refuses
a wrong document: a missing key, an unknown key, a boolean or number written as a string, a time not in RFC 3339
UTC, another kind.

The commands run through ``kuberevive.cli.app.main`` (the CLI's whole path: parser, command, ``Environment.json``)
on a node written by ``generate all``; ``recover``'s plan on the seed disaster of tests/unit/test_executor.py (the
kubelet's files and etcd's data survive, ``/etc/kubernetes`` is gone). ``recover --apply`` needs a kubelet, etcd and
an API server: its document is built by the command's own :func:`result_document` from the executor's result
against the unit tests' simulated cluster (the lab tests run the real one).
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from kuberevive.cli.app import main
from kuberevive.cli.commands.recover import result_document
from kuberevive.cli.env import Environment
from kuberevive.core import backup as core
from kuberevive.core.backup import BackupFile, NodeIdentity, Secret
from kuberevive.io.backupfile import collect_node_files
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model import paths
from kuberevive.model.document import (
    DOCUMENT_TYPES,
    LAB_DEMO,
    LAB_STATUS,
    QUORUM_PLAN,
    QUORUM_RESULT,
    REPLACE_PLAN,
    REPLACE_RESULT,
    RESTORE_ETCD,
)
from tests.documents import errors, schema_of, validate
from tests.integration.test_backup_cli import BIN_DIR, ETCD_MANIFEST_N1, _client, _reachable, etcd_root
from tests.unit.test_executor import Cluster, _config_text, seed_disaster

pytestmark = pytest.mark.integration
__all__ = ["etcd_root"]  # the fixture: a real etcd with kubeadm's certificates (tests/integration/test_backup_cli.py)

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "endpoint-sans.yaml"
PASSPHRASE = "schema test passphrase"
#: Documents the module's commands do not print: the lab's (tests/lab/test_lab.py validates ``lab status``), and
#: restore-etcd's (it needs a real etcd: test_restore_etcd_output_matches_its_schema), and replace-control-plane's
#: and quorum-restore's (they need a real HA cluster: tests/lab/test_replace_lab.py validates all four).
NOT_RUN_HERE = {
    LAB_STATUS.kind, LAB_DEMO.kind, RESTORE_ETCD.kind, REPLACE_PLAN.kind, REPLACE_RESULT.kind, QUORUM_PLAN.kind,
    QUORUM_RESULT.kind,
}  # fmt: skip
_QUORUM_PLAN_BODY: dict[str, Any] = {
    "donor": {"node": "cp1", "revision": 1031, "data_dir": "/var/lib/etcd", "snapshot": None, "backup": None},
    "members": [
        {"node": "cp1", "member": "cp1", "peer_url": "https://172.30.0.11:2380", "client_url": "https://172.30.0.11:2379",
         "healthy": False, "why": "RAFT NO LEADER", "data": True, "revision": 1031},
        {"node": "cp2", "member": "cp2", "peer_url": "https://172.30.0.13:2380", "client_url": "https://172.30.0.13:2379",
         "healthy": False, "why": "unreachable", "data": True, "revision": None},
    ],
    "steps": [{"id": "restore-donor", "node": "cp1", "title": "restore the donor's db"}],
    "notes": [],
}  # fmt: skip
_REPLACE_PLAN_BODY: dict[str, Any] = {
    "node": "cp3",
    "new_name": "cp3",
    "address": "172.30.0.14",
    "lost_member": {"id": "7844467678905424409", "name": "cp3", "peer_urls": ["https://172.30.0.14:2380"]},
    "healthy_members": ["cp1", "cp2"],
    "voting_members": 3,
    "steps": [{"id": "remove-member", "title": "remove the lost etcd member"}],
    "files": ["/etc/kubernetes/pki/ca.crt"],
    "notes": [],
}


def run(*argv: str, expect: int = 0, output: str = "--json") -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, environ={"KUBEREVIVE_PASSPHRASE": PASSPHRASE})
    code = main([*argv, *output.split()], env)
    assert code == expect, (argv, code, err.getvalue())
    text = out.getvalue()
    data: dict[str, Any] = yaml.safe_load(text) if "yaml" in output else json.loads(text)
    return data


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """kind -> every document the commands printed for it, each command run once on a temporary node."""
    base = tmp_path_factory.mktemp("documents")
    node, copy_, empty, backups = base / "node", base / "copy", base / "empty", base / "backups"
    node.mkdir()
    empty.mkdir()
    docs = [
        run("generate", "all", "--config", str(CONFIG), "--root", str(node), "--dry-run"),
        run("generate", "all", "--config", str(CONFIG), "--root", str(node)),
        run("generate", "all", "--config", str(CONFIG), "--root", str(node)),  # every file unchanged
    ]
    kubelet = node / "var/lib/kubelet"
    kubelet.mkdir(parents=True, exist_ok=True)
    (kubelet / "config.yaml").write_text("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n")
    docs += [
        run("diagnose", "--root", str(node), "--offline", expect=2),  # no etcd data: an error
        run("certs", "check", "--root", str(node)),
        run("certs", "check", "--root", str(node), "--expiry-warning-days", "400", expect=3),
        run("certs", "renew", "--root", str(node), "--all"),
        run("ca", "extend", "--root", str(node), "--all"),
        run("backup", "create", "--root", str(node), "--out", f"{backups}/"),
        run("backup", "create", "--root", str(node), "--out", f"{backups}/"),
        run("backup", "list", str(backups)),
        run("version"),
    ]
    made = sorted(str(p) for p in backups.iterdir())
    docs += [
        run("backup", "verify", made[0]),
        run("backup", "prune", str(backups), "--keep", "1", "--dry-run"),
        run("backup", "restore", made[0], "--root", str(empty), "--dry-run"),
    ]
    copy_.mkdir()
    run("generate", "all", "--config", str(CONFIG), "--root", str(copy_))
    (copy_ / "etc/kubernetes/pki/ca.key").chmod(0o644)  # diagnose: file.permissions, with its mode
    docs += [
        run("certs", "renew", "--root", str(copy_), "--all", "--apply"),
        run("ca", "extend", "--root", str(copy_), "--all", "--apply"),
        run("diagnose", "--root", str(copy_), "--offline", expect=2),
        run("backup", "restore", made[1], "--root", str(node), "--all"),  # every file unchanged
    ]
    seed = seed_disaster(base / "seed").prefix
    config = base / "seed-config.yaml"
    config.write_text(_config_text("10.123.0.0/16"))
    docs += [
        run("recover", "--root", str(seed), "--config", str(config)),
        run("diagnose", "--root", str(seed), "--offline", expect=2),  # the survivors: recovery.* findings
        json.loads(json.dumps(result_document(Cluster(base / "cluster").recover()))),
    ]
    found: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        found.setdefault(d["kind"], []).append(d)
    return found


KINDS = [t.kind for t in DOCUMENT_TYPES]


def test_every_document_type_has_its_schema_and_every_schema_a_document_type() -> None:
    files = {p.name for p in (Path(__file__).resolve().parents[2] / "src/kuberevive/schemas").glob("*.json")}
    assert files == {t.schema_file for t in DOCUMENT_TYPES}
    for t in DOCUMENT_TYPES:
        schema = schema_of(t.kind)  # also checked against the draft 2020-12 meta-schema
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["properties"]["schema"] == {"const": t.schema}, t
        assert schema["properties"]["kind"] == {"const": t.kind}, t
        assert {"schema", "kind"} <= set(schema["required"]), t


def test_every_command_prints_a_document_of_a_known_kind(documents: dict[str, list[dict[str, Any]]]) -> None:
    assert set(documents) == set(KINDS) - NOT_RUN_HERE
    for kind, docs in documents.items():
        for d in docs:
            assert list(d)[:2] == ["schema", "kind"], kind


@pytest.mark.parametrize("kind", sorted(set(KINDS) - NOT_RUN_HERE))
def test_real_output_matches_its_schema(documents: dict[str, list[dict[str, Any]]], kind: str) -> None:
    for d in documents[kind]:
        validate(d)


def test_yaml_output_is_the_same_document(tmp_path: Path) -> None:
    as_yaml = run("diagnose", "--root", str(tmp_path), "--offline", output="-o yaml", expect=3)
    assert validate(as_yaml)["status"] == "not-kubeadm"
    assert as_yaml == run("diagnose", "--root", str(tmp_path), "--offline", output="-o json", expect=3) | {
        "generated_at": as_yaml["generated_at"]
    }


def test_restore_etcd_output_matches_its_schema(
    tmp_path: Path, etcd_root: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``restore-etcd --json`` restoring a real etcd's snapshot (taken over its gateway) with the real etcdutl, from
    a kuberevive backup that carries the snapshot and the etcd manifest (the node has none: nothing to stop)."""
    root, endpoint = etcd_root
    client = _client(root, endpoint)
    deadline = time.monotonic() + 60
    while not (_reachable(client) and client.health()[0]):  # poll until etcd answers (a generous limit)
        assert time.monotonic() < deadline, (tmp_path / "etcd.log").read_text()[-2000:]
        time.sleep(0.3)
    files = [*collect_node_files(NodeRoot(root)), BackupFile(paths.ETCD_MANIFEST, 0o600, ETCD_MANIFEST_N1)]
    archive = core.build_archive(
        files,
        created=datetime.now(UTC),
        node=NodeIdentity("n1", "n1", ()),
        tool_version="test",
        etcd_snapshot=client.snapshot(),
    )
    backup = tmp_path / "with-snapshot.age"
    backup.write_bytes(core.encrypt(archive, Secret(passphrase=PASSPHRASE)))
    target = tmp_path / "target"
    (target / "var/lib/etcd/member").mkdir(parents=True)
    monkeypatch.setenv("PATH", f"{BIN_DIR}:{os.environ['PATH']}")  # etcdutl
    doc = validate(run("restore-etcd", "--snapshot", str(backup), "--root", str(target)))
    assert (doc["member"], doc["data_dir"], doc["healthy"]) == ("n1", "/var/lib/etcd", False)
    assert doc["old_data_dir"] is not None and doc["warnings"], doc  # nothing on the node ties it to this cluster


# ------------------------------------------------------------------------------ wrong documents are refused

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _leaves(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _leaves(v, (*path, i))
    else:
        yield path, doc


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    wrong = copy.deepcopy(doc)
    target: Any = wrong
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return wrong


def _wrong_versions(doc: dict[str, Any]) -> dict[str, Any]:
    """What a regression would print: each a copy of ``doc`` with one thing wrong."""
    body = [k for k in doc if k not in ("schema", "kind")]
    wrong: dict[str, Any] = {
        "no schema": {k: v for k, v in doc.items() if k != "schema"},
        "another kind": doc | {"kind": "Something"},
        "an older schema id": doc | {"schema": doc["schema"].rsplit("/v", 1)[0] + "/v0"},
        f"no {body[0]}": {k: v for k, v in doc.items() if k != body[0]},
        "an unknown key": doc | {"surprise": 1},
        "a list, not an object": [doc],
    }
    leaves = list(_leaves(doc))
    typed = next(((p, v) for p, v in leaves if isinstance(v, bool | int | float) and p[-1] != "exit_code"), None)
    if typed is not None:
        wrong[f"{'/'.join(map(str, typed[0]))} as a string"] = _set(doc, typed[0], str(typed[1]).lower())
    when = next(((p, v) for p, v in leaves if isinstance(v, str) and TIME.match(v)), None)
    if when is not None:
        wrong[f"{'/'.join(map(str, when[0]))} not RFC 3339 UTC"] = _set(
            doc, when[0], when[1].replace("Z", ".123456+00:00")
        )
    return wrong


#: A hand-made document of each kind no command printed here (the shape the command prints, docs/json.md).
HAND_MADE: dict[str, dict[str, Any]] = {
    RESTORE_ETCD.kind: {
        "schema": RESTORE_ETCD.schema,
        "kind": RESTORE_ETCD.kind,
        "member": "cp1",
        "data_dir": "/var/lib/etcd",
        "old_data_dir": "/var/lib/etcd.kuberevive-20261205T010203Z",
        "healthy": True,
        "seconds": 12.5,
        "steps": ["restored the snapshot into /var/lib/etcd (a new one-member cluster)"],
        "warnings": [],
    },
    LAB_STATUS.kind: {
        "schema": LAB_STATUS.schema,
        "kind": LAB_STATUS.kind,
        "status": "up",
        "state_dir": "/var/lib/kuberevive-lab/0",
        "kubeadm_init_config": None,
        "nodes": [
            {
                "name": "cp1",
                "role": "control-plane",
                "address": "172.30.0.11",
                "state": "up",
                "services": {"kubelet": "active"},
                "kubernetes": "Ready",
            }
        ],
    },
    LAB_DEMO.kind: {"schema": LAB_DEMO.schema, "kind": LAB_DEMO.kind, "recover_exit_code": 0, "failed": 0},
    REPLACE_PLAN.kind: {"schema": REPLACE_PLAN.schema, "kind": REPLACE_PLAN.kind, **_REPLACE_PLAN_BODY},
    REPLACE_RESULT.kind: {
        "schema": REPLACE_RESULT.schema,
        "kind": REPLACE_RESULT.kind,
        "plan": _REPLACE_PLAN_BODY,
        "applied": ["remove-member"],
        "resumed": False,
        "members": [{"id": "1", "name": "cp1", "peer_urls": ["https://172.30.0.11:2380"], "is_learner": False}],
        "messages": [],
        "seconds": 84.0,
    },
    QUORUM_PLAN.kind: {"schema": QUORUM_PLAN.schema, "kind": QUORUM_PLAN.kind, **_QUORUM_PLAN_BODY},
    QUORUM_RESULT.kind: {
        "schema": QUORUM_RESULT.schema,
        "kind": QUORUM_RESULT.kind,
        "plan": _QUORUM_PLAN_BODY,
        "applied": ["regrow:cp2", "restart-components"],
        "resumed": True,
        "members": [{"id": "a1", "name": "cp1", "peer_urls": ["https://172.30.0.11:2380"], "is_learner": False}],
        "messages": [],
        "seconds": 83.3,
    },
}


@pytest.mark.parametrize("kind", KINDS)
def test_a_wrong_document_is_refused(documents: dict[str, list[dict[str, Any]]], kind: str) -> None:
    doc = documents[kind][0] if kind in documents else validate(HAND_MADE[kind])
    for what, wrong in _wrong_versions(doc).items():
        if kind == LAB_DEMO.kind and what in ("an unknown key",):
            continue  # the demo's measurements are open (its schema says so)
        assert errors(wrong), f"{kind} with {what} was accepted"


def test_typed_values_and_times_are_enforced_where_regressions_would_break_scripts(
    documents: dict[str, list[dict[str, Any]]],
) -> None:
    """The mistakes of v1 that the contract removed: diagnose details as strings, a bare list from ``backup list``,
    ``isoformat()`` times, the command name instead of a kind."""
    seed_report = next(
        d for d in documents["DiagnoseReport"] if any(f["id"] == "recovery.etcd-data" for f in d["findings"])
    )
    i = next(i for i, f in enumerate(seed_report["findings"]) if f["id"] == "recovery.etcd-data")
    details = seed_report["findings"][i]["details"]
    assert isinstance(details["member_names"], list) and isinstance(details["size_bytes"], int)
    checks: list[tuple[str, Callable[[], Any]]] = [
        ("member_names as 'a,b'", lambda: _set(seed_report, ("findings", i, "details", "member_names"), "cp1,cp2")),
        ("size_bytes as a string", lambda: _set(seed_report, ("findings", i, "details", "size_bytes"), "4096")),
        ("backup list as a bare array", lambda: documents["BackupList"][0]["items"]),
        (
            "a created time with microseconds and +00:00",
            lambda: _set(documents["BackupList"][0], ("items", 0, "created"), "2026-12-05T00:21:16.123456+00:00"),
        ),
        ("command instead of kind", lambda: {"command": "backup create"} | documents["BackupCreated"][0]),
        ("a file mode as a number", lambda: _set(documents["GenerateResult"][0], ("files", 0, "mode"), 384)),
    ]
    for what, make in checks:
        assert errors(make()), f"accepted: {what}"
