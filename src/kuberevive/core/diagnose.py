"""``kuberevive diagnose`` as a pure function: :class:`NodeSnapshot` in, a list of :class:`Finding` out.

The snapshot (built by :mod:`kuberevive.io.snapshot`) holds the bytes, modes and owners of the files that
matter, what the collector learnt about etcd's data, the container images, the node's addresses, whether each
kubeconfig's server answered, and what the API said. Nothing here reads the disk or the network.

Areas and the checks in each (ids are stable; see docs/diagnose.md):

* ``node``: is this a kubeadm node at all, and which role (control plane / worker).
* ``config``: where the kubeadm configuration came from (``--config``, reconstructed from the node's
  files, or the ``kube-system/kubeadm-config`` ConfigMap).
* ``pki``: every certificate and key of kubeadm's list (present, readable, expiry, signer, key match, SANs,
  usages), ``sa.key``/``sa.pub``, and private keys that others can read.
* ``kubeconfig``: the five kubeconfigs (CA equal to ``pki/ca.crt``, client certificate valid, server answers).
* ``manifest``: the static Pod manifests (present, parseable, every file flag points at an existing file).
* ``cis``: file modes and owners against CIS Kubernetes Benchmark v1.9 items 1.1.x and 4.1.x.
* ``recovery``: what survives for a recovery, the CA copies found, and the verdict "CA can be kept" or
  "a new CA is needed".
* ``cluster``: with a working API: nodes, CSRs and the CA copies the cluster holds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

import yaml
from cryptography import x509

from kuberevive.core import etcdsafety, pki
from kuberevive.core.kubeconfig import Kubeconfig, first_cluster_ca
from kuberevive.core.manifests import ALL_COMPONENTS, components, manifest_flags, parse_manifest
from kuberevive.core.netaddr import join_host_port, split_url, url_host
from kuberevive.core.redact import redact_url, redact_urls
from kuberevive.core.versions import version_key
from kuberevive.errors import ConfigError, PkiError
from kuberevive.model import yamlload
from kuberevive.model.config import (
    DEFAULT_CERTIFICATES_DIR,
    DEFAULT_ETCD_DATA_DIR,
    KubeadmConfig,
    NodeFacts,
)
from kuberevive.model.document import DIAGNOSE, Document, rfc3339, stamp
from kuberevive.model.kubeadm_yaml import load_kubeadm_config
from kuberevive.model.paths import (
    BACKUP_DIR,
    CNI_DIR,
    KUBEADM_FLAGS,
    KUBECONFIG_NAMES,
    KUBELET_CLIENT_CURRENT,
    KUBELET_CONFIG,
    KUBELET_PKI,
    KUBELET_SERVING_CERT,
    KUBELET_SERVING_CURRENT,
    KUBERNETES_DIR,
    MANIFESTS_DIR,
)

SCHEMA = DIAGNOSE.schema
DEFAULT_EXPIRY_WARNING_DAYS = 30

KUBELET_SERVICE_FILES = (
    PurePosixPath("/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"),
    PurePosixPath("/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"),
    PurePosixPath("/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"),
    PurePosixPath("/etc/systemd/system/kubelet.service"),
)


# ------------------------------------------------------------------------------------------ results


class Severity(StrEnum):
    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return ("ok", "info", "warning", "error").index(self.value)


class Area(StrEnum):
    NODE = "node"
    CONFIG = "config"
    PKI = "pki"
    KUBECONFIG = "kubeconfig"
    MANIFEST = "manifest"
    CIS = "cis"
    RECOVERY = "recovery"
    CLUSTER = "cluster"


AREA_ORDER = tuple(Area)
_LOST_DIR_AREAS = (Area.PKI, Area.KUBECONFIG, Area.MANIFEST)


#: The value of a finding's detail: JSON's own types (a list is a tuple here, so a Finding stays hashable).
Detail = str | int | bool | tuple[str, ...]


@dataclass(frozen=True)
class Finding:
    """One observation: ``id`` is stable (``cert.expired``), ``subject`` a node path or an API object."""

    id: str
    severity: Severity
    area: Area
    subject: str
    message: str
    hint: str = ""
    details: tuple[tuple[str, Detail], ...] = ()
    """Extra facts as (key, typed value): ("not_after", "2027-11-25T17:42:24Z"), ("key", True),
    ("member_names", ("cp1",)), ("size_bytes", 4096)."""

    def detail(self, key: str) -> Detail | None:
        return dict(self.details).get(key)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity.value,
            "area": self.area.value,
            "subject": self.subject,
            "message": self.message,
            "hint": self.hint,
            "details": {k: list(v) if isinstance(v, tuple) else v for k, v in self.details},
        }


# ------------------------------------------------------------------------------------------ snapshot


@dataclass(frozen=True)
class FileInfo:
    """A path on the node as the collector saw it. ``content`` is None for directories and big files."""

    path: PurePosixPath
    kind: str
    """``file``, ``dir`` or ``other``."""
    mode: int
    uid: int
    gid: int
    size: int
    content: bytes | None = None
    link: str | None = None
    """Target when the path itself is a symlink (the other fields describe the target)."""
    error: str | None = None
    """Why ``content`` is None although something is there (a FIFO, a device, too big, permission denied, a
    symlink loop): reported as what it is, never as a missing file."""


@dataclass(frozen=True)
class EtcdData:
    data_dir: PurePosixPath
    exists: bool
    has_member: bool = False
    size_bytes: int = 0
    member_names: tuple[str, ...] = ()
    """Member names read from member/snap/db and the WAL (may be empty)."""
    member_peer_urls: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(name, peer URLs) of each member found there, by name."""


@dataclass(frozen=True)
class Probe:
    """Whether a kubeconfig's server answered (any HTTP status counts as reachable)."""

    ok: bool
    detail: str


@dataclass(frozen=True)
class ApiData:
    """What the API returned; ``objects`` maps a name (``nodes``, ``csrs``, ``cluster-info``,
    ``extension-apiserver-authentication``, ``kube-root-ca``, ``kubeadm-config``) to the decoded JSON,
    ``errors`` the same names to why they could not be read."""

    kubeconfig: str
    server: str
    error: str | None = None
    objects: Mapping[str, Any] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeSnapshot:
    root: str
    now: datetime
    hostname: str
    files: Mapping[PurePosixPath, FileInfo]
    config_text: str | None = None
    """The ``--config`` file's text, when given."""
    config_file: str | None = None
    etcd: EtcdData | None = None
    images: tuple[str, ...] | None = None
    images_note: str = ""
    """How the images were listed, or why not."""
    addresses: tuple[str, ...] = ()
    probes: Mapping[str, Probe] = field(default_factory=dict)
    """Server URL -> reachability; empty when the network was not used."""
    api: ApiData | None = None
    api_note: str = ""
    """Why the API was not used (no kubeconfig found, --offline)."""
    passwd: Mapping[str, int] = field(default_factory=dict)
    """User name -> uid from the node's /etc/passwd (for the etcd:etcd check)."""
    group: Mapping[str, int] = field(default_factory=dict)
    truncated: tuple[str, ...] = ()
    """Directories the collector stopped reading (too many files)."""
    unreadable: Mapping[str, str] = field(default_factory=dict)
    """Other node files the collector could not read (``/etc/passwd``, a kubeconfig's CA file, ...) -> why."""
    etcd_safety: tuple[etcdsafety.Problem, ...] | None = None
    """The etcd safety preflight's problems (:func:`kuberevive.core.etcdsafety.preflight`); None: not run."""
    etcd_safety_checked: str = ""
    """What the preflight could check (the data directory; the live etcd when it answered)."""

    def content(self, path: PurePosixPath | str) -> bytes | None:
        info = self.files.get(PurePosixPath(path))
        return info.content if info is not None and info.kind == "file" else None

    def has(self, path: PurePosixPath | str) -> bool:
        info = self.files.get(PurePosixPath(path))
        return info is not None and info.kind == "file"


@dataclass(frozen=True)
class Options:
    expiry_warning_days: int = DEFAULT_EXPIRY_WARNING_DAYS
    cis_strict: bool = False


@dataclass(frozen=True)
class ResolvedConfig:
    config: KubeadmConfig | None
    source: str
    kind: str
    """``file``, ``node``, ``api`` or ``none``."""
    problem: str | None = None


@dataclass
class Report:
    """Everything diagnose found, plus the facts the renderers show in the header."""

    root: str
    generated_at: datetime
    hostname: str
    role: str
    role_evidence: tuple[str, ...]
    addresses: tuple[str, ...]
    config: ResolvedConfig
    findings: list[Finding]
    ca_verdict: tuple[bool, str] | None

    @property
    def not_kubeadm(self) -> bool:
        return any(f.id == "node.not-kubeadm" for f in self.findings)

    @property
    def worst(self) -> Severity:
        return max((f.severity for f in self.findings), key=lambda s: s.rank, default=Severity.OK)

    @property
    def status(self) -> str:
        if self.not_kubeadm:
            return "not-kubeadm"
        return {Severity.ERROR: "errors", Severity.WARNING: "warnings"}.get(self.worst, "healthy")

    @property
    def exit_code(self) -> int:
        """0 healthy, 1 warnings, 2 errors, 3 not a kubeadm node (nothing to diagnose)."""
        if self.not_kubeadm:
            return 3
        return {Severity.ERROR: 2, Severity.WARNING: 1}.get(self.worst, 0)

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for f in self.findings if f.severity is s) for s in Severity}

    def as_json(self) -> Document:
        cfg = self.config.config
        return stamp(
            DIAGNOSE,
            {
                "root": self.root,
                "generated_at": rfc3339(self.generated_at),
                "status": self.status,
                "exit_code": self.exit_code,
                "summary": self.counts(),
                "node": {
                    "hostname": self.hostname,
                    "role": self.role,
                    "role_evidence": list(self.role_evidence),
                    "addresses": list(self.addresses),
                },
                "config": {
                    "source": self.config.source,
                    "kind": self.config.kind,
                    "problem": self.config.problem,
                    "node_name": cfg.node_name if cfg else None,
                    "advertise_address": cfg.advertise_address if cfg else None,
                    "control_plane_endpoint": (cfg.cluster.control_plane_endpoint or None) if cfg else None,
                    "kubernetes_version": cfg.cluster.kubernetes_version if cfg else None,
                    "certificates_dir": cfg.cluster.certificates_dir if cfg else None,
                },
                "ca_verdict": (
                    None if self.ca_verdict is None else {"keep": self.ca_verdict[0], "reason": self.ca_verdict[1]}
                ),
                "findings": [f.as_json() for f in self.findings],
            },
        )


class _Out:
    """Collects findings."""

    def __init__(self) -> None:
        self.items: list[Finding] = []

    def add(
        self,
        id: str,
        severity: Severity,
        area: Area,
        subject: PurePosixPath | str,
        message: str,
        hint: str = "",
        **details: Detail,
    ) -> None:
        self.items.append(Finding(id, severity, area, str(subject), message, hint, tuple(details.items())))


# ------------------------------------------------------------------------------------------ helpers

_API_DOWN_HINT = (
    "check that kube-apiserver runs ('crictl ps -a --name kube-apiserver', 'journalctl -u kubelet') "
    "and that the address is right"
)


def _probe_reason(detail: str, server: str) -> str:
    """A probe's error without the "cannot reach the API server at URL:" the message already says."""
    return redact_urls(detail.replace(f"cannot reach the API server at {server}: ", ""))


def _one_per_root_cause(findings: list[Finding]) -> list[Finding]:
    """One finding per API server that does not answer, naming every kubeconfig that uses it (not one per
    kubeconfig), and no separate ``cluster.unreachable`` when it is the same server."""
    by_server: dict[str, list[Finding]] = {}
    for f in findings:
        if f.id == "kubeconfig.server-unreachable":
            by_server.setdefault(str(f.detail("server") or ""), []).append(f)
    if not by_server:
        return findings
    down = set(by_server)
    out: list[Finding] = []
    for f in findings:
        if f.id == "cluster.unreachable" and f.subject in down:
            continue
        if f.id != "kubeconfig.server-unreachable":
            out.append(f)
            continue
        server = str(f.detail("server") or "")
        group = by_server.get(server)
        if group is None:  # already merged into the first one
            continue
        del by_server[server]
        names = ", ".join(PurePosixPath(g.subject).name for g in group)
        reason = f.message.rpartition(" does not answer ")[2]
        out.append(
            Finding(
                f.id,
                f.severity,
                f.area,
                server,
                f"the API server {server} does not answer {reason}; used by {names}",
                f.hint,
                (("server", server), ("kubeconfigs", tuple(g.subject for g in group))),
            )
        )
    return out


PART_OF = "part_of"
"""Detail naming the finding a per-file finding is part of (the renderer lists those only with ``-a``)."""


def _one_for_a_lost_kubernetes_dir(findings: list[Finding], snap: NodeSnapshot) -> list[Finding]:
    """The seed disaster: nothing kubeadm wrote under /etc/kubernetes is left. That is one root cause and one
    finding pointing at ``recover``; the per-file findings stay (JSON, ``-a``) with ``part_of`` naming it."""
    missing = [f for f in findings if f.id == "file.missing" and f.area in _LOST_DIR_AREAS]
    left = [p for p, info in snap.files.items() if info.kind == "file" and p.is_relative_to(KUBERNETES_DIR)]
    if len(missing) < 2 or left:
        return findings
    subject = str(KUBERNETES_DIR)
    lost = Finding(
        "node.kubernetes-dir-lost",
        Severity.ERROR,
        Area.NODE,
        subject,
        f"everything kubeadm wrote here is gone: the {len(missing)} certificates, keys, kubeconfigs and static Pod "
        "manifests are all missing",
        "run 'kuberevive recover' to see the plan (it reads the cluster's configuration back from etcd), then "
        "'kuberevive recover --apply'",
        (("missing_files", len(missing)),),
    )
    part = ((PART_OF, lost.id),)
    return [lost] + [dataclasses.replace(f, details=f.details + part) if f in missing else f for f in findings]


def _cert(data: bytes | None, source: str) -> x509.Certificate | None:
    if data is None:
        return None
    try:
        return pki.load_certificate(data, source)
    except PkiError:
        return None


def _key(data: bytes | None, source: str) -> pki.PrivateKey | None:
    if data is None:
        return None
    try:
        return pki.load_private_key(data, source)
    except PkiError:
        return None


def _cn(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(values[0].value) if values else name.rfc4514_string()


def _days(delta: timedelta) -> int:
    return int(delta.total_seconds() // 86400)


def flags_env(text: str) -> dict[str, str]:
    """``KUBELET_KUBEADM_ARGS="--a=b --c=d"`` -> {a: b, c: d}."""
    out: dict[str, str] = {}
    m = re.search(r'KUBELET_KUBEADM_ARGS="?([^"\n]*)"?', text)
    if not m:
        return out
    for token in m.group(1).split():
        if token.startswith("--"):
            name, _, value = token[2:].partition("=")
            out[name] = value
    return out


def _yaml_mapping(data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {}
    try:
        doc = yamlload.load(data)
    except yaml.YAMLError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _pems(data: bytes) -> list[x509.Certificate]:
    try:
        return list(x509.load_pem_x509_certificates(data))
    except ValueError:
        return []


# ------------------------------------------------------------------------------------------ role


def detect_role(snap: NodeSnapshot) -> tuple[str, tuple[str, ...]]:
    """``control-plane``, ``worker`` or ``none``, with the evidence."""
    cp: list[str] = []
    for comp in ALL_COMPONENTS:
        p = MANIFESTS_DIR / f"{comp}.yaml"
        if snap.has(p):
            cp.append(str(p))
    for name in ("ca.key", "apiserver.crt"):
        p = PurePosixPath(DEFAULT_CERTIFICATES_DIR) / name
        if snap.has(p):
            cp.append(str(p))
    for name in ("admin.conf", "super-admin.conf"):
        if snap.has(KUBERNETES_DIR / name):
            cp.append(str(KUBERNETES_DIR / name))
    if snap.etcd is not None and snap.etcd.has_member:
        cp.append(f"{snap.etcd.data_dir}/member")
    if cp:
        return "control-plane", tuple(cp)
    worker = [
        str(p)
        for p in (KUBERNETES_DIR / "kubelet.conf", KUBERNETES_DIR / "pki/ca.crt", KUBELET_CONFIG, KUBEADM_FLAGS)
        if snap.has(p)
    ]
    if worker:
        return "worker", tuple(worker)
    return "none", ()


# ------------------------------------------------------------------------------------------ config


def reconstruct_config_yaml(snap: NodeSnapshot) -> tuple[str | None, list[str]]:
    """A kubeadm config (v1beta4 YAML) rebuilt from surviving node files, and the files used.

    Sources, by priority: the static Pod manifests' flags and images, the kubelet's config.yaml
    (clusterDomain), kubeadm-flags.env (node-ip, hostname-override), admin.conf's server
    (controlPlaneEndpoint), the etcd member name and the images in the container runtime. None when not even
    an advertise address can be found.
    """
    used: list[str] = []
    pods: dict[str, dict[str, str]] = {}
    images: dict[str, str] = {}
    for comp in ALL_COMPONENTS:
        path = MANIFESTS_DIR / f"{comp}.yaml"
        data = snap.content(path)
        if data is None:
            continue
        try:
            pod = parse_manifest(data)
        except ConfigError:
            continue
        pods[comp] = manifest_flags(pod)
        with contextlib.suppress(KeyError, IndexError, TypeError):
            images[comp] = str(pod["spec"]["containers"][0]["image"])
        used.append(str(path))
    api = pods.get("kube-apiserver", {})
    etcd = pods.get("etcd", {})
    kcm = pods.get("kube-controller-manager", {})
    kubelet_cfg = _yaml_mapping(snap.content(KUBELET_CONFIG))
    if kubelet_cfg:
        used.append(str(KUBELET_CONFIG))
    flags_text = snap.content(KUBEADM_FLAGS)
    kflags = flags_env(flags_text.decode(errors="replace")) if flags_text else {}
    if flags_text:
        used.append(str(KUBEADM_FLAGS))

    advertise = api.get("advertise-address") or url_host(etcd.get("advertise-client-urls", "").split(",")[0])
    advertise = advertise or kflags.get("node-ip", "").split(",")[0]
    if not advertise:
        return None, used
    member_names = [n for n in (snap.etcd.member_names if snap.etcd else ()) if n]
    node_name = (
        etcd.get("name")
        or kflags.get("hostname-override")
        or (member_names[0] if len(set(member_names)) == 1 else "")
        or snap.hostname
    )
    init: dict[str, Any] = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "InitConfiguration",
        "localAPIEndpoint": {"advertiseAddress": advertise},
        "nodeRegistration": {"name": node_name},
    }
    if api.get("secure-port", "").isdigit():
        init["localAPIEndpoint"]["bindPort"] = int(api["secure-port"])
    cluster: dict[str, Any] = {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration"}
    version = ""
    if "kube-apiserver" in images and ":" in images["kube-apiserver"]:
        version = images["kube-apiserver"].rsplit(":", 1)[1]
    elif snap.images:
        tags = [i.rsplit(":", 1)[1] for i in snap.images if "/kube-apiserver:" in i]
        version = max(tags, key=lambda t: version_key(t) or (0, 0, 0), default="")  # as versions: v1.37 > v1.9
    if re.fullmatch(r"v\d+\.\d+\.\d+", version):
        cluster["kubernetesVersion"] = version
    networking: dict[str, str] = {}
    service = api.get("service-cluster-ip-range") or kcm.get("service-cluster-ip-range")
    if service:
        networking["serviceSubnet"] = service
    if kcm.get("cluster-cidr"):
        networking["podSubnet"] = kcm["cluster-cidr"]
    domain = kubelet_cfg.get("clusterDomain")
    if isinstance(domain, str) and domain:
        networking["dnsDomain"] = domain
    if networking:
        cluster["networking"] = networking
    if kcm.get("cluster-name"):
        cluster["clusterName"] = kcm["cluster-name"]
    if api.get("client-ca-file", "").endswith("/ca.crt"):
        cluster["certificatesDir"] = str(PurePosixPath(api["client-ca-file"]).parent)
    if etcd.get("data-dir"):
        cluster["etcd"] = {"local": {"dataDir": etcd["data-dir"]}}
    elif api and not etcd and api.get("etcd-servers") and "127.0.0.1" not in api["etcd-servers"]:
        external: dict[str, Any] = {"endpoints": api["etcd-servers"].split(",")}
        for flag, key in (("etcd-cafile", "caFile"), ("etcd-certfile", "certFile"), ("etcd-keyfile", "keyFile")):
            if api.get(flag):
                external[key] = api[flag]
        cluster["etcd"] = {"external": external}
    admin = snap.content(KUBERNETES_DIR / "admin.conf")
    if admin is not None:
        try:
            server = Kubeconfig.from_yaml(admin).current()[0].server or ""
        except ConfigError:
            server = ""
        _scheme, host, port = split_url(server) or ("", "", "")
        local_port = str(init["localAPIEndpoint"].get("bindPort", 6443))
        if host and (host, port) != (advertise, local_port):
            cluster["controlPlaneEndpoint"] = join_host_port(host, port) if port else host
            used.append(str(KUBERNETES_DIR / "admin.conf"))
    return yaml.safe_dump_all([init, cluster], sort_keys=False), used


def resolve_config(snap: NodeSnapshot) -> ResolvedConfig:
    """The configuration to check against: ``--config``, else the node's files, else the API's ConfigMap."""
    facts = NodeFacts(hostname=snap.hostname)
    if snap.config_text is not None:
        where = f"--config {snap.config_file}"
        try:
            return ResolvedConfig(load_kubeadm_config(snap.config_text, facts), where, "file")
        except ConfigError as exc:
            return ResolvedConfig(None, where, "none", f"{snap.config_file}: {exc}")
    text, used = reconstruct_config_yaml(snap)
    strong = any(u.startswith(str(MANIFESTS_DIR)) for u in used)
    api_cfg = _api_cluster_configuration(snap)
    if api_cfg is not None and not strong:
        try:
            local = yamlload.load_all(text) if text else []
            init = next((d for d in local if d.get("kind") == "InitConfiguration"), None)
            docs = [d for d in (init, api_cfg) if d is not None]
            source = "the kube-system/kubeadm-config ConfigMap" + (
                f" and the node's {', '.join(used)}" if init is not None else ""
            )
            return ResolvedConfig(load_kubeadm_config(yaml.safe_dump_all(docs), facts), source, "api")
        except (ConfigError, yaml.YAMLError, AttributeError) as exc:
            return ResolvedConfig(None, "the kube-system/kubeadm-config ConfigMap", "none", str(exc))
    if text is None:
        return ResolvedConfig(None, "none", "none", "no --config, and no surviving file names the advertise address")
    try:
        return ResolvedConfig(load_kubeadm_config(text, facts), f"reconstructed from {', '.join(used)}", "node")
    except ConfigError as exc:
        return ResolvedConfig(None, f"reconstructed from {', '.join(used)}", "none", str(exc))


def _api_cluster_configuration(snap: NodeSnapshot) -> dict[str, Any] | None:
    if snap.api is None:
        return None
    cm = snap.api.objects.get("kubeadm-config")
    if not isinstance(cm, dict):
        return None
    text = (cm.get("data") or {}).get("ClusterConfiguration")
    doc = _yaml_mapping(text.encode()) if isinstance(text, str) else {}
    return doc or None


# ------------------------------------------------------------------------------------------ entry


def diagnose(snap: NodeSnapshot, options: Options | None = None) -> Report:
    """Every finding for the node in ``snap``."""
    opts = options or Options()
    out = _Out()
    role, evidence = detect_role(snap)
    resolved = resolve_config(snap)
    if snap.config_text is not None and role == "none":
        role = "control-plane"
        evidence = (f"--config {snap.config_file}",)
    report = Report(snap.root, snap.now, snap.hostname, role, evidence, snap.addresses, resolved, out.items, None)
    if role == "none":
        out.add(
            "node.not-kubeadm",
            Severity.ERROR,
            Area.NODE,
            snap.root,
            "this is not a kubeadm node: no /etc/kubernetes files, no kubelet configuration, no etcd data",
            "run diagnose on a kubeadm node, or pass --root with the node's root directory",
        )
        return report
    out.add("node.role", Severity.INFO, Area.NODE, snap.hostname, f"{role} node ({', '.join(evidence[:3])})")
    for d in snap.truncated:
        out.add("node.too-many-files", Severity.WARNING, Area.NODE, d, f"{d} holds too many files; not all were read")
    _config_findings(resolved, role, out)
    cfg = resolved.config
    cdir = PurePosixPath(cfg.cluster.certificates_dir if cfg else DEFAULT_CERTIFICATES_DIR)
    ca_cert = _cert(snap.content(cdir / "ca.crt"), str(cdir / "ca.crt"))
    if role == "control-plane":
        authorities = _pki_findings(snap, cfg, cdir, opts, out)
        ca_cert = authorities.get("ca")
        _sa_findings(snap, cdir, out)
        for name in KUBECONFIG_NAMES:
            _kubeconfig_findings(snap, KUBERNETES_DIR / name, ca_cert, cdir, opts, out)
        _manifest_findings(snap, cfg, out)
    else:
        _worker_pki_findings(snap, cdir, opts, out)
        _kubeconfig_findings(snap, KUBERNETES_DIR / "kubelet.conf", ca_cert, cdir, opts, out)
    _key_permission_findings(snap, out)
    _cis_findings(snap, role, cfg, cdir, opts, out)
    report.ca_verdict = _recovery_findings(snap, role, cfg, cdir, ca_cert, opts, out)
    _cluster_findings(snap, cdir, out)
    _unreadable_findings(snap, out)
    out.items[:] = _one_per_root_cause(out.items)
    if role == "control-plane":
        out.items[:] = _one_for_a_lost_kubernetes_dir(out.items, snap)
    out.items[:] = [_hint_for_root(f, snap.root) for f in out.items]
    out.items.sort(key=lambda f: AREA_ORDER.index(f.area))
    return report


_SHELL_FIX = re.compile(r"\b(chmod|chown) (\S+) (/\S*)")
_OUR_COMMAND = re.compile(r"'kuberevive (generate|diagnose|recover|backup|certs renew|certs check)([^']*)'")


def _hint_for_root(finding: Finding, root: str) -> Finding:
    """Under ``--root`` a hint names the files under the root (``chmod 600 /mnt/node/etc/...``: pasted on a
    rescue host it must not change the rescue host's own /etc/kubernetes), and suggested kuberevive commands
    carry ``--root``."""
    if root == "/" or not finding.hint:
        return finding
    base = root.rstrip("/")
    hint = _SHELL_FIX.sub(lambda m: f"{m[1]} {m[2]} {base}{m[3]}", finding.hint)
    hint = _OUR_COMMAND.sub(lambda m: f"'kuberevive {m[1]}{m[2]} --root {base}'", hint)
    return dataclasses.replace(finding, hint=hint)


def _config_findings(resolved: ResolvedConfig, role: str, out: _Out) -> None:
    if resolved.config is not None:
        cfg = resolved.config
        out.add(
            "config.source",
            Severity.INFO,
            Area.CONFIG,
            {"file": "--config", "node": "node files", "api": "kubeadm-config"}.get(resolved.kind, resolved.kind),
            f"configuration ({resolved.source}): node {cfg.node_name}, advertise address "
            f"{cfg.advertise_address}, Kubernetes {cfg.cluster.kubernetes_version}"
            + (
                f", controlPlaneEndpoint {cfg.cluster.control_plane_endpoint}"
                if cfg.cluster.control_plane_endpoint
                else ""
            ),
        )
        return
    severity = Severity.WARNING if role == "control-plane" else Severity.INFO
    out.add(
        "config.unavailable",
        severity,
        Area.CONFIG,
        resolved.source,
        f"no kubeadm configuration to check against ({resolved.problem}); SAN and name checks are skipped",
        "pass the cluster's kubeadm configuration with --config",
    )


# ------------------------------------------------------------------------------------------ pki


def _missing(
    out: _Out,
    snap: NodeSnapshot,
    area: Area,
    path: PurePosixPath,
    what: str,
    hint: str,
    severity: Severity = Severity.ERROR,
) -> None:
    """``what`` has no readable content: missing, or (D-6, D-8) something that is not a file kubeadm wrote."""
    why = _unreadable_reason(snap, path)
    if why is None:
        out.add("file.missing", severity, area, path, f"{what} is missing", hint)
    else:
        out.add(
            "file.unreadable",
            severity,
            area,
            path,
            f"{what} cannot be read: {why}",
            "move it aside and restore the real file (from a backup), then run again",
        )


def _unreadable_reason(snap: NodeSnapshot, path: PurePosixPath) -> str | None:
    """Why ``path`` is there but has no content, or None when it is simply missing."""
    info = snap.files.get(PurePosixPath(path))
    if info is None:
        return None
    if info.kind == "dir":
        return "it is a directory"
    if info.content is None:
        return info.error or "it is not a regular file"
    return None


def _unreadable_findings(snap: NodeSnapshot, out: _Out) -> None:
    """Every file the collector could not read and no other finding names (D-U3, D-10, D-11, D-14): diagnose goes
    on, and says what it could not see."""
    named = {f.subject for f in out.items}
    found = {str(p): info.error for p, info in snap.files.items() if info.error} | dict(snap.unreadable)
    for path, why in sorted(found.items()):
        if path not in named:
            out.add(
                "file.unreadable",
                Severity.WARNING,
                Area.NODE,
                path,
                f"cannot be read: {why}; diagnose went on without it",
                "run kuberevive diagnose as root"
                if "permission denied" in why.lower()
                else "move it aside if it is not a file kubeadm wrote (kubeadm writes regular files of a few KiB)",
            )


def _validity(
    cert: x509.Certificate,
    subject: PurePosixPath | str,
    area: Area,
    prefix: str,
    now: datetime,
    opts: Options,
    out: _Out,
    name: str,
) -> bool:
    nb, na = pki.certificate_validity(cert)
    details = {"name": name, "not_after": rfc3339(na)}
    if pki.is_ca_certificate(cert):
        renew = (
            "run 'kuberevive ca extend --apply' on the control-plane node that holds its key: it re-issues the CA "
            "with the same key and puts it everywhere, so every certificate it signed stays valid (docs/certs.md)"
        )
    else:
        renew = (
            "run 'kuberevive certs renew --apply' on this node: it renews every expired or expiring leaf and "
            "kubeconfig with the existing CAs, the control-plane kubelet's client certificate first"
        )
    if now < nb:
        out.add(
            f"{prefix}.not-yet-valid",
            Severity.ERROR,
            area,
            subject,
            f"{name} is not valid before {rfc3339(nb)}",
            "check the node's clock, or regenerate it",
            **details,
        )
        return False
    if now > na:
        out.add(
            f"{prefix}.expired",
            Severity.ERROR,
            area,
            subject,
            f"{name} expired on {rfc3339(na)}",
            renew,
            **details,
        )
        return False
    if na - now < timedelta(days=opts.expiry_warning_days):
        out.add(
            f"{prefix}.expiring",
            Severity.WARNING,
            area,
            subject,
            f"{name} expires on {rfc3339(na)}, in {_days(na - now)} days",
            f"renew it before it expires; {renew}",
            **details,
        )
        return False
    return True


def _pki_findings(
    snap: NodeSnapshot, cfg: KubeadmConfig | None, cdir: PurePosixPath, opts: Options, out: _Out
) -> dict[str, x509.Certificate]:
    specs = pki.certificate_specs(cfg) if cfg is not None else pki.CERT_SPECS
    authorities: dict[str, x509.Certificate] = {}
    ca_keys: dict[str, bool] = {}
    for spec in specs:
        cert_path, key_path = spec.cert_path(str(cdir)), spec.key_path(str(cdir))
        regen = f"restore it from a backup, or run 'kuberevive generate certs --config FILE' (signed by {spec.signer})"
        if spec.is_ca:
            regen = "restore it from a backup; a new CA means every certificate and kubeconfig must be reissued"
        cert_data, key_data = snap.content(cert_path), snap.content(key_path)
        if cert_data is None:
            _missing(out, snap, Area.PKI, cert_path, f"the {spec.name} certificate", regen)
        if key_data is None:
            if spec.is_ca and cert_data is not None:
                out.add(
                    "file.missing",
                    Severity.ERROR,
                    Area.PKI,
                    key_path,
                    f"the {spec.name} key is missing while {cert_path.name} exists (lost, or external-CA mode)",
                    "restore the key from a backup; without it no new certificate can be signed by this CA",
                )
            else:
                _missing(out, snap, Area.PKI, key_path, f"the {spec.name} key", regen)
        if cert_data is None:
            continue
        try:
            cert = pki.load_certificate(cert_data, str(cert_path))
        except PkiError as exc:
            out.add("cert.unreadable", Severity.ERROR, Area.PKI, cert_path, exc.message, exc.hint)
            continue
        problems = len(out.items)
        if spec.is_ca:
            if not pki.is_ca_certificate(cert):
                out.add(
                    "cert.not-ca",
                    Severity.ERROR,
                    Area.PKI,
                    cert_path,
                    f"{spec.name} is not a CA certificate (no CA:TRUE)",
                    "restore the real CA certificate",
                )
            authorities[spec.name] = cert
        else:
            signer = authorities.get(spec.signer or "")
            if signer is not None and not pki.verify_signed_by(cert, signer):
                out.add(
                    "cert.wrong-signer",
                    Severity.ERROR,
                    Area.PKI,
                    cert_path,
                    f"{spec.name} is not signed by {spec.signer} (issuer: {_cn(cert.issuer)})",
                    f"move {cert_path.name} and {key_path.name} aside and run 'kuberevive generate certs' "
                    f"to sign a new one with the current {spec.signer}",
                )
        _validity(cert, cert_path, Area.PKI, "cert", snap.now, opts, out, spec.name)
        key = None
        if key_data is not None:
            try:
                key = pki.load_private_key(key_data, str(key_path))
            except PkiError as exc:
                out.add("key.unreadable", Severity.ERROR, Area.PKI, key_path, exc.message, exc.hint)
        if key is not None and not pki.key_matches_certificate(key, cert):
            out.add(
                "cert.key-mismatch",
                Severity.ERROR,
                Area.PKI,
                key_path,
                f"{key_path.name} does not belong to {cert_path.name} (their public keys differ)",
                "put back the matching key, or move both aside so that they are regenerated",
            )
        if spec.is_ca:
            ca_keys[spec.name] = key is not None and pki.key_matches_certificate(key, cert)
        if cfg is not None and spec.alt_names is not None:
            try:
                lacking = spec.alt_names(cfg).missing_from(pki.certificate_alt_names(cert))
            except ConfigError:
                lacking = []
            if lacking:
                out.add(
                    "cert.san-missing",
                    Severity.ERROR,
                    Area.PKI,
                    cert_path,
                    f"{spec.name} lacks SANs the configuration requires: {', '.join(lacking)}",
                    f"move {cert_path.name} and {key_path.name} aside and run 'kuberevive generate certs' "
                    "to issue it with the right SANs",
                    missing=tuple(lacking),
                )
        _usage_findings(spec, cert, cert_path, out)
        if len(out.items) == problems:
            nb, na = pki.certificate_validity(cert)
            out.add(
                "cert.ok",
                Severity.OK,
                Area.PKI,
                cert_path,
                f"{spec.name}: valid until {rfc3339(na)} ({_days(na - snap.now)} days), "
                + ("self-signed CA" if spec.is_ca else f"signed by {spec.signer}"),
                name=spec.name,
                not_after=rfc3339(na),
                not_before=rfc3339(nb),
                issuer=spec.signer or "self",
            )
    return authorities


def _usage_findings(spec: pki.CertSpec, cert: x509.Certificate, path: PurePosixPath, out: _Out) -> None:
    usages = pki.certificate_usages(cert)
    wrong: list[str] = []
    if spec.is_ca:
        if pki.KeyUsage.KEY_CERT_SIGN not in usages.key_usages:
            wrong.append("no keyCertSign key usage")
    else:
        missing = [u for u in spec.usages if u not in usages.extended]
        if missing:
            wrong.append(f"extended key usage lacks {', '.join(missing)}")
        if pki.KeyUsage.DIGITAL_SIGNATURE not in usages.key_usages:
            wrong.append("no digitalSignature key usage")
    if wrong:
        out.add(
            "cert.usage",
            Severity.ERROR,
            Area.PKI,
            path,
            f"{spec.name} has wrong usages: {'; '.join(wrong)}",
            "move the certificate and its key aside and regenerate them",
        )


def _sa_findings(snap: NodeSnapshot, cdir: PurePosixPath, out: _Out) -> None:
    key_path, pub_path = cdir / "sa.key", cdir / "sa.pub"
    hint = "restore it from a backup; a new sa.key invalidates every ServiceAccount token issued so far"
    key_data, pub_data = snap.content(key_path), snap.content(pub_path)
    if key_data is None:
        _missing(out, snap, Area.PKI, key_path, "the service-account signing key", hint)
    if pub_data is None:
        _missing(
            out,
            snap,
            Area.PKI,
            pub_path,
            "the service-account public key",
            "derive it from sa.key: run 'kuberevive generate certs'" if key_data else hint,
        )
    if key_data is None or pub_data is None:
        return
    try:
        key = pki.load_private_key(key_data, str(key_path))
        pub = pki.load_public_key(pub_data, str(pub_path))
    except PkiError as exc:
        out.add("key.unreadable", Severity.ERROR, Area.PKI, key_path, exc.message, exc.hint)
        return
    if not pki.public_key_matches(key, pub):
        out.add(
            "sa.mismatch",
            Severity.ERROR,
            Area.PKI,
            pub_path,
            "sa.pub does not belong to sa.key",
            "move sa.pub aside and run 'kuberevive generate certs' to derive it from sa.key",
        )
    else:
        out.add("sa.ok", Severity.OK, Area.PKI, key_path, "service-account key pair present and matching")


def _worker_pki_findings(snap: NodeSnapshot, cdir: PurePosixPath, opts: Options, out: _Out) -> None:
    path = cdir / "ca.crt"
    data = snap.content(path)
    if data is None:
        _missing(
            out,
            snap,
            Area.PKI,
            path,
            "the cluster CA certificate",
            "copy ca.crt from the control plane (it is also in the kubelet's kubeconfig)",
        )
        return
    cert = _cert(data, str(path))
    if cert is None:
        out.add(
            "cert.unreadable",
            Severity.ERROR,
            Area.PKI,
            path,
            "ca.crt is not a readable certificate",
            "copy ca.crt from the control plane",
        )
        return
    if _validity(cert, path, Area.PKI, "cert", snap.now, opts, out, "ca"):
        out.add(
            "cert.ok",
            Severity.OK,
            Area.PKI,
            path,
            f"ca: valid until {rfc3339(cert.not_valid_after_utc)}",
            name="ca",
            not_after=rfc3339(cert.not_valid_after_utc),
            issuer="self",
        )


# ------------------------------------------------------------------------------------------ kubeconfigs


def _kubeconfig_findings(
    snap: NodeSnapshot,
    path: PurePosixPath,
    ca_cert: x509.Certificate | None,
    cdir: PurePosixPath,
    opts: Options,
    out: _Out,
) -> None:
    data = snap.content(path)
    if data is None:
        _missing(
            out,
            snap,
            Area.KUBECONFIG,
            path,
            f"the kubeconfig {path.name}",
            "run 'kuberevive generate kubeconfigs --config FILE' (needs pki/ca.crt and ca.key)",
        )
        return
    try:
        cluster, user = Kubeconfig.from_yaml(data).current()
    except ConfigError as exc:
        out.add(
            "kubeconfig.invalid",
            Severity.ERROR,
            Area.KUBECONFIG,
            path,
            f"{path.name}: {exc.message}",
            "move it aside and regenerate it",
        )
        return
    problems = len(out.items)
    ca_data = cluster.certificate_authority_data
    if ca_data is None and cluster.certificate_authority:
        ca_data = snap.content(cluster.certificate_authority)
    theirs = _cert(ca_data, f"the CA of {path}")
    if theirs is None:
        out.add(
            "kubeconfig.invalid",
            Severity.ERROR,
            Area.KUBECONFIG,
            path,
            f"{path.name} has no readable certificate-authority",
            "move it aside and regenerate it",
        )
    elif ca_cert is not None and theirs != ca_cert:
        out.add(
            "kubeconfig.ca-mismatch",
            Severity.ERROR,
            Area.KUBECONFIG,
            path,
            f"{path.name} trusts a CA ({_cn(theirs.subject)}, expires {rfc3339(theirs.not_valid_after_utc)}) "
            f"that is not {cdir / 'ca.crt'}",
            "move it aside and run 'kuberevive generate kubeconfigs' to issue it for the current CA",
        )
    cert_data = user.client_certificate_data
    key_data = user.client_key_data
    if cert_data is None and user.client_certificate:
        cert_data = snap.content(user.client_certificate)
        if cert_data is None:
            out.add(
                "kubeconfig.client-cert-invalid",
                Severity.ERROR,
                Area.KUBECONFIG,
                path,
                f"{path.name} names client certificate {user.client_certificate}, which does not exist",
                "restore the file or regenerate the kubeconfig with an embedded certificate",
            )
    if key_data is None and user.client_key:
        key_data = snap.content(user.client_key)
    not_after = ""
    if cert_data is not None:
        cert = _cert(cert_data, f"the client certificate of {path}")
        if cert is None:
            out.add(
                "kubeconfig.client-cert-invalid",
                Severity.ERROR,
                Area.KUBECONFIG,
                path,
                f"{path.name}: the client certificate is not readable",
                "regenerate the kubeconfig",
            )
        else:
            not_after = rfc3339(cert.not_valid_after_utc)
            if ca_cert is not None and not pki.verify_signed_by(cert, ca_cert):
                out.add(
                    "kubeconfig.client-cert-invalid",
                    Severity.ERROR,
                    Area.KUBECONFIG,
                    path,
                    f"{path.name}: the client certificate ({_cn(cert.subject)}) is not signed by ca.crt "
                    f"(issuer: {_cn(cert.issuer)})",
                    "move it aside and run 'kuberevive generate kubeconfigs'",
                )
            _validity(cert, path, Area.KUBECONFIG, "kubeconfig.client-cert", snap.now, opts, out, path.name)
            key = _key(key_data, f"the client key of {path}")
            if key_data is not None and key is None:
                out.add(
                    "kubeconfig.client-cert-invalid",
                    Severity.ERROR,
                    Area.KUBECONFIG,
                    path,
                    f"{path.name}: the client key is not readable",
                    "regenerate the kubeconfig",
                )
            elif key is not None and not pki.key_matches_certificate(key, cert):
                out.add(
                    "kubeconfig.client-cert-invalid",
                    Severity.ERROR,
                    Area.KUBECONFIG,
                    path,
                    f"{path.name}: the client key does not belong to the client certificate",
                    "regenerate the kubeconfig",
                )
    elif not user.token:
        out.add(
            "kubeconfig.client-cert-invalid",
            Severity.ERROR,
            Area.KUBECONFIG,
            path,
            f"{path.name} has no client certificate and no token",
            "regenerate the kubeconfig",
        )
    server = cluster.server or ""
    probe = snap.probes.get(server)
    if probe is not None and not probe.ok:
        out.add(
            "kubeconfig.server-unreachable",
            Severity.WARNING,
            Area.KUBECONFIG,
            path,
            f"{path.name}: the API server {redact_url(server)} does not answer ({_probe_reason(probe.detail, server)})",
            _API_DOWN_HINT,
            server=redact_url(server),
        )
    if len(out.items) == problems:
        extra = {"not_after": not_after} if not_after else {}
        out.add(
            "kubeconfig.ok",
            Severity.OK,
            Area.KUBECONFIG,
            path,
            f"{path.name}: trusts ca.crt, client certificate valid"
            + (f" until {not_after}" if not_after else "")
            + (", server answers" if probe is not None else ""),
            name=path.name,
            server=redact_url(server),
            **extra,
        )


# ------------------------------------------------------------------------------------------ manifests

_FILE_FLAG = re.compile(r"(-file|-cafile|-certfile|-keyfile|kubeconfig|-certificate|-key)$")


def _manifest_findings(snap: NodeSnapshot, cfg: KubeadmConfig | None, out: _Out) -> None:
    expected = components(cfg) if cfg is not None else ALL_COMPONENTS
    for comp in expected:
        path = MANIFESTS_DIR / f"{comp}.yaml"
        data = snap.content(path)
        if data is None:
            _missing(
                out,
                snap,
                Area.MANIFEST,
                path,
                f"the {comp} static Pod manifest",
                "run 'kuberevive generate manifests --config FILE'",
            )
            continue
        try:
            pod = parse_manifest(data)
        except ConfigError as exc:
            out.add(
                "manifest.invalid",
                Severity.ERROR,
                Area.MANIFEST,
                path,
                f"{path.name}: {exc.message}",
                "move it aside and run 'kuberevive generate manifests'",
            )
            continue
        problems = len(out.items)
        for name, value in manifest_flags(pod).items():
            if not _FILE_FLAG.search(name) or not value.startswith("/"):
                continue
            if not snap.has(value):
                why = _unreadable_reason(snap, PurePosixPath(value))
                out.add(
                    "manifest.missing-file",
                    Severity.ERROR,
                    Area.MANIFEST,
                    path,
                    f"{comp}: --{name} points at {value}, which "
                    + (f"cannot be read ({why})" if why else "does not exist"),
                    f"restore {value} (or regenerate it with 'kuberevive generate')",
                    flag=name,
                    file=value,
                )
        if len(out.items) == problems:
            out.add("manifest.ok", Severity.OK, Area.MANIFEST, path, f"{comp}: every file it names exists")


# ------------------------------------------------------------------------------------------ permissions


def _private_key_paths(snap: NodeSnapshot) -> list[PurePosixPath]:
    out = []
    for p, info in snap.files.items():
        if info.kind != "file":
            continue
        under_pki = str(p).startswith(str(KUBERNETES_DIR) + "/") or str(p).startswith(str(KUBELET_PKI) + "/")
        if not under_pki or str(p).startswith(str(BACKUP_DIR)):
            continue
        if (
            p.suffix == ".key"
            or (p.suffix == ".conf" and p.parent == KUBERNETES_DIR)
            or (p.parent == KUBELET_PKI and p.name.startswith("kubelet-client"))
        ):
            out.append(p)
    return sorted(out)


def _key_permission_findings(snap: NodeSnapshot, out: _Out) -> None:
    for p in _private_key_paths(snap):
        info = snap.files[p]
        if info.mode & 0o077:
            out.add(
                "file.permissions",
                Severity.ERROR,
                Area.PKI,
                p,
                f"{p.name} holds a private key and has mode {info.mode:04o}: other users can read it",
                f"chmod 600 {p}",
                mode=f"{info.mode:04o}",
            )


@dataclass(frozen=True)
class CisItem:
    """One CIS Kubernetes Benchmark v1.9 file check (kube-bench cfg/cis-1.9 master.yaml / node.yaml)."""

    item: str
    text: str
    automated: bool
    check: str
    """``mode`` or ``owner``."""
    want_mode: int = 0o600
    want_owner: str = "root:root"
    kubeadm_mode: int | None = None
    """The mode kubeadm itself gives (a failure that matches it is only info); None: not a kubeadm file."""
    kubeadm_owner: str | None = "root:root"


_PathsFn = Callable[[NodeSnapshot, KubeadmConfig | None, PurePosixPath], list[PurePosixPath]]


def _cis_items(role: str) -> list[tuple[CisItem, _PathsFn]]:
    def manifest(name: str) -> Callable[..., list[PurePosixPath]]:
        return lambda snap, cfg, cdir: [MANIFESTS_DIR / name]

    def conf(*names: str) -> Callable[..., list[PurePosixPath]]:
        return lambda snap, cfg, cdir: [KUBERNETES_DIR / n for n in names]

    def cni(snap: NodeSnapshot, cfg: KubeadmConfig | None, cdir: PurePosixPath) -> list[PurePosixPath]:
        return sorted(p for p in snap.files if p.parent == CNI_DIR)

    def etcd_dir(snap: NodeSnapshot, cfg: KubeadmConfig | None, cdir: PurePosixPath) -> list[PurePosixPath]:
        return [snap.etcd.data_dir] if snap.etcd is not None and snap.etcd.exists else []

    def pki_all(snap: NodeSnapshot, cfg: KubeadmConfig | None, cdir: PurePosixPath) -> list[PurePosixPath]:
        return sorted(p for p in snap.files if p == cdir or str(p).startswith(f"{cdir}/"))

    def pki_suffix(suffix: str) -> Callable[..., list[PurePosixPath]]:
        return lambda snap, cfg, cdir: sorted(
            p for p in snap.files if str(p).startswith(f"{cdir}/") and p.suffix == suffix
        )

    def service(snap: NodeSnapshot, cfg: KubeadmConfig | None, cdir: PurePosixPath) -> list[PurePosixPath]:
        return [p for p in KUBELET_SERVICE_FILES if p in snap.files]

    def kubelet_conf(snap: NodeSnapshot, cfg: KubeadmConfig | None, cdir: PurePosixPath) -> list[PurePosixPath]:
        return [KUBERNETES_DIR / "kubelet.conf"]

    def client_ca(snap: NodeSnapshot, cfg: KubeadmConfig | None, cdir: PurePosixPath) -> list[PurePosixPath]:
        x509_cfg = (_yaml_mapping(snap.content(KUBELET_CONFIG)).get("authentication") or {}).get("x509") or {}
        path = x509_cfg.get("clientCAFile") if isinstance(x509_cfg, dict) else None
        return [PurePosixPath(path)] if isinstance(path, str) and path.startswith("/") else []

    def kubelet_config(snap: NodeSnapshot, cfg: KubeadmConfig | None, cdir: PurePosixPath) -> list[PurePosixPath]:
        return [KUBELET_CONFIG]

    def pair(
        mode_id: str,
        owner_id: str,
        what: str,
        automated: bool,
        paths: _PathsFn,
        kubeadm_mode: int | None,
        *,
        mode_text: str | None = None,
        owner_text: str | None = None,
        want_mode: int = 0o600,
        want_owner: str = "root:root",
        kubeadm_owner: str | None = "root:root",
    ) -> list[tuple[CisItem, _PathsFn]]:
        """The benchmark's usual two items for one set of files: its mode, then its owner."""
        mode = CisItem(
            mode_id,
            mode_text or f"{what} permissions are set to {want_mode:o} or more restrictive",
            automated,
            "mode",
            want_mode=want_mode,
            kubeadm_mode=kubeadm_mode,
        )
        owner = CisItem(
            owner_id,
            owner_text or f"{what} ownership is set to {want_owner}",
            automated,
            "owner",
            want_owner=want_owner,
            kubeadm_owner=kubeadm_owner,
        )
        return [(mode, paths), (owner, paths)]

    master = [
        *pair("1.1.1", "1.1.2", "API server pod specification file", True, manifest("kube-apiserver.yaml"), 0o600),
        *pair(
            "1.1.3",
            "1.1.4",
            "controller manager pod specification file",
            True,
            manifest("kube-controller-manager.yaml"),
            0o600,
        ),
        *pair("1.1.5", "1.1.6", "scheduler pod specification file", True, manifest("kube-scheduler.yaml"), 0o600),
        *pair("1.1.7", "1.1.8", "etcd pod specification file", True, manifest("etcd.yaml"), 0o600),
        *pair("1.1.9", "1.1.10", "Container Network Interface file", False, cni, None, kubeadm_owner=None),
        *pair(
            "1.1.11", "1.1.12", "etcd data directory", True, etcd_dir, 0o700, want_mode=0o700, want_owner="etcd:etcd"
        ),
        *pair(
            "1.1.13",
            "1.1.14",
            "default administrative credential file",
            True,
            conf("admin.conf", "super-admin.conf"),
            0o600,
            mode_text="default administrative credential file permissions are set to 600",
        ),
        *pair("1.1.15", "1.1.16", "scheduler.conf file", True, conf("scheduler.conf"), 0o600),
        *pair("1.1.17", "1.1.18", "controller-manager.conf file", True, conf("controller-manager.conf"), 0o600),
        (CisItem("1.1.19", "Kubernetes PKI directory and file ownership is set to root:root", True, "owner"), pki_all),
        (
            CisItem(
                "1.1.20",
                "Kubernetes PKI certificate file permissions are set to 600 or more restrictive",
                False,
                "mode",
                kubeadm_mode=0o644,
            ),
            pki_suffix(".crt"),
        ),
        (
            CisItem("1.1.21", "Kubernetes PKI key file permissions are set to 600", False, "mode", kubeadm_mode=0o600),
            pki_suffix(".key"),
        ),
    ]
    node = [
        *pair("4.1.1", "4.1.2", "kubelet service file", True, service, 0o644),
        *pair("4.1.5", "4.1.6", "--kubeconfig kubelet.conf file", True, kubelet_conf, 0o600),
        *pair(
            "4.1.7",
            "4.1.8",
            "certificate authorities file",
            False,
            client_ca,
            0o644,
            owner_text="client certificate authorities file ownership is set to root:root",
        ),
        *pair("4.1.9", "4.1.10", "kubelet config.yaml configuration file", True, kubelet_config, 0o644),
    ]
    return (master + node) if role == "control-plane" else node


def _owner_name(snap: NodeSnapshot, uid: int, gid: int) -> str:
    users = {v: k for k, v in snap.passwd.items()}
    groups = {v: k for k, v in snap.group.items()}
    return f"{users.get(uid, uid)}:{groups.get(gid, gid)}"


def _cis_findings(
    snap: NodeSnapshot, role: str, cfg: KubeadmConfig | None, cdir: PurePosixPath, opts: Options, out: _Out
) -> None:
    """One finding per file that deviates (warning); deviations that kubeadm itself makes are grouped into one
    info finding per item; an ok finding per item that every file passes."""
    for item, paths in _cis_items(role):
        checked = 0
        failed = False
        defaults: list[tuple[PurePosixPath, str]] = []
        for path in paths(snap, cfg, cdir):
            info = snap.files.get(path)
            if info is None or info.uid < 0:  # not there, or not even its owner could be seen (a loop)
                continue
            checked += 1
            if item.check == "mode":
                if not info.mode & ~item.want_mode & 0o7777:
                    continue
                actual = f"{info.mode:04o}"
                matches_kubeadm = item.kubeadm_mode is not None and not info.mode & ~item.kubeadm_mode & 0o7777
                fix = f"chmod {item.want_mode:o} {path}"
                want = f"{item.want_mode:o} or more restrictive"
            else:
                actual = _owner_name(snap, info.uid, info.gid)
                user, group = item.want_owner.split(":")
                want_ids = (
                    snap.passwd.get(user, 0 if user == "root" else -1),
                    snap.group.get(group, 0 if group == "root" else -1),
                )
                if (info.uid, info.gid) == want_ids:
                    continue
                matches_kubeadm = item.kubeadm_owner is not None and (info.uid, info.gid) == (0, 0)
                fix = f"chown {item.want_owner} {path}"
                want = item.want_owner
            failed = True
            if opts.cis_strict or (not matches_kubeadm and (item.automated or item.kubeadm_mode is not None)):
                out.add(
                    f"cis.{item.item}",
                    Severity.WARNING,
                    Area.CIS,
                    path,
                    f"CIS {item.item}: {path.name} should be {want}, is {actual}",
                    fix,
                    item=item.item,
                    text=item.text,
                    actual=actual,
                )
            else:
                defaults.append((path, actual))
        if defaults:
            why = "kubeadm's own default" if item.kubeadm_mode is not None or item.check == "owner" else "manual item"
            names = ", ".join(str(p) for p, _ in defaults[:3]) + (
                f" and {len(defaults) - 3} more" if len(defaults) > 3 else ""
            )
            out.add(
                f"cis.{item.item}",
                Severity.INFO,
                Area.CIS,
                str(defaults[0][0]) if len(defaults) == 1 else f"{len(defaults)} files",
                f"CIS {item.item}: {item.text}; {names} {'is' if len(defaults) == 1 else 'are'} "
                f"{defaults[0][1]} ({why}; --cis-strict counts it as a warning)",
                "",
                item=item.item,
                text=item.text,
                actual=defaults[0][1],
                files=tuple(str(p) for p, _ in defaults),
            )
        if checked and not failed:
            out.add(
                f"cis.{item.item}",
                Severity.OK,
                Area.CIS,
                f"CIS {item.item}",
                f"CIS {item.item}: {item.text}",
                item=item.item,
                text=item.text,
            )


# ------------------------------------------------------------------------------------------ recovery


@dataclass(frozen=True)
class CaCandidate:
    path: str
    cert: x509.Certificate
    key_ok: bool
    origin: str


_CA_NAME = re.compile(r"ca\.(crt|pem)(\.(bak|old|orig|save|backup)|~)?")


def _ca_candidates(snap: NodeSnapshot, cdir: PurePosixPath, role: str) -> list[CaCandidate]:
    """Copies of the cluster CA on the node: backups, ``*.bak``/``.old`` files, a worker's ca.crt, kubelet.conf."""
    found: list[CaCandidate] = []
    node_key = _key(snap.content(cdir / "ca.key"), str(cdir / "ca.key"))  # a copy of ca.crt + this key: CA kept

    def matches_node_key(cert: x509.Certificate) -> bool:
        return node_key is not None and pki.key_matches_certificate(node_key, cert)

    for p, info in sorted(snap.files.items()):
        if info.kind != "file" or info.content is None or not _CA_NAME.fullmatch(p.name) or "etcd" in p.parts:
            continue
        if p == cdir / "ca.crt" and role == "control-plane":
            continue
        cert = _cert(info.content, str(p))
        if cert is None or not pki.is_ca_certificate(cert):
            continue
        key_path = p.parent / p.name.replace(".crt", ".key").replace(".pem", ".key")
        key = _key(snap.content(key_path), str(key_path))
        key_ok = (key is not None and pki.key_matches_certificate(key, cert)) or matches_node_key(cert)
        if str(p).startswith(f"{BACKUP_DIR}/"):
            origin = "kuberevive backup"
        elif p == cdir / "ca.crt":
            origin = "this node's ca.crt"
        else:
            origin = "old copy"
        found.append(CaCandidate(str(p), cert, key_ok, origin))
    kubelet_conf = snap.content(KUBERNETES_DIR / "kubelet.conf")
    if kubelet_conf is not None:
        try:
            cluster, _ = Kubeconfig.from_yaml(kubelet_conf).current()
            ca = _cert(cluster.certificate_authority_data, "kubelet.conf CA")
            if ca is not None:
                found.append(
                    CaCandidate(
                        f"{KUBERNETES_DIR / 'kubelet.conf'} (certificate-authority-data)",
                        ca,
                        matches_node_key(ca),
                        "kubelet kubeconfig",
                    )
                )
        except ConfigError:
            pass
    return found


def _etcd_safety_findings(snap: NodeSnapshot, subject: PurePosixPath | str, out: _Out) -> None:
    """The etcd safety preflight as findings (``recovery.etcd-*``): what restore-etcd, etcd-salvage and member
    changes would refuse, with the fix and the guided salvage."""
    if snap.etcd_safety is None:
        return
    for p in snap.etcd_safety:
        out.add(
            f"recovery.{p.id}",
            Severity.ERROR if p.severity == etcdsafety.REFUSE else Severity.WARNING,
            Area.RECOVERY,
            subject,
            p.message,
            p.fix + (f"; guided salvage: {p.salvage}" if p.salvage else ""),
            salvage=p.salvage,
        )
    if not snap.etcd_safety:
        out.add(
            "recovery.etcd-safety",
            Severity.OK,
            Area.RECOVERY,
            subject,
            f"etcd safety preflight passed ({snap.etcd_safety_checked})",
            "",
        )


def _recovery_findings(
    snap: NodeSnapshot,
    role: str,
    cfg: KubeadmConfig | None,
    cdir: PurePosixPath,
    ca_cert: x509.Certificate | None,
    opts: Options,
    out: _Out,
) -> tuple[bool, str] | None:
    etcd = snap.etcd
    local_etcd = cfg is None or not cfg.cluster.is_external_etcd
    if role == "control-plane" and local_etcd and etcd is not None:
        if etcd.has_member:
            names = sorted(set(etcd.member_names))
            name_text = ", ".join(names) if names else "unknown"
            manifest_name = ""
            data = snap.content(MANIFESTS_DIR / "etcd.yaml")
            if data is not None:
                try:
                    manifest_name = manifest_flags(parse_manifest(data)).get("name", "")
                except ConfigError:
                    manifest_name = ""
            out.add(
                "recovery.etcd-data",
                Severity.OK,
                Area.RECOVERY,
                etcd.data_dir,
                f"etcd data survives: {etcd.data_dir} ({_size(etcd.size_bytes)}), member name {name_text}"
                + (f" (etcd.yaml --name={manifest_name})" if manifest_name else ""),
                "keep it: recovery restarts etcd on this data",
                member_names=tuple(names),
                size_bytes=etcd.size_bytes,
                data_dir=str(etcd.data_dir),
            )
        else:
            out.add(
                "recovery.etcd-data-missing",
                Severity.ERROR,
                Area.RECOVERY,
                etcd.data_dir,
                f"no etcd data in {etcd.data_dir} (no member/ directory): the cluster state is gone",
                "restore an etcd snapshot (etcdutl snapshot restore) before recovering the control plane",
            )
    _etcd_safety_findings(snap, etcd.data_dir if etcd is not None else "etcd", out)
    for path, what in ((KUBELET_CONFIG, "the kubelet's config.yaml"), (KUBEADM_FLAGS, "kubeadm-flags.env")):
        if snap.has(path):
            out.add("recovery.kubelet-file", Severity.OK, Area.RECOVERY, path, f"{what} survives")
        else:
            _missing(
                out,
                snap,
                Area.RECOVERY,
                path,
                what,
                "it is rewritten by 'kubeadm init phase kubelet-start'",
                Severity.WARNING,
            )
    candidates = _ca_candidates(snap, cdir, role)
    for path, what in (
        (KUBELET_CLIENT_CURRENT, "client"),
        (KUBELET_SERVING_CURRENT, "serving"),
        (KUBELET_SERVING_CERT, "serving"),
    ):
        data = snap.content(path)
        if data is None:
            continue
        certs = _pems(data)
        if not certs:
            continue
        cert = certs[0]
        signed_by = "?"
        if ca_cert is not None and pki.verify_signed_by(cert, ca_cert):
            signed_by = f"the current {cdir / 'ca.crt'}"
        else:
            for c in candidates:
                if pki.verify_signed_by(cert, c.cert):
                    signed_by = c.path
                    break
            else:
                for other in certs[1:]:
                    if pki.verify_signed_by(cert, other):
                        signed_by = f"{_cn(other.subject)} (bundled in the file)"
                        break
        if signed_by == "?" and cert.issuer == cert.subject:
            signed_by = "itself"
        link = snap.files[path].link
        out.add(
            f"recovery.kubelet-{what}-cert",
            Severity.INFO,
            Area.RECOVERY,
            path,
            f"kubelet {what} certificate {_cn(cert.subject)} survives"
            + (f" (-> {link})" if link else "")
            + f", issuer {_cn(cert.issuer)}, valid until {rfc3339(cert.not_valid_after_utc)}"
            + ("" if signed_by == "?" else f", signed by {signed_by}"),
            issuer=_cn(cert.issuer),
            cert_subject=_cn(cert.subject),
            not_after=rfc3339(cert.not_valid_after_utc),
            signed_by="" if signed_by == "?" else signed_by,
            issuer_key_id=_aki(cert),
        )
    if snap.images is not None:
        versions = sorted({i for i in snap.images if re.search(r"/(kube-[a-z-]+|etcd|pause):", i)})
        out.add(
            "recovery.images",
            Severity.INFO,
            Area.RECOVERY,
            snap.images_note,
            "control-plane images in the container runtime: " + (", ".join(versions) or "none"),
            images=tuple(versions),
            kubernetes_versions=tuple(sorted({i.rsplit(":", 1)[1] for i in versions if "/kube-apiserver:" in i})),
        )
    else:
        out.add(
            "recovery.images",
            Severity.INFO,
            Area.RECOVERY,
            "container runtime",
            f"images not listed: {snap.images_note}",
        )
    if snap.addresses:
        out.add(
            "recovery.addresses",
            Severity.INFO,
            Area.RECOVERY,
            snap.hostname,
            f"node addresses: {', '.join(snap.addresses)}",
            addresses=tuple(snap.addresses),
        )
    for c in candidates:
        out.add(
            "recovery.ca-copy",
            Severity.INFO,
            Area.RECOVERY,
            c.path,
            f"CA certificate found ({c.origin}): CN {_cn(c.cert.subject)}, valid until "
            f"{rfc3339(c.cert.not_valid_after_utc)}, {pki.discovery_token_ca_cert_hash(c.cert)}, "
            + ("with its matching key" if c.key_ok else "without its key"),
            pin=pki.discovery_token_ca_cert_hash(c.cert),
            key=c.key_ok,
            same_as_current=ca_cert is not None and c.cert == ca_cert,
            origin=c.origin,
        )
    if role != "control-plane":
        return None
    return _ca_verdict(snap, cdir, ca_cert, candidates, out)


def _aki(cert: x509.Certificate) -> str:
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        return aki.key_identifier.hex() if aki.key_identifier else ""
    except x509.ExtensionNotFound:
        return ""


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _ca_verdict(
    snap: NodeSnapshot,
    cdir: PurePosixPath,
    ca_cert: x509.Certificate | None,
    candidates: list[CaCandidate],
    out: _Out,
) -> tuple[bool, str]:
    key = _key(snap.content(cdir / "ca.key"), str(cdir / "ca.key"))
    if (
        ca_cert is not None
        and key is not None
        and pki.key_matches_certificate(key, ca_cert)
        and snap.now <= ca_cert.not_valid_after_utc
    ):
        reason = f"{cdir / 'ca.crt'} and ca.key are present, match, and are valid until " + rfc3339(
            ca_cert.not_valid_after_utc
        )
        out.add("recovery.ca-keep", Severity.OK, Area.RECOVERY, cdir / "ca.crt", f"CA can be kept: {reason}")
        return True, reason
    for c in candidates:
        if c.key_ok and snap.now <= c.cert.not_valid_after_utc:
            reason = f"a copy of the CA with its key survives in {c.path}"
            out.add(
                "recovery.ca-keep",
                Severity.OK,
                Area.RECOVERY,
                c.path,
                f"CA can be kept: {reason}",
                f"restore {c.path} and its key to {cdir}",
            )
            return True, reason
    if ca_cert is not None and key is None:
        why = f"{cdir / 'ca.key'} is missing, so no certificate can be signed by the current CA"
    elif ca_cert is not None:
        why = f"{cdir / 'ca.key'} does not match ca.crt, or the CA has expired"
    elif key is not None or snap.has(cdir / "ca.key"):
        crt_why = _unreadable_reason(snap, cdir / "ca.crt")
        state = f"cannot be read ({crt_why})" if crt_why else "is missing"
        why = f"{cdir / 'ca.crt'} {state} while ca.key is present, and no copy of the certificate was found"
    else:
        crt_why = _unreadable_reason(snap, cdir / "ca.crt")
        state = f"cannot be read ({crt_why})" if crt_why else "is gone"
        why = f"{cdir / 'ca.crt'} {state}, ca.key is gone, and no copy with its key was found"
    old = [c for c in candidates if not c.key_ok]
    if old:
        why += f"; the old CA certificate survives in {old[0].path} (kubelets and workers trust it)"
    out.add(
        "recovery.ca-new",
        Severity.ERROR,
        Area.RECOVERY,
        cdir / "ca.crt",
        f"a new CA is needed: {why}",
        "recover with a new CA; every kubelet and kubeconfig must then be given the new ca.crt",
    )
    return False, why


# ------------------------------------------------------------------------------------------ cluster


def _cluster_findings(snap: NodeSnapshot, cdir: PurePosixPath, out: _Out) -> None:
    api = snap.api
    if api is None:
        if snap.api_note:
            out.add("cluster.skipped", Severity.INFO, Area.CLUSTER, "API", f"cluster checks skipped: {snap.api_note}")
        return
    if api.error is not None:
        out.add(
            "cluster.unreachable",
            Severity.WARNING,
            Area.CLUSTER,
            redact_url(api.server),
            f"the API cannot be used through {api.kubeconfig}: {redact_urls(api.error)}",
            "cluster checks were skipped",
        )
        return
    for name, err in sorted(api.errors.items()):
        out.add(
            "cluster.unreadable",
            Severity.INFO,
            Area.CLUSTER,
            name,
            f"cannot read {name}: {err}",
            "use an admin kubeconfig (--kubeconfig /etc/kubernetes/admin.conf)",
        )
    ca = _cert(snap.content(cdir / "ca.crt"), "ca.crt")
    fp_ca = _cert(snap.content(cdir / "front-proxy-ca.crt"), "front-proxy-ca.crt")
    nodes = api.objects.get("nodes")
    if isinstance(nodes, dict):
        for node in nodes.get("items") or []:
            name = (node.get("metadata") or {}).get("name", "?")
            ready = next(
                (c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None
            )
            if ready is None or ready.get("status") != "True":
                reason = (ready or {}).get("message") or (ready or {}).get("reason") or "no Ready condition"
                out.add(
                    "cluster.node-not-ready",
                    Severity.WARNING,
                    Area.CLUSTER,
                    f"node/{name}",
                    f"node {name} is not Ready: {reason}",
                    "check the kubelet on that node",
                )
            else:
                out.add("cluster.node-ready", Severity.OK, Area.CLUSTER, f"node/{name}", f"node {name} is Ready")
    csrs = api.objects.get("csrs")
    if isinstance(csrs, dict):
        for csr in csrs.get("items") or []:
            conditions = (csr.get("status") or {}).get("conditions") or []
            if not conditions:
                name = (csr.get("metadata") or {}).get("name", "?")
                who = (csr.get("spec") or {}).get("username", "?")
                out.add(
                    "cluster.csr-pending",
                    Severity.WARNING,
                    Area.CLUSTER,
                    f"csr/{name}",
                    f"certificate signing request {name} from {who} is pending",
                    f"approve it if expected: kubectl certificate approve {name}",
                )
    info = api.objects.get("cluster-info")
    if isinstance(info, dict) and ca is not None:
        kc = ((info.get("data") or {}).get("kubeconfig")) or ""
        try:
            theirs = _cert(first_cluster_ca(kc), "cluster-info CA")
        except ConfigError:
            theirs = None
        if theirs is None or theirs != ca:
            out.add(
                "cluster.cluster-info-ca",
                Severity.ERROR,
                Area.CLUSTER,
                "configmap/kube-public/cluster-info",
                "kube-public/cluster-info holds a CA that is not pki/ca.crt: joining nodes would trust the wrong CA",
                "update it: kubeadm init phase bootstrap-token (or kuberevive recover)",
            )
        else:
            out.add(
                "cluster.cluster-info-ca",
                Severity.OK,
                Area.CLUSTER,
                "configmap/kube-public/cluster-info",
                "cluster-info holds pki/ca.crt",
            )
    auth = api.objects.get("extension-apiserver-authentication")
    if isinstance(auth, dict):
        data = auth.get("data") or {}
        for key, want, file in (
            ("client-ca-file", ca, "ca.crt"),
            ("requestheader-client-ca-file", fp_ca, "front-proxy-ca.crt"),
        ):
            if want is None or key not in data:
                continue
            bundle = _pems(str(data[key]).encode())
            subject = f"configmap/kube-system/extension-apiserver-authentication ({key})"
            if want not in bundle:
                out.add(
                    "cluster.extension-auth-ca",
                    Severity.ERROR,
                    Area.CLUSTER,
                    subject,
                    f"extension-apiserver-authentication {key} does not hold pki/{file}",
                    "restart kube-apiserver so that it republishes its CAs",
                )
            elif len(bundle) > 1:
                out.add(
                    "cluster.extension-auth-ca",
                    Severity.INFO,
                    Area.CLUSTER,
                    subject,
                    f"extension-apiserver-authentication {key} holds {len(bundle)} CAs, pki/{file} among them",
                )
    roots = api.objects.get("kube-root-ca")
    if isinstance(roots, dict) and ca is not None:
        stale = []
        for cm in roots.get("items") or []:
            bundle = _pems(str((cm.get("data") or {}).get("ca.crt", "")).encode())
            if ca not in bundle:
                stale.append((cm.get("metadata") or {}).get("namespace", "?"))
        for ns in stale:
            out.add(
                "cluster.root-ca-configmap",
                Severity.WARNING,
                Area.CLUSTER,
                f"configmap/{ns}/kube-root-ca.crt",
                f"kube-root-ca.crt in namespace {ns} is not pki/ca.crt",
                "the controller-manager rewrites it once it runs with the current ca.crt; "
                "pods keep the old CA until restarted",
            )
        if not stale and roots.get("items"):
            out.add(
                "cluster.root-ca-configmap",
                Severity.OK,
                Area.CLUSTER,
                "configmap/*/kube-root-ca.crt",
                f"all {len(roots['items'])} kube-root-ca.crt ConfigMaps hold pki/ca.crt",
            )


def files_needed(cfg: KubeadmConfig | None) -> Iterable[PurePosixPath]:
    """Paths the collector should read beyond the fixed set: the config's certificatesDir."""
    if cfg is not None:
        yield PurePosixPath(cfg.cluster.certificates_dir)
    yield PurePosixPath(DEFAULT_CERTIFICATES_DIR)


def etcd_data_dir(snap: NodeSnapshot) -> PurePosixPath:
    """``--data-dir`` of a surviving etcd manifest, else the default."""
    data = snap.content(MANIFESTS_DIR / "etcd.yaml")
    if data is not None:
        try:
            value = manifest_flags(parse_manifest(data)).get("data-dir")
        except ConfigError:
            value = None
        if value and value.startswith("/"):
            return PurePosixPath(value)
    return PurePosixPath(DEFAULT_ETCD_DATA_DIR)


_MEMBER_RE = re.compile(rb'\{"id":(\d+),"peerURLs":\[([^\]]*)\](?:,"isLearner":(?:true|false))?,"name":"([^"\\]*)"')
_HEX_BYTES = frozenset(b"0123456789abcdef")


@dataclass(frozen=True)
class EtcdMemberRecord:
    id: int
    name: str
    peer_urls: tuple[str, ...]


def etcd_member_records(chunk: bytes) -> list[EtcdMemberRecord]:
    """The membership JSON etcd stores for each member (``{"id":...,"peerURLs":[...],"name":...}``) found in raw
    bytes of its bbolt db or WAL, in order."""
    out = []
    for m in _MEMBER_RE.finditer(chunk):
        try:
            urls = json.loads(b"[" + m.group(2) + b"]")
        except ValueError:
            urls = []
        name = m.group(3).decode(errors="replace")
        out.append(EtcdMemberRecord(int(m.group(1)), name, tuple(u for u in urls if isinstance(u, str))))
    return out


def etcd_removed_ids(chunk: bytes) -> set[int]:
    """Ids of removed members in raw bytes of etcd's db: its ``members_removed`` bucket maps the id (hex) to
    ``removed``; a removed member's old record may linger in free pages, so these ids are not members.

    What ``(?<![0-9a-f])([0-9a-f]{1,16})removed`` finds with ``finditer``, found from each literal ``removed``
    backwards: the regex tries every byte of the chunk (11 s for a 16 MiB chunk of a lab db, twice per recover
    run, on a loaded machine), this only the few places where the word occurs."""
    out: set[int] = set()
    last_end = 0  # finditer's matches do not overlap
    at = chunk.find(b"removed")
    while at != -1:
        start = at
        while start > last_end and at - start < 16 and chunk[start - 1] in _HEX_BYTES:
            start -= 1
        if start < at and (start == 0 or chunk[start - 1] not in _HEX_BYTES):
            out.add(int(chunk[start:at], 16))
            last_end = at + len(b"removed")
        at = chunk.find(b"removed", at + 1)
    return out


def live_members(records: Sequence[EtcdMemberRecord], removed: set[int]) -> dict[str, tuple[str, ...]]:
    """Name -> peer URLs of the records not removed (a later record of a name wins)."""
    return {r.name: r.peer_urls for r in records if r.id not in removed}


def etcd_members(chunk: bytes) -> dict[str, tuple[str, ...]]:
    """Members (name -> peer URLs) in raw bytes of etcd's bbolt db or WAL, removed ones left out."""
    return live_members(etcd_member_records(chunk), etcd_removed_ids(chunk))


def etcd_member_names(chunk: bytes) -> set[str]:
    """Member names in raw bytes of etcd's bbolt db or WAL (:func:`etcd_members`)."""
    return set(etcd_members(chunk))
