"""``kuberevive backup`` and ``restore-etcd`` as real processes on temporary node roots, and the etcd snapshot
against a real etcd checked with the real ``etcdutl``.

Bad input (wrong passphrase, truncated file, one flipped byte, a backup of another cluster) gives one clear
line, a non-zero exit and a node root that is byte-for-byte unchanged; no plaintext private key appears in any
file the tool writes nor in its output. So does a forged backup (F2 of the adversarial review): paths outside
what a backup holds, odd modes, an unsigned or tampered recipient-mode backup, one signed by another CA, one that
nothing on the node ties to this cluster.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pyrage
import pytest

from kuberevive.core import backup as core
from kuberevive.core import pki
from kuberevive.core.backup import BackupFile, NodeIdentity, Secret
from kuberevive.core.generate import Target, generate
from kuberevive.io.backupfile import collect_node_files, open_backup
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
    restored = {k: v for k, v in tree(node).items() if not k.startswith("var/lib/kuberevive/log/backup-restore-")}
    assert restored == original  # same bytes and modes as before the loss (and the run's own log, issue 15)


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
    assert usage.returncode == 64  # no abbreviation of --passphrase-file: a secret is never taken as a file name
    assert not (tmp_path / "x.age").exists()


def test_directory_list_and_keep(tmp_path: Path, node: Path) -> None:
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    bdir = tmp_path / "backups"
    bdir.mkdir()
    made = []
    for _ in range(3):
        made.append(create(node, bdir, "--recipient", recipient, "--keep", "2")["file"])
        time.sleep(1.05)  # names carry the time to the second
    listed = json.loads(kuberevive("backup", "list", str(bdir), "--json").stdout)["items"]
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
            pytest.fail("etcd/etcdutl not built: run src/kuberevive/lab/data/build-binaries.sh")
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


#: The etcd static Pod manifest of the one-member etcd ``n1`` that :func:`etcd_root` runs, for restore-etcd.
ETCD_MANIFEST_N1 = b"""apiVersion: v1
kind: Pod
metadata: {name: etcd, namespace: kube-system}
spec:
  containers:
  - name: etcd
    command: [etcd, --name=n1, --data-dir=/var/lib/etcd, --initial-advertise-peer-urls=https://127.0.0.1:2380,
              --initial-cluster=n1=https://127.0.0.1:2380, --listen-client-urls=https://127.0.0.1:2379]
"""


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
    manifest = ETCD_MANIFEST_N1
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


# ------------------------------------------------------------------ forged backups (F2: B-A1, B-A2, B-A3, B-X12)


def _members(plaintext: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(plaintext), mode="r:gz") as tar:
        out = {}
        for info in tar:
            fh = tar.extractfile(info)
            assert fh is not None
            out[info.name] = fh.read()
    return out


def _retar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def forge(
    files: list[BackupFile],
    edit: Callable[[dict[str, Any]], None] | None = None,
    keep_signature: bool = False,
) -> bytes:
    """A backup plaintext made with the project's own format code (as the adversarial review did), with its
    manifest then edited and its signature dropped (or kept, to show it no longer matches)."""
    plaintext = core.build_archive(files, created=datetime.now(UTC), node=FORGER, tool_version="forged")
    if edit is None and keep_signature:
        return plaintext
    members = _members(plaintext)
    manifest = json.loads(members[core.MANIFEST_NAME])
    if edit is not None:
        edit(manifest)
    members[core.MANIFEST_NAME] = json.dumps(manifest).encode()
    if not keep_signature:
        members.pop(core.SIGNATURE_NAME, None)
    return _retar(members)


FORGER = NodeIdentity("cp1", "cp1", ())
EVIL = [
    BackupFile(PurePosixPath("/etc/cron.d/kuberevive-evil"), 0o644, b"* * * * * root touch /var/pwned\n"),
    BackupFile(PurePosixPath("/root/.ssh/authorized_keys"), 0o600, b"ssh-ed25519 AAAAforged evil@example\n"),
    BackupFile(PurePosixPath("/usr/local/bin/kubectl"), 0o4755, b"#!/bin/sh\nid\n"),
]


def _node_files(node: Path) -> list[BackupFile]:
    return collect_node_files(NodeRoot(node))


def _refused_everywhere(tmp_path: Path, node: Path, backup: Path, secret: list[str], *fragments: str) -> None:
    """``backup verify`` and ``backup restore`` both exit 1 with one line; nothing changes under tmp_path."""
    before = tree(tmp_path)
    assert_one_line_error(kuberevive("backup", "verify", str(backup), *secret), *fragments)
    restored = kuberevive("backup", "restore", str(backup), "--root", str(node), *secret)
    assert_one_line_error(restored, *fragments, "nothing was written")
    assert tree(tmp_path) == before  # the root (and everything beside it) byte for byte and mode for mode


@pytest.mark.parametrize(
    "evil", [pytest.param(f, id=i) for f, i in zip(EVIL, ["B-A1-cron", "B-A1-ssh", "B-A1-setuid"], strict=True)]
)
def test_forged_paths_refused(tmp_path: Path, node: Path, passfile: Path, evil: BackupFile) -> None:
    out = tmp_path / "forged.age"
    out.write_bytes(core.encrypt(forge([*_node_files(node), evil]), Secret(passphrase=PASSPHRASE)))
    shutil.rmtree(node / "etc/kubernetes/pki")  # an honest backup would have something to restore
    fragment = f"lists {evil.path}, which a kuberevive backup never holds"
    _refused_everywhere(tmp_path, node, out, ["--passphrase-file", str(passfile)], fragment)


def _modes(changes: dict[str, object]) -> Callable[[dict[str, Any]], None]:
    def edit(manifest: dict[str, Any]) -> None:
        for entry in manifest["files"]:
            if entry["path"] in changes:
                entry["mode"] = changes[entry["path"]]

    return edit


@pytest.mark.parametrize(
    ("extra", "changes", "fragment"),
    [
        pytest.param(
            [],
            {"/etc/kubernetes/pki/ca.key": "0666", "/etc/kubernetes/pki/sa.key": "-1"},
            "gives /etc/kubernetes/pki/sa.key the mode -1",
            id="B-A3",
        ),
        pytest.param(
            [BackupFile(PurePosixPath("/etc/kubernetes/neg"), 0o600, b"x\n")],
            {"/etc/kubernetes/neg": "-1"},
            "gives /etc/kubernetes/neg the mode -1",
            id="B-X12",
        ),
        pytest.param([], {"/etc/kubernetes/pki/ca.key": "7777"}, "the mode 7777", id="7777"),
    ],
)
def test_forged_modes_refused(
    tmp_path: Path, node: Path, passfile: Path, extra: list[BackupFile], changes: dict[str, object], fragment: str
) -> None:
    out = tmp_path / "forged.age"
    out.write_bytes(core.encrypt(forge([*_node_files(node), *extra], _modes(changes)), Secret(passphrase=PASSPHRASE)))
    shutil.rmtree(node / "etc/kubernetes/pki")  # ca.key and sa.key are missing: restore would write them
    _refused_everywhere(tmp_path, node, out, ["--passphrase-file", str(passfile)], fragment, "forged")


def test_restore_writes_kubeadm_modes_not_the_recorded_ones(tmp_path: Path, node: Path, passfile: Path) -> None:
    """B-A3, honest side: a key that was 0644 on the node (recorded so in the manifest) comes back 0600."""
    pki_dir = node / "etc/kubernetes/pki"
    wrong = {"ca.key": (0o644, 0o600), "sa.pub": (0o644, 0o600), "ca.crt": (0o600, 0o644), "sa.key": (0o666, 0o600)}
    for name, (mode, _) in wrong.items():
        (pki_dir / name).chmod(mode)
    (node / "var/lib/kubelet/config.yaml").chmod(0o600)
    out = tmp_path / "b.age"
    create(node, out, "--passphrase-file", str(passfile))
    recorded = {e["path"]: e["mode"] for e in json.loads(_members(_decrypt(out))[core.MANIFEST_NAME])["files"]}
    assert recorded["/etc/kubernetes/pki/ca.key"] == "0644"  # the manifest records what was on the node
    shutil.rmtree(pki_dir)
    (node / "var/lib/kubelet/config.yaml").unlink()
    r = kuberevive("backup", "restore", str(out), "--root", str(node), "--passphrase-file", str(passfile), "--json")
    assert r.returncode == 0, r.stderr
    for name, (_, restored) in wrong.items():
        assert oct((pki_dir / name).stat().st_mode & 0o7777) == oct(restored), name
    assert oct((node / "var/lib/kubelet/config.yaml").stat().st_mode & 0o7777) == oct(0o644)
    assert oct((pki_dir / "etcd/ca.key").stat().st_mode & 0o7777) == oct(0o600)


def _decrypt(path: Path, identity: str | None = None) -> bytes:
    if identity is not None:
        return core.decrypt(path.read_bytes(), Secret(identities=(identity,)), str(path))
    return core.decrypt(path.read_bytes(), Secret(passphrase=PASSPHRASE), str(path))


def _ca_hash(node: Path) -> str:
    return pki.discovery_token_ca_cert_hash(
        pki.load_certificate((node / "etc/kubernetes/pki/ca.crt").read_bytes(), "ca.crt")
    )


@dataclass(frozen=True)
class RecipientSetup:
    """The victim node (template), its age key pair, an attacker's node, and the backups made from them."""

    victim: Path
    identity: Path
    recipient: str
    real_hash: str
    attacker_hash: str
    backups: dict[str, Path]


@pytest.fixture(scope="module")
def recipient_setup(tmp_path_factory: pytest.TempPathFactory) -> RecipientSetup:
    base = tmp_path_factory.mktemp("recipient")
    victim, attacker = make_node(base, "victim"), make_node(base, "attacker")
    identity = pyrage.x25519.Identity.generate()
    idfile = base / "id.txt"
    idfile.write_text(str(identity) + "\n")
    recipient = str(identity.to_public())
    honest, own_ca = base / "honest.age", base / "own-ca.age"
    create(victim, honest, "--recipient", recipient)
    # the attacker's well-formed backup: their own CA, signed by it, encrypted to the victim's public key
    create(attacker, own_ca, "--recipient", recipient)
    backups = {"honest": honest, "own-ca": own_ca}

    def encrypt_to(name: str, plaintext: bytes) -> None:
        backups[name] = base / f"{name}.age"
        backups[name].write_bytes(bytes(pyrage.encrypt(plaintext, [identity.to_public()])))

    # B-A2: the forger knows the public recipient and the node's public certificates, nothing else
    public = [f for f in _node_files(victim) if f.path.suffix == ".crt" or f.path.name == "sa.pub"]
    encrypt_to("forged-paths", forge([*public, *EVIL]))
    members = _members(_decrypt(honest, str(identity)))
    encrypt_to("unsigned", _retar({k: v for k, v in members.items() if k != core.SIGNATURE_NAME}))
    manifest = json.loads(members[core.MANIFEST_NAME])
    manifest["node"]["node_name"] = "tampered"
    encrypt_to("tampered", _retar(members | {core.MANIFEST_NAME: json.dumps(manifest, indent=2).encode()}))
    return RecipientSetup(victim, idfile, recipient, _ca_hash(victim), _ca_hash(attacker), backups)


def _victim_root(setup: RecipientSetup, tmp_path: Path, evidence: str) -> Path:
    """A copy of the victim after losing /etc/kubernetes, keeping ``evidence`` of its CA (or none)."""
    root = tmp_path / "node"
    shutil.copytree(setup.victim, root, symlinks=True)
    kubelet_conf = (root / "etc/kubernetes/kubelet.conf").read_bytes()
    pki_dir = root / "etc/kubernetes/pki"
    client = (pki_dir / "apiserver-kubelet-client.crt").read_bytes() + (
        pki_dir / "apiserver-kubelet-client.key"
    ).read_bytes()
    shutil.rmtree(root / "etc/kubernetes")
    (root / "etc/kubernetes").mkdir()
    if evidence == "kubelet-conf":
        (root / "etc/kubernetes/kubelet.conf").write_bytes(kubelet_conf)
        (root / "etc/kubernetes/kubelet.conf").chmod(0o600)
    elif evidence == "kubelet-cert":  # a client certificate signed by the real CA, where the kubelet keeps its own
        (root / "var/lib/kubelet/pki").mkdir(parents=True)
        (root / "var/lib/kubelet/pki/kubelet-client-current.pem").write_bytes(client)
    else:
        assert evidence == "none"
    return root


OK = "restored"


@pytest.mark.parametrize(
    ("backup", "evidence", "extra", "outcome"),
    [
        pytest.param("forged-paths", "kubelet-cert", [], "lists /etc/cron.d/kuberevive-evil", id="B-A2-cron"),
        pytest.param(
            "forged-paths",
            "kubelet-cert",
            ["--allow-unauthenticated", "--allow-foreign-backup"],
            "lists /etc/cron.d/kuberevive-evil",
            id="B-A2-cron-whatever-the-flags",
        ),
        pytest.param("own-ca", "kubelet-cert", [], "the backup is from another cluster", id="B-A2-own-ca"),
        pytest.param("own-ca", "none", [], "holds no kubelet certificate", id="B-A2-no-evidence"),
        pytest.param("own-ca", "none", ["--ca-cert-hash", "REAL"], "not the pinned", id="B-A2-own-ca-pinned"),
        pytest.param("honest", "none", [], "holds no kubelet certificate", id="B-A2-honest-no-evidence"),
        pytest.param("honest", "none", ["--ca-cert-hash", "REAL"], OK, id="B-A2-right-hash"),
        pytest.param("honest", "none", ["--ca-cert-hash", "ATTACKER"], "not the pinned", id="B-A2-wrong-hash"),
        pytest.param("honest", "none", ["--allow-unauthenticated"], OK, id="no-evidence-allowed"),
        pytest.param("honest", "kubelet-conf", [], OK, id="honest-recipient"),
        pytest.param("honest", "kubelet-cert", [], OK, id="honest-recipient-kubelet-cert"),
        pytest.param("tampered", "kubelet-conf", [], "(tampered)", id="tampered-signature"),
        pytest.param("tampered", "kubelet-conf", ["--allow-unauthenticated"], "(tampered)", id="tampered-allowed"),
        pytest.param("unsigned", "kubelet-conf", [], "is not signed by its cluster CA", id="unsigned"),
        pytest.param("unsigned", "kubelet-conf", ["--allow-unauthenticated"], OK, id="unsigned-allowed"),
    ],
)
def test_recipient_backup_restore(
    tmp_path: Path, recipient_setup: RecipientSetup, backup: str, evidence: str, extra: list[str], outcome: str
) -> None:
    setup = recipient_setup
    root = _victim_root(setup, tmp_path, evidence)
    pins = {"REAL": setup.real_hash, "ATTACKER": setup.attacker_hash}
    args = [pins.get(a, a) for a in extra]
    before = tree(tmp_path)
    r = kuberevive(
        "backup", "restore", str(setup.backups[backup]), "--root", str(root), "--identity", str(setup.identity), *args
    )
    if outcome != OK:
        assert_one_line_error(r, outcome, "nothing was written")
        assert tree(tmp_path) == before
        return
    assert r.returncode == 0, r.stderr
    assert "AGE-SECRET-KEY" not in r.stdout + r.stderr
    for rel in ("etc/kubernetes/pki/ca.key", "etc/kubernetes/pki/sa.key", "etc/kubernetes/admin.conf"):
        assert (root / rel).read_bytes() == (setup.victim / rel).read_bytes(), rel
        assert oct((root / rel).stat().st_mode & 0o7777) == oct(0o600), rel
    assert oct((root / "etc/kubernetes/pki/ca.crt").stat().st_mode & 0o7777) == oct(0o644)


@pytest.mark.parametrize(
    ("backup", "extra", "outcome"),
    [
        pytest.param("honest", [], "signed by the cluster CA", id="signed"),
        pytest.param("honest", ["--ca-cert-hash", "REAL"], "the backup's CA is the pinned", id="right-hash"),
        pytest.param("honest", ["--ca-cert-hash", "ATTACKER"], "not the pinned", id="wrong-hash"),
        pytest.param("honest", ["--ca-cert-hash", "sha256:abc"], "is not sha256:<64 hex digits>", id="bad-hash"),
        pytest.param("own-ca", ["--ca-cert-hash", "REAL"], "not the pinned", id="B-A2-own-ca-pinned"),
        pytest.param("forged-paths", ["--allow-unauthenticated"], "lists /etc/cron.d/kuberevive-evil", id="B-A2"),
        pytest.param("tampered", [], "(tampered)", id="tampered"),
        pytest.param("unsigned", [], "is not signed by its cluster CA", id="unsigned"),
        pytest.param("unsigned", ["--allow-unauthenticated"], "NOT signed", id="unsigned-allowed"),
    ],
)
def test_recipient_backup_verify(recipient_setup: RecipientSetup, backup: str, extra: list[str], outcome: str) -> None:
    setup = recipient_setup
    pins = {"REAL": setup.real_hash, "ATTACKER": setup.attacker_hash}
    r = kuberevive(
        "backup",
        "verify",
        str(setup.backups[backup]),
        "--identity",
        str(setup.identity),
        *(pins.get(a, a) for a in extra),
    )
    if outcome in {"signed by the cluster CA", "the backup's CA is the pinned", "NOT signed"}:
        assert r.returncode == 0, r.stderr
        assert outcome in r.stdout
        if backup == "honest":
            assert f"signed by the cluster CA CN=kubernetes {setup.real_hash}" in r.stdout
        return
    assert_one_line_error(r, outcome)


@pytest.mark.parametrize(
    ("command", "backup", "evidence", "extra", "fragment"),
    [
        pytest.param(
            "recover", "unsigned", "kubelet-conf", [], "is not signed by its cluster CA", id="recover-unsigned"
        ),
        pytest.param("recover", "forged-paths", "kubelet-cert", [], "lists /etc/cron.d/", id="recover-B-A2"),
        pytest.param("recover", "own-ca", "kubelet-cert", [], "another cluster", id="recover-B-A2-own-ca"),
        pytest.param("recover", "own-ca", "none", [], "holds no kubelet certificate", id="recover-no-evidence"),
        pytest.param(
            "restore-etcd", "unsigned", "kubelet-conf", [], "is not signed by its cluster CA", id="etcd-unsigned"
        ),
        pytest.param("restore-etcd", "forged-paths", "kubelet-cert", [], "lists /etc/cron.d/", id="etcd-B-A2"),
        pytest.param("restore-etcd", "own-ca", "kubelet-cert", [], "another cluster", id="etcd-B-A2-own-ca"),
        pytest.param("restore-etcd", "honest", "none", [], "holds no kubelet certificate", id="etcd-no-evidence"),
        pytest.param(
            "restore-etcd",
            "unsigned",
            "kubelet-conf",
            ["--allow-unauthenticated"],
            "has no etcd snapshot",
            id="etcd-allowed",
        ),
        pytest.param(
            "restore-etcd", "honest", "none", ["--ca-cert-hash", "REAL"], "has no etcd snapshot", id="etcd-pinned"
        ),
    ],
)
def test_recipient_backup_other_commands(
    tmp_path: Path,
    recipient_setup: RecipientSetup,
    command: str,
    backup: str,
    evidence: str,
    extra: list[str],
    fragment: str,
) -> None:
    """``recover --from-backup`` and ``restore-etcd`` apply the same checks (no etcd snapshot in these backups:
    "has no etcd snapshot" means every authenticity check passed)."""
    setup = recipient_setup
    root = _victim_root(setup, tmp_path, evidence)
    pins = {"REAL": setup.real_hash, "ATTACKER": setup.attacker_hash}
    file_arg = "--from-backup" if command == "recover" else "--snapshot"
    before = tree(tmp_path)
    r = kuberevive(
        command, file_arg, str(setup.backups[backup]), "--root", str(root), "--identity", str(setup.identity),
        *(pins.get(a, a) for a in extra),
    )  # fmt: skip
    assert_one_line_error(r, fragment)
    assert tree(tmp_path) == before


def test_signature_is_what_openssl_verifies(tmp_path: Path, recipient_setup: RecipientSetup, openssl: str) -> None:
    """The signature member is a plain detached signature: ``openssl dgst -sha256 -verify`` accepts it."""
    setup = recipient_setup
    identity = setup.identity.read_text().strip()
    members = _members(_decrypt(setup.backups["honest"], identity))
    (tmp_path / "manifest.json").write_bytes(members[core.MANIFEST_NAME])
    (tmp_path / "manifest.sig").write_bytes(members[core.SIGNATURE_NAME])
    pub = subprocess.run(
        [openssl, "x509", "-pubkey", "-noout", "-in", str(setup.victim / "etc/kubernetes/pki/ca.crt")],
        capture_output=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    (tmp_path / "ca.pub").write_bytes(pub)
    ok = subprocess.run(
        [openssl, "dgst", "-sha256", "-verify", str(tmp_path / "ca.pub"), "-signature", str(tmp_path / "manifest.sig"),
         str(tmp_path / "manifest.json")],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert ok.returncode == 0 and "Verified OK" in ok.stdout, ok.stdout + ok.stderr
