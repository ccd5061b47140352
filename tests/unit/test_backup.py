"""kuberevive.core.backup: archive format, encryption, integrity, verification, restore planning (no disk)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import pyrage
import pytest

from kuberevive.core import backup as core
from kuberevive.core import pki
from kuberevive.core.backup import BackupFile, NodeIdentity, Secret, TrustEvidence
from kuberevive.errors import BackupError
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
    return core.build_archive(files, created=NOW, node=NODE, tool_version="test", **kw)


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


# ------------------------------------------------------------- forged backups (F2: B-A1, B-A2, B-A3, B-X12)


def _forge(
    plaintext: bytes,
    edit: Callable[[dict[str, Any]], None] = lambda _m: None,
    add: dict[str, bytes] | None = None,
    signature: bytes | None = None,
) -> bytes:
    """``plaintext`` with its manifest edited, members added (and listed when under files/) and the signature
    replaced by ``signature`` (None: removed), as a forger who can decrypt (passphrase) would rebuild it."""
    with tarfile.open(fileobj=io.BytesIO(plaintext), mode="r:gz") as tar:
        members = {}
        for info in tar:
            fh = tar.extractfile(info)
            assert fh is not None
            members[info.name] = fh.read()
    manifest = json.loads(members.pop(core.MANIFEST_NAME))
    members.pop(core.SIGNATURE_NAME, None)
    for name, data in (add or {}).items():
        members[name] = data
        if name.startswith("files/"):
            entry = {"path": name[len("files") :], "mode": "0644", "size": len(data)}
            manifest["files"].append(entry | {"sha256": hashlib.sha256(data).hexdigest()})
    edit(manifest)
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as dst:
        items = [(core.MANIFEST_NAME, json.dumps(manifest).encode())]
        if signature is not None:
            items.append((core.SIGNATURE_NAME, signature))
        for name, data in [*items, *members.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _set_path(index: int, raw: str) -> Callable[[dict[str, Any]], None]:
    """Make the manifest's entry ``index`` claim the raw path ``raw`` (its member stays where it was)."""

    def edit(manifest: dict[str, Any]) -> None:
        manifest["files"][index]["path"] = raw

    return edit


def _set_mode(name: str, mode: object) -> Callable[[dict[str, Any]], None]:
    def edit(manifest: dict[str, Any]) -> None:
        for entry in manifest["files"]:
            if entry["path"] == f"/etc/kubernetes/pki/{name}":
                entry["mode"] = mode

    return edit


@pytest.mark.parametrize(
    ("member", "shown"),
    [
        pytest.param("files/etc/cron.d/kuberevive-evil", "/etc/cron.d/kuberevive-evil", id="B-A1-cron"),
        pytest.param("files/root/.ssh/authorized_keys", "/root/.ssh/authorized_keys", id="B-A1-ssh"),
        pytest.param("files/usr/local/bin/kubectl", "/usr/local/bin/kubectl", id="B-A1-setuid"),
        pytest.param("files/var/lib/kubelet/pki/kubelet.key", "/var/lib/kubelet/pki/kubelet.key", id="kubelet-pki"),
        pytest.param("files/etc/kubernetesX/a", "/etc/kubernetesX/a", id="sibling-prefix"),
    ],
)
def test_forged_paths_refused(member: str, shown: str) -> None:
    forged = _forge(_archive(), add={member: b"* * * * * root touch /var/pwned\n"})
    with pytest.raises(BackupError) as err:
        core.parse_archive(forged, "b.age")
    assert str(err.value).startswith(f"b.age lists {shown}, which a kuberevive backup never holds; nothing was written")
    assert "\n" not in str(err.value) and err.value.hint


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        pytest.param("/etc/kubernetes/../cron.d/x", "/etc/kubernetes/../cron.d/x", id="dotdot"),
        pytest.param("/etc/kubernetes/pki/../../cron.d/x", "/etc/kubernetes/pki/../../cron.d/x", id="dotdot-deep"),
        pytest.param("/etc/kubernetes/./pki/ca.key", "/etc/kubernetes/./pki/ca.key", id="dot"),
        pytest.param("/etc/kubernetes//pki/ca.key", "/etc/kubernetes//pki/ca.key", id="empty-component"),
        pytest.param("/etc/kubernetes/pki/", "/etc/kubernetes/pki/", id="trailing-slash"),
        pytest.param("/etc/kubernetes/", "/etc/kubernetes/", id="the-directory"),
        pytest.param("/etc/kubernetes", "/etc/kubernetes", id="no-slash"),
        pytest.param("etc/kubernetes/pki/ca.key", "etc/kubernetes/pki/ca.key", id="relative"),
        pytest.param("//etc/kubernetes/pki/ca.key", "//etc/kubernetes/pki/ca.key", id="double-root"),
        pytest.param("/etc/kubernetes/pki/ca.key\0", "'/etc/kubernetes/pki/ca.key\\x00'", id="nul"),
        pytest.param("/var/lib/kubelet/./config.yaml", "/var/lib/kubelet/./config.yaml", id="kubelet-dot"),
    ],
)
def test_unnormalised_paths_refused(raw: str, shown: str) -> None:
    # PurePosixPath would make most of these the honest path of the member; only the raw string tells
    index = next(i for i, f in enumerate(sorted(FILES, key=lambda f: f.path)) if f.path.name == "ca.key")
    with pytest.raises(BackupError, match="which a kuberevive backup never holds") as err:
        core.parse_archive(_forge(_archive(), _set_path(index, raw)), "b")
    assert f"b lists {shown}," in str(err.value)


def test_forged_certificates_dir_refused() -> None:
    def edit(manifest: dict[str, Any]) -> None:
        manifest["certificates_dir"] = "/"

    with pytest.raises(BackupError, match="names / as its certificates directory"):
        core.parse_archive(_forge(_archive(), edit), "b")


def test_forged_optional_member_refused() -> None:
    def edit(manifest: dict[str, Any]) -> None:
        manifest["kubeadm_config"]["member"] = "files/etc/kubernetes/pki/ca.key"

    archive = _archive(kubeadm_config=b"kind: ClusterConfiguration\n")
    with pytest.raises(BackupError, match=r"where a backup keeps cluster/kubeadm-config\.yaml"):
        core.parse_archive(_forge(archive, edit), "b")


@pytest.mark.parametrize(
    ("edit", "shown"),
    [
        pytest.param(_set_mode("sa.key", "-1"), "sa.key the mode -1", id="B-X12"),
        pytest.param(lambda m: (_set_mode("ca.key", "0666")(m), _set_mode("sa.key", "-1")(m)), "-1", id="B-A3"),
        pytest.param(_set_mode("ca.key", "7777"), "ca.key the mode 7777", id="7777"),
        pytest.param(_set_mode("ca.key", "4755"), "the mode 4755", id="setuid"),
        pytest.param(_set_mode("ca.key", "2755"), "the mode 2755", id="setgid"),
        pytest.param(_set_mode("ca.key", "1777"), "the mode 1777", id="sticky"),
        pytest.param(_set_mode("ca.key", "10644"), "the mode 10644", id="five-digits"),
        pytest.param(_set_mode("ca.key", "64"), "the mode 64", id="two-digits"),
        pytest.param(_set_mode("ca.key", "0o644"), "the mode 0o644", id="python-prefix"),
        pytest.param(_set_mode("ca.key", "0648"), "the mode 0648", id="not-octal"),
        pytest.param(_set_mode("ca.key", "644\n"), "the mode '644\\n'", id="newline"),
        pytest.param(_set_mode("ca.key", "٦٤٤"), "the mode ٦٤٤", id="unicode-digits"),
        pytest.param(_set_mode("ca.key", 420), "the mode 420", id="a-number"),
    ],
)
def test_forged_modes_refused(edit: Callable[[dict[str, Any]], None], shown: str) -> None:
    with pytest.raises(BackupError, match="which kuberevive never records") as err:
        core.parse_archive(_forge(_archive(), edit), "b")
    assert shown in str(err.value) and "nothing was written" in str(err.value)
    assert "\n" not in str(err.value).replace("\\n", "")


@pytest.mark.parametrize("mode", ["0600", "600", "0644", "0777", "0000"])
def test_plain_modes_are_read(mode: str) -> None:
    assert core.parse_archive(_forge(_archive(), _set_mode("ca.key", mode)), "b").files


@pytest.mark.parametrize(
    ("path", "mode"),
    [
        ("/etc/kubernetes/pki/ca.key", 0o600),
        ("/etc/kubernetes/pki/etcd/peer.key", 0o600),
        ("/etc/kubernetes/pki/sa.key", 0o600),
        ("/etc/kubernetes/pki/sa.pub", 0o600),  # kubeadm writes it through its key writer
        ("/etc/kubernetes/pki/ca.crt", 0o644),
        ("/etc/kubernetes/pki/etcd/ca.crt", 0o644),
        ("/etc/kubernetes/admin.conf", 0o600),
        ("/etc/kubernetes/super-admin.conf", 0o600),
        ("/etc/kubernetes/manifests/kube-apiserver.yaml", 0o600),
        ("/etc/kubernetes/manifests/odd.crt", 0o600),  # a static pod manifest first
        ("/var/lib/kubelet/config.yaml", 0o644),
        ("/var/lib/kubelet/kubeadm-flags.env", 0o644),
        ("/var/lib/kubelet/instance-config.yaml", 0o644),
        ("/etc/kubernetes/notes.txt", 0o600),
        ("/etc/kubernetes/tmp/kubeadm-kubelet-config.yaml", 0o600),
    ],
)
def test_restore_mode_table(path: str, mode: int) -> None:
    assert oct(core.restore_mode(PurePosixPath(path))) == oct(mode)


@pytest.mark.parametrize(
    ("name", "recorded", "restored"),
    [
        pytest.param("ca.key", "0666", 0o600, id="B-A3-ca.key-0666"),
        pytest.param("sa.key", "0644", 0o600, id="B-A3-key-0644"),
        pytest.param("ca.crt", "0600", 0o644, id="crt-0600"),
        pytest.param("ca.crt", "0777", 0o644, id="crt-0777"),
    ],
)
def test_restore_writes_kuberevive_modes_not_the_manifests(name: str, recorded: str, restored: int) -> None:
    contents = core.parse_archive(_forge(_archive(), _set_mode(name, recorded)), "b")
    path = PurePosixPath(f"/etc/kubernetes/pki/{name}")
    assert contents.files[path].mode == int(recorded, 8)  # what the manifest says, for the record
    (art,) = [a for a in core.restore_artifacts(contents, {}) if a.path == path]
    assert oct(art.mode) == oct(restored)


def test_honest_backup_restores_every_mode_from_the_table() -> None:
    arts = core.restore_artifacts(core.parse_archive(_archive(), "b"), {})
    assert {a.path: a.mode for a in arts} == {f.path: core.restore_mode(f.path) for f in FILES}
    assert {a.path: a.mode for a in arts} == {f.path: f.mode for f in FILES}  # and that is kubeadm's


# -------------------------------------------------------------------------------- signature


def _member(plaintext: bytes, name: str) -> bytes | None:
    with tarfile.open(fileobj=io.BytesIO(plaintext), mode="r:gz") as tar:
        try:
            fh = tar.extractfile(name)
        except KeyError:
            return None
        return fh.read() if fh is not None else None


def test_build_signs_the_exact_manifest_bytes_with_ca_key() -> None:
    archive = _archive()
    manifest, signature = _member(archive, core.MANIFEST_NAME), _member(archive, core.SIGNATURE_NAME)
    assert manifest is not None and signature is not None
    ca = pki.load_certificate(_by_name(FILES, "ca.crt").content, "ca.crt")
    assert pki.verify_sha256_signature(ca, manifest, signature)
    assert not pki.verify_sha256_signature(ca, manifest + b" ", signature)
    contents = core.parse_archive(archive, "b")
    assert contents.signed_by == pki.discovery_token_ca_cert_hash(ca) == contents.ca_cert_hash
    assert "the manifest's signature verifies with the backup's ca.crt" in core.verify(contents, NOW).checks


def test_no_signature_without_a_matching_ca_key() -> None:
    no_key = [f for f in FILES if f.path != PurePosixPath("/etc/kubernetes/pki/ca.key")]
    assert core.signing_key(no_key) is None
    assert _member(_archive(no_key), core.SIGNATURE_NAME) is None
    other_key = [_by_name(OTHER_FILES, "ca.key") if f.path.name == "ca.key" else f for f in FILES]
    assert core.signing_key(other_key) is None
    assert core.parse_archive(_archive(no_key), "b").signed_by is None


def _other_ca_signature(archive: bytes) -> bytes:
    """Another CA's signature of the manifest bytes ``_forge`` writes for ``archive``."""
    manifest = json.dumps(json.loads(_member(archive, core.MANIFEST_NAME) or b"")).encode()
    return pki.sign_sha256(pki.load_private_key(_by_name(OTHER_FILES, "ca.key").content, "k"), manifest)


def _edit_node(manifest: dict[str, Any]) -> None:
    manifest["node"]["node_name"] = "evil"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda a: _forge(a, _edit_node, signature=_member(a, core.SIGNATURE_NAME)), id="manifest-edited"),
        pytest.param(lambda a: _forge(a, signature=b"\x00" * 64), id="garbage-signature"),
        pytest.param(lambda a: _forge(a, signature=b""), id="empty-signature"),
        pytest.param(lambda a: _forge(a, signature=_other_ca_signature(a)), id="another-ca-signed"),
    ],
)
def test_tampered_signature_refused(tamper: Callable[[bytes], bytes]) -> None:
    with pytest.raises(BackupError, match=r"signature of b does not verify .* \(tampered\); nothing was written"):
        core.parse_archive(tamper(_archive()), "b")


@pytest.mark.parametrize("algorithm", ["rsa", "p256", "p384"])
def test_sign_sha256_round_trip(algorithm: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key: pki.PrivateKey = (
        rsa.generate_private_key(65537, 2048)
        if algorithm == "rsa"
        else ec.generate_private_key(ec.SECP256R1() if algorithm == "p256" else ec.SECP384R1())
    )
    cert = pki.new_self_signed_ca("kubernetes", key, NOW, NOW + timedelta(days=1))
    sig = pki.sign_sha256(key, b"manifest")
    assert pki.verify_sha256_signature(cert, b"manifest", sig)
    assert not pki.verify_sha256_signature(cert, b"manifesT", sig)
    assert not pki.verify_sha256_signature(cert, b"manifest", sig[:-1])


# ---------------------------------------------------------------------------- authenticity


def test_recipient_backup_must_be_signed() -> None:
    signed = core.encrypt(_archive(), RECIPIENT)
    contents = core.open_archive(signed, IDENTITIES, "b")
    assert contents.encryption == core.RECIPIENT and contents.signed_by is not None
    unsigned = core.encrypt(_forge(_archive()), RECIPIENT)
    with pytest.raises(BackupError, match="encrypted to an age recipient key but its manifest is not signed") as err:
        core.open_archive(unsigned, IDENTITIES, "b")
    assert "--allow-unauthenticated" in str(err.value)
    assert core.open_archive(unsigned, IDENTITIES, "b", allow_unauthenticated=True).signed_by is None


def test_unsigned_passphrase_backup_is_still_read() -> None:
    secret = Secret(passphrase="p")
    contents = core.open_archive(core.encrypt(_forge(_archive()), secret), secret, "b")
    assert contents.encryption == core.PASSPHRASE and contents.signed_by is None


def test_forged_recipient_backup_refused_for_its_paths() -> None:
    # B-A2: only the public recipient key and the public ca.crt are needed to make this
    public = [f for f in FILES if f.path.suffix == ".crt"]
    forged = _forge(_archive(public), add={"files/etc/cron.d/kuberevive-evil": b"* * * * * root id\n"})
    with pytest.raises(BackupError, match=r"lists /etc/cron\.d/kuberevive-evil, which a kuberevive backup never"):
        core.open_archive(core.encrypt(forged, RECIPIENT), IDENTITIES, "b", allow_unauthenticated=True)
    with pytest.raises(BackupError, match="not signed"):
        core.open_archive(core.encrypt(_archive(public), RECIPIENT), IDENTITIES, "b")


REAL_CA = _by_name(FILES, "ca.crt").content
REAL_HASH = pki.discovery_token_ca_cert_hash(pki.load_certificate(REAL_CA, "ca"))
OTHER_HASH = pki.discovery_token_ca_cert_hash(pki.load_certificate(_by_name(OTHER_FILES, "ca.crt").content, "c"))
KUBELET = TrustEvidence("the kubelet client certificate", _by_name(FILES, "apiserver-kubelet-client.crt").content)


def _contents(files: list[BackupFile], encryption: str) -> core.BackupContents:
    from dataclasses import replace

    return replace(core.parse_archive(_archive(files), "b"), encryption=encryption)


@pytest.mark.parametrize(
    ("files", "encryption", "evidence", "kw", "outcome"),
    [
        pytest.param(OTHER_FILES, core.RECIPIENT, [KUBELET], {}, "another cluster", id="B-A2-own-ca-vs-kubelet-cert"),
        pytest.param(OTHER_FILES, core.RECIPIENT, [], {}, "holds no kubelet certificate", id="B-A2-no-evidence"),
        pytest.param(OTHER_FILES, core.RECIPIENT, [], {"ca_cert_hash": REAL_HASH}, "not the pinned", id="B-A2-pin"),
        pytest.param(FILES, core.RECIPIENT, [], {}, "holds no kubelet certificate", id="B-A2-honest-no-pin"),
        pytest.param(FILES, core.RECIPIENT, [], {"ca_cert_hash": REAL_HASH}, [], id="B-A2-right-pin"),
        pytest.param(FILES, core.RECIPIENT, [], {"ca_cert_hash": OTHER_HASH}, "not the pinned", id="B-A2-wrong-pin"),
        pytest.param(
            FILES, core.RECIPIENT, [], {"allow_unauthenticated": True}, ["no kubelet certificate"], id="allowed"
        ),
        pytest.param(FILES, core.RECIPIENT, [KUBELET], {}, [], id="recipient-tied-by-kubelet-cert"),
        pytest.param(FILES, core.RECIPIENT, [KUBELET], {"ca_cert_hash": OTHER_HASH}, "not the pinned", id="pin-wins"),
        pytest.param(FILES, core.PASSPHRASE, [], {}, ["no kubelet certificate"], id="passphrase-no-evidence"),
        pytest.param(OTHER_FILES, core.PASSPHRASE, [KUBELET], {}, "another cluster", id="passphrase-foreign"),
        pytest.param(
            OTHER_FILES, core.RECIPIENT, [KUBELET], {"allow_foreign": True}, ["foreign backup allowed"], id="foreign"
        ),
    ],
)
def test_same_cluster(
    files: list[BackupFile], encryption: str, evidence: list[TrustEvidence], kw: dict[str, Any], outcome: object
) -> None:
    contents = _contents(files, encryption)
    if isinstance(outcome, str):
        with pytest.raises(BackupError, match=outcome) as err:
            core.same_cluster(contents, evidence, **kw)
        assert "nothing was written" in str(err.value)
    else:
        assert isinstance(outcome, list)
        warnings = core.same_cluster(contents, evidence, **kw)
        assert len(warnings) == len(outcome) and all(w.startswith(o) for w, o in zip(warnings, outcome, strict=True))


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("sha256:" + "ab" * 32, True),
        ("SHA256:" + "AB" * 32, False),
        ("sha256:" + "AB" * 32, True),
        (" sha256:" + "ab" * 32 + "\n", True),
        ("ab" * 32, False),
        ("sha256:" + "ab" * 31, False),
        ("sha1:" + "ab" * 20, False),
        ("sha256:" + "zz" * 32, False),
    ],
)
def test_parse_ca_cert_hash(text: str, ok: bool) -> None:
    if ok:
        assert core.parse_ca_cert_hash(text) == "sha256:" + "ab" * 32
    else:
        with pytest.raises(BackupError, match="is not sha256:<64 hex digits>"):
            core.parse_ca_cert_hash(text)


# ------------------------------------------------------------- issue 18 item 3: completeness for the node's role


def _kubeadm_node() -> dict[PurePosixPath, bytes]:
    """What ``kubeadm init`` leaves on a control plane (generate all) plus the kubelet's config.yaml."""
    from kuberevive.core.generate import Target, generate

    cfg = load_kubeadm_config((CONFIGS / "defaults.yaml").read_text(), NodeFacts(hostname="cp1"))
    result = generate(Target.ALL, cfg, NodeFacts(hostname="cp1"), NOW, {})
    files = {a.path: a.content for a in result.artifacts}
    files[PurePosixPath("/var/lib/kubelet/config.yaml")] = b"kind: KubeletConfiguration\n"
    return files


KUBEADM_NODE = _kubeadm_node()


def _gaps(files: dict[PurePosixPath, bytes]) -> core.Completeness:
    return core.completeness(files, files.get)


def test_item3_a_whole_control_plane_is_complete_and_each_gap_is_named() -> None:
    assert _gaps(KUBEADM_NODE) == core.Completeness(core.CONTROL_PLANE, ())
    for gone in (
        "/etc/kubernetes/pki/apiserver.key",
        "/etc/kubernetes/pki/sa.pub",
        "/etc/kubernetes/pki/etcd/peer.key",
        "/etc/kubernetes/admin.conf",
        "/etc/kubernetes/manifests/kube-scheduler.yaml",
        "/var/lib/kubelet/config.yaml",
    ):
        lacking = {p: c for p, c in KUBEADM_NODE.items() if str(p) != gone}
        gaps = _gaps(lacking)
        assert gaps.role == core.CONTROL_PLANE and gaps.missing == (PurePosixPath(gone),), gone
        assert gone in gaps.summary() and not gaps.complete
    # super-admin.conf exists only on the node of kubeadm init (not after join --control-plane): not a gap
    assert _gaps({p: c for p, c in KUBEADM_NODE.items() if p.name != "super-admin.conf"}).complete


def test_item3_worker_needs_kubelet_conf_ca_and_kubelet_config() -> None:
    worker = {
        p: KUBEADM_NODE[p]
        for p in map(
            PurePosixPath,
            ("/etc/kubernetes/kubelet.conf", "/etc/kubernetes/pki/ca.crt", "/var/lib/kubelet/config.yaml"),
        )
    }
    assert _gaps(worker) == core.Completeness(core.WORKER, ())
    assert _gaps({p: c for p, c in worker.items() if p.name != "kubelet.conf"}).missing == (
        PurePosixPath("/etc/kubernetes/kubelet.conf"),
    )


def test_item3_external_ca_and_external_etcd_are_not_gaps() -> None:
    kcm = PurePosixPath("/etc/kubernetes/manifests/kube-controller-manager.yaml")
    api = PurePosixPath("/etc/kubernetes/manifests/kube-apiserver.yaml")
    ca_key = PurePosixPath("/etc/kubernetes/pki/ca.key")
    no_ca_key = {p: c for p, c in KUBEADM_NODE.items() if p != ca_key}
    assert _gaps(no_ca_key).missing == (ca_key,)  # a lost ca.key is a gap...
    external_ca = no_ca_key | {
        kcm: re.sub(rb"--cluster-signing-key-file=\S*", b"--cluster-signing-key-file=", KUBEADM_NODE[kcm])
    }
    gaps = _gaps(external_ca)  # ...but not with the controller-manager of kubeadm's external-CA mode
    assert gaps.complete and any("external CA" in n for n in gaps.notes)
    external_etcd = {p: c for p, c in KUBEADM_NODE.items() if "etcd" not in p.name and p.parent.name != "etcd"}
    assert _gaps(external_etcd).missing  # the etcd PKI and manifest of a local etcd are gaps...
    external_etcd[api] = re.sub(rb"--etcd-servers=\S+", b"--etcd-servers=https://10.0.0.5:2379", external_etcd[api])
    gaps = _gaps(external_etcd)  # ...but not with an external etcd
    assert gaps.complete and any("external etcd" in n for n in gaps.notes)


def test_item3_verify_reports_gaps_apart_from_problems() -> None:
    """A backup without apiserver.key is consistent (it restores what it holds) but not complete."""
    files = [BackupFile(p, 0o600, c) for p, c in KUBEADM_NODE.items() if p.name != "apiserver.key"]
    report = core.verify(core.parse_archive(_archive(files), "b"), NOW)
    assert report.ok and not report.complete
    assert report.as_json()["missing"] == ["/etc/kubernetes/pki/apiserver.key"]
    assert report.as_json()["complete"] is False
    whole = core.verify(
        core.parse_archive(_archive([BackupFile(p, 0o600, c) for p, c in KUBEADM_NODE.items()]), "b"), NOW
    )
    assert whole.ok and whole.complete


# ------------------------------------------------------- issue 18 item 4: bounded reading (B-V17, R-6, B-X11)


def _raw_tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb") as gz:
        for info, data in members:
            gz.write(info.tobuf(format=tarfile.GNU_FORMAT) + data + b"\0" * (-len(data) % 512))
        gz.write(b"\0" * 1024)
    return out.getvalue()


def _members(plaintext: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(plaintext), mode="r:gz") as tar:
        for info in tar:
            fh = tar.extractfile(info)
            assert fh is not None
            out.append((info, fh.read()))
    return out


def test_B_V17_an_unlisted_member_is_refused_from_its_header() -> None:
    """B-V17/R-6: a member the manifest does not list is refused before its data is read: here its header claims
    7 GiB that are not even there (the old reader decompressed every member whole before any check)."""
    bomb = tarfile.TarInfo("files/etc/kubernetes/zeros")
    bomb.size = 7 << 30
    with pytest.raises(BackupError, match=r"files/etc/kubernetes/zeros is not listed in the manifest"):
        core.parse_archive(_raw_tar([*_members(_archive()), (bomb, b"\0" * 4096)]), "b")


def test_B_V17_a_listed_size_beyond_what_a_backup_holds_is_refused() -> None:
    def edit(manifest: dict[str, Any]) -> None:
        manifest["files"][0]["size"] = core.MAX_FILE_BYTES + 1

    with pytest.raises(BackupError, match=r"more than a kuberevive backup holds"):
        core.parse_archive(_forge(_archive(), edit), "b")


def test_B_V17_a_huge_tar_header_is_never_read_whole() -> None:
    """A pax header claiming 1 GiB would be read by tarfile in one call: refused above MAX_HEADER_BYTES."""
    members = _members(_archive())
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    pax.size = 1 << 30
    with pytest.raises(BackupError, match=r"archive is damaged \(a tar header or read of \d+ bytes, larger than"):
        core.parse_archive(_raw_tar([members[0], (pax, b"x" * 1024), *members[1:]]), "b")


def test_the_manifest_must_come_first() -> None:
    members = _members(_archive())
    with pytest.raises(BackupError, match=r"does not start with kuberevive-backup\.json: not a kuberevive backup"):
        core.parse_archive(_raw_tar([*members[1:], members[0]]), "b")


@pytest.mark.parametrize("nesting", [b"[" * 100000, b'{"a":' * 100000])
def test_B_X11_deeply_nested_manifest_is_one_error(nesting: bytes) -> None:
    manifest = tarfile.TarInfo(core.MANIFEST_NAME)
    manifest.size = len(nesting)
    with pytest.raises(BackupError, match="is not valid JSON"):
        core.parse_archive(_raw_tar([(manifest, nesting)]), "b")


def test_create_never_writes_what_reading_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reading bounds hold for writing too: a backup kuberevive could not read back is never made."""
    monkeypatch.setattr(core, "MAX_FILES_TOTAL_BYTES", sum(len(f.content) for f in FILES) - 1)
    with pytest.raises(BackupError, match=r"more than .* bytes of files, more than kuberevive reads back"):
        _archive()
    monkeypatch.undo()
    monkeypatch.setattr(core, "MAX_SNAPSHOT_BYTES", 100)
    with pytest.raises(BackupError, match="an etcd snapshot larger than 100 bytes"):
        _archive(etcd_snapshot=_snapshot())
