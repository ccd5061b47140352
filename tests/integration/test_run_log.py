"""Issue 15: the run's log. Real processes on generated roots: ``--log-format json`` parses line by line, a run
that changes the node keeps a log under ``/var/lib/kuberevive/log`` of its root (0600) that names what it did and
holds no PEM block, token or passphrase although the run handled all three; read-only runs leave nothing; the
global flags work after the command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "defaults.yaml"
PASSPHRASE = "tr0ub4dor-and-3-more-words"
TOKEN = "BearerT0ken-for-admin-7f3c9e"


def kuberevive(*args: str, passphrase: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBEREVIVE_PASSPHRASE", "COLUMNS")}
    if passphrase:
        env["KUBEREVIVE_PASSPHRASE"] = PASSPHRASE
    return subprocess.run(
        [sys.executable, "-m", "kuberevive", *args], capture_output=True, text=True, timeout=180, check=False, env=env
    )


def log_files(root: Path) -> list[Path]:
    d = root / "var/lib/kuberevive/log"
    return sorted(d.iterdir()) if d.is_dir() else []


def assert_no_secret(text: str) -> None:
    for secret in ("-----BEGIN", "-----END", "LS0tLS1CRUdJT", PASSPHRASE, TOKEN):
        assert secret not in text, secret


def test_json_lines_on_stderr_and_a_log_of_the_run(tmp_path: Path) -> None:
    root = tmp_path / "node"
    root.mkdir()
    dry = kuberevive("generate", "all", "--config", str(CONFIG), "--root", str(root), "--dry-run")
    assert dry.returncode == 0 and log_files(root) == []  # changes nothing, not even a log
    r = kuberevive("generate", "all", "--config", str(CONFIG), "--root", str(root), "--log-format", "json")
    assert r.returncode == 0, r.stderr
    docs = [json.loads(line) for line in r.stderr.splitlines()]  # every line is one JSON document
    assert docs and all({"time", "level", "msg"} <= d.keys() for d in docs)
    assert docs[0]["msg"].startswith("generating all for node ") and docs[0]["time"].endswith("Z")
    (log,) = log_files(root)
    assert log.name.startswith("generate-") and log.stat().st_mode & 0o777 == 0o600
    text = log.read_text()
    assert "generating all for node " in text and "--log-format" in text.splitlines()[0]
    assert_no_secret(text)
    diag = kuberevive("diagnose", "--root", str(root), "--offline", "--log-format", "json")
    assert diag.returncode in (0, 1, 2) and diag.stderr == "" and len(log_files(root)) == 1  # read-only: no log


def test_a_restore_handles_keys_a_token_and_the_passphrase_and_logs_none_of_them(tmp_path: Path) -> None:
    root = tmp_path / "node"
    root.mkdir()
    assert kuberevive("generate", "all", "--config", str(CONFIG), "--root", str(root)).returncode == 0
    admin = root / "etc/kubernetes/admin.conf"
    doc = yaml.safe_load(admin.read_text())
    doc["users"][0]["user"]["token"] = TOKEN
    admin.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = tmp_path / "b.age"
    made = kuberevive("backup", "create", "--root", str(root), "--out", str(out), passphrase=True)
    assert made.returncode == 0, made.stderr
    for rel in ("etc/kubernetes/admin.conf", "etc/kubernetes/pki/apiserver.key", "etc/kubernetes/pki/sa.key"):
        (root / rel).unlink()
    r = kuberevive("backup", "restore", str(out), "--root", str(root), "--log-format", "text", passphrase=True)
    assert r.returncode == 0, r.stderr
    assert TOKEN in admin.read_text()  # the run did carry the token, the key and (to decrypt) the passphrase
    logs = [p for p in log_files(root) if p.name.startswith("backup-restore-")]
    assert len(logs) == 1, log_files(root)
    text = logs[0].read_text()
    # the header, what the run printed (the files it restored) and how it ended
    assert "stdout: " in text and "/etc/kubernetes/pki/sa.key" in text, text
    assert re.search(r"info    exit 0 after \d+\.\d s$", text.splitlines()[-1]), text
    for every in log_files(root):
        assert_no_secret(every.read_text())
    assert_no_secret(r.stdout + r.stderr + made.stderr)


def test_global_flags_after_the_command(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    r = kuberevive("diagnose", "--root", str(missing), "--traceback", "--log-format", "json")
    assert r.returncode == 3, r.stderr  # not 64: the flags were accepted after the command
    (doc,) = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    assert doc["level"] == "error" and "does not exist" in doc["msg"]
    r = kuberevive("--log-format", "json", "backup", "list", str(tmp_path), "--traceback")
    assert r.returncode == 0, r.stderr
