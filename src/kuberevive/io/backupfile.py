"""Backups on the node: collect the files, take the etcd snapshot, write/read the encrypted file, restore.

The archive is built and decrypted in memory (:mod:`kuberevive.core.backup`); the only bytes this module
writes to disk are the age ciphertext (atomically, mode 0600) and, on restore, the node's own files
through :class:`NodeRoot` (kept aside when replaced).

Entry points for other commands::

    contents = open_backup(path, passphrase=..., identity=...)   # BackupContents: files, pki, metadata, snapshot
    restore_files(contents, root, only_missing=True)             # put back what the node lacks
"""

from __future__ import annotations

import re
import socket
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from kuberevive.core import backup as core
from kuberevive.core.backup import BackupContents, BackupError, BackupFile, NodeIdentity, Secret, TrustEvidence
from kuberevive.core.manifests import manifest_flags, parse_manifest
from kuberevive.errors import ConfigError, EtcdError, KubeApiError, KubereviveError
from kuberevive.io.noderoot import NodeRoot, WriteResult

PASSPHRASE_ENV = "KUBEREVIVE_PASSPHRASE"
BACKUP_SUFFIX = ".age"
BACKUP_PREFIX = "kuberevive-backup-"
DEFAULT_BACKUP_DIR = Path("/var/lib/kuberevive/backups")
"""Where ``backup create`` writes when ``--out`` is a directory; not ``/var/lib/kuberevive/backup``, which
holds the files kuberevive moved aside."""
MAX_BACKUP_BYTES = 4 << 30

ETCD_MANIFEST = PurePosixPath("/etc/kubernetes/manifests/etcd.yaml")
KUBELET_CLIENT_CERT = PurePosixPath("/var/lib/kubelet/pki/kubelet-client-current.pem")


# ------------------------------------------------------------------------------- secrets


def read_secret(
    environ: dict[str, str],
    passphrase_file: str | None = None,
    recipients: tuple[str, ...] = (),
    identity_file: str | None = None,
) -> Secret:
    """The passphrase (``--passphrase-file``, else ``$KUBEREVIVE_PASSPHRASE``), recipients and identities."""
    passphrase = None
    if passphrase_file:
        try:
            text = Path(passphrase_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise BackupError(
                f"cannot read the passphrase file {passphrase_file}: {getattr(exc, 'strerror', None) or exc}",
                "check the path and permissions",
            ) from None
        passphrase = text.rstrip("\r\n")
        if not passphrase:
            raise BackupError(f"the passphrase file {passphrase_file} is empty", "write the passphrase into it")
    elif environ.get(PASSPHRASE_ENV):
        passphrase = environ[PASSPHRASE_ENV]
    identities: tuple[str, ...] = ()
    if identity_file:
        try:
            text = Path(identity_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise BackupError(
                f"cannot read the identity file {identity_file}: {getattr(exc, 'strerror', None) or exc}",
                "check the path and permissions",
            ) from None
        identities = tuple(line.strip() for line in text.splitlines() if line.strip().startswith("AGE-SECRET-KEY-"))
        if not identities:
            raise BackupError(f"{identity_file} holds no AGE-SECRET-KEY- line", "pass the file age-keygen wrote")
    return Secret(passphrase=passphrase, recipients=recipients, identities=identities)


# ------------------------------------------------------------------------------- collect


def _mode(root: NodeRoot, p: PurePosixPath) -> int:
    return stat.S_IMODE(root.host_path(p).stat().st_mode)


def collect_node_files(root: NodeRoot) -> list[BackupFile]:
    """Every file under /etc/kubernetes plus the kubelet's configuration, with their modes."""
    files = []
    tree = root.read_tree(core.KUBERNETES_DIR)
    for p in sorted(tree):
        if ".kuberevive-tmp-" in p.name:
            continue
        files.append(BackupFile(p, _mode(root, p), tree[p]))
    for p in core.KUBELET_FILES:
        data = root.read(p)
        if data is not None:
            files.append(BackupFile(p, _mode(root, p), data))
    return files


def node_identity(root: NodeRoot, files: list[BackupFile]) -> NodeIdentity:
    """Node name (kubelet client certificate CN, else the etcd member name, else the hostname), addresses."""
    hostname_file = root.read("/etc/hostname") if root.prefix != Path("/") else None
    hostname = (hostname_file.decode(errors="replace").strip() if hostname_file else "") or socket.gethostname()
    by_path = {f.path: f.content for f in files}
    name = ""
    addresses: list[str] = []
    cert = root.read(KUBELET_CLIENT_CERT)
    if cert:
        from kuberevive.core import pki

        try:
            cn = pki.load_certificate(cert, str(KUBELET_CLIENT_CERT)).subject.rfc4514_string()
            m = re.search(r"CN=system:node:([^,]+)", cn)
            name = m.group(1) if m else ""
        except KubereviveError:
            pass
    flags_env = by_path.get(PurePosixPath("/var/lib/kubelet/kubeadm-flags.env"), b"").decode(errors="replace")
    for key in ("node-ip", "hostname-override"):
        m = re.search(rf"--{key}=([^\s\"]+)", flags_env)
        if m and key == "node-ip":
            addresses.extend(a for a in m.group(1).split(",") if a)
        elif m and not name:
            name = m.group(1)
    if ETCD_MANIFEST in by_path:
        try:
            flags = manifest_flags(parse_manifest(by_path[ETCD_MANIFEST]))
            name = name or flags.get("name", "")
        except ConfigError:
            pass
    apiserver = by_path.get(PurePosixPath("/etc/kubernetes/manifests/kube-apiserver.yaml"))
    if apiserver:
        try:
            adv = manifest_flags(parse_manifest(apiserver)).get("advertise-address")
            if adv and adv not in addresses:
                addresses.append(adv)
        except ConfigError:
            pass
    return NodeIdentity(node_name=name or hostname.lower(), hostname=hostname, addresses=tuple(addresses))


def fetch_kubeadm_config(root: NodeRoot) -> tuple[bytes | None, str]:
    """The ClusterConfiguration of the kubeadm-config ConfigMap (via admin.conf), or None and why not."""
    from kuberevive.io.kubeapi import KubeApi

    admin = root.read("/etc/kubernetes/admin.conf")
    if admin is None:
        return None, "none: no /etc/kubernetes/admin.conf to reach the API"
    try:
        api = KubeApi.from_kubeconfig(admin, read_file=root.read_existing, timeout=5.0)
        cm = api.get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
    except KubeApiError as exc:
        return None, f"none: the API is not reachable ({exc.message})"
    text = (cm.get("data") or {}).get("ClusterConfiguration") if isinstance(cm, dict) else None
    if not text:
        return None, "none: the kubeadm-config ConfigMap has no ClusterConfiguration"
    return str(text).encode(), "api: kube-system/kubeadm-config ConfigMap"


def take_etcd_snapshot(root: NodeRoot) -> bytes:
    """A snapshot from the node's local etcd, over mTLS with the healthcheck (or apiserver) client cert."""
    from kuberevive.io.etcd import EtcdClient

    endpoint = "https://127.0.0.1:2379"
    manifest = root.read(ETCD_MANIFEST)
    if manifest is not None:
        try:
            urls = manifest_flags(parse_manifest(manifest)).get("listen-client-urls", "")
            endpoint = urls.split(",")[0] or endpoint
        except ConfigError:
            pass
    ca = root.read("/etc/kubernetes/pki/etcd/ca.crt")
    for base in ("/etc/kubernetes/pki/etcd/healthcheck-client", "/etc/kubernetes/pki/apiserver-etcd-client"):
        cert, key = root.read(f"{base}.crt"), root.read(f"{base}.key")
        if ca and cert and key:
            return EtcdClient(endpoint, ca, cert, key, timeout=10.0).snapshot()
    raise EtcdError(
        "there is no etcd client certificate on this node (etcd/healthcheck-client or apiserver-etcd-client)",
        "run backup create without --etcd-snapshot, or on a control-plane node with local etcd",
    )


# --------------------------------------------------------------------------------- files


def backup_name(node: str, created: datetime) -> str:
    return f"{BACKUP_PREFIX}{node}-{created.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}{BACKUP_SUFFIX}"


def write_backup(path: Path, ciphertext: bytes) -> None:
    """Write the ciphertext atomically with mode 0600 (the parent directory is created 0700 if missing)."""
    target = path.resolve()
    if not target.parent.exists():
        target.parent.mkdir(mode=0o700, parents=True)
    try:
        NodeRoot(Path("/")).atomic_write(PurePosixPath(target), ciphertext, 0o600)
    except OSError as exc:
        raise BackupError(
            f"cannot write {path}: {exc.strerror or exc}; nothing was written", "check free space and permissions"
        ) from None


def read_backup_bytes(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_BACKUP_BYTES:
            raise BackupError(f"{path} is {size} bytes, larger than any backup", "check the path")
        return path.read_bytes()
    except FileNotFoundError:
        raise BackupError(f"the backup {path} does not exist", "check the path") from None
    except IsADirectoryError:
        raise BackupError(f"{path} is a directory, not a backup file", "pass a file (see backup list)") from None
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror or exc}", "check the path and permissions") from None


def open_backup(
    path: Path | str,
    passphrase: str | None = None,
    identity: str | None = None,
    secret: Secret | None = None,
    *,
    allow_unauthenticated: bool = False,
) -> BackupContents:
    """Decrypt and verify a backup in memory. ``identity`` is the text of an age identity file.

    A recipient-mode backup must be signed by its CA unless ``allow_unauthenticated`` (:func:`core.open_archive`).
    """
    p = Path(path)
    if secret is None:
        ids = tuple(x.strip() for x in (identity or "").splitlines() if x.strip().startswith("AGE-SECRET-KEY-"))
        secret = Secret(passphrase=passphrase, identities=ids)
    return core.open_archive(read_backup_bytes(p), secret, str(p), allow_unauthenticated=allow_unauthenticated)


@dataclass(frozen=True)
class ListedBackup:
    path: Path
    size: int
    modified: datetime
    encryption: str
    node: str
    created: datetime | None


_NAME_RE = re.compile(rf"^{BACKUP_PREFIX}(?P<node>.+)-(?P<stamp>\d{{8}}T\d{{6}}Z){re.escape(BACKUP_SUFFIX)}$")


def list_backups(directory: Path) -> list[ListedBackup]:
    """kuberevive backups in ``directory``, oldest first (by the time in their names); nothing is decrypted."""
    if not directory.is_dir():
        raise BackupError(f"the backup directory {directory} does not exist", "check the path")
    out = []
    for entry in directory.iterdir():
        m = _NAME_RE.match(entry.name)
        if not m or not entry.is_file():
            continue
        st = entry.stat()
        with entry.open("rb") as fh:
            head = fh.read(512)
        if not core.is_age_file(head):
            continue
        created = datetime.strptime(m.group("stamp"), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        out.append(
            ListedBackup(
                path=entry,
                size=st.st_size,
                modified=datetime.fromtimestamp(st.st_mtime, UTC),
                encryption="passphrase (scrypt)" if b"\n-> scrypt " in head else "recipient (X25519)",
                node=m.group("node"),
                created=created,
            )
        )
    return sorted(out, key=lambda b: (b.created or b.modified, b.path.name))


def prune_backups(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups of ``directory``; returns the deleted paths."""
    if keep < 1:
        raise BackupError("--keep must be at least 1", "pass --keep N with N >= 1")
    backups = list_backups(directory)
    doomed = [b.path for b in backups[: max(0, len(backups) - keep)]]
    for p in doomed:
        p.unlink()
    return doomed


# ------------------------------------------------------------------------------- restore


def trust_evidence(root: NodeRoot) -> list[TrustEvidence]:
    """Certificates that show which CA this node's survivors trust (kubelet client cert, kubeconfig CAs)."""
    import base64

    import yaml

    out = []
    cert = root.read(KUBELET_CLIENT_CERT)
    if cert:
        out.append(TrustEvidence(f"the kubelet client certificate {KUBELET_CLIENT_CERT}", cert))
    ca = root.read("/etc/kubernetes/pki/ca.crt")
    if ca:
        out.append(TrustEvidence("/etc/kubernetes/pki/ca.crt on the node", ca))
    for conf in ("/etc/kubernetes/kubelet.conf", "/etc/kubernetes/bootstrap-kubelet.conf"):
        data = root.read(conf)
        if not data:
            continue
        try:
            doc = yaml.safe_load(data)
            for c in doc.get("clusters") or []:
                cad = (c.get("cluster") or {}).get("certificate-authority-data")
                if cad:
                    out.append(TrustEvidence(f"the CA in {conf}", base64.b64decode(cad)))
        except (yaml.YAMLError, AttributeError, ValueError, TypeError):
            continue
    return out


def check_same_cluster(
    contents: BackupContents,
    root: NodeRoot,
    allow_foreign: bool,
    *,
    ca_cert_hash: str | None = None,
    allow_unauthenticated: bool = False,
) -> list[str]:
    """Raise unless the backup's CA is the one this node trusts (and the pinned ``ca_cert_hash``, if given);
    returns warnings (e.g. nothing to compare). See :func:`core.same_cluster`."""
    return core.same_cluster(
        contents,
        trust_evidence(root),
        allow_foreign=allow_foreign,
        ca_cert_hash=ca_cert_hash,
        allow_unauthenticated=allow_unauthenticated,
    )


def restore_files(
    contents: BackupContents, root: NodeRoot, only_missing: bool = True, now: datetime | None = None
) -> list[WriteResult]:
    """Write the backup's files that are missing on the node (all of them, old ones kept aside, if not
    ``only_missing``). All or nothing, through :meth:`NodeRoot.write_all`."""
    placeholders = [p for p in contents.files if root.is_placeholder_dir(p)]
    existing = {p: None if p in placeholders else root.read(p) for p in contents.files}
    artifacts = core.restore_artifacts(contents, existing, only_missing=only_missing)
    # An empty directory where a file belongs is what the container runtime leaves when a static pod's
    # container starts while its hostPath file is gone (e.g. controller-manager.conf): it holds nothing.
    removed = []
    try:
        for p in placeholders:
            root.host_path(p, follow=False).rmdir()
            removed.append(p)
        return root.write_all(artifacts, force=not only_missing, now=now)
    except BaseException:
        for p in removed:
            if not root.host_path(p, follow=False).exists():
                root.host_path(p, follow=False).mkdir()
        raise
