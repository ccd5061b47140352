"""F10 under strace: no child process of kuberevive inherits the backup passphrase (B-C3b, B-E1), and a bare
start (``--version``, ``backup create``) starts no child process at all.

Every ``execve`` of kuberevive and its children is traced with its full environment (``strace -f -v``). The
first one is kuberevive itself (the passphrase is in its environment because the test puts it there); no other
may contain the passphrase. restore-etcd runs the real ``etcdutl`` on a backup that ``backup create
--etcd-snapshot`` took from a real etcd, so the test cannot pass without a child being started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BIN_DIR = Path(os.environ.get("KUBEREVIVE_BIN_DIR", "/var/cache/kuberevive/k8s-v1.33.13-etcd-v3.5.24/bin"))
PASSPHRASE = "F10-unique-passphrase-3b9e1c7a"


def _missing(what: str) -> None:
    """Skip locally, fail under CI (as tests/integration/conftest.py does)."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="module")
def strace() -> str:
    path = shutil.which("strace")
    if path is None:
        _missing("strace is not installed (apt-get install strace)")
    assert path is not None
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBEREVIVE_PASSPHRASE"}
    return env | extra


def traced(
    strace: str, log: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``python -m kuberevive ARGS`` under strace; returns the result and one line per execve."""
    proc = subprocess.run(
        [strace, "-f", "-qq", "-v", "-s", "4096", "-e", "trace=execve", "-o", str(log),
         sys.executable, "-m", "kuberevive", *args],
        capture_output=True, text=True, timeout=300, check=False, env=env or _env(),
    )  # fmt: skip
    lines = [line for line in log.read_text(errors="replace").splitlines() if "execve(" in line]
    assert lines and f'execve("{sys.executable}"' in lines[0], lines[:1]
    return proc, lines


def _children(lines: list[str]) -> list[str]:
    return lines[1:]


def _program(line: str) -> str:
    return line.split('execve("', 1)[1].split('"', 1)[0]


def _with_secret(lines: list[str]) -> list[str]:
    return [_program(line) for line in _children(lines) if PASSPHRASE in line]


def make_root(base: Path, name: str) -> Path:
    root = base / name
    root.mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "kuberevive", "generate", "all", "--config", str(CONFIGS / "defaults.yaml"),
         "--root", str(root)],
        capture_output=True, text=True, timeout=120, check=False, env=_env(),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return root


def test_B_C3b_version_starts_no_child(tmp_path: Path, strace: str):
    proc, lines = traced(strace, tmp_path / "version.strace", "--version", env=_env(KUBEREVIVE_PASSPHRASE=PASSPHRASE))
    assert proc.returncode == 0 and proc.stdout.startswith("kuberevive "), proc.stderr
    assert PASSPHRASE in lines[0]  # the environment really was traced
    assert [_program(line) for line in _children(lines)] == []  # was 31 (ldconfig, gcc, collect2, ld, ...)


def test_B_C3b_backup_create_passes_the_passphrase_to_no_child(tmp_path: Path, strace: str):
    root = make_root(tmp_path, "node")
    out = tmp_path / "x.age"
    proc, lines = traced(
        strace, tmp_path / "create.strace", "backup", "create", "--root", str(root), "--out", str(out),
        env=_env(KUBEREVIVE_PASSPHRASE=PASSPHRASE),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert _with_secret(lines) == []
    assert [_program(line) for line in _children(lines)] == []
    assert PASSPHRASE not in proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- restore-etcd with a real etcd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def etcd_node(tmp_path: Path) -> Iterator[Path]:
    """A generated node root whose etcd (the real one, with the root's certificates) serves on a free port."""
    etcd, etcdutl = BIN_DIR / "etcd", BIN_DIR / "etcdutl"
    if not etcd.is_file() or not etcdutl.is_file():
        _missing(f"etcd/etcdutl not built in {BIN_DIR}: run src/kuberevive/lab/data/build-binaries.sh")
    root = make_root(tmp_path, "node")
    client, peer = _free_port(), _free_port()
    manifest = root / "etc/kubernetes/manifests/etcd.yaml"
    text = manifest.read_text()
    assert "--listen-client-urls=https://127.0.0.1:2379," in text
    manifest.write_text(text.replace("https://127.0.0.1:2379,", f"https://127.0.0.1:{client},"))
    pki = root / "etc/kubernetes/pki/etcd"
    argv = [
        str(etcd), "--name=n1", f"--data-dir={tmp_path / 'etcd-data'}",
        f"--listen-client-urls=https://127.0.0.1:{client}", f"--advertise-client-urls=https://127.0.0.1:{client}",
        f"--listen-peer-urls=https://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=https://127.0.0.1:{peer}",
        f"--initial-cluster=n1=https://127.0.0.1:{peer}",
        f"--cert-file={pki}/server.crt", f"--key-file={pki}/server.key", f"--trusted-ca-file={pki}/ca.crt",
        "--client-cert-auth=true", f"--peer-cert-file={pki}/peer.crt", f"--peer-key-file={pki}/peer.key",
        f"--peer-trusted-ca-file={pki}/ca.crt", "--peer-client-cert-auth=true", "--listen-metrics-urls=",
    ]  # fmt: skip
    log = (tmp_path / "etcd.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=_env())
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", client)) == 0:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "etcd.log").read_text()[-2000:]
            time.sleep(0.2)
        yield root
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_B_E1_restore_etcd_passes_the_passphrase_to_no_child(tmp_path: Path, strace: str, etcd_node: Path):
    env = _env(KUBEREVIVE_PASSPHRASE=PASSPHRASE, PATH=f"{BIN_DIR}:{os.environ.get('PATH', os.defpath)}")
    backup = tmp_path / "b.age"
    deadline = time.monotonic() + 30
    while True:  # etcd accepts connections a little before it serves a snapshot
        created, lines = traced(
            strace, tmp_path / "create.strace", "backup", "create", "--root", str(etcd_node), "--out", str(backup),
            "--etcd-snapshot", "--json", env=env,
        )  # fmt: skip
        if created.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert created.returncode == 0, created.stderr
    assert '"etcd_snapshot_bytes": null' not in created.stdout
    assert _with_secret(lines) == []

    # a node whose etcd data is lost and whose manifest is not there (the backup's manifest is used; no crictl)
    target = tmp_path / "target"
    (target / "var/lib/etcd/member").mkdir(parents=True)
    (target / "var/lib/etcd/member/old").write_text("old data")
    restored, lines = traced(
        strace, tmp_path / "restore.strace", "restore-etcd", "--snapshot", str(backup), "--root", str(target), env=env
    )
    assert restored.returncode == 0, restored.stderr
    assert (target / "var/lib/etcd/member/snap/db").is_file()
    started = [_program(line) for line in _children(lines)]
    assert str(BIN_DIR / "etcdutl") in started, started  # a child was started, so the check below means something
    assert _with_secret(lines) == []
    assert PASSPHRASE not in restored.stdout + restored.stderr
