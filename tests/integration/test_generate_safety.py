"""``generate`` is crash- and concurrency-safe (issue 18, adversarial F5/F6: G-CC2, G-K1, G-K2, G-K3).

Real processes on a temporary root. Two test hooks of :class:`~kuberevive.io.noderoot.NodeRoot` make the races
reproducible without strace or LD_PRELOAD: ``KUBEREVIVE_TEST_FSYNC_DELAY`` sleeps before every ``fsync`` (a busy
disk) and ``KUBEREVIVE_TEST_KILL_AFTER_WRITE=n`` makes the process SIGKILL itself at its n-th write event (each
atomic write has two: temporary file written, then renamed into place).
"""

from __future__ import annotations

import base64
import fcntl
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from kuberevive.core.pki import key_matches_certificate, load_private_key, load_public_key, public_key_matches

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ECDSA = CONFIGS / "ecdsa-validity.yaml"  # fast keys: many rounds stay short
PENDING = "var/lib/kuberevive/generate/pending.json"
LOCK = "var/lib/kuberevive/recover/lock"
RUN_LOGS = "var/lib/kuberevive/log/"  # one per run that changed something (issue 15)
SIGNERS = {
    "apiserver": "ca",
    "apiserver-kubelet-client": "ca",
    "front-proxy-client": "front-proxy-ca",
    "apiserver-etcd-client": "etcd/ca",
    "etcd/server": "etcd/ca",
    "etcd/peer": "etcd/ca",
    "etcd/healthcheck-client": "etcd/ca",
}


def generate(root: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kuberevive", "generate", "all", "--config", str(ECDSA), "--root", str(root), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """Exit code and stdout + stderr."""
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out + err


def shape(root: Path) -> dict[str, int]:
    """Every file below root (the lock file and the runs' logs aside) with its mode: what a run leaves, without the
    random keys."""
    return {
        str(p.relative_to(root)): p.lstat().st_mode
        for p in sorted(root.rglob("*"))
        if p.is_file() and str(p.relative_to(root)) != LOCK and not str(p.relative_to(root)).startswith(RUN_LOGS)
    }


def assert_consistent(root: Path) -> None:
    """Every key matches its certificate, every leaf is signed by its CA, every kubeconfig embeds ca.crt and a
    client certificate signed by it with its key, sa.pub is sa.key's: never a mixed PKI."""
    pki = root / "etc/kubernetes/pki"
    certs = {p.relative_to(pki).as_posix()[:-4]: p for p in pki.rglob("*.crt")}
    assert len(certs) == 10, sorted(certs)  # 3 CAs, 7 leaves
    loaded = {name: x509.load_pem_x509_certificate(p.read_bytes()) for name, p in certs.items()}
    for name, cert in loaded.items():
        key = load_private_key((pki / f"{name}.key").read_bytes(), name)
        assert key_matches_certificate(key, cert), f"{name}.key does not belong to {name}.crt"
        signer = loaded[SIGNERS.get(name, name)]
        cert.verify_directly_issued_by(signer)  # raises when not signed by it
    sa = load_private_key((pki / "sa.key").read_bytes(), "sa.key")
    assert public_key_matches(sa, load_public_key((pki / "sa.pub").read_bytes(), "sa.pub"))
    ca_pem = (pki / "ca.crt").read_bytes()
    for conf in ("admin.conf", "super-admin.conf", "kubelet.conf", "controller-manager.conf", "scheduler.conf"):
        doc = yaml.safe_load((root / "etc/kubernetes" / conf).read_text())
        assert base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]) == ca_pem, conf
        user = doc["users"][0]["user"]
        client = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
        client.verify_directly_issued_by(loaded["ca"])
        assert key_matches_certificate(load_private_key(base64.b64decode(user["client-key-data"]), conf), client)


def no_leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".kuberevive-tmp-" in p.name] + (
        [PENDING] if (root / PENDING).exists() else []
    )


@pytest.fixture(scope="module")
def clean_shape(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    root = tmp_path_factory.mktemp("clean")
    rc, err = finish(generate(root))
    assert rc == 0, err
    assert_consistent(root)
    return shape(root)


def test_G_K1_G_K2_a_kill_after_every_single_write_converges_on_rerun(tmp_path: Path, clean_shape: dict[str, int]):
    """F6 (G-K1: kill between ca.key and ca.crt; G-K2: between apiserver.key and apiserver.crt; G-K3: a temporary
    file left): SIGKILL at every write event of ``generate all`` in turn; each rerun exits 0 with a consistent
    PKI of the clean run's shape, and no temporary file or record left."""
    killed_at: list[int] = []
    n = 0
    while True:
        n += 1
        root = tmp_path / f"kill{n}"
        root.mkdir()
        rc, err = finish(generate(root, env={"KUBEREVIVE_TEST_KILL_AFTER_WRITE": str(n)}))
        if rc == 0:
            break  # n is past the last write event: every point was covered
        assert rc == -signal.SIGKILL, (n, rc, err)
        killed_at.append(n)
        rerun, err = finish(generate(root))
        assert rerun == 0, (n, err)
        assert_consistent(root)
        assert shape(root) == clean_shape, n
        assert no_leftovers(root) == [], n
    # one record + 31 files, two events each: every key/certificate gap (G-K1, G-K2) was among the kill points
    assert len(killed_at) == 2 * (1 + len(clean_shape)), killed_at


def test_G_K1_the_rerun_with_force_converges_too(tmp_path: Path, clean_shape: dict[str, int]):
    """G-K1 with ``--force``: kill after ca.key is in place (event 4: the record, then ca.key), rerun --force."""
    rc, _ = finish(generate(tmp_path, env={"KUBEREVIVE_TEST_KILL_AFTER_WRITE": "4"}))
    assert rc == -signal.SIGKILL
    assert (tmp_path / "etc/kubernetes/pki/ca.key").exists() and not (tmp_path / "etc/kubernetes/pki/ca.crt").exists()
    rc, err = finish(generate(tmp_path, "--force"))
    assert rc == 0, err
    assert "finished an interrupted run" in err, err
    assert_consistent(tmp_path)
    assert shape(tmp_path) == clean_shape


def test_a_lone_key_that_no_interrupted_run_recorded_is_still_refused(tmp_path: Path):
    """Only what this tool recorded is finished: a ca.key from elsewhere without ca.crt stays an error."""
    src = tmp_path / "src"
    src.mkdir()
    assert finish(generate(src))[0] == 0
    root = tmp_path / "node"
    (root / "etc/kubernetes/pki").mkdir(parents=True)
    (root / "etc/kubernetes/pki/ca.key").write_bytes((src / "etc/kubernetes/pki/ca.key").read_bytes())
    rc, err = finish(generate(root))
    assert rc == 1 and "ca.key" in err and "Traceback" not in err, err


def test_G_K3_only_temporary_files_the_tool_names_are_removed(tmp_path: Path):
    pki = tmp_path / "etc/kubernetes/pki"
    pki.mkdir(parents=True)
    stale = pki / ".ca.crt.kuberevive-tmp-123456"
    stale.write_bytes(b"half")
    others = [pki / ".ca.crt.other-tmp-1", pki / "notes.kuberevive-tmp-1", tmp_path / "etc/.x.kuberevive-tmp-7"]
    for p in others:
        p.write_bytes(b"user data")
    rc, err = finish(generate(tmp_path))
    assert rc == 0, err
    assert not stale.exists()
    assert all(p.read_bytes() == b"user data" for p in others)


def test_generate_is_refused_while_another_run_holds_the_node_lock(tmp_path: Path):
    (tmp_path / LOCK).parent.mkdir(parents=True)
    fd = os.open(tmp_path / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"4242 recover\n")
        fcntl.flock(fd, fcntl.LOCK_EX)
        rc, err = finish(generate(tmp_path))
    finally:
        os.close(fd)
    assert rc == 1, err
    assert "another 'kuberevive recover' is running on this node" in err and "pid 4242" in err, err
    assert not (tmp_path / "etc").exists()


ROUNDS = 12


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_G_CC2_two_concurrent_runs_with_slow_fsync_never_leave_a_mixed_pki(tmp_path: Path, round_: int):
    """F5 (G-CC2): two ``generate all`` at once on one root, every fsync slowed by 30 ms (the adversarial run's
    busy disk): one may be refused by the node's lock, the other wins; at least one exits 0 and the PKI is one
    consistent set."""
    env = {"KUBEREVIVE_TEST_FSYNC_DELAY": "0.03"}
    procs = [generate(tmp_path, env=env), generate(tmp_path, env=env)]
    results = [finish(p) for p in procs]
    assert any(rc == 0 for rc, _ in results), results
    for rc, err in results:
        assert rc == 0 or (rc == 1 and re.search(r"another 'kuberevive generate' is running", err)), (rc, err)
    assert_consistent(tmp_path)
    assert no_leftovers(tmp_path) == []
