"""The kuberevive backup format, as pure functions: build, encrypt, decrypt, parse, verify, plan a restore.

A backup is one file: an `age <https://age-encryption.org/v1>`_ encrypted gzip'd tar (``pyrage``, the Rust
``age`` crate), encrypted either to a passphrase (age ``scrypt`` recipient) or to an X25519 recipient
(``age1...``) whose identity never has to be on the node. The tar is built and read in memory only: no
plaintext byte of it is ever written anywhere.

Inside the tar (all paths relative, no links, no directories)::

    kuberevive-backup.json          the manifest: format, creation time, node identity, cluster CA,
                                    and one entry per file (node path, mode, size, sha256)
    kuberevive-backup.sig           the signature of the manifest's exact bytes by the cluster CA key
                                    (``pki/ca.key``: RSA PKCS#1 v1.5 or ECDSA, SHA-256); absent when the node
                                    has no usable ca.key and in backups made before kuberevive signed them
    files/etc/kubernetes/...        the node's files, by node path (PKI with CA keys, kubeconfigs, manifests)
    files/var/lib/kubelet/...       kubelet configuration and kubeadm-flags.env
    cluster/kubeadm-config.yaml     the kubeadm ClusterConfiguration (kubeadm-config ConfigMap), when known
    etcd/snapshot.db                optional: the etcd snapshot exactly as etcd streamed it (bbolt db + its
                                    sha256 trailer), so ``etcdutl snapshot restore`` checks its integrity too

Reading checks the manifest first, then every member against it: a missing, extra or altered member is an
error. A flipped byte anywhere in the encrypted file already fails age's authenticated decryption.

A backup is untrusted input that ends up as root-owned files on the node, so reading also refuses what
``backup create`` never writes: a file outside ``/etc/kubernetes/`` and :data:`KUBELET_FILES`, a path with
``.``/``..``/empty components or NUL, a mode that is not plain ``0..0777``. A restore writes kuberevive's own
modes (:data:`RESTORE_MODES`), never the manifest's.

Authenticity: age's scrypt (passphrase) recipient authenticates the sender (a forger needs the passphrase);
an X25519 recipient does not (anyone with the public ``age1...`` key can encrypt to it). The signature ties
the manifest to the key of the backup's own ``ca.crt``; :func:`open_archive` refuses an unsigned
recipient-mode backup, and :func:`same_cluster` ties that CA to the node's surviving trust (or an
operator-pinned ``--ca-cert-hash``).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, BinaryIO, cast

import pyrage
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kuberevive.core import pki
from kuberevive.core.kubeconfig import MODE_KUBECONFIG
from kuberevive.core.manifests import MANIFEST_MODE, manifest_flags, parse_manifest
from kuberevive.errors import BackupError, KubereviveError
from kuberevive.model.artifacts import Artifact, ArtifactKind
from kuberevive.model.document import rfc3339
from kuberevive.model.paths import (
    CA_PAIRS,
    ETCD_DATA_DIR,
    KUBEADM_FLAGS,
    KUBELET_CONFIG,
    KUBELET_INSTANCE_CONFIG,
    KUBERNETES_DIR,
    MANIFESTS_DIR,
    PKI_DIR,
)

FORMAT = "kuberevive-backup/v1"
MANIFEST_NAME = "kuberevive-backup.json"
SIGNATURE_NAME = "kuberevive-backup.sig"
FILES_PREFIX = "files"
KUBEADM_CONFIG_MEMBER = "cluster/kubeadm-config.yaml"
SNAPSHOT_MEMBER = "etcd/snapshot.db"
AGE_MAGIC = b"age-encryption.org/v1\n"
AGE_ARMOR_MAGIC = b"-----BEGIN AGE ENCRYPTED FILE-----"

#: Node files kept in a backup besides everything under /etc/kubernetes.
KUBELET_FILES = (KUBELET_CONFIG, KUBEADM_FLAGS, KUBELET_INSTANCE_CONFIG)

SHA256_SIZE = 32

#: Bounds on reading a backup (adversarial F8: B-V17, R-6): what ``backup create`` can put in one, with room.
MAX_FILE_BYTES = 16 << 20
"""Largest node file a backup holds (``backup create`` reads each with this limit)."""
MAX_FILES_TOTAL_BYTES = 256 << 20
MAX_MANIFEST_BYTES = 16 << 20
MAX_SIGNATURE_BYTES = 64 << 10
MAX_SNAPSHOT_BYTES = 8 << 30
"""etcd's largest recommended backend quota (8 GiB)."""
MAX_HEADER_BYTES = 1 << 20
"""Largest single read while decompressing (a tar header, or a chunk of member data)."""

PASSPHRASE = "passphrase"
RECIPIENT = "recipient"
"""How a backup was encrypted (:attr:`BackupContents.encryption`): age scrypt, or X25519 recipients."""

#: The mode a restore writes each file with, whatever the manifest says: kubeadm's (spec §2.1). First match
#: wins; anything else (under /etc/kubernetes) is :data:`OTHER_MODE`. The only place these are decided.
RESTORE_MODES: tuple[tuple[str, Callable[[PurePosixPath], bool], int], ...] = (
    ("private keys (*.key)", lambda p: p.suffix == ".key", pki.MODE_KEY),
    ("kubeconfigs (*.conf)", lambda p: p.suffix == ".conf", MODE_KUBECONFIG),
    ("static Pod manifests (manifests/*)", lambda p: p.is_relative_to(MANIFESTS_DIR), MANIFEST_MODE),
    ("the service-account public key (sa.pub, written by kubeadm's key writer)", lambda p: p.name == "sa.pub",
     pki.MODE_PUBLIC_KEY),
    ("certificates (*.crt)", lambda p: p.suffix == ".crt", pki.MODE_CERT),
    ("kubelet config.yaml, kubeadm-flags.env, instance-config.yaml", lambda p: p in KUBELET_FILES, 0o644),
)  # fmt: skip
OTHER_MODE = 0o600

_MODE_RE = re.compile(r"[0-7]{3,4}")
_PIN_RE = re.compile(r"sha256:([0-9a-fA-F]{64})")
_FORGED_HINT = "this file was not made by kuberevive backup create: do not use it; use another backup"


# ------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class BackupFile:
    path: PurePosixPath
    mode: int
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class NodeIdentity:
    node_name: str
    hostname: str
    addresses: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"node_name": self.node_name, "hostname": self.hostname, "addresses": list(self.addresses)}


@dataclass(frozen=True)
class BackupContents:
    """A decrypted, verified backup: every file by node path, the manifest, and the optional snapshot."""

    files: dict[PurePosixPath, BackupFile]
    metadata: dict[str, Any]
    kubeadm_config: bytes | None = None
    etcd_snapshot: bytes | None = None
    """The snapshot as etcd streamed it (db followed by its sha256), or None."""
    signed_by: str | None = None
    """``sha256:`` hash (kubeadm's CA pin) of the backup's ca.crt whose key signed the manifest; None: unsigned."""
    encryption: str = ""
    """:data:`PASSPHRASE` or :data:`RECIPIENT` once read by :func:`open_archive`; "" from :func:`parse_archive`."""
    etcd_snapshot_streamed: int | None = None
    """The size of the snapshot when it was streamed to a sink (:func:`open_archive_stream`), not kept in memory."""

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(str(self.metadata["created"]))

    @property
    def pki(self) -> dict[str, bytes]:
        """PKI-relative path (``ca.key``, ``etcd/ca.crt``) -> bytes: the shape recover's kept material takes."""
        cdir = PurePosixPath(str(self.metadata.get("certificates_dir", PKI_DIR)))
        return {str(p.relative_to(cdir)): f.content for p, f in self.files.items() if p.is_relative_to(cdir)}

    @property
    def ca_cert_pem(self) -> bytes | None:
        return self.pki.get("ca.crt")

    @property
    def ca_cert_hash(self) -> str | None:
        """kubeadm's ``--discovery-token-ca-cert-hash`` of the backup's ca.crt (None without a readable one)."""
        pem = self.ca_cert_pem
        if pem is None:
            return None
        try:
            return pki.discovery_token_ca_cert_hash(pki.load_certificate(pem, "ca.crt in the backup"))
        except KubereviveError:
            return None


@dataclass(frozen=True)
class CertStatus:
    path: str
    subject: str
    not_after: datetime
    days_left: float
    is_ca: bool


@dataclass
class VerifyReport:
    created: datetime
    age_days: float
    node: dict[str, Any]
    files: int
    etcd_snapshot_bytes: int | None
    signed_by: str | None = None
    encryption: str = ""
    problems: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    certificates: list[CertStatus] = field(default_factory=list)
    completeness: Completeness | None = None
    """What the backup lacks for its node's role (:func:`completeness`); gaps are not :attr:`problems`: a
    backup without ``apiserver.key`` still restores what it holds, but ``backup verify`` must not call it
    complete."""

    @property
    def ok(self) -> bool:
        """Consistent: every check passed (what restore and recover --from-backup need)."""
        return not self.problems

    @property
    def complete(self) -> bool:
        return self.completeness is None or self.completeness.complete

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "created": rfc3339(self.created),
            "age_days": round(self.age_days, 2),
            "node": self.node,
            "files": self.files,
            "etcd_snapshot_bytes": self.etcd_snapshot_bytes,
            "encryption": self.encryption or None,
            "signed_by": self.signed_by,
            "checks": self.checks,
            "problems": self.problems,
            "role": self.completeness.role if self.completeness else None,
            "complete": self.complete,
            "missing": [str(p) for p in self.completeness.missing] if self.completeness else [],
            "notes": list(self.completeness.notes) if self.completeness else [],
            "certificates": [
                {
                    "path": c.path,
                    "subject": c.subject,
                    "not_after": rfc3339(c.not_after),
                    "days_left": round(c.days_left, 1),
                    "ca": c.is_ca,
                }
                for c in self.certificates
            ],
        }


# --------------------------------------------------------------------------------- building


@dataclass(frozen=True)
class StreamedSnapshot:
    """An etcd snapshot that is not in memory: its size, its sha256 and its trailer (checked while it was taken,
    :class:`SnapshotDigest`), and how to read it again (chunk by chunk)."""

    size: int
    sha256: str
    trailer: bytes
    open: Callable[[], BinaryIO]


def build_archive(files: Iterable[BackupFile], **options: Any) -> bytes:
    """The plaintext archive (gzip'd tar) for ``files``, in memory: :func:`write_archive` into a buffer."""
    buf = io.BytesIO()
    write_archive(buf, files, **options)
    return buf.getvalue()


def write_archive(
    out: BinaryIO,
    files: Iterable[BackupFile],
    *,
    created: datetime,
    node: NodeIdentity,
    tool_version: str,
    certificates_dir: PurePosixPath = PKI_DIR,
    kubeadm_config: bytes | None = None,
    kubeadm_config_source: str = "none",
    etcd_snapshot: bytes | StreamedSnapshot | None = None,
) -> None:
    """Write the plaintext archive (gzip'd tar) for ``files`` into ``out`` (e.g. an
    :class:`~kuberevive.core.agestream.AgeWriter`); a :class:`StreamedSnapshot` is copied in chunks, never whole.
    Refuses a backup without ``ca.crt``.

    The manifest is signed with ``ca.key`` (:func:`signing_key`) when the files hold one that matches ``ca.crt``.
    """
    by_path = {f.path: f for f in files}
    ca = by_path.get(certificates_dir / "ca.crt")
    if ca is None:
        raise BackupError(
            f"there is no {certificates_dir / 'ca.crt'} on this node, so there is nothing worth backing up",
            "run backup create on a healthy control-plane node",
        )
    ca_cert = pki.load_certificate(ca.content, str(ca.path))
    members: list[tuple[str, bytes]] = []
    entries = []
    for p in sorted(by_path):
        f = by_path[p]
        members.append((_member_name(p), f.content))
        entries.append({"path": str(p), "mode": f"{f.mode:04o}", "size": len(f.content), "sha256": f.sha256})
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created": created.astimezone(UTC).isoformat(),
        "tool_version": tool_version,
        "node": node.as_json(),
        "certificates_dir": str(certificates_dir),
        "cluster": {
            "ca_subject": ca_cert.subject.rfc4514_string(),
            "ca_cert_hash": pki.discovery_token_ca_cert_hash(ca_cert),
        },
        "files": entries,
        "kubeadm_config": None,
        "etcd_snapshot": None,
    }
    if kubeadm_config is not None:
        members.append((KUBEADM_CONFIG_MEMBER, kubeadm_config))
        manifest["kubeadm_config"] = {
            "member": KUBEADM_CONFIG_MEMBER,
            "source": kubeadm_config_source,
            "size": len(kubeadm_config),
            "sha256": hashlib.sha256(kubeadm_config).hexdigest(),
        }
    streamed: StreamedSnapshot | None = None
    if isinstance(etcd_snapshot, bytes):
        db, trailer = split_snapshot(etcd_snapshot)
        members.append((SNAPSHOT_MEMBER, etcd_snapshot))
        manifest["etcd_snapshot"] = {
            "member": SNAPSHOT_MEMBER,
            "size": len(etcd_snapshot),
            "sha256": hashlib.sha256(etcd_snapshot).hexdigest(),
            "db_sha256": trailer.hex(),
            "db_size": len(db),
        }
    elif etcd_snapshot is not None:
        streamed = etcd_snapshot
        manifest["etcd_snapshot"] = {
            "member": SNAPSHOT_MEMBER,
            "size": streamed.size,
            "sha256": streamed.sha256,
            "db_sha256": streamed.trailer.hex(),
            "db_size": streamed.size - SHA256_SIZE,
        }
    mtime = int(created.timestamp())
    # gzip with mtime fixed to the creation time, so the archive bytes depend only on the content
    raw_manifest = json.dumps(manifest, indent=2).encode()
    snapshot_size = (
        streamed.size if streamed is not None else len(etcd_snapshot) if isinstance(etcd_snapshot, bytes) else 0
    )
    _within_read_bounds(by_path.values(), raw_manifest, kubeadm_config, snapshot_size)
    key = signing_key(by_path.values(), certificates_dir)
    with (
        gzip.GzipFile(fileobj=out, mode="wb", mtime=mtime, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        _add(tar, MANIFEST_NAME, raw_manifest, mtime)
        if key is not None:
            _add(tar, SIGNATURE_NAME, pki.sign_sha256(key, raw_manifest), mtime)
        for name, data in members:
            _add(tar, name, data, mtime)
        if streamed is not None:
            info = tarfile.TarInfo(SNAPSHOT_MEMBER)
            info.size, info.mode, info.mtime = streamed.size, 0o600, mtime
            with streamed.open() as src:
                tar.addfile(info, src)


def _within_read_bounds(
    files: Iterable[BackupFile], raw_manifest: bytes, kubeadm_config: bytes | None, snapshot_size: int
) -> None:
    """Refuse to write a backup that reading would refuse (:func:`parse_archive`'s bounds)."""
    sizes = [len(f.content) for f in files]
    too_big = (
        (max(sizes, default=0) > MAX_FILE_BYTES, f"a file larger than {MAX_FILE_BYTES} bytes"),
        (sum(sizes) > MAX_FILES_TOTAL_BYTES, f"more than {MAX_FILES_TOTAL_BYTES} bytes of files"),
        (len(raw_manifest) > MAX_MANIFEST_BYTES, f"a manifest larger than {MAX_MANIFEST_BYTES} bytes"),
        (len(kubeadm_config or b"") > MAX_FILE_BYTES, f"a kubeadm configuration larger than {MAX_FILE_BYTES} bytes"),
        (snapshot_size > MAX_SNAPSHOT_BYTES, f"an etcd snapshot larger than {MAX_SNAPSHOT_BYTES} bytes"),
    )
    for bad, what in too_big:
        if bad:
            raise BackupError(
                f"the backup would hold {what}, more than kuberevive reads back; nothing was written",
                "move what does not belong under /etc/kubernetes elsewhere (or defragment etcd), then run again",
            )


def signing_key(files: Iterable[BackupFile], certificates_dir: PurePosixPath = PKI_DIR) -> pki.PrivateKey | None:
    """The key that signs a backup's manifest: the cluster CA's ``ca.key`` when it matches ``ca.crt``, else None."""
    by_path = {f.path: f.content for f in files}
    crt, key = by_path.get(certificates_dir / "ca.crt"), by_path.get(certificates_dir / "ca.key")
    if crt is None or key is None:
        return None
    try:
        private = pki.load_private_key(key, "ca.key")
        ok = pki.key_matches_certificate(private, pki.load_certificate(crt, "ca.crt"))
    except KubereviveError:
        return None
    return private if ok else None


def _member_name(node_path: PurePosixPath) -> str:
    return f"{FILES_PREFIX}/{node_path.relative_to('/')}"


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = mtime
    tar.addfile(info, io.BytesIO(data))


# ------------------------------------------------------------------------------- encryption


@dataclass(frozen=True)
class Secret:
    """How a backup is encrypted or decrypted: a passphrase, recipients (``age1...``) or identities."""

    passphrase: str | None = None
    recipients: tuple[str, ...] = ()
    identities: tuple[str, ...] = ()
    """``AGE-SECRET-KEY-1...`` lines; only for decryption."""

    def __repr__(self) -> str:  # never show a passphrase or an identity
        return f"Secret(passphrase={'***' if self.passphrase else None}, recipients={self.recipients})"


def encrypt(plaintext: bytes, secret: Secret) -> bytes:
    """age-encrypt ``plaintext`` (binary format) to the recipients, or else to the passphrase."""
    if secret.recipients:
        try:
            recipients = [pyrage.x25519.Recipient.from_str(r) for r in secret.recipients]
        except pyrage.RecipientError as exc:
            raise BackupError(
                "the --recipient is not an age public key", "pass the age1... line that age-keygen printed"
            ) from exc
        return bytes(pyrage.encrypt(plaintext, recipients))
    if not secret.passphrase:
        raise BackupError(
            "no passphrase and no recipient to encrypt the backup to",
            "pass --passphrase-file FILE, set KUBEREVIVE_PASSPHRASE, or pass --recipient age1...",
        )
    return bytes(pyrage.passphrase.encrypt(plaintext, secret.passphrase))


def is_age_file(data: bytes) -> bool:
    return data.startswith(AGE_MAGIC) or data.lstrip().startswith(AGE_ARMOR_MAGIC)


def _is_scrypt(data: bytes) -> bool:
    header = data.split(b"\n---", 1)[0]
    return b"\n-> scrypt " in header


def decrypt(ciphertext: bytes, secret: Secret, source: str) -> bytes:
    """The plaintext of an age file; one clear :class:`BackupError` for every way this can fail."""
    if not is_age_file(ciphertext):
        raise BackupError(
            f"{source} is not a kuberevive backup (not an age-encrypted file)",
            "check the path; a plain etcd snapshot is only accepted by restore-etcd",
        )
    scrypt = _is_scrypt(ciphertext)
    try:
        if scrypt:
            if not secret.passphrase:
                raise BackupError(
                    f"{source} is encrypted with a passphrase",
                    "pass --passphrase-file FILE or set KUBEREVIVE_PASSPHRASE",
                )
            return bytes(pyrage.passphrase.decrypt(ciphertext, secret.passphrase))
        if not secret.identities:
            raise BackupError(
                f"{source} is encrypted to an age recipient key", "pass the matching identity with --identity FILE"
            )
        try:
            identities = [pyrage.x25519.Identity.from_str(i) for i in secret.identities]
        except pyrage.IdentityError as exc:
            raise BackupError(
                "the --identity file holds no valid age identity", "pass the file age-keygen wrote"
            ) from exc
        return bytes(pyrage.decrypt(ciphertext, identities))
    except pyrage.DecryptError as exc:
        what = "the passphrase is wrong" if scrypt else "the identity does not match"
        raise BackupError(
            f"cannot decrypt {source}: {what}, or the file is truncated or corrupt ({_age_reason(exc)})",
            "check the passphrase or identity; if it is right, the file is damaged: use another backup",
        ) from exc


def _age_reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]


def encryption_of(ciphertext: bytes) -> str:
    """:data:`PASSPHRASE` (age scrypt: only the passphrase holder can make it) or :data:`RECIPIENT` (anyone)."""
    return PASSPHRASE if _is_scrypt(ciphertext) else RECIPIENT


# ------------------------------------------------------------------------------- authenticity


def open_archive(
    ciphertext: bytes, secret: Secret, source: str, *, allow_unauthenticated: bool = False
) -> BackupContents:
    """Decrypt, read and verify a backup; refuse a recipient-mode backup that is not signed.

    age's passphrase mode already authenticates (a forger needs the passphrase), so unsigned passphrase
    backups (made before kuberevive signed them) are read. Anyone who knows the public ``age1...`` key can
    make a recipient-mode backup, so one without a signature is refused unless ``allow_unauthenticated``.
    A signature that does not verify is refused in both modes (:func:`parse_archive`).
    """
    contents = parse_archive(decrypt(ciphertext, secret, source), source)
    contents = replace(contents, encryption=encryption_of(ciphertext))
    _refuse_unsigned(contents, source, allow_unauthenticated)
    return contents


def open_archive_stream(
    src: BinaryIO,
    secret: Secret,
    source: str,
    *,
    snapshot_sink: BinaryIO,
    allow_unauthenticated: bool = False,
) -> BackupContents:
    """:func:`open_archive` of a (binary) age file read chunk by chunk (:mod:`kuberevive.core.agestream`): the etcd
    snapshot goes to ``snapshot_sink`` as it is decrypted, checked against the manifest and its own trailer; it is
    never whole in memory. The sink holds it only if this returns."""
    from kuberevive.core import agestream

    key, scrypt = agestream.read_header(src, passphrase=secret.passphrase, identities=secret.identities, source=source)
    with agestream.AgeReader(src, key, source) as plain:
        contents = parse_archive_stream(cast(BinaryIO, plain), source, snapshot_sink)
        if plain.read(1):
            raise BackupError(f"{source} has data after its archive", "use another backup")
    contents = replace(contents, encryption=PASSPHRASE if scrypt else RECIPIENT)
    _refuse_unsigned(contents, source, allow_unauthenticated)
    return contents


def _refuse_unsigned(contents: BackupContents, source: str, allow_unauthenticated: bool) -> None:
    if contents.encryption == RECIPIENT and contents.signed_by is None and not allow_unauthenticated:
        raise BackupError(
            f"{source} is encrypted to an age recipient key but its manifest is not signed by its cluster CA, so "
            "anyone who knows the public key could have made it; nothing was written",
            "use a backup made by this kuberevive version (backup create signs with pki/ca.key), or pass "
            "--allow-unauthenticated if you know where this file comes from",
        )


def parse_ca_cert_hash(text: str) -> str:
    """``--ca-cert-hash`` in kubeadm's ``--discovery-token-ca-cert-hash`` format, lower-cased."""
    m = _PIN_RE.fullmatch(text.strip())
    if not m:
        raise BackupError(
            f"--ca-cert-hash {_show(text)} is not sha256:<64 hex digits>",
            "pass the hash as kubeadm join's --discovery-token-ca-cert-hash has it "
            "(kubeadm token create --print-join-command on a healthy control-plane node prints it)",
        )
    return "sha256:" + m.group(1).lower()


# ---------------------------------------------------------------------------------- reading


def is_backup_path(path: object) -> bool:
    """Whether ``path`` (the manifest's raw string) is one ``backup create`` collects: a normalised absolute path
    under /etc/kubernetes/ (no empty, ``.`` or ``..`` component, no NUL), or one of :data:`KUBELET_FILES`."""
    if not isinstance(path, str):
        return False
    if path in _KUBELET_PATHS:
        return True
    prefix = f"{KUBERNETES_DIR}/"
    if not path.startswith(prefix) or "\0" in path:
        return False
    return all(part not in ("", ".", "..") for part in path[len(prefix) :].split("/"))


_KUBELET_PATHS = frozenset(str(p) for p in KUBELET_FILES)


def manifest_mode(mode: object) -> int | None:
    """The manifest's mode string as a number, or None unless it is 3-4 octal digits within 0o777 (no
    setuid, setgid or sticky bit: ``backup create`` never records one)."""
    if not isinstance(mode, str) or not _MODE_RE.fullmatch(mode):
        return None
    value = int(mode, 8)
    return value if value <= 0o777 else None


def _show(value: object) -> str:
    text = value if isinstance(value, str) and value.isprintable() else repr(value)
    return text if len(text) <= 160 else text[:160] + "..."


def _refuse_forged(manifest: dict[str, Any], source: str) -> None:
    """Raise for the first path or mode ``backup create`` never writes (before any member is looked at)."""
    cdir = manifest.get("certificates_dir", str(PKI_DIR))
    if not is_backup_path(cdir):
        raise BackupError(
            f"{source} names {_show(cdir)} as its certificates directory, which a kuberevive backup never "
            "does; nothing was written",
            _FORGED_HINT,
        )
    entries = manifest["files"]
    if not isinstance(entries, list):
        raise TypeError("files is not a list")
    for entry in entries:
        path = entry["path"]
        if not is_backup_path(path):
            raise BackupError(
                f"{source} lists {_show(path)}, which a kuberevive backup never holds; nothing was written",
                _FORGED_HINT,
            )
        if manifest_mode(entry["mode"]) is None:
            raise BackupError(
                f"{source} gives {path} the mode {_show(entry['mode'])}, which kuberevive never records "
                "(a forged manifest); nothing was written",
                _FORGED_HINT,
            )


def parse_archive(plaintext: bytes, source: str) -> BackupContents:
    """:func:`parse_archive_stream` of an archive in memory."""
    return parse_archive_stream(io.BytesIO(plaintext), source)


def parse_archive_stream(plaintext: BinaryIO, source: str, snapshot_sink: BinaryIO | None = None) -> BackupContents:
    """Read and verify a decrypted archive; any missing, extra or altered member is a :class:`BackupError`.

    So is a path or mode that ``backup create`` never writes (:func:`is_backup_path`, :func:`manifest_mode`)
    and a signature that does not verify with the backup's own ca.crt. An unsigned archive is read
    (``signed_by`` None); whether that is acceptable is :func:`open_archive`'s decision.

    Reading is bounded (adversarial B-V17, R-6, B-X11): the manifest must be the first member and is parsed before
    any other member is read; every later member must be listed there with its exact size (checked from its tar
    header, before its data is decompressed), within :data:`MAX_FILE_BYTES` / :data:`MAX_SNAPSHOT_BYTES`.
    """
    streamed: dict[str, SnapshotDigest] = {}
    raw_manifest, manifest, signature, members = _read_tar(plaintext, source, snapshot_sink, streamed)
    bad: list[str] = []
    files: dict[PurePosixPath, BackupFile] = {}
    try:
        for entry in manifest["files"]:
            path = PurePosixPath(entry["path"])
            data = members.pop(_member_name(path), None)
            if data is None:
                bad.append(f"{path} is missing")
                continue
            if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
                bad.append(f"{path} does not match its sha256")
                continue
            files[path] = BackupFile(path, int(entry["mode"], 8), data)
        kubeadm_config = _optional_member(manifest.get("kubeadm_config"), KUBEADM_CONFIG_MEMBER, members, bad)
        snapshot = None
        streamed_size = None
        if SNAPSHOT_MEMBER in streamed:
            digest, entry = streamed.pop(SNAPSHOT_MEMBER), manifest.get("etcd_snapshot") or {}
            if digest.size != entry.get("size") or digest.sha256 != entry.get("sha256"):
                bad.append(f"{SNAPSHOT_MEMBER} does not match its sha256")
            else:
                digest.finish()  # the sha256 trailer etcd appended
                streamed_size = digest.size
        elif manifest.get("etcd_snapshot") is not None and snapshot_sink is not None:
            bad.append(f"{SNAPSHOT_MEMBER} is missing")
        else:
            snapshot = _optional_member(manifest.get("etcd_snapshot"), SNAPSHOT_MEMBER, members, bad)
        created = datetime.fromisoformat(manifest["created"])
        _ = created, manifest["node"], manifest["cluster"]
    except (KeyError, TypeError, ValueError) as exc:
        raise BackupError(f"the manifest of {source} is incomplete ({exc})", "use another backup") from exc
    bad.extend(f"{name} is not listed in the manifest" for name in sorted(members))
    if bad:
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise BackupError(f"{source} failed its integrity check: {shown}", "use another backup")
    signed_by = None
    if signature is not None:
        signed_by = _check_signature(raw_manifest, signature, files, manifest, source)
    if snapshot is not None:
        split_snapshot(snapshot)  # the sha256 trailer etcd appended
    return BackupContents(
        files, manifest, kubeadm_config, snapshot, signed_by=signed_by, etcd_snapshot_streamed=streamed_size
    )


def _load_manifest(raw_manifest: bytes, source: str) -> tuple[dict[str, Any], dict[str, int]]:
    """The parsed manifest and the size of every member it lists (member name -> bytes), both checked."""
    try:
        manifest = json.loads(raw_manifest)
    except (ValueError, RecursionError) as exc:  # RecursionError: deeply nested JSON (B-X11)
        raise BackupError(f"the manifest of {source} is not valid JSON", "use another backup") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(
            f"{source} has format {_show(manifest.get('format')) if isinstance(manifest, dict) else '?'!r}, "
            f"this kuberevive reads {FORMAT}",
            "use the kuberevive version that made the backup",
        )
    sizes: dict[str, int] = {}
    try:
        _refuse_forged(manifest, source)
        for entry in manifest["files"]:
            sizes[_member_name(PurePosixPath(entry["path"]))] = _listed_size(entry, MAX_FILE_BYTES, source)
        total = sum(sizes.values())
        if total > MAX_FILES_TOTAL_BYTES:
            raise BackupError(
                f"the manifest of {source} lists {total} bytes of files, more than any backup holds "
                f"({MAX_FILES_TOTAL_BYTES}); nothing was written",
                _FORGED_HINT,
            )
        optional = (
            ("kubeadm_config", KUBEADM_CONFIG_MEMBER, MAX_FILE_BYTES),
            ("etcd_snapshot", SNAPSHOT_MEMBER, MAX_SNAPSHOT_BYTES),
        )
        for key, member, limit in optional:
            entry = manifest.get(key)
            if entry is None:
                continue
            if entry["member"] != member:
                raise BackupError(
                    f"{source} failed its integrity check: the manifest names {_show(entry['member'])} where a "
                    f"backup keeps {member}",
                    _FORGED_HINT,
                )
            sizes[member] = _listed_size(entry, limit, source)
    except (KeyError, TypeError, ValueError) as exc:
        raise BackupError(f"the manifest of {source} is incomplete ({exc})", "use another backup") from exc
    return manifest, sizes


def _listed_size(entry: Any, limit: int, source: str) -> int:
    size = entry["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise TypeError(f"the size of {_show(entry.get('path') or entry.get('member'))} is not a byte count")
    if size > limit:
        raise BackupError(
            f"the manifest of {source} gives {_show(entry.get('path') or entry.get('member'))} {size} bytes, more "
            f"than a kuberevive backup holds ({limit}); nothing was written",
            _FORGED_HINT,
        )
    return size


def _check_member_name(info: tarfile.TarInfo, source: str) -> None:
    if not info.isfile() or info.name.startswith("/") or ".." in PurePosixPath(info.name).parts:
        raise BackupError(f"{source} holds an unexpected member {_show(info.name)}", "use another backup")


def _read_tar(
    plaintext: BinaryIO, source: str, snapshot_sink: BinaryIO | None, streamed: dict[str, SnapshotDigest]
) -> tuple[bytes, dict[str, Any], bytes | None, dict[str, bytes]]:
    """(raw manifest, manifest, signature, member name -> bytes), reading no more than the manifest lists. With a
    ``snapshot_sink`` the snapshot member is copied there in chunks (its :class:`SnapshotDigest` in ``streamed``).

    The gzip stream is decompressed as the tar is read, never more than one member (or one
    :data:`MAX_HEADER_BYTES` header) at a time: an unlisted or wrongly sized member is refused from its header,
    before its data is decompressed (a gzip bomb costs nothing).
    """
    members: dict[str, bytes] = {}
    signature: bytes | None = None
    try:
        with (
            gzip.GzipFile(fileobj=plaintext, mode="rb") as gz,
            tarfile.open(fileobj=_BoundedReads(gz), mode="r:") as tar,
        ):
            first = tar.next()
            if first is None or first.name != MANIFEST_NAME:
                raise BackupError(
                    f"{source} does not start with {MANIFEST_NAME}: not a kuberevive backup", "use another backup"
                )
            _check_member_name(first, source)
            if first.size > MAX_MANIFEST_BYTES:
                raise BackupError(f"the manifest of {source} is {first.size} bytes: too large", _FORGED_HINT)
            raw_manifest = _read_member(tar, first)
            manifest, sizes = _load_manifest(raw_manifest, source)
            while (info := tar.next()) is not None:
                _check_member_name(info, source)
                if info.name == SIGNATURE_NAME and signature is None and info.size <= MAX_SIGNATURE_BYTES:
                    signature = _read_member(tar, info)
                    continue
                if info.name not in sizes:
                    raise BackupError(
                        f"{source} failed its integrity check: {_show(info.name)} is not listed in the manifest "
                        "(or appears twice)",
                        "use another backup",
                    )
                listed = sizes.pop(info.name)
                if info.size != listed:
                    shown = info.name.removeprefix(f"{FILES_PREFIX}/")
                    raise BackupError(
                        f"{source} failed its integrity check: {shown} does not match its sha256 (it is "
                        f"{info.size} bytes, the manifest lists {listed})",
                        "use another backup",
                    )
                if info.name == SNAPSHOT_MEMBER and snapshot_sink is not None:
                    streamed[info.name] = _copy_member(tar, info, snapshot_sink)
                else:
                    members[info.name] = _read_member(tar, info)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise BackupError(f"{source} decrypts but its archive is damaged ({exc})", "use another backup") from exc
    except MemoryError as exc:
        raise BackupError(
            f"{source} is too large to read in this machine's memory", "read it on a machine with more memory"
        ) from exc
    return raw_manifest, manifest, signature, members


def _member_chunks(tar: tarfile.TarFile, info: tarfile.TarInfo) -> Iterator[bytes]:
    """The data of one member in chunks of :data:`MAX_HEADER_BYTES` (never more than its header says)."""
    fh = tar.extractfile(info)
    if fh is None:
        raise BackupError(f"an unreadable member {_show(info.name)}", "use another backup")
    left = info.size
    while left > 0:
        chunk = fh.read(min(left, MAX_HEADER_BYTES))
        if not chunk:
            raise EOFError(f"{info.name} is truncated")
        left -= len(chunk)
        yield chunk


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    """The data of one member, read in chunks (:func:`_member_chunks`)."""
    return b"".join(_member_chunks(tar, info))


def _copy_member(tar: tarfile.TarFile, info: tarfile.TarInfo, sink: BinaryIO) -> SnapshotDigest:
    """Copy one member into ``sink`` in chunks (:func:`_member_chunks`), hashing it on the way."""
    digest = SnapshotDigest()
    for chunk in _member_chunks(tar, info):
        digest.update(chunk)
        sink.write(chunk)
    return digest


class _BoundedReads(io.RawIOBase):
    """A decompressing stream for :mod:`tarfile` that refuses any single read above :data:`MAX_HEADER_BYTES`:
    tarfile reads a pax or GNU long-name header in one call of the size the header claims, so a forged
    header cannot make it allocate gigabytes. Member data is read in chunks by :func:`_read_member`."""

    def __init__(self, raw: gzip.GzipFile) -> None:
        super().__init__()
        self._raw = raw

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > MAX_HEADER_BYTES:
            raise tarfile.ReadError(f"a tar header or read of {size} bytes, larger than a backup ever has")
        return self._raw.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()


def _check_signature(
    raw_manifest: bytes, signature: bytes, files: Mapping[PurePosixPath, BackupFile], manifest: dict[str, Any], src: str
) -> str:
    """The CA pin of the backup's ca.crt when its key signed ``raw_manifest``; else a refusal (tampered)."""
    ca = files.get(PurePosixPath(str(manifest.get("certificates_dir", PKI_DIR))) / "ca.crt")
    cert = None
    if ca is not None:
        try:
            cert = pki.load_certificate(ca.content, "ca.crt in the backup")
        except KubereviveError:
            cert = None
    if cert is None or not pki.verify_sha256_signature(cert, raw_manifest, signature):
        raise BackupError(
            f"the signature of {src} does not verify with the backup's own ca.crt: the backup was altered after "
            "it was made (tampered); nothing was written",
            "do not use this file; use another backup",
        )
    return pki.discovery_token_ca_cert_hash(cert)


def _optional_member(entry: Any, expected: str, members: dict[str, bytes], bad: list[str]) -> bytes | None:
    if entry is None:
        return None
    if entry["member"] != expected:
        bad.append(f"the manifest names {_show(entry['member'])} where a backup keeps {expected}")
        return None
    data = members.pop(entry["member"], None)
    if data is None:
        bad.append(f"{entry['member']} is missing")
        return None
    if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        bad.append(f"{entry['member']} does not match its sha256")
        return None
    return data


# ------------------------------------------------------------------------------- etcd snapshot


class SnapshotStreamDecoder:
    """An etcd ``/v3/maintenance/snapshot`` gateway response (JSON lines, each with a base64 ``blob``), decoded
    as it arrives: :meth:`feed` the response's chunks, each call yields the snapshot bytes of the lines it
    completed; :meth:`close` the rest. Only one line is ever buffered."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._line = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        out = []
        while (nl := self._buf.find(b"\n")) >= 0:
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            out += self._decode(line)
        return out

    def close(self) -> list[bytes]:
        line, self._buf = bytes(self._buf), bytearray()
        return self._decode(line)

    def _decode(self, line: bytes) -> list[bytes]:
        self._line += 1
        n = self._line
        if not line.strip():
            return []
        try:
            msg = json.loads(line)
        except ValueError as exc:
            raise BackupError(
                f"etcd sent a snapshot stream that is not JSON at line {n}", "check the etcd endpoint and run again"
            ) from exc
        if "error" in msg:
            err = msg["error"]
            text = err.get("message", err) if isinstance(err, dict) else err
            raise BackupError(f"etcd refused the snapshot: {text}", "check etcd health and run again")
        try:
            return [base64.b64decode(msg["result"].get("blob", ""), validate=True)]
        except (KeyError, AttributeError, ValueError) as exc:
            raise BackupError(f"etcd sent a malformed snapshot chunk at line {n}", "run again") from exc


def decode_snapshot_stream(body: bytes) -> bytes:
    """The bytes of a whole etcd ``/v3/maintenance/snapshot`` gateway response (:class:`SnapshotStreamDecoder`)."""
    decoder = SnapshotStreamDecoder()
    return b"".join([*decoder.feed(body), *decoder.close()])


class SnapshotDigest:
    """Checks a snapshot as etcd streamed it, chunk by chunk: the last :data:`SHA256_SIZE` bytes must be the
    sha256 of everything before them, and the db a whole number of 512-byte blocks (as ``etcdutl`` tells them
    apart). Also keeps the sha256 of the whole stream (the backup manifest's ``sha256``)."""

    def __init__(self) -> None:
        self._db = hashlib.sha256()
        self._all = hashlib.sha256()
        self._tail = b""
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._all.update(chunk)
        self.size += len(chunk)
        data = self._tail + chunk
        if len(data) > SHA256_SIZE:
            self._db.update(data[:-SHA256_SIZE])
            self._tail = data[-SHA256_SIZE:]
        else:
            self._tail = data

    @property
    def sha256(self) -> str:
        return self._all.hexdigest()

    def finish(self) -> bytes:
        """The trailer (sha256 of the db); raises :class:`BackupError` unless the snapshot is whole."""
        if self.size % 512 != SHA256_SIZE:
            raise BackupError(
                "the etcd snapshot has no integrity hash (it is truncated, or not a snapshot etcd streamed)",
                "take a new snapshot with backup create --etcd-snapshot",
            )
        if self._db.digest() != self._tail:
            raise BackupError(
                "the etcd snapshot does not match the sha256 etcd appended to it (corrupt)",
                "take a new snapshot with backup create --etcd-snapshot",
            )
        return self._tail


def split_snapshot(data: bytes) -> tuple[bytes, bytes]:
    """(db, sha256) of a snapshot etcd streamed; raises unless the trailer is the sha256 of the db
    (:class:`SnapshotDigest`)."""
    digest = SnapshotDigest()
    digest.update(data)
    trailer = digest.finish()
    return data[:-SHA256_SIZE], trailer


# ---------------------------------------------------------------------------- completeness

#: What kubeadm leaves on every node (relative to /etc/kubernetes, or absolute), then on a control plane.
NODE_FILES = ("kubelet.conf", "pki/ca.crt", str(KUBELET_CONFIG))
_CP_PAIRS = ("ca", "apiserver", "apiserver-kubelet-client", "front-proxy-ca", "front-proxy-client")
CONTROL_PLANE_FILES = (
    *(f"pki/{n}.{ext}" for n in _CP_PAIRS for ext in ("crt", "key")),
    "pki/sa.key",
    "pki/sa.pub",
    "admin.conf",
    "controller-manager.conf",
    "scheduler.conf",
    "manifests/kube-apiserver.yaml",
    "manifests/kube-controller-manager.yaml",
    "manifests/kube-scheduler.yaml",
)
"""``super-admin.conf`` is not here: only the node of ``kubeadm init`` has one (not a ``join --control-plane``)."""
LOCAL_ETCD_FILES = (
    *(f"pki/etcd/{n}.{ext}" for n in ("ca", "server", "peer", "healthcheck-client") for ext in ("crt", "key")),
    "pki/apiserver-etcd-client.crt",
    "pki/apiserver-etcd-client.key",
    "manifests/etcd.yaml",
)
_CONTROL_PLANE_MARKERS = tuple(
    r for r in (*CONTROL_PLANE_FILES, *LOCAL_ETCD_FILES, "super-admin.conf") if r not in NODE_FILES
)
_LOCAL_ETCD_SERVERS = ("https://127.0.0.1:", "https://[::1]:", "https://localhost:")


CONTROL_PLANE = "control plane"
WORKER = "worker"


@dataclass(frozen=True)
class Completeness:
    """What a backup (or a node's collected files) lacks for its node's role."""

    role: str
    """``control plane`` or ``worker``."""
    missing: tuple[PurePosixPath, ...]
    notes: tuple[str, ...] = ()
    """Why something is not expected (external CA, external etcd)."""

    @property
    def complete(self) -> bool:
        return not self.missing

    def summary(self) -> str:
        shown = ", ".join(str(p) for p in self.missing[:4]) + (
            f" and {len(self.missing) - 4} more" if len(self.missing) > 4 else ""
        )
        return f"{len(self.missing)} file(s) a {self.role} node has are missing: {shown}"


def completeness(
    paths: Iterable[PurePosixPath],
    read: Callable[[PurePosixPath], bytes | None],
    certificates_dir: PurePosixPath = PKI_DIR,
) -> Completeness:
    """Every file kubeadm leaves on a node of this role that ``paths`` lacks (``read`` gives the content of one of
    them, for the manifests that tell an external CA or external etcd apart).

    A control plane (any control-plane PKI file, kubeconfig or static Pod manifest present) needs the whole kubeadm
    PKI with the CA keys and ``sa.key``/``sa.pub`` (``ca.key`` not when the controller-manager's
    ``--cluster-signing-key-file`` is empty: external CA), the etcd PKI and manifest unless the API server's
    ``--etcd-servers`` is not local (external etcd), the kubeconfigs and the manifests; a worker ``kubelet.conf``,
    ``pki/ca.crt`` and the kubelet's ``config.yaml``. Both need the kubelet's files."""
    have = set(paths)

    def node_path(rel: str) -> PurePosixPath:
        if rel.startswith("/"):
            return PurePosixPath(rel)
        if rel.startswith("pki/"):
            return certificates_dir / rel.removeprefix("pki/")
        return KUBERNETES_DIR / rel

    control_plane = any(node_path(r) in have for r in _CONTROL_PLANE_MARKERS)
    expected = list(NODE_FILES)
    notes: list[str] = []
    if control_plane:
        expected += CONTROL_PLANE_FILES
        apiserver = _manifest_flags(read(MANIFESTS_DIR / "kube-apiserver.yaml"))
        servers = apiserver.get("etcd-servers")
        if servers and not any(s.startswith(_LOCAL_ETCD_SERVERS) for s in servers.split(",")):
            notes.append(f"external etcd ({servers}): no etcd certificates or manifest expected")
        else:
            expected += LOCAL_ETCD_FILES
        kcm = _manifest_flags(read(MANIFESTS_DIR / "kube-controller-manager.yaml"))
        if node_path("pki/ca.key") not in have and kcm.get("cluster-signing-key-file") == "":
            expected.remove("pki/ca.key")
            notes.append("external CA (the controller-manager signs nothing): no ca.key expected")
    missing = tuple(p for p in dict.fromkeys(node_path(r) for r in expected) if p not in have)
    return Completeness(CONTROL_PLANE if control_plane else WORKER, missing, tuple(notes))


def _manifest_flags(data: bytes | None) -> dict[str, str]:
    if data is None:
        return {}
    try:
        return manifest_flags(parse_manifest(data))
    except (KubereviveError, RecursionError):
        return {}


# ---------------------------------------------------------------------------------- verify


def verify(contents: BackupContents, now: datetime) -> VerifyReport:
    """Key/cert matches for every CA and the SA key pair, and the expiry of every certificate."""
    created = contents.created
    report = VerifyReport(
        created=created,
        age_days=(now - created).total_seconds() / 86400,
        node=dict(contents.metadata.get("node", {})),
        files=len(contents.files),
        etcd_snapshot_bytes=len(contents.etcd_snapshot) if contents.etcd_snapshot is not None else None,
        signed_by=contents.signed_by,
        encryption=contents.encryption,
    )
    if contents.signed_by is not None:
        report.checks.append("the manifest's signature verifies with the backup's ca.crt")
    report.checks.append(f"{len(contents.files)} file(s) match their sha256")
    if contents.etcd_snapshot is not None:
        report.checks.append("etcd snapshot matches the sha256 etcd appended")
    cdir = PurePosixPath(str(contents.metadata.get("certificates_dir", PKI_DIR)))
    report.completeness = completeness(contents.files, lambda p: _content(contents, p), cdir)
    # a worker has no CA keys or sa keys, and an external-CA control plane no ca.key: not problems
    worker = report.completeness.role == WORKER
    external_ca = any(n.startswith("external CA") for n in report.completeness.notes)
    pkimap = contents.pki
    for crt_name, key_name in CA_PAIRS:
        crt, key = pkimap.get(crt_name), pkimap.get(key_name)
        if crt is None or key is None:
            if key is None and (worker or (crt_name == "ca.crt" and external_ca)):
                continue
            if crt_name == "ca.crt" or crt is not None:
                report.problems.append(f"{crt_name if crt is None else key_name} is not in the backup")
            continue
        try:
            ok = pki.key_matches_certificate(pki.load_private_key(key, key_name), pki.load_certificate(crt, crt_name))
        except KubereviveError as exc:
            report.problems.append(str(exc))
            continue
        (report.checks if ok else report.problems).append(
            f"{key_name} matches {crt_name}" if ok else f"{key_name} does not match {crt_name}"
        )
    sa_key, sa_pub = pkimap.get("sa.key"), pkimap.get("sa.pub")
    if worker and sa_key is None and sa_pub is None:
        pass
    elif sa_key is None or sa_pub is None:
        report.problems.append("sa.key and sa.pub are not both in the backup")
    else:
        try:
            if pki.public_key_matches(pki.load_private_key(sa_key, "sa.key"), pki.load_public_key(sa_pub, "sa.pub")):
                report.checks.append("sa.key matches sa.pub")
            else:
                report.problems.append("sa.key does not match sa.pub")
        except KubereviveError as exc:
            report.problems.append(str(exc))
    for rel, data in sorted(pkimap.items()):
        if not rel.endswith(".crt"):
            continue
        try:
            cert = pki.load_certificate(data, rel)
        except KubereviveError as exc:
            report.problems.append(str(exc))
            continue
        not_after = cert.not_valid_after_utc
        report.certificates.append(
            CertStatus(
                rel,
                cert.subject.rfc4514_string(),
                not_after,
                (not_after - now).total_seconds() / 86400,
                pki.is_ca_certificate(cert),
            )
        )
    return report


def _content(contents: BackupContents, path: PurePosixPath) -> bytes | None:
    f = contents.files.get(path)
    return f.content if f is not None else None


# ---------------------------------------------------------------------------------- restore


def restore_artifacts(
    contents: BackupContents, existing: Mapping[PurePosixPath, bytes | None], only_missing: bool = True
) -> list[Artifact]:
    """The files a restore writes: with ``only_missing`` the backup's files that the node lacks, else all.

    Each with :func:`restore_mode`, never the mode the manifest records."""
    out = []
    for path in sorted(contents.files):
        f = contents.files[path]
        if only_missing and existing.get(path) is not None:
            continue
        out.append(
            Artifact(path, restore_mode(path), _kind(path), f"from backup {contents.metadata['created']}", f.content)
        )
    return out


def restore_mode(path: PurePosixPath) -> int:
    """The mode a restore gives ``path``: the first rule of :data:`RESTORE_MODES` that matches, else 0600."""
    return next((mode for _what, matches, mode in RESTORE_MODES if matches(path)), OTHER_MODE)


def _kind(path: PurePosixPath) -> ArtifactKind:
    if path.suffix == ".crt" or path.suffix == ".pem":
        return ArtifactKind.CERTIFICATE
    if path.suffix == ".key":
        return ArtifactKind.PRIVATE_KEY
    if path.suffix == ".pub":
        return ArtifactKind.PUBLIC_KEY
    if path.suffix == ".conf":
        return ArtifactKind.KUBECONFIG
    if path.parent.name == "manifests":
        return ArtifactKind.MANIFEST
    return ArtifactKind.CONFIG


@dataclass(frozen=True)
class TrustEvidence:
    """A certificate the node's survivors hold (kubelet client cert, a kubeconfig CA) and where it came from."""

    source: str
    certificate_pem: bytes


def foreign_evidence(contents: BackupContents, evidence: Iterable[TrustEvidence]) -> list[str]:
    """Why the backup belongs to another cluster (empty when every piece of evidence agrees with its CA)."""
    ca_pem = contents.ca_cert_pem
    if ca_pem is None:
        return ["the backup has no ca.crt"]
    backup_ca = pki.load_certificate(ca_pem, "ca.crt in the backup")
    reasons = []
    for ev in evidence:
        try:
            cert = pki.load_certificate(ev.certificate_pem, ev.source)
        except KubereviveError:
            continue  # unreadable evidence proves nothing either way
        if not _trusts(cert, backup_ca):
            reasons.append(f"{ev.source} is not the backup's CA nor signed by it")
    return reasons


def _trusts(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    if cert.public_bytes(serialization.Encoding.DER) == ca.public_bytes(serialization.Encoding.DER):
        return True
    return pki.verify_signed_by(cert, ca)


def check_ca_pin(contents: BackupContents, ca_cert_hash: str) -> None:
    """Raise unless the backup's ca.crt is the CA the operator pinned (``parse_ca_cert_hash`` format)."""
    actual = contents.ca_cert_hash
    if actual != ca_cert_hash:
        raise BackupError(
            f"the backup's cluster CA is {actual or 'missing'}, not the pinned --ca-cert-hash {ca_cert_hash}; "
            "nothing was written",
            "use a backup of the cluster with that CA, or check the hash you passed",
        )


def same_cluster(
    contents: BackupContents,
    evidence: Iterable[TrustEvidence],
    *,
    allow_foreign: bool = False,
    ca_cert_hash: str | None = None,
    allow_unauthenticated: bool = False,
) -> list[str]:
    """Raise unless the backup's CA is this cluster's; the warnings to print otherwise.

    The CA must be the pinned ``ca_cert_hash`` (when given) and agree with every piece of the node's
    surviving ``evidence`` (unless ``allow_foreign``). A node without evidence ties nothing: a passphrase
    backup is then accepted with a warning, a recipient-mode backup (anyone can make one) only with a pin
    or ``allow_unauthenticated``.
    """
    if ca_cert_hash is not None:
        check_ca_pin(contents, ca_cert_hash)
    found = list(evidence)
    if not found:
        if ca_cert_hash is not None:
            return []
        if contents.encryption == RECIPIENT and not allow_unauthenticated:
            raise BackupError(
                "this node holds no kubelet certificate, kubelet.conf or pki/ca.crt to tell whether the backup's "
                "CA is this cluster's, and anyone who knows the public age key can make a recipient-mode backup; "
                "nothing was written",
                "pin your cluster's CA with --ca-cert-hash sha256:... (kubeadm join's "
                "--discovery-token-ca-cert-hash, from your records or a worker's /etc/kubernetes/pki/ca.crt), "
                "or pass --allow-unauthenticated if you know where this file comes from",
            )
        return ["no kubelet certificate or CA on this node to compare the backup's CA with"]
    reasons = foreign_evidence(contents, found)
    if reasons and not allow_foreign:
        raise BackupError(
            f"the backup is from another cluster: {reasons[0]}; nothing was written",
            "use a backup of this cluster, or pass --allow-foreign-backup if you really mean to replace its CA",
        )
    return [f"foreign backup allowed: {r}" for r in reasons]


# ------------------------------------------------------------------------------ etcd restore

#: etcd's advice when restoring under running clients: jump revisions forward and mark them compacted, so
#: watchers (kube-apiserver's watch cache, controllers) relist instead of missing or replaying events.
BUMP_REVISION = 1_000_000_000


@dataclass(frozen=True)
class EtcdMember:
    """What ``etcdutl snapshot restore`` needs from the node's etcd manifest."""

    name: str
    data_dir: PurePosixPath
    initial_cluster: str
    initial_advertise_peer_urls: str
    initial_cluster_token: str | None
    client_url: str

    def restore_args(self, snapshot_path: str, target_dir: str, *, skip_hash_check: bool = False) -> list[str]:
        args = [
            "snapshot",
            "restore",
            snapshot_path,
            f"--name={self.name}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-advertise-peer-urls={self.initial_advertise_peer_urls}",
            f"--data-dir={target_dir}",
            f"--bump-revision={BUMP_REVISION}",
            "--mark-compacted",
        ]
        if self.initial_cluster_token:
            args.append(f"--initial-cluster-token={self.initial_cluster_token}")
        if skip_hash_check:  # a db copied from a data directory has no sha256 trailer
            args.append("--skip-hash-check")
        return args


def etcd_member(flags: Mapping[str, str], source: str) -> EtcdMember:
    """The member of a (single-member, kubeadm) etcd from its static Pod flags; refuses a multi-member etcd."""
    name = flags.get("name", "default")
    peer_urls = flags.get("initial-advertise-peer-urls", "")
    initial_cluster = flags.get("initial-cluster") or (f"{name}={peer_urls.split(',')[0]}" if peer_urls else "")
    if not peer_urls or not initial_cluster:
        raise BackupError(f"{source} has no --initial-advertise-peer-urls/--initial-cluster", "check the etcd manifest")
    members = [m for m in initial_cluster.split(",") if m]
    if len({m.split("=", 1)[0] for m in members}) > 1:
        raise BackupError(
            f"{source} describes an etcd of {len(members)} members; restore-etcd restores a single-member etcd",
            "follow etcd's disaster-recovery guide to restore every member from the same snapshot",
        )
    client = flags.get("listen-client-urls") or flags.get("advertise-client-urls") or "https://127.0.0.1:2379"
    return EtcdMember(
        name=name,
        data_dir=PurePosixPath(flags.get("data-dir") or ETCD_DATA_DIR),
        initial_cluster=initial_cluster,
        initial_advertise_peer_urls=peer_urls,
        initial_cluster_token=flags.get("initial-cluster-token"),
        client_url=client.split(",")[0],
    )
