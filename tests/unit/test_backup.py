"""kuberevive.core.backup: archive format, encryption, integrity, verification, restore planning (no disk)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

import pyrage
import pytest

from kuberevive.core import backup as core
from kuberevive.core import pki
from kuberevive.core.backup import BackupError, BackupFile, NodeIdentity, Secret, TrustEvidence
from kuberevive.model.config import NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NODE = NodeIdentity("cp1", "cp1", ("192.0.2.10",))
IDENTITY = pyrage.x25519.Identity.generate()
RECIPIENT = Secret(recipients=(str(IDENTITY.to_public()),))
IDENTITIES = Secret(identities=(str(IDENTITY),))


def _files(config: str = "ecdsa-validity.yaml") -> list[BackupFile]:
    cfg = load_kubeadm_config((CONFIGS / config).read_text(), NodeFacts(hostname="cp1"))
    bundle = pki.build_certificates(cfg, NOW, {})
    files = [BackupFile(a.path, a.mode, a.content) for a in bundle.artifacts]
    files.append(BackupFile(PurePosixPath("/var/lib/kubelet/config.yaml"), 0o644, b"kind: KubeletConfiguration\n"))
    return files


FILES = _files()
OTHER_FILES = _files()  # another cluster: other CA


def _snapshot(db: bytes = b"\x01" * 8192) -> bytes:
    return db + hashlib.sha256(db).digest()


def _archive(files: list[BackupFile] = FILES, **kw: object) -> bytes:
    return core.build_archive(files, created=NOW, node=NODE, tool_version="test", **kw)  # type: ignore[arg-type]


def _by_name(files: list[BackupFile], name: str) -> BackupFile:
    return next(f for f in files if f.path.name == name and f.path.parent.name == "pki")


# ------------------------------------------------------------------------------------ format


def test_round_trip_keeps_every_file_mode_and_metadata() -> None:
    contents = core.parse_archive(
        _archive(
            kubeadm_config=b"kind: ClusterConfiguration\n", kubeadm_config_source="api", etcd_snapshot=_snapshot()
        ),
        "b",
    )
    assert contents.files == {f.path: f for f in FILES}
    assert contents.created == NOW
    assert contents.metadata["node"] == {"node_name": "cp1", "hostname": "cp1", "addresses": ["192.0.2.10"]}
    assert contents.metadata["cluster"]["ca_cert_hash"].startswith("sha256:")
    assert contents.kubeadm_config == b"kind: ClusterConfiguration\n"
    assert contents.etcd_snapshot == _snapshot()
    assert contents.pki["ca.key"] == _by_name(FILES, "ca.key").content
    assert contents.pki["etcd/ca.crt"] in {f.content for f in FILES}
    assert "config.yaml" not in contents.pki


def test_archive_is_deterministic_for_the_same_content() -> None:
    assert _archive() == _archive()


def test_manifest_lists_sha256_and_mode_of_every_file() -> None:
    with tarfile.open(fileobj=io.BytesIO(_archive()), mode="r:gz") as tar:
        fh = tar.extractfile(core.MANIFEST_NAME)
        assert fh is not None
        manifest = json.loads(fh.read())
        names = tar.getnames()
    entry = next(e for e in manifest["files"] if e["path"] == "/etc/kubernetes/pki/ca.key")
    assert entry["mode"] == "0600" and entry["sha256"] == hashlib.sha256(_by_name(FILES, "ca.key").content).hexdigest()
    assert "files/etc/kubernetes/pki/ca.key" in names and names[0] == core.MANIFEST_NAME


def test_a_node_without_ca_crt_cannot_be_backed_up() -> None:
    with pytest.raises(BackupError, match=r"no /etc/kubernetes/pki/ca\.crt"):
        _archive([f for f in FILES if f.path.name != "ca.crt" or f.path.parent.name != "pki"])


def _retar(plaintext: bytes, change: dict[str, bytes | None]) -> bytes:
    """The archive with members replaced (bytes) or removed (None), or added."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(plaintext), mode="r:gz") as src,
        gzip.GzipFile(fileobj=out, mode="wb") as gz,
        tarfile.open(fileobj=gz, mode="w") as dst,
    ):
        seen = set()
        for info in src:
            seen.add(info.name)
            fh = src.extractfile(info)
            assert fh is not None
            data = change.get(info.name, fh.read()) if info.name in change else fh.read()
            if data is None:
                continue
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
        for name, data in change.items():
            if name not in seen and data is not None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                dst.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"files/etc/kubernetes/pki/ca.key": b"other"}, "ca.key does not match its sha256"),
        ({"files/etc/kubernetes/pki/sa.key": None}, "sa.key is missing"),
        ({"files/etc/kubernetes/pki/extra.key": b"x"}, "extra.key is not listed in the manifest"),
        ({core.MANIFEST_NAME: None}, "not a kuberevive backup"),
        ({core.MANIFEST_NAME: b"{not json"}, "not valid JSON"),
        ({core.MANIFEST_NAME: b'{"format": "other/v9"}'}, "format 'other/v9'"),
    ],
)
def test_tampered_archive_is_refused(change: dict[str, bytes | None], message: str) -> None:
    with pytest.raises(BackupError, match=message):
        core.parse_archive(_retar(_archive(), change), "b")


def test_unsafe_member_names_are_refused() -> None:
    with pytest.raises(BackupError, match="unexpected member"):
        core.parse_archive(_retar(_archive(), {"../evil": b"x"}), "b")


def test_damaged_gzip_is_refused() -> None:
    with pytest.raises(BackupError, match="archive is damaged"):
        core.parse_archive(_archive()[:200], "b")


# ------------------------------------------------------------------------------ encryption


def test_recipient_round_trip_and_age_format() -> None:
    ct = core.encrypt(b"plain", RECIPIENT)
    assert ct.startswith(b"age-encryption.org/v1\n-> X25519 ")
    assert core.decrypt(ct, IDENTITIES, "b") == b"plain"


def test_passphrase_round_trip_and_wrong_passphrase() -> None:
    ct = core.encrypt(b"plain", Secret(passphrase="right"))
    assert b"\n-> scrypt " in ct
    assert core.decrypt(ct, Secret(passphrase="right"), "b") == b"plain"
    with pytest.raises(BackupError, match="the passphrase is wrong") as err:
        core.decrypt(ct, Secret(passphrase="wrong"), "b")
    assert "wrong" not in str(err.value).split("passphrase is wrong")[0]
    with pytest.raises(BackupError, match="encrypted with a passphrase"):
        core.decrypt(ct, IDENTITIES, "b")


def test_truncated_or_flipped_ciphertext_is_one_error() -> None:
    ct = core.encrypt(_archive(), RECIPIENT)
    for damaged in (ct[: len(ct) - 100], ct[: len(ct) // 2], ct[:-1] + bytes([ct[-1] ^ 1])):
        with pytest.raises(BackupError, match="truncated or corrupt"):
            core.decrypt(damaged, IDENTITIES, "b")
    i = len(ct) // 2
    with pytest.raises(BackupError, match="truncated or corrupt"):
        core.decrypt(ct[:i] + bytes([ct[i] ^ 0x80]) + ct[i + 1 :], IDENTITIES, "b")


def test_wrong_identity_and_missing_secret() -> None:
    ct = core.encrypt(b"plain", RECIPIENT)
    other = Secret(identities=(str(pyrage.x25519.Identity.generate()),))
    with pytest.raises(BackupError, match="identity does not match"):
        core.decrypt(ct, other, "b")
    with pytest.raises(BackupError, match="--identity"):
        core.decrypt(ct, Secret(), "b")
    with pytest.raises(BackupError, match="no passphrase and no recipient"):
        core.encrypt(b"x", Secret())
    with pytest.raises(BackupError, match="not an age public key"):
        core.encrypt(b"x", Secret(recipients=("age1nope",)))


def test_not_an_age_file() -> None:
    with pytest.raises(BackupError, match="not a kuberevive backup"):
        core.decrypt(b"SQLite format 3\0", IDENTITIES, "b")


def test_secret_repr_hides_the_passphrase_and_identities() -> None:
    text = repr(Secret(passphrase="hunter2", identities=(str(IDENTITY),)))
    assert "hunter2" not in text and "AGE-SECRET-KEY" not in text


# ---------------------------------------------------------------------------- etcd snapshot


def test_snapshot_stream_decoding_and_trailer() -> None:
    import base64

    snap = _snapshot()
    lines = [
        json.dumps({"result": {"remaining_bytes": "10", "blob": base64.b64encode(snap[:5000]).decode()}}),
        json.dumps({"result": {"blob": base64.b64encode(snap[5000:]).decode()}}),
    ]
    data = core.decode_snapshot_stream("\n".join(lines).encode())
    assert data == snap
    db, digest = core.split_snapshot(data)
    assert db == snap[:-32] and digest == hashlib.sha256(db).digest()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01" * 8192, "has no integrity hash"),
        (b"\x01" * 8192 + b"\x00" * 32, "does not match the sha256"),
        (_snapshot()[:-1], "has no integrity hash"),
    ],
)
def test_bad_snapshots(data: bytes, message: str) -> None:
    with pytest.raises(BackupError, match=message):
        core.split_snapshot(data)


def test_snapshot_stream_error_line() -> None:
    with pytest.raises(BackupError, match="etcd refused the snapshot: no leader"):
        core.decode_snapshot_stream(b'{"error": {"grpc_code": 14, "message": "no leader"}}\n')


def test_a_corrupt_snapshot_in_a_backup_is_refused() -> None:
    with pytest.raises(BackupError, match="does not match the sha256"):
        _archive(etcd_snapshot=b"\x01" * 8192 + b"\x00" * 32)


# ---------------------------------------------------------------------------------- verify


def test_verify_reports_checks_age_and_expiry() -> None:
    contents = core.parse_archive(_archive(), "b")
    report = core.verify(contents, NOW + timedelta(days=3))
    assert report.ok, report.problems
    assert set(report.checks) >= {
        "ca.key matches ca.crt",
        "front-proxy-ca.key matches front-proxy-ca.crt",
        "etcd/ca.key matches etcd/ca.crt",
        "sa.key matches sa.pub",
    }
    assert round(report.age_days) == 3
    ca = next(c for c in report.certificates if c.path == "ca.crt")
    assert ca.is_ca and ca.days_left > 1000  # ecdsa-validity.yaml: a 5-year CA
    assert report.as_json()["ok"] is True


def test_verify_finds_mismatched_keys() -> None:
    swapped = [
        _by_name(OTHER_FILES, "ca.key") if f.path.name == "ca.key" and f.path.parent.name == "pki" else f for f in FILES
    ]
    swapped = [_by_name(OTHER_FILES, "sa.pub") if f.path.name == "sa.pub" else f for f in swapped]
    report = core.verify(core.parse_archive(_archive(swapped), "b"), NOW)
    assert "ca.key does not match ca.crt" in report.problems
    assert "sa.key does not match sa.pub" in report.problems
    assert not report.ok


# --------------------------------------------------------------------------------- restore


def test_restore_only_missing_files() -> None:
    contents = core.parse_archive(_archive(), "b")
    ca_key = PurePosixPath("/etc/kubernetes/pki/ca.key")
    existing: dict[PurePosixPath, bytes | None] = {p: f.content for p, f in contents.files.items() if p != ca_key}
    assert [a.path for a in core.restore_artifacts(contents, existing)] == [ca_key]
    everything = core.restore_artifacts(contents, existing, only_missing=False)
    assert len(everything) == len(FILES)
    modes = {a.path.name: a.mode for a in everything}
    assert modes["ca.key"] == 0o600 and modes["ca.crt"] == 0o644


def test_foreign_backup_detection() -> None:
    contents = core.parse_archive(_archive(), "b")
    ours = _by_name(FILES, "ca.crt").content
    theirs = _by_name(OTHER_FILES, "ca.crt").content
    leaf = _by_name(FILES, "apiserver.crt").content
    assert core.foreign_evidence(contents, [TrustEvidence("ca", ours), TrustEvidence("leaf", leaf)]) == []
    assert core.foreign_evidence(contents, [TrustEvidence("the kubelet", theirs)]) == [
        "the kubelet is not the backup's CA nor signed by it"
    ]
    assert core.foreign_evidence(contents, [TrustEvidence("junk", b"not pem")]) == []


def test_etcd_member_from_manifest_flags() -> None:
    flags = {
        "name": "cp1",
        "data-dir": "/var/lib/etcd",
        "initial-cluster": "cp1=https://10.0.0.1:2380",
        "initial-advertise-peer-urls": "https://10.0.0.1:2380",
        "listen-client-urls": "https://127.0.0.1:2379,https://10.0.0.1:2379",
    }
    m = core.etcd_member(flags, "etcd.yaml")
    assert m.client_url == "https://127.0.0.1:2379"
    assert m.restore_args("/snap", "/target") == [
        "snapshot",
        "restore",
        "/snap",
        "--name=cp1",
        "--initial-cluster=cp1=https://10.0.0.1:2380",
        "--initial-advertise-peer-urls=https://10.0.0.1:2380",
        "--data-dir=/target",
        f"--bump-revision={core.BUMP_REVISION}",
        "--mark-compacted",
    ]
    with pytest.raises(BackupError, match="3 members"):
        core.etcd_member(flags | {"initial-cluster": "a=https://a:2380,b=https://b:2380,c=https://c:2380"}, "x")
    with pytest.raises(BackupError, match="no --initial-advertise-peer-urls"):
        core.etcd_member({"name": "cp1"}, "x")
