"""Read a node into a :class:`~kuberevive.core.diagnose.NodeSnapshot` (read-only; nothing is written).

What is read, always through the root prefix: ``/etc/kubernetes`` (every file, up to :data:`MAX_FILES`, each up
to :data:`MAX_FILE_BYTES`), the kubelet's ``config.yaml``, ``kubeadm-flags.env`` and ``pki/``, the kubelet
service drop-ins, ``/etc/cni/net.d``, kuberevive's backups, ``/etc/kubernetes*`` copies, ``/etc/passwd`` and
``/etc/group``, any file a surviving manifest names, and etcd's data directory (size and member names only).

With the network (not ``offline``): each kubeconfig's server is probed, the container images are listed through
the node's containerd socket (crictl, else ctr), and the API is queried with ``--kubeconfig`` or the node's
admin.conf (else kubelet.conf).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from kuberevive.core import diagnose as d
from kuberevive.core import etcdsafety
from kuberevive.core.kubeconfig import Kubeconfig
from kuberevive.core.manifests import manifest_flags, parse_manifest
from kuberevive.errors import CollectError, ConfigError, KubeApiError, KubereviveError, NodeFsError
from kuberevive.io import etcdprobe, nodefacts, process
from kuberevive.io.kubeapi import KubeApi
from kuberevive.io.noderoot import NodeRoot, file_kind
from kuberevive.model import paths

MAX_FILES = 5000
MAX_FILE_BYTES = 1 << 20
ETCD_SCAN_BYTES = 1 << 30
"""At most this much of each etcd file is scanned for member names."""
PROBE_TIMEOUT = 3.0
API_TIMEOUT = 8.0
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"

API_OBJECTS = {
    "nodes": "/api/v1/nodes",
    "csrs": "/apis/certificates.k8s.io/v1/certificatesigningrequests",
    "cluster-info": "/api/v1/namespaces/kube-public/configmaps/cluster-info",
    "extension-apiserver-authentication": (
        "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
    ),
    "kube-root-ca": "/api/v1/configmaps?fieldSelector=metadata.name%3Dkube-root-ca.crt",
    "kubeadm-config": "/api/v1/namespaces/kube-system/configmaps/kubeadm-config",
}


class _Reader:
    def __init__(self, root: NodeRoot) -> None:
        self.root = root
        self.files: dict[PurePosixPath, d.FileInfo] = {}
        self.truncated: list[str] = []

    def stat(self, node_path: PurePosixPath) -> d.FileInfo | None:
        """What ``node_path`` is (a symlink resolved inside the root, never on this machine), with its content
        when it is a regular file of at most :data:`MAX_FILE_BYTES`. What cannot be read (a FIFO, a device, a
        file too big, a symlink loop, permission denied) is recorded with the reason in ``error`` and diagnose
        goes on (D-16, D-U3, D-6, D-8)."""
        if node_path in self.files:
            return self.files[node_path]
        try:
            lst = self.root.lstat(node_path)
            if lst is None:
                return None
            link = self.root.readlink(node_path) if stat.S_ISLNK(lst.st_mode) else None
            st = self.root.stat(node_path) if link is not None else lst
        except ValueError:  # a NUL in a path a manifest names
            return None
        except (NodeFsError, OSError) as exc:  # a symlink loop; a directory on the way that cannot be searched
            why = exc.message if isinstance(exc, NodeFsError) else f"cannot look it up: {exc.strerror}"
            info = d.FileInfo(node_path, "other", 0, -1, -1, 0, None, None, why)
            self.files[node_path] = info
            return info
        if st is None:  # a dangling symlink
            return None
        kind = "file" if stat.S_ISREG(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else "other"
        content = None
        error = None
        if kind == "other":
            error = f"it is a {file_kind(st.st_mode)}, not a regular file"
        elif kind == "file" and st.st_size > MAX_FILE_BYTES:
            error = f"it is {st.st_size} bytes, far larger than any file kubeadm writes"
        elif kind == "file":
            try:
                content = self.root.read(node_path, limit=MAX_FILE_BYTES)
            except NodeFsError as exc:
                error = exc.message.removeprefix(f"cannot read {node_path}: ")
        info = d.FileInfo(
            node_path, kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size, content, link, error
        )
        self.files[node_path] = info
        return info

    def tree(self, node_dir: PurePosixPath, limit: int = MAX_FILES) -> None:
        try:
            st = self.root.stat(node_dir)
        except (NodeFsError, ValueError):
            return
        if st is None or not stat.S_ISDIR(st.st_mode):
            return
        self.stat(node_dir)
        for count, p in enumerate(self.root.walk(node_dir), 1):
            if count > limit:
                self.truncated.append(str(node_dir))
                return
            self.stat(p)

    def children(self, node_dir: PurePosixPath, limit: int = 200) -> list[PurePosixPath]:
        try:
            names = sorted(os.listdir(self.root.host_path(node_dir)))[:limit]
        except (OSError, NodeFsError):
            return []
        return [node_dir / n for n in names]


def _ids(data: bytes | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (data or b"").decode(errors="replace").splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            out[parts[0]] = int(parts[2])
    return out


def _etcd(root: NodeRoot, reader: _Reader | None, data_dir: PurePosixPath) -> d.EtcdData:
    st = root.stat(data_dir)
    if st is None or not stat.S_ISDIR(st.st_mode):
        return d.EtcdData(data_dir, exists=False)
    if reader is not None:
        reader.stat(data_dir)
    member = root.stat(data_dir / "member")
    if member is None or not stat.S_ISDIR(member.st_mode):
        return d.EtcdData(data_dir, exists=True)
    size = 0
    scan: list[Path] = []
    for p in root.walk(data_dir):
        lst = root.lstat(p)
        if lst is None or not stat.S_ISREG(lst.st_mode):  # no FIFO, device or symlink out of the data dir
            continue
        size += lst.st_size
        if p.name == "db" or p.name.endswith(".wal"):
            scan.append(root.host_path(p, follow=False))
    records: list[d.EtcdMemberRecord] = []
    removed: set[int] = set()
    for host in scan:
        more, gone = _scan_members(host)
        records += more
        removed |= gone
    found = d.live_members(records, removed)
    return d.EtcdData(data_dir, True, True, size, tuple(sorted(found)), tuple(sorted(found.items())))


def etcd_data(root: NodeRoot, data_dir: PurePosixPath) -> d.EtcdData:
    """What survives of etcd in ``data_dir``: whether it holds a member, its size, and the members (names and
    peer URLs) its db and WAL record (read only)."""
    return _etcd(root, None, data_dir)


def _scan_members(path: Path) -> tuple[list[d.EtcdMemberRecord], set[int]]:
    """Member records and removed member ids in the first :data:`ETCD_SCAN_BYTES` of a regular file (opened
    without blocking or following a symlink, so a FIFO or a link put there since the walk is skipped, never waited
    on)."""
    found: list[d.EtcdMemberRecord] = []
    removed: set[int] = set()
    overlap = 4096
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return found, removed
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return found, removed
        limit = min(ETCD_SCAN_BYTES, st.st_size)
        if path.name.endswith(".wal"):  # 64 MB preallocated, of which the records fill the first few: read those
            end = etcdsafety.wal_written_end(lambda at, size: os.pread(fd, size, at), limit)
            limit = limit if end is None else end
        tail = b""
        read = 0
        while read < limit:
            chunk = os.read(fd, min(16 << 20, limit - read))
            if not chunk:
                break
            read += len(chunk)
            found += d.etcd_member_records(tail + chunk)
            removed |= d.etcd_removed_ids(tail + chunk)
            tail = chunk[-overlap:]
    except OSError:
        pass
    finally:
        os.close(fd)
    return found, removed


def _etcd_safety(root: NodeRoot, *, live: bool) -> tuple[tuple[etcdsafety.Problem, ...] | None, str]:
    """The etcd safety preflight of this node's etcd (none without an etcd manifest)."""
    try:
        facts = etcdprobe.facts(root, live=live)
    except (KubereviveError, OSError, ValueError):
        return None, ""
    if facts.data_dir is None:
        return None, ""
    checked = ["the data directory"]
    if facts.status is not None:
        checked.append(f"the live etcd {facts.status.version} (alarms, quota, members)")
    return tuple(etcdsafety.preflight(facts)), ", ".join(checked)


def _images(root: NodeRoot, socket_path: str) -> tuple[tuple[str, ...] | None, str]:
    sock = root.stat(socket_path)
    host_socket = root.host_path(socket_path)
    if sock is None or not stat.S_ISSOCK(sock.st_mode):
        return None, f"no containerd socket at {socket_path}"
    crictl, ctr = shutil.which("crictl"), shutil.which("ctr")
    try:
        if crictl:
            proc = process.run(
                [crictl, "--runtime-endpoint", f"unix://{host_socket}", "--timeout", "5s", "images", "-o", "json"],
                text=True,
                timeout=15,
            )
            if proc.returncode == 0:
                doc = json.loads(proc.stdout or "{}")
                tags = tuple(sorted(t for img in doc.get("images") or [] for t in img.get("repoTags") or []))
                return tags, f"crictl at {socket_path}"
        if ctr:
            proc = process.run(
                [ctr, "--address", str(host_socket), "-n", "k8s.io", "images", "ls", "-q"],
                text=True,
                timeout=15,
            )
            if proc.returncode == 0:
                return tuple(sorted(x for x in proc.stdout.split() if ":" in x)), f"ctr at {socket_path}"
            return None, f"ctr failed: {proc.stderr.strip()[:200]}"
    except (OSError, process.SubprocessError, ValueError) as exc:
        return None, f"listing images failed: {exc}"
    return None, "neither crictl nor ctr is installed"


def _addresses() -> tuple[str, ...]:
    ip = shutil.which("ip")
    if ip is None:
        return ()
    try:
        proc = process.run([ip, "-j", "addr"], text=True, timeout=5)
        links = json.loads(proc.stdout or "[]")
    except (OSError, process.SubprocessError, ValueError):
        return ()
    out = []
    for link in links:
        for info in link.get("addr_info", []):
            if info.get("scope") == "global" and info.get("local"):
                out.append(f"{info['local']} ({link.get('ifname', '?')})")
    return tuple(out)


def _probe(server: str, ca_pem: bytes) -> d.Probe:
    try:
        api = KubeApi(server, ca_pem, timeout=PROBE_TIMEOUT)
        status, _ = api.raw("GET", "/livez")
    except KubeApiError as exc:
        return d.Probe(False, exc.message)
    return d.Probe(True, f"HTTP {status}")


def _read_quietly(root: NodeRoot, path: str, unreadable: dict[str, str] | None = None) -> bytes | None:
    """A file a kubeconfig names (relative to /etc/kubernetes, as kubectl reads it there), or None when it
    cannot be read as a regular file of a sane size (a FIFO, a device, a loop: no hang, no abort); why it could
    not be read goes to ``unreadable`` (D-10, D-11, D-14, D-N6fifo, D-N6zero)."""
    node_path = path if path.startswith("/") else f"{paths.KUBERNETES_DIR}/{path}"
    try:
        return root.read(node_path, limit=MAX_FILE_BYTES)
    except (KubereviveError, ValueError) as exc:
        if unreadable is not None:
            unreadable[node_path] = getattr(exc, "message", str(exc)).removeprefix(f"cannot read {node_path}: ")
        return None


def _probes(snap_files: dict[PurePosixPath, d.FileInfo], read: Callable[[str], bytes | None]) -> dict[str, d.Probe]:
    probes: dict[str, d.Probe] = {}
    for name in paths.KUBECONFIG_NAMES:
        info = snap_files.get(paths.KUBERNETES_DIR / name)
        if info is None or info.content is None:
            continue
        try:
            cluster, _ = Kubeconfig.from_yaml(info.content).current()
        except ConfigError:
            continue
        ca = cluster.certificate_authority_data
        if ca is None and cluster.certificate_authority:
            ca = read(cluster.certificate_authority)
        if cluster.server and ca and cluster.server not in probes:
            probes[cluster.server] = _probe(cluster.server, ca)
    return probes


def _api(
    root: NodeRoot, kubeconfig: str | None, role_files: dict[PurePosixPath, d.FileInfo]
) -> tuple[d.ApiData | None, str]:
    if kubeconfig is not None:
        try:
            data = Path(kubeconfig).read_bytes()
        except OSError as exc:
            raise CollectError(
                f"cannot read the kubeconfig {kubeconfig}: {exc.strerror}", "check the --kubeconfig path"
            ) from exc
        source = kubeconfig
    else:
        for name in ("admin.conf", "kubelet.conf"):
            info = role_files.get(paths.KUBERNETES_DIR / name)
            if info is not None and info.content is not None:
                data, source = info.content, str(paths.KUBERNETES_DIR / name)
                break
        else:
            return None, "no kubeconfig given (--kubeconfig) and no /etc/kubernetes/admin.conf or kubelet.conf"

    try:
        api = KubeApi.from_kubeconfig(data, read_file=root.read_existing, timeout=API_TIMEOUT)
    except (KubereviveError, OSError) as exc:
        return d.ApiData(source, "", error=str(exc)), ""
    objects: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, path in API_OBJECTS.items():
        try:
            status, body = api.raw("GET", path)
        except KubeApiError as exc:
            return d.ApiData(source, api.server, error=exc.message), ""
        if status == 200:
            try:
                objects[name] = json.loads(body)
            except ValueError:
                errors[name] = "the answer is not JSON"
        else:
            try:
                message = json.loads(body).get("message", "")
            except (ValueError, AttributeError):
                message = body[:200].decode(errors="replace")
            errors[name] = f"HTTP {status} {message}".strip()
    return d.ApiData(source, api.server, None, objects, errors), ""


def collect(
    root_dir: str,
    *,
    config_file: str | None = None,
    kubeconfig: str | None = None,
    offline: bool = False,
    now: datetime | None = None,
    live: bool,
) -> d.NodeSnapshot:
    """Read the node under ``root_dir``. Raises :class:`CollectError` (exit 3) when that is impossible."""
    root = NodeRoot(Path(root_dir))
    if not root.prefix.is_dir():
        raise CollectError(f"the root directory {root_dir} does not exist", "pass the node's root with --root")
    config_text = None
    if config_file is not None:
        try:
            config_text = Path(config_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CollectError(
                f"cannot read the configuration file {config_file}: {exc}", "check the --config path"
            ) from exc
    try:
        os.listdir(root.prefix)
    except OSError as exc:  # D-U1: one line and exit 3, as documented
        raise CollectError(
            f"cannot read the root directory {root_dir}: {exc.strerror}", "run kuberevive diagnose as root"
        ) from exc
    reader = _Reader(root)
    unreadable: dict[str, str] = {}
    try:
        # kubeadm's own files first, looked up directly, so that no number of other files can hide them (D-T3)
        reader.tree(paths.MANIFESTS_DIR, limit=200)
        for name in paths.KUBECONFIG_NAMES:
            reader.stat(paths.KUBERNETES_DIR / name)
        for p in d.files_needed(None):
            reader.tree(p, limit=500)
        reader.tree(paths.KUBERNETES_DIR)
        for p in [paths.KUBELET_CONFIG, paths.KUBEADM_FLAGS, *d.KUBELET_SERVICE_FILES]:
            reader.stat(p)
        reader.tree(paths.KUBELET_PKI, limit=200)
        reader.tree(paths.CNI_DIR, limit=200)
        reader.tree(paths.BACKUP_DIR, limit=MAX_FILES)
        for p in reader.children(PurePosixPath("/etc")):
            if p.name.startswith("kubernetes") and p.name != "kubernetes":
                reader.tree(p, limit=500)
        passwd, group = _read_quietly(root, "/etc/passwd", unreadable), _read_quietly(root, "/etc/group", unreadable)
    except NodeFsError as exc:
        raise CollectError(exc.message, exc.hint) from exc
    host = nodefacts.hostname(root, live=live)
    if host.unreadable:  # a FIFO or device at /etc/hostname is a finding, never a hang (D-11)
        unreadable[str(paths.HOSTNAME_FILE)] = host.unreadable
    base = d.NodeSnapshot(
        root=str(root.prefix.resolve()),
        now=now or datetime.now(UTC),
        hostname=host.name.lower(),
        files=reader.files,
        config_text=config_text,
        config_file=config_file,
        passwd=_ids(passwd),
        group=_ids(group),
    )
    # a certificatesDir elsewhere, and every file a manifest names
    resolved = d.resolve_config(base)
    for p in d.files_needed(resolved.config):
        reader.tree(p, limit=500)
    for comp_file in sorted(p for p in reader.files if p.parent == paths.MANIFESTS_DIR and p.suffix == ".yaml"):
        content = reader.files[comp_file].content
        if content is None:
            continue
        try:
            flags = manifest_flags(parse_manifest(content))
        except ConfigError:
            continue
        for value in flags.values():
            if value.startswith("/") and len(value) < 4096:
                reader.stat(PurePosixPath(value))
    data_dir = (
        d.etcd_data_dir(base)
        if resolved.config is None or resolved.config.cluster.etcd_local is None
        else PurePosixPath(resolved.config.cluster.etcd_local.data_dir)
    )
    try:
        etcd = _etcd(root, reader, data_dir)
    except NodeFsError as exc:  # a loop or an unsearchable directory on the way: a finding, not an abort
        unreadable[str(data_dir)] = exc.message
        etcd = None
    etcd_safety, etcd_checked = _etcd_safety(root, live=not offline)
    images: tuple[str, ...] | None = None
    images_note = "not checked (--offline)"
    addresses: tuple[str, ...] = ()
    probes: dict[str, d.Probe] = {}
    api: d.ApiData | None = None
    api_note = "--offline"
    if not offline:
        flags_env = reader.files.get(paths.KUBEADM_FLAGS)
        endpoint = (
            d.flags_env((flags_env.content or b"").decode(errors="replace")).get("container-runtime-endpoint", "")
            if flags_env
            else ""
        )
        socket_path = endpoint.removeprefix("unix://") if endpoint.startswith("unix:///") else CONTAINERD_SOCKET
        images, images_note = _images(root, socket_path)
        if live:
            addresses = _addresses()
        probes = _probes(reader.files, lambda p: _read_quietly(root, p, unreadable))
        api, api_note = _api(root, kubeconfig, reader.files)
    return d.NodeSnapshot(
        root=base.root,
        now=base.now,
        hostname=base.hostname,
        files=dict(reader.files),
        config_text=config_text,
        config_file=config_file,
        etcd=etcd,
        images=images,
        images_note=images_note,
        addresses=addresses,
        probes=probes,
        api=api,
        api_note=api_note,
        passwd=base.passwd,
        group=base.group,
        truncated=tuple(reader.truncated),
        unreadable=unreadable,
        etcd_safety=etcd_safety,
        etcd_safety_checked=etcd_checked,
    )
