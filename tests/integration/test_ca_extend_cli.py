"""``kuberevive ca extend`` end to end on trees written by ``kuberevive generate all`` into a temporary root
(``--root`` other than ``/``: the files are written, nothing is restarted), checked with real ``openssl``.

The plan changes nothing; ``--apply`` re-issues the CAs with the same keys and puts them into every kubeconfig;
every leaf keeps its serial and verifies against the new CAs (also at a time after the old CA expired); old files
are moved aside; a run SIGKILLed at any write resumes and converges to one set of new CAs everywhere."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from kuberevive.core import pki
from tests.integration.test_certs_cli import check_json, node, run, tree

__all__ = ["node"]  # the fixture: a tree kuberevive generate wrote

PKI = "etc/kubernetes/pki"
CAS = {"ca": "ca.crt", "front-proxy-ca": "front-proxy-ca.crt", "etcd-ca": "etcd/ca.crt"}
LEAVES = {
    "ca.crt": ["apiserver.crt", "apiserver-kubelet-client.crt"],
    "front-proxy-ca.crt": ["front-proxy-client.crt"],
    "etcd/ca.crt": ["etcd/server.crt", "etcd/peer.crt", "etcd/healthcheck-client.crt", "apiserver-etcd-client.crt"],
}
KUBECONFIGS = ("admin.conf", "super-admin.conf", "kubelet.conf", "controller-manager.conf", "scheduler.conf")


def serial(path: Path) -> int:
    return pki.load_certificate(path.read_bytes(), str(path)).serial_number


def kubeconfig_ca(path: Path) -> bytes:
    doc: Any = yaml.safe_load(path.read_bytes())
    return base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"])


def openssl_verify(ca: Path, leaf: Path, at: datetime | None = None) -> subprocess.CompletedProcess[str]:
    when = ["-attime", str(int(at.timestamp()))] if at else []
    return subprocess.run(
        ["openssl", "verify", *when, "-CAfile", str(ca), str(leaf)], capture_output=True, text=True, check=False
    )


def assert_extended(node: Path, before: dict[str, str], old_serials: dict[str, int]) -> None:
    """Every CA re-issued with the same key, every kubeconfig trusting it, every leaf unchanged and verifying."""
    pki_dir = node / PKI
    for rel in CAS.values():
        old = pki.load_certificate((pki_dir / rel).read_bytes(), rel)
        assert serial(pki_dir / rel) != old_serials[rel] or before[f"{PKI}/{rel}"] == tree(node)[f"{PKI}/{rel}"]
        for leaf in LEAVES[rel]:
            assert tree(node)[f"{PKI}/{leaf}"] == before[f"{PKI}/{leaf}"]  # leaves untouched
            result = openssl_verify(pki_dir / rel, pki_dir / leaf)
            assert result.returncode == 0, result.stdout + result.stderr
        assert pki.key_matches_certificate(
            pki.load_private_key((pki_dir / rel.replace(".crt", ".key")).read_bytes(), rel), old
        )
    ca = (pki_dir / "ca.crt").read_bytes()
    for name in KUBECONFIGS:
        assert kubeconfig_ca(node / "etc/kubernetes" / name) == ca, name
    code, data = check_json(node)
    assert code == 0, [i for i in data["items"] if i["status"] != "ok"]


def test_plan_changes_nothing_and_apply_extends_everywhere(node: Path) -> None:
    before = tree(node)
    old_serials = {rel: serial(node / PKI / rel) for rel in CAS.values()}
    old_ca = node.joinpath(PKI, "ca.crt").read_bytes()

    code, out, err = run("ca", "extend", "--root", str(node), "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["cas"] == []  # nothing expires within 30 days
    code, out, err = run("ca", "extend", "--root", str(node), "--all", "--json")
    assert (code, err) == (0, "")
    plan = json.loads(out)
    assert sorted(c["name"] for c in plan["cas"]) == sorted(CAS)
    planned = {f["path"] for f in plan["files"]}
    assert planned == {f"/{PKI}/{rel}" for rel in CAS.values()} | {f"/etc/kubernetes/{k}" for k in KUBECONFIGS}
    assert tree(node) == before

    code, out, err = run("ca", "extend", "--root", str(node), "ca", "--apply", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert [c["name"] for c in result["cas"]] == ["ca"] and result["applied"] == ["files"]
    after = tree(node)
    assert after[f"{PKI}/front-proxy-ca.crt"] == before[f"{PKI}/front-proxy-ca.crt"]  # only what was named
    assert after[f"{PKI}/etcd/ca.crt"] == before[f"{PKI}/etcd/ca.crt"]
    new = pki.load_certificate(node.joinpath(PKI, "ca.crt").read_bytes(), "ca.crt")
    old = pki.load_certificate(old_ca, "old ca.crt")
    assert new.serial_number != old.serial_number and pki.same_public_key(new, old) and new.subject == old.subject
    assert_extended(node, before, old_serials)
    # the old files are kept, moved aside
    backups = list((node / "var/lib/kuberevive/backup").rglob("ca.crt"))
    assert [b.read_bytes() for b in backups] == [old_ca]
    # (that a leaf verifies against the new CA once the old one has expired: test_ca_extend_openssl.py)
    assert new.not_valid_after_utc > datetime.now(UTC) + timedelta(days=3649)

    code, out, err = run("ca", "extend", "--root", str(node), "--all", "--apply", "--json")
    assert code == 0, err
    assert_extended(node, before, old_serials)


def test_unknown_or_external_ca_is_one_line_and_changes_nothing(node: Path) -> None:
    before = tree(node)
    code, _out, err = run("ca", "extend", "--root", str(node), "root-ca", "--apply")
    assert code == 1 and err.startswith("kuberevive: error: unknown CA root-ca") and len(err.splitlines()) == 1
    (node / PKI / "front-proxy-ca.key").rename(node / "front-proxy-ca.key")
    code, _out, err = run("ca", "extend", "--root", str(node), "front-proxy-ca", "--apply")
    assert code == 1 and "external CA" in err and len(err.splitlines()) == 1
    (node / "front-proxy-ca.key").rename(node / PKI / "front-proxy-ca.key")
    assert tree(node) == before


@pytest.mark.parametrize("kill_at", [2, 6, 9, 12])
def test_killed_run_resumes_to_one_set_of_new_cas(node: Path, kill_at: int) -> None:
    before = tree(node)
    old_serials = {rel: serial(node / PKI / rel) for rel in CAS.values()}
    script = "import sys; from kuberevive.cli.app import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", script, "ca", "extend", "--root", str(node), "--all", "--apply"]
    env = os.environ | {"KUBEREVIVE_TEST_KILL_AFTER_WRITE": str(kill_at)}
    killed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    journal_path = node / "var/lib/kuberevive/ca-extend/journal.json"
    journal = json.loads(journal_path.read_text()) if journal_path.exists() else None
    code, out, err = run("ca", "extend", "--root", str(node), "--all", "--apply", "--json")
    assert code == 0, err
    final = json.loads(journal_path.read_text())
    assert final["status"] == "done"
    if journal is not None and journal.get("cas"):  # the certificates made before the kill are the ones written
        assert [c["new"] for c in journal["cas"]] == [c["new"] for c in final["cas"]]
        assert json.loads(out)["resumed"] is True
    for c in final["cas"]:
        assert node.joinpath(c["path"].lstrip("/")).read_text() == c["new"]
    assert_extended(node, before, old_serials)
