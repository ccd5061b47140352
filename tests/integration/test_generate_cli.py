"""``kuberevive generate`` as a real process: dry run, JSON, idempotence, --force, and bad input that
gives one clear line, a non-zero exit and a target root that is byte-for-byte unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEFAULTS = CONFIGS / "defaults.yaml"


def kuberevive(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kuberevive", *args], capture_output=True, text=True, timeout=120, check=False
    )


#: The node's lock (held by every run that writes, shared with recover) and its directories: the tool's own state.
LOCK = "var/lib/kuberevive/recover/lock"
LOCK_AND_PARENTS = {LOCK, *(str(p) for p in Path(LOCK).parents if str(p) != ".")}


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path below root with its full mode and (for files) its bytes; the node's lock aside."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            if str(p.relative_to(root)) in LOCK_AND_PARENTS:
                continue
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, p.read_bytes() if p.is_file() else None)
    return out


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("kuberevive: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for f in fragments:
        assert f in errors[0], errors[0]


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    root = tmp_path / "node"
    root.mkdir()
    result = kuberevive("generate", "all", "--config", str(DEFAULTS), "--root", str(root))
    assert result.returncode == 0, result.stderr
    return root


def test_dry_run_lists_every_file_and_writes_nothing(tmp_path: Path):
    before = snapshot(tmp_path)
    result = kuberevive("generate", "all", "--config", str(DEFAULTS), "--root", str(tmp_path), "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    assert snapshot(tmp_path) == before
    report = json.loads(result.stdout)
    assert report["dry_run"] is True
    files = {f["path"]: f for f in report["files"]}
    assert len(files) == 31  # 10 certs + 10 keys + sa pair + 5 kubeconfigs + 4 manifests
    assert files["/etc/kubernetes/pki/ca.key"]["mode"] == "0600"
    assert files["/etc/kubernetes/pki/ca.crt"]["mode"] == "0644"
    assert files["/etc/kubernetes/pki/sa.pub"]["mode"] == "0600"
    assert files["/etc/kubernetes/admin.conf"]["kind"] == "kubeconfig"
    assert files["/etc/kubernetes/manifests/etcd.yaml"]["mode"] == "0600"
    assert {f["action"] for f in report["files"]} == {"create"}


def test_written_tree_has_kubeadm_modes_and_a_second_run_changes_nothing(populated: Path):
    k = populated / "etc/kubernetes"
    assert oct(k.joinpath("pki/ca.key").stat().st_mode & 0o777) == "0o600"
    assert oct(k.joinpath("pki/etcd/peer.crt").stat().st_mode & 0o777) == "0o644"
    assert oct(k.joinpath("manifests").stat().st_mode & 0o777) == "0o700"
    assert oct(k.joinpath("pki").stat().st_mode & 0o777) == "0o755"
    before = snapshot(populated)
    again = kuberevive("generate", "all", "--config", str(DEFAULTS), "--root", str(populated), "--json")
    assert again.returncode == 0, again.stderr
    assert snapshot(populated) == before
    report = json.loads(again.stdout)
    assert {f["action"] for f in report["files"]} == {"unchanged"}
    assert "/etc/kubernetes/pki/ca.key" in report["reused"]
    assert "/etc/kubernetes/admin.conf" in report["reused"]


def test_force_moves_the_old_file_aside_with_a_timestamp(populated: Path):
    manifest = populated / "etc/kubernetes/manifests/kube-apiserver.yaml"
    manifest.write_text(manifest.read_text() + "# edited by hand\n")
    edited = manifest.read_bytes()
    refused = kuberevive("generate", "manifests", "--config", str(DEFAULTS), "--root", str(populated))
    assert_one_line_error(refused, "already exist", "--force")
    assert manifest.read_bytes() == edited

    forced = kuberevive(
        "generate", "manifests", "--config", str(DEFAULTS), "--root", str(populated), "--force", "--json"
    )
    assert forced.returncode == 0, forced.stderr
    entry = next(f for f in json.loads(forced.stdout)["files"] if f["path"].endswith("kube-apiserver.yaml"))
    assert entry["action"] == "replace"
    aside = populated / entry["moved_aside_to"].lstrip("/")
    assert aside.read_bytes() == edited
    assert entry["moved_aside_to"].startswith("/var/lib/kuberevive/backup/")
    assert b"# edited by hand" not in manifest.read_bytes()


@pytest.mark.parametrize(
    ("config_text", "fragments"),
    [
        ("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n  networking: [\n", ("not valid YAML",)),
        ("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfig\n", ("unknown kind 'ClusterConfig'",)),
        (
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nnetworking:\n  podSubnet: 10.1.0.0/99\n",
            ("ClusterConfiguration.networking.podSubnet", "not a valid CIDR"),
        ),
    ],
)
def test_bad_configuration_changes_nothing(
    populated: Path, tmp_path: Path, config_text: str, fragments: tuple[str, ...]
):
    config = tmp_path / "bad.yaml"
    config.write_text(config_text)
    before = snapshot(populated)
    result = kuberevive("generate", "all", "--config", str(config), "--root", str(populated))
    assert_one_line_error(result, str(config), *fragments)
    assert snapshot(populated) == before


def test_ca_key_not_matching_ca_cert_changes_nothing(populated: Path, tmp_path: Path):
    other = tmp_path / "other"
    other.mkdir()
    assert kuberevive("generate", "certs", "--config", str(DEFAULTS), "--root", str(other)).returncode == 0
    (populated / "etc/kubernetes/pki/ca.key").write_bytes((other / "etc/kubernetes/pki/ca.key").read_bytes())
    (populated / "etc/kubernetes/pki/apiserver.crt").unlink()  # so that something would be written
    before = snapshot(populated)
    for what in ("all", "certs", "kubeconfigs"):
        result = kuberevive("generate", what, "--config", str(DEFAULTS), "--root", str(populated))
        assert_one_line_error(result, "ca.key", "does not belong to")
        assert snapshot(populated) == before


def test_truncated_pem_changes_nothing(populated: Path):
    ca = populated / "etc/kubernetes/pki/ca.crt"
    ca.write_bytes(ca.read_bytes()[:200])
    before = snapshot(populated)
    result = kuberevive("generate", "all", "--config", str(DEFAULTS), "--root", str(populated))
    assert_one_line_error(result, "/etc/kubernetes/pki/ca.crt")
    assert snapshot(populated) == before


def test_a_path_under_a_file_is_a_clear_error(tmp_path: Path):
    (tmp_path / "etc/kubernetes").mkdir(parents=True)
    (tmp_path / "etc/kubernetes/manifests").write_text("not a directory")
    before = snapshot(tmp_path)
    result = kuberevive("generate", "all", "--config", str(DEFAULTS), "--root", str(tmp_path))
    assert_one_line_error(result, "/etc/kubernetes/manifests/etcd.yaml", "is a file, expected a directory")
    assert snapshot(tmp_path) == before


def test_a_write_failing_part_way_is_rolled_back(populated: Path):
    # missing certificates (to be created first), a changed manifest (to be replaced with --force), and a
    # regular file where the backup directory must go: moving the manifest aside fails after the PKI writes
    for name in ("apiserver.crt", "apiserver.key", "front-proxy-client.crt", "front-proxy-client.key"):
        (populated / "etc/kubernetes/pki" / name).unlink()
    manifest = populated / "etc/kubernetes/manifests/kube-scheduler.yaml"
    manifest.write_text(manifest.read_text() + "# local edit\n")
    (populated / "var/lib/kuberevive").mkdir(parents=True, exist_ok=True)
    (populated / "var/lib/kuberevive/backup").write_text("in the way")
    before = snapshot(populated)
    result = kuberevive("generate", "all", "--config", str(DEFAULTS), "--root", str(populated), "--force")
    assert_one_line_error(result, "rolled back")
    # the run changed files (then rolled them back): its log stays, and the error names it (issue 15)
    logs = [p for p in (populated / "var/lib/kuberevive/log").iterdir() if str(p.relative_to(populated)) not in before]
    assert len(logs) == 1 and f"(log: {logs[0]})" in result.stderr, result.stderr
    assert "rolled back" in logs[0].read_text()
    logs[0].unlink()
    assert snapshot(populated) == before


def test_missing_config_file_and_missing_root(tmp_path: Path):
    result = kuberevive("generate", "all", "--config", str(tmp_path / "nope.yaml"), "--root", str(tmp_path))
    assert_one_line_error(result, "does not exist")
    result = kuberevive("generate", "all", "--config", str(DEFAULTS), "--root", str(tmp_path / "missing"))
    assert_one_line_error(result, "root directory")


def test_an_expired_certificate_is_labelled_expired_and_renewed_under_force(tmp_path: Path):
    """ux (issue 18): on a node set up 800 days ago (CAs valid 10 years, leaves and kubeconfigs one year), the
    expired certificates and kubeconfigs are "kept (expired)" with a warning, never "kept (valid)"; with --force
    they are issued again by the same CA and the old files moved aside."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509

    from kuberevive.core.generate import Target, generate
    from kuberevive.model.config import NodeFacts
    from kuberevive.model.kubeadm_yaml import load_kubeadm_config

    facts = NodeFacts(hostname="cp1")
    past = datetime.now(UTC) - timedelta(days=800)
    for a in generate(Target.ALL, load_kubeadm_config(DEFAULTS.read_text(), facts), facts, past, {}).artifacts:
        target = tmp_path / a.path.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(a.content)
        target.chmod(a.mode)
    expired_files = ("/etc/kubernetes/pki/apiserver.crt", "/etc/kubernetes/admin.conf")

    kept = kuberevive("generate", "all", "--config", str(DEFAULTS), "--root", str(tmp_path))
    assert kept.returncode == 0, kept.stderr
    for path in expired_files:
        line = next(x for x in kept.stdout.splitlines() if x.rstrip().endswith(path))
        assert "kept (expired)" in line and "valid" not in line, line
    assert "/etc/kubernetes/pki/ca.crt" in next(x for x in kept.stdout.splitlines() if "kept (valid)" in x)
    assert "admin.conf has expired and was kept" in kept.stdout, kept.stdout

    renewed = kuberevive("generate", "all", "--config", str(DEFAULTS), "--root", str(tmp_path), "--force", "--json")
    assert renewed.returncode == 0, renewed.stderr
    report = json.loads(renewed.stdout)
    files = {f["path"]: f for f in report["files"]}
    for path in expired_files:
        assert files[path]["action"] == "replace" and files[path]["moved_aside_to"], files[path]
        assert (tmp_path / files[path]["moved_aside_to"].lstrip("/")).exists()
    assert report["expired"] == []
    assert "/etc/kubernetes/pki/ca.crt" in report["reused"]
    cert = x509.load_pem_x509_certificate((tmp_path / "etc/kubernetes/pki/apiserver.crt").read_bytes())
    assert cert.not_valid_after_utc > datetime.now(UTC)
