"""``kuberevive certs check`` and ``certs renew`` end to end on trees written by ``kuberevive generate all`` into a
temporary root (``--root`` other than ``/``: renew writes files, restarts nothing), checked with real ``openssl``.

Exit codes of check (0 / 3 / 4 / 1), the plan changes nothing, ``--apply`` renews with the same subject and SANs
and new keys, old files moved aside, and a run SIGKILLed after a step resumes and writes the same files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kuberevive.cli.app import main
from kuberevive.cli.env import Environment

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "endpoint-sans.yaml"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), Environment(stdout=out, stderr=err, environ={}))
    return code, out.getvalue(), err.getvalue()


def check_json(root: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run("certs", "check", "--root", str(root), "--json", *extra)
    assert err == "", err
    return code, json.loads(out)


def tree(root: Path) -> dict[str, str]:
    """Every file (and symlink target) under root, by sha256, outside kuberevive's own state."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if rel.startswith("var/lib/kuberevive"):
            continue
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def openssl_text(path: Path) -> str:
    return subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-ext", "subjectAltName", "-in", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.fixture
def node(tmp_path: Path) -> Path:
    root = tmp_path / "node"
    root.mkdir()
    code, _out, err = run("generate", "all", "--config", str(CONFIG), "--root", str(root))
    assert code == 0, err
    return root


def test_check_exit_codes(node: Path, tmp_path: Path):
    code, data = check_json(node)
    assert (code, data["status"]) == (0, "ok")
    assert check_json(node, "--expiry-warning-days", "400")[0] == 3  # every leaf expires within 400 days
    (node / "etc/kubernetes/pki/apiserver.crt").unlink()
    code, data = check_json(node)
    assert code == 4 and next(i for i in data["items"] if i["name"] == "apiserver")["status"] == "missing"
    code, _out, err = run("certs", "check", "--root", str(tmp_path / "nowhere"))
    assert code == 1 and err.startswith("kuberevive: error: ") and len(err.splitlines()) == 1
    (tmp_path / "empty").mkdir()
    code, _out, err = run("certs", "check", "--root", str(tmp_path / "empty"))
    assert code == 1 and "not a kubeadm control-plane node" in err


def test_plan_changes_nothing_and_apply_renews(node: Path):
    before = tree(node)
    old_subject = openssl_text(node / "etc/kubernetes/pki/apiserver.crt")
    code, out, _err = run("certs", "renew", "--root", str(node), "--json")
    assert code == 0 and json.loads(out)["targets"] == []  # nothing needs it
    code, out, _err = run("certs", "renew", "--root", str(node), "--all", "--json")
    plan = json.loads(out)
    assert code == 0 and plan["apply"] is False and plan["targets"][0]["name"] == "kubelet-client"
    assert [s["id"] for s in plan["steps"]] == ["kubelet-client", "leaves", "kubeconfigs"]
    assert tree(node) == before and not (node / "var/lib/kuberevive/renew").exists()

    code, out, err = run("certs", "renew", "--root", str(node), "--all", "--apply", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["applied"] == ["kubelet-client", "leaves", "kubeconfigs"]
    after = tree(node)
    changed = {p for p in before if before[p] != after.get(p)}
    assert "etc/kubernetes/pki/ca.crt" not in changed and "etc/kubernetes/pki/ca.key" not in changed
    assert {"etc/kubernetes/pki/apiserver.crt", "etc/kubernetes/pki/apiserver.key", "etc/kubernetes/admin.conf"} <= (
        changed
    )
    assert openssl_text(node / "etc/kubernetes/pki/apiserver.crt") == old_subject  # same subject and SANs
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", "etc/kubernetes/pki/ca.crt", "etc/kubernetes/pki/apiserver.crt"],
        cwd=node,
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr
    link = node / "var/lib/kubelet/pki/kubelet-client-current.pem"
    assert os.readlink(link).startswith("/var/lib/kubelet/pki/kubelet-client-")
    # every replaced file was moved aside, byte for byte
    backups = {
        hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (node / "var/lib/kuberevive/backup").rglob("*")
        if p.is_file()
    }
    assert {before[p] for p in changed} <= backups
    code, data = check_json(node)
    assert code == 0, [i for i in data["items"] if i["status"] != "ok"]
    serials = {i["name"]: i["serial"] for i in data["items"]}
    assert serials["kubelet-client"] is not None


def test_killed_run_resumes_with_the_same_files(node: Path):
    script = "import sys; from kuberevive.cli.app import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", script, "certs", "renew", "--root", str(node), "--all", "--apply"]
    killed = subprocess.run(
        argv, env=os.environ | {"KUBEREVIVE_FAULT_AFTER_STEP": "2"}, capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -9, killed.stderr
    journal = json.loads((node / "var/lib/kuberevive/renew/journal.json").read_text())
    assert journal["status"] == "running"
    assert sorted(k for k, v in journal["steps"].items() if v["state"] == "done") == ["kubelet-client", "leaves"]
    after_kill = tree(node)
    code, out, _err = run("certs", "renew", "--root", str(node), "--json")  # the plan shows the rest
    assert code == 0 and json.loads(out)["resumed"] is True
    assert [s["id"] for s in json.loads(out)["steps"]] == ["kubeconfigs"]
    code, out, err = run("certs", "renew", "--root", str(node), "--apply", "--json")
    assert code == 0, err
    assert json.loads(out)["applied"] == ["kubeconfigs"] and json.loads(out)["resumed"] is True
    final = tree(node)
    for p in ("etc/kubernetes/pki/apiserver.crt", "etc/kubernetes/pki/apiserver.key"):
        assert final[p] == after_kill[p]  # written once, not again
    assert final["etc/kubernetes/admin.conf"] != after_kill["etc/kubernetes/admin.conf"]
    journal = json.loads((node / "var/lib/kuberevive/renew/journal.json").read_text())
    assert journal["status"] == "done"
    assert all("content" not in a for items in journal["artifacts"].values() for a in items)  # no keys left
    assert check_json(node)[0] == 0
