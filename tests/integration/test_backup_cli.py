"""``kuberevive backup`` and ``restore-etcd`` as real processes on temporary node roots, and the etcd snapshot
against a real etcd checked with the real ``etcdutl``.

Bad input (wrong passphrase, truncated file, one flipped byte, a backup of another cluster) gives one clear
line, a non-zero exit and a node root that is byte-for-byte unchanged; no plaintext private key appears in any
file the tool writes nor in its output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyrage
import pytest

from kuberevive.core import backup as core
from kuberevive.core.generate import Target, generate
from kuberevive.io.backupfile import open_backup
from kuberevive.io.etcd import EtcdClient
from kuberevive.io.etcdrestore import restore_etcd
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.config import NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BIN_DIR = Path(os.environ.get("KUBEREVIVE_BIN_DIR", "/var/cache/kuberevive/k8s-v1.33.13-etcd-v3.5.24/bin"))
PASSPHRASE = "integration passphrase"
PEM_KEY_MARKERS = (b"PRIVATE KEY-----", b"AGE-SECRET-KEY-")


def kuberevive(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "KUBEREVIVE_PASSPHRASE"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "kuberevive", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=full_env,
    )


def tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    out: dict[str, tuple[int, bytes | None]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, p.read_bytes() if p.is_file() else None)
    return out


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr)
    errors = [line for line in result.stderr.strip().splitlines() if line.startswith("kuberevive: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for f in fragments:
        assert f in errors[0], errors[0]
    assert_no_key_material(result.stdout.encode() + result.stderr.encode())


def assert_no_key_material(data: bytes) -> None:
    for marker in PEM_KEY_MARKERS:
        assert marker not in data


def make_node(base: Path, name: str) -> Path:
    """A node root with what ``kubeadm init`` writes (generate all) plus the kubelet's files."""
    root = base / name
    root.mkdir()
    result = kuberevive("generate", "all", "--config", str(CONFIGS / "defaults.yaml"), "--root", str(root))
    assert result.returncode == 0, result.stderr
    kubelet = root / "var/lib/kubelet"
    kubelet.mkdir(parents=True)
    (kubelet / "config.yaml").write_text("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n")
    (kubelet / "kubeadm-flags.env").write_text('KUBELET_KUBEADM_ARGS="--node-ip=192.0.2.10"\n')
    return root


@pytest.fixture
def node(tmp_path: Path) -> Path:
    return make_node(tmp_path, "node")


@pytest.fixture
def passfile(tmp_path: Path) -> Path:
    p = tmp_path / "passphrase"
    p.write_text(PASSPHRASE + "\n")
    p.chmod(0o600)
    return p


def create(node: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> dict[str, object]:
    result = kuberevive("backup", "create", "--root", str(node), "--out", str(out), "--json", *extra, env=env)
    assert result.returncode == 0, result.stderr
    assert_no_key_material(result.stdout.encode() + result.stderr.encode())
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_create_verify_restore_round_trip(tmp_path: Path, node: Path, passfile: Path) -> None:
    before_files = set(tree(tmp_path))
    out = tmp_path / "backups" / "b.age"
    report = create(node, out, "--passphrase-file", str(passfile))
    assert report["files"] == 33  # 22 PKI files, 5 kubeconfigs, 4 manifests, 2 kubelet files
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert out.read_bytes().startswith(b"age-encryption.org/v1\n")
    # no plaintext key in any file the tool created (the node's own files were there before)
    for rel in set(tree(tmp_path)) - before_files:
        p = tmp_path / rel
        if p.is_file():
            assert_no_key_material(p.read_bytes())

    v = kuberevive("backup", "verify", str(out), "--passphrase-file", str(passfile), "--json")
    assert v.returncode == 0, v.stderr
    verified = json.loads(v.stdout)
    assert verified["ok"] and "192.0.2.10" in verified["node"]["addresses"]
    assert "ca.key matches ca.crt" in verified["checks"]
    assert_no_key_material(v.stdout.encode())

    contents = open_backup(out, passphrase=PASSPHRASE)
    assert contents.pki["ca.key"] == (node / "etc/kubernetes/pki/ca.key").read_bytes()

    # lose /etc/kubernetes except the kubelet.conf (what the survivors trust), then restore only what is missing
    kubelet_conf = (node / "etc/kubernetes/kubelet.conf").read_bytes()
    original = tree(node)
    shutil.rmtree(node / "etc/kubernetes")
    (node / "etc/kubernetes").mkdir()
    (node / "etc/kubernetes/kubelet.conf").write_bytes(kubelet_conf)
    (node / "etc/kubernetes/kubelet.conf").chmod(0o600)
    r = kuberevive(
        "backup", "restore", str(out), "--root", str(node), "--json", env={"KUBEREVIVE_PASSPHRASE": PASSPHRASE}
    )
    assert r.returncode == 0, r.stderr
    actions = {f["path"]: f["action"] for f in json.loads(r.stdout)["files"]}
    assert actions["/etc/kubernetes/pki/ca.key"] == "create" and "/etc/kubernetes/kubelet.conf" not in actions
    assert tree(node) == original  # same bytes and modes as before the loss


@pytest.mark.parametrize("damage", ["wrong-passphrase", "truncated", "flipped-byte", "empty", "not-age"])
def test_damaged_backup_is_one_error_and_writes_nothing(tmp_path: Path, node: Path, passfile: Path, damage: str):
    out = tmp_path / "b.age"
    create(node, out, "--passphrase-file", str(passfile))
    data = out.read_bytes()
    if damage == "truncated":
        out.write_bytes(data[: len(data) * 2 // 3])
    elif damage == "flipped-byte":
        i = len(data) // 2
        out.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :])
    elif damage == "empty":
        out.write_bytes(b"")
    elif damage == "not-age":
        out.write_bytes(b"just some bytes\n")
    passphrase = "not the passphrase" if damage == "wrong-passphrase" else PASSPHRASE
    shutil.rmtree(node / "etc/kubernetes/pki")
    before = tree(tmp_path)
    r = kuberevive("backup", "restore", str(out), "--root", str(node), env={"KUBEREVIVE_PASSPHRASE": passphrase})
    expected = {
        "wrong-passphrase": "the passphrase is wrong",
        "truncated": "truncated or corrupt",
        "flipped-byte": "truncated or corrupt",
        "empty": "not a kuberevive backup",
        "not-age": "not a kuberevive backup",
    }[damage]
    assert_one_line_error(r, expected)
    assert passphrase not in r.stderr
    assert tree(tmp_path) == before
    v = kuberevive("backup", "verify", str(out), env={"KUBEREVIVE_PASSPHRASE": passphrase})
    assert_one_line_error(v, expected)


def test_backup_of_another_cluster_is_refused(tmp_path: Path, passfile: Path) -> None:
    ours, theirs = make_node(tmp_path, "ours"), make_node(tmp_path, "theirs")
    out = tmp_path / "theirs.age"
    create(theirs, out, "--passphrase-file", str(passfile))
    shutil.rmtree(ours / "etc/kubernetes/pki")  # ours keeps kubelet.conf, which embeds our CA
    before = tree(tmp_path)
    r = kuberevive("backup", "restore", str(out), "--root", str(ours), "--passphrase-file", str(passfile))
    assert_one_line_error(r, "another cluster", "kubelet.conf", "--allow-foreign-backup")
    assert tree(tmp_path) == before
    forced = kuberevive(
        "backup", "restore", str(out), "--root", str(ours), "--passphrase-file", str(passfile), "--allow-foreign-backup"
    )
    assert forced.returncode == 0, forced.stderr
    assert "warning: foreign backup allowed" in forced.stdout
    assert (ours / "etc/kubernetes/pki/ca.crt").read_bytes() == (theirs / "etc/kubernetes/pki/ca.crt").read_bytes()


def test_recipient_encryption_needs_the_identity(tmp_path: Path, node: Path) -> None:
    identity = pyrage.x25519.Identity.generate()
    idfile = tmp_path / "id.txt"
    idfile.write_text(str(identity) + "\n")
    out = tmp_path / "r.age"
    create(node, out, "--recipient", str(identity.to_public()))
    no_id = kuberevive("backup", "verify", str(out), env={"KUBEREVIVE_PASSPHRASE": PASSPHRASE})
    assert_one_line_error(no_id, "--identity")
    other = tmp_path / "other.txt"
    other.write_text(str(pyrage.x25519.Identity.generate()) + "\n")
    assert_one_line_error(kuberevive("backup", "verify", str(out), "--identity", str(other)), "identity does not match")
    ok = kuberevive("backup", "verify", str(out), "--identity", str(idfile))
    assert ok.returncode == 0, ok.stderr
    assert "AGE-SECRET-KEY" not in ok.stdout + ok.stderr


def test_passphrase_never_on_the_command_line_and_required(tmp_path: Path, node: Path) -> None:
    r = kuberevive("backup", "create", "--root", str(node), "--out", str(tmp_path / "x.age"))
    assert_one_line_error(r, "--passphrase-file", "KUBEREVIVE_PASSPHRASE")
    assert not (tmp_path / "x.age").exists()
    usage = kuberevive("backup", "create", "--root", str(node), "--out", str(tmp_path / "x.age"), "--passphrase", "x")
    assert usage.returncode == 2  # no abbreviation of --passphrase-file: a secret is never taken as a file name
    assert not (tmp_path / "x.age").exists()


def test_directory_list_and_keep(tmp_path: Path, node: Path) -> None:
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    bdir = tmp_path / "backups"
    bdir.mkdir()
    made = []
    for _ in range(3):
        made.append(create(node, bdir, "--recipient", recipient, "--keep", "2")["file"])
        time.sleep(1.05)  # names carry the time to the second
    listed = json.loads(kuberevive("backup", "list", str(bdir), "--json").stdout)
    assert [b["file"] for b in listed] == made[1:]
    assert listed[0]["encryption"] == "recipient (X25519)"
    pruned = kuberevive("backup", "prune", str(bdir), "--keep", "1")
    assert pruned.returncode == 0, pruned.stderr
    assert [p.name for p in bdir.iterdir()] == [Path(str(made[2])).name]


# ----------------------------------------------------------------------------------- real etcd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def etcd_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real etcd (built 3.5.24) with kubeadm's certificates, serving on 127.0.0.1:<free port>."""
    etcd = BIN_DIR / "etcd"
    if not etcd.exists() or not (BIN_DIR / "etcdutl").exists():
        if os.environ.get("CI"):
            pytest.fail("etcd/etcdutl not built: run lab/build-binaries.sh")
        pytest.skip("etcd/etcdutl not built")
    root = tmp_path / "node"
    root.mkdir()
    text = (CONFIGS / "defaults.yaml").read_text()
    facts = NodeFacts(hostname="etcd-node")
    cfg = load_kubeadm_config(text, facts)
    NodeRoot(root).write_all(generate(Target.CERTS, cfg, facts, datetime.now(UTC), {}).artifacts)
    client, peer = _free_port(), _free_port()
    pki = root / "etc/kubernetes/pki/etcd"
    data = root / "var/lib/etcd"
    argv = [
        str(etcd), "--name=n1", f"--data-dir={data}", f"--listen-client-urls=https://127.0.0.1:{client}",
        f"--advertise-client-urls=https://127.0.0.1:{client}", f"--listen-peer-urls=https://127.0.0.1:{peer}",
        f"--initial-advertise-peer-urls=https://127.0.0.1:{peer}", f"--initial-cluster=n1=https://127.0.0.1:{peer}",
        f"--cert-file={pki}/server.crt", f"--key-file={pki}/server.key", f"--trusted-ca-file={pki}/ca.crt",
        "--client-cert-auth=true", f"--peer-cert-file={pki}/peer.crt", f"--peer-key-file={pki}/peer.key",
        f"--peer-trusted-ca-file={pki}/ca.crt", "--peer-client-cert-auth=true", "--listen-metrics-urls=",
    ]  # fmt: skip
    log = (tmp_path / "etcd.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"https://127.0.0.1:{client}"
    try:
        yield root, endpoint
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _client(root: Path, endpoint: str) -> EtcdClient:
    pki = root / "etc/kubernetes/pki/etcd"
    return EtcdClient(
        endpoint,
        (pki / "ca.crt").read_bytes(),
        (pki / "healthcheck-client.crt").read_bytes(),
        (pki / "healthcheck-client.key").read_bytes(),
    )


def _etcdctl(root: Path, endpoint: str, *args: str) -> str:
    pki = root / "etc/kubernetes/pki/etcd"
    proc = subprocess.run(
        [str(BIN_DIR / "etcdctl"), f"--endpoints={endpoint}", f"--cacert={pki}/ca.crt",
         f"--cert={pki}/healthcheck-client.crt", f"--key={pki}/healthcheck-client.key", *args],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return proc.stdout


def test_snapshot_over_the_gateway_is_what_etcdutl_accepts(tmp_path: Path, etcd_root: tuple[Path, str]) -> None:
    root, endpoint = etcd_root
    client = _client(root, endpoint)
    deadline = time.monotonic() + 30
    while not (_reachable(client) and client.health()[0]):
        assert time.monotonic() < deadline, (tmp_path / "etcd.log").read_text()[-2000:]
        time.sleep(0.3)
    for i in range(50):
        _etcdctl(root, endpoint, "put", f"/registry/test/k{i}", f"value-{i}" * 20)
    snap = client.snapshot()
    db, digest = core.split_snapshot(snap)
    assert len(db) % 4096 == 0 and len(digest) == 32

    # the real etcdutl reads it, and agrees with etcd's own `etcdctl snapshot save`
    ours = tmp_path / "ours.db"
    ours.write_bytes(snap)
    status = json.loads(
        subprocess.run(
            [str(BIN_DIR / "etcdutl"), "snapshot", "status", str(ours), "-w", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    )
    assert status["totalKey"] >= 50 and status["revision"] >= 51

    # restore through restore-etcd's code path (manifest not on the node: nothing to stop)
    manifest = b"""apiVersion: v1
kind: Pod
metadata: {name: etcd, namespace: kube-system}
spec:
  containers:
  - name: etcd
    command: [etcd, --name=n1, --data-dir=/var/lib/etcd, --initial-advertise-peer-urls=https://127.0.0.1:2380,
              --initial-cluster=n1=https://127.0.0.1:2380, --listen-client-urls=https://127.0.0.1:2379]
"""
    target = tmp_path / "target"
    (target / "var/lib/etcd/member").mkdir(parents=True)
    (target / "var/lib/etcd/member/old").write_text("old data")
    env_path = os.environ["PATH"]
    os.environ["PATH"] = f"{BIN_DIR}:{env_path}"
    try:
        result = restore_etcd(NodeRoot(target), snap, fallback_manifest=manifest)
    finally:
        os.environ["PATH"] = env_path
    assert result.old_data_dir is not None
    assert (target / str(result.old_data_dir).lstrip("/") / "member/old").read_text() == "old data"
    assert (target / "var/lib/etcd/member/snap/db").is_file()
    assert oct((target / "var/lib/etcd").stat().st_mode & 0o777) == "0o700"


def _reachable(client: EtcdClient) -> bool:
    try:
        client.health()
    except Exception:
        return False
    return True


def test_restore_etcd_refuses_a_corrupt_snapshot_before_touching_anything(tmp_path: Path) -> None:
    root = tmp_path / "node"
    (root / "var/lib/etcd/member").mkdir(parents=True)
    snap = tmp_path / "snap.db"
    snap.write_bytes(b"\0" * 4096 + b"x" * 32)
    before = tree(root)
    r = kuberevive("restore-etcd", "--snapshot", str(snap), "--root", str(root))
    assert_one_line_error(r, "does not match the sha256")
    assert tree(root) == before
