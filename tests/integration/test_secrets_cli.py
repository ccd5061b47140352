"""F10 as real processes: no secret in any message.

* B-C4: a mistaken ``--passphrase SECRET`` (or ``--passphrase=SECRET``) is a usage error (exit 64) that names the
  option and never the value, and ``recover`` no longer takes ``--passphrase`` for ``--passphrase-file``.
* D-N5: diagnose (JSON and human) shows a kubeconfig server URL without its ``user:password@`` or ``?token=``,
  and never the kubeconfig's bearer token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SECRET = "hunter2-SECRET-5e0f"
PASSWORD = "S3cretPassw0rd"
QUERY_TOKEN = "QueryT0ken-91ab"
BEARER_TOKEN = "BearerT0ken-77cd"


def kuberevive(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "KUBEREVIVE_PASSPHRASE"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "kuberevive", *args], capture_output=True, text=True, timeout=120, check=False,
        env=full_env,
    )  # fmt: skip


@pytest.fixture
def root(tmp_path: Path) -> Path:
    node = tmp_path / "node"
    node.mkdir()
    r = kuberevive("generate", "all", "--config", str(CONFIGS / "defaults.yaml"), "--root", str(node))
    assert r.returncode == 0, r.stderr
    return node


def assert_usage_error_without(result: subprocess.CompletedProcess[str], *secrets: str) -> None:
    assert result.returncode == 64, (result.returncode, result.stderr)
    for s in secrets:
        assert s not in result.stdout + result.stderr, result.stderr
    assert "unrecognized arguments: --passphrase (values not shown)" in result.stderr, result.stderr


@pytest.mark.parametrize("form", ["separate", "equals"])
def test_B_C4_passphrase_on_the_command_line_is_a_usage_error_that_hides_it(tmp_path: Path, root: Path, form: str):
    def pw(*before: str) -> list[str]:
        return [*before, "--passphrase", SECRET] if form == "separate" else [*before, f"--passphrase={SECRET}"]

    out = tmp_path / "x.age"
    assert_usage_error_without(kuberevive(*pw("backup", "create", "--root", str(root), "--out", str(out))), SECRET)
    assert not out.exists()
    assert_usage_error_without(kuberevive(*pw("recover", "--root", str(root))), SECRET)
    assert_usage_error_without(kuberevive(*pw("restore-etcd", "--snapshot", str(out), "--root", str(root))), SECRET)
    assert_usage_error_without(kuberevive(*pw("backup", "verify", str(out))), SECRET)
    assert_usage_error_without(kuberevive(*pw("backup", "restore", str(out), "--root", str(root))), SECRET)


def test_B_C4_recover_does_not_take_passphrase_for_passphrase_file(tmp_path: Path, root: Path):
    backup = tmp_path / "b.age"
    made = kuberevive(
        "backup", "create", "--root", str(root), "--out", str(backup), env={"KUBEREVIVE_PASSPHRASE": "right one"}
    )
    assert made.returncode == 0, made.stderr
    # before: --passphrase was an abbreviation of --passphrase-file, so the secret was read as a file name
    # (and printed in "cannot read the passphrase file ...")
    r = kuberevive("recover", "--root", str(root), "--from-backup", str(backup), "--passphrase", SECRET)
    assert_usage_error_without(r, SECRET)
    r = kuberevive("recover", "--root", str(root), "--from-backup", str(backup), "--passphrase", "right one")
    assert_usage_error_without(r, "right one")
    # other usage errors keep argparse's message
    r = kuberevive("backup", "create", "--root", str(root))
    assert r.returncode == 64 and "the following arguments are required: --out" in r.stderr


def _credentials_in_admin_conf(root: Path) -> None:
    path = root / "etc/kubernetes/admin.conf"
    doc = yaml.safe_load(path.read_text())
    doc["clusters"][0]["cluster"]["server"] = f"https://admin:{PASSWORD}@127.0.0.1:1/?token={QUERY_TOKEN}"
    doc["users"][0]["user"]["token"] = BEARER_TOKEN
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_D_N5_diagnose_shows_no_credential_of_a_kubeconfig(root: Path):
    _credentials_in_admin_conf(root)
    secrets = (PASSWORD, QUERY_TOKEN, BEARER_TOKEN)

    as_json = kuberevive("diagnose", "--root", str(root), "--json")  # not --offline: the server is probed
    assert as_json.returncode in (1, 2), as_json.stderr
    data = json.loads(as_json.stdout)
    unreachable = [f for f in data["findings"] if f["id"] == "kubeconfig.server-unreachable"]
    assert unreachable, [f["id"] for f in data["findings"]]  # the finding that printed the URL is there
    assert "the API server https://***@127.0.0.1:1/?token=*** does not answer" in unreachable[0]["message"]
    for s in secrets:
        assert s not in as_json.stdout + as_json.stderr, s

    human = kuberevive("diagnose", "--root", str(root), "--all")
    assert human.returncode in (1, 2), human.stderr
    assert "https://***@127.0.0.1:1" in human.stdout
    for s in secrets:
        assert s not in human.stdout + human.stderr, s
