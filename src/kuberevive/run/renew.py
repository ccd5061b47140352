"""``kuberevive certs renew``: plan, and execute step by step under the node's lock, resumable through a journal.

Steps (only those the targets need, in this order):

1. ``kubelet-client``: a new client certificate for ``system:node:<node>`` signed locally with ``ca.key``, written
   as ``/var/lib/kubelet/pki/kubelet-client-<stamp>.pem`` with ``kubelet-client-current.pem`` pointed at it (the
   old link moved aside), kubelet.conf rewritten only when it does not refer to that link yet;
2. ``kubelet-restart``: ``systemctl restart kubelet`` (containers keep running), so that it can run the static pods;
3. ``leaves``: every expiring, expired or invalid leaf of kubeadm's list, new key and certificate;
4. ``kubeconfigs``: every kubeconfig whose embedded client certificate needs it (admin.conf included);
5. ``restart-control-plane``: the control-plane containers whose files changed are stopped, one after the other
   in :data:`STOP_ORDER` (the API server first), each gracefully (SIGTERM, awaited: a kube-apiserver fails
   ``/readyz`` for the load balancer and drains its requests), and the kubelet restarted (which also clears a
   crash-loop back-off); the kubelet starts them again from their unchanged static Pod manifests, reading the new
   files;
6. ``api-ready``: THIS node's API server (its advertise address, not admin.conf's server: on HA the load balancer
   may pick a master not renewed yet) answers ``/readyz`` to admin.conf's renewed credentials;
7. ``node-ready``: this node is Ready with a heartbeat posted after the kubelet restart (asked of its own API server);
8. ``other-kubelets`` (``--all-nodes``): on every other node, over SSH, an expiring, expired or invalid kubelet client
   certificate is re-issued in place (signed locally with ``ca.key``, a new ``kubelet-client-<stamp>.pem`` and the
   ``kubelet-client-current.pem`` link swapped, the old one kept), an expiring or expired self-signed serving
   certificate is moved aside, the kubelet restarted (containers keep running) and the Node awaited Ready. Each
   node's files are recorded in the journal before they are written and the node marked done after; a node that
   cannot be reached is reported at the end, after the others are done, and the next run resumes with it.

The renewed certificates are valid for the ``certificateValidityPeriod`` of ``--config``, else of the stored
ClusterConfiguration (``kube-system/kubeadm-config`` through admin.conf) when the API answers, else kubeadm's default
(one year); the plan says which, and the journal keeps it.

The journal (``/var/lib/kuberevive/renew/journal.json``, 0600) records the targets and, before a step writes, the
exact files it writes, so a run killed at any point resumes with ``--apply`` and writes the same keys. Replaced
files are moved aside to ``/var/lib/kuberevive/backup/<timestamp>/``. The lock is recover's: the two never run
at the same time. With ``--root`` other than ``/`` the files are written but nothing is restarted or awaited.
Test hook (as recover's): ``KUBEREVIVE_FAULT_AFTER_STEP=<n>`` SIGKILLs the run right after step n is done.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Protocol, Self, cast
from urllib.parse import urlsplit

import yaml
from cryptography import x509

from kuberevive.core import caextend, certs, manifests, pki, salvage, yamlfmt
from kuberevive.core import diagnose as d
from kuberevive.core.diagnose import detect_role, resolve_config
from kuberevive.core.etcdsafety import Member
from kuberevive.core.kubeconfig import (
    ADMIN_CONF,
    CONTROLLER_MANAGER_CONF,
    SCHEDULER_CONF,
    SUPER_ADMIN_CONF,
    Kubeconfig,
    local_api_endpoint,
)
from kuberevive.core.retrust import ready_since
from kuberevive.errors import CollectError, EtcdError, KubeApiError, KubereviveError, NotAControlPlane, PlanError
from kuberevive.io.etcd import EtcdClient
from kuberevive.io.host import STOP_GRACE_SECONDS, Host, LocalHost
from kuberevive.io.kubeapi import KubeApi
from kuberevive.io.noderoot import NodeRoot
from kuberevive.io.remotehost import SshHost
from kuberevive.io.snapshot import collect
from kuberevive.io.transport import Deadline, Transport, run_on_nodes
from kuberevive.model import paths, yamlload
from kuberevive.model.artifacts import Artifact, ArtifactKind
from kuberevive.model.config import KubeadmConfig
from kuberevive.model.document import rfc3339_or_none
from kuberevive.model.inventory import CONTROL_PLANE, Inventory, InventoryNode, from_node_objects
from kuberevive.model.kubeadm_yaml import format_duration, parse_duration
from kuberevive.model.recover import RetrustOptions
from kuberevive.run.context import Effects, Faults, check_table, etcd_client_files
from kuberevive.run.journal import RenewJournal
from kuberevive.run.retrust import connect
from kuberevive.waiting import poll_until, wait_for

JOURNAL = paths.RENEW_DIR / "journal.json"
API_TIMEOUT = 300.0
NODE_TIMEOUT = 240.0
KUBELET_TIMEOUT = 60.0
#: Control-plane component -> the renewable items it reads at start.
COMPONENT_FILES = {
    "etcd": ("etcd-server", "etcd-peer", "etcd-healthcheck-client"),
    "kube-apiserver": ("apiserver", "apiserver-kubelet-client", "apiserver-etcd-client", "front-proxy-client"),
    "kube-controller-manager": (CONTROLLER_MANAGER_CONF,),
    "kube-scheduler": (SCHEDULER_CONF,),
}
#: The order the control-plane containers of one node are stopped in (each gracefully, awaited: io.host.crictl_stop):
#: the API server first, so that it fails ``/readyz`` for the load balancer and drains its requests while its etcd
#: still answers (stopped first, etcd would make the API server that still serves answer 500s); then etcd, which
#: hands its leadership over on SIGTERM; then the controller-manager and the scheduler.
STOP_ORDER = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler")


class Stopper(Protocol):
    """A host that reads its files and stops containers (:class:`LocalHost`, :class:`SshHost`)."""

    def read(self, node_path: PurePosixPath) -> bytes | None: ...

    def stop_containers(self, name: str, cri_socket: str | None = None, grace: int = STOP_GRACE_SECONDS) -> int: ...


def stop_control_plane(host: Stopper, components: Sequence[str], cri_socket: str | None = None) -> list[str]:
    """Stop ``components`` of one node in :data:`STOP_ORDER`, one after the other, each gracefully and awaited (the
    kubelet starts them again from their manifests), with the grace of that node's own static Pod
    (:func:`manifests.stop_grace_seconds`: a kube-apiserver's shutdown delay and drain); ``component (n)`` for each,
    in that order."""
    ordered = sorted(components, key=lambda c: STOP_ORDER.index(c) if c in STOP_ORDER else len(STOP_ORDER))
    out = []
    for c in ordered:
        grace = manifests.stop_grace_seconds(c, host.read(manifests.manifest_path(c)))
        out.append(f"{c} ({host.stop_containers(c, cri_socket, grace)})")
    return out


STEP_TITLES = {
    "kubelet-client": "renew the kubelet's client certificate (signed locally with ca.key)",
    "kubelet-restart": "restart the kubelet (its containers keep running)",
    "leaves": "renew the leaf certificates",
    "kubeconfigs": "renew the kubeconfigs' client certificates",
    "peer-certificates": "other control-plane nodes over SSH: renew their leaves, kubeconfigs and kubelet client "
    "certificate with their own SANs (no restart yet)",
    "restart-control-plane": "restart the control-plane containers through the kubelet",
    "api-ready": "wait for this node's API server (/readyz at its advertise address, admin.conf's credentials)",
    "node-ready": "wait for this node to be Ready",
    "peer-restarts": "other control-plane nodes one at a time: restart their control-plane containers and kubelet, "
    "wait for that node's API server, etcd member and Node; then the API through the control-plane endpoint",
    "other-kubelets": "other nodes over SSH: renew the kubelet's client certificate, restart the kubelet, wait Ready",
}

Progress = Callable[[str], None]


def read_report(
    root: str, config_file: str | None, warning_days: int, *, live: bool
) -> tuple[certs.CertsReport, KubeadmConfig | None]:
    """Read the node under ``root`` and check it: the report and the resolved configuration (or None)."""
    try:
        snap = collect(root, config_file=config_file, offline=True, live=live)
    except CollectError as exc:  # diagnose's exit 3 means "expiring" here: this is a plain failure (1)
        raise KubereviveError(exc.message, exc.hint) from exc
    role, _evidence = detect_role(snap)
    if role != "control-plane" and config_file is None:
        raise NotAControlPlane(
            f"{snap.root} is not a kubeadm control-plane node (no manifests, pki/ca.key or admin.conf)",
            "run it on a control-plane node, or pass its root directory with --root",
        )
    resolved = resolve_config(snap)
    cfg = resolved.config
    node_name = cfg.node_name if cfg is not None else snap.hostname
    return certs.check(snap, cfg, node_name, snap.now, warning_days, resolved.source), cfg


def _node_objects(root: NodeRoot) -> list[dict[str, Any]]:
    data = root.read(paths.KUBERNETES_DIR / ADMIN_CONF)
    if data is None:
        raise PlanError("/etc/kubernetes/admin.conf is missing", "")
    api = KubeApi.from_kubeconfig(data, read_file=lambda p: root.read(p) or b"", timeout=10)
    return list(api.get("/api/v1/nodes").get("items") or [])


def read_files(host: Host, wanted: Sequence[PurePosixPath]) -> dict[PurePosixPath, d.FileInfo]:
    """The files among ``wanted`` that exist on ``host``, as diagnose's snapshot holds them (one command over SSH)."""
    got = {p: b for p, b in host.read_many(wanted).items() if b is not None}
    return {p: d.FileInfo(p, "file", 0o600, 0, 0, len(data), data) for p, data in got.items()}


def read_kubelet_files(host: Host, extra: Sequence[PurePosixPath] = ()) -> dict[PurePosixPath, d.FileInfo]:
    """The kubelet's kubelet.conf and certificates on a node (and ``extra``), as diagnose's snapshot holds them."""
    wanted = {paths.KUBELET_CONF, paths.KUBELET_CLIENT_CURRENT, paths.KUBELET_SERVING_CURRENT}
    wanted |= {paths.KUBELET_SERVING_CERT, paths.KUBELET_SERVING_CERT.with_suffix(".key")}
    files = read_files(host, [*sorted(wanted), *extra])
    conf = files.get(paths.KUBELET_CONF)
    named: set[PurePosixPath] = set()
    if conf is not None and conf.content is not None:
        try:
            _cluster, user = Kubeconfig.from_yaml(conf.content).current()
            named = {PurePosixPath(p) for p in (user.client_certificate, user.client_key) if p}
        except (KubereviveError, ValueError, TypeError):
            pass
    more = sorted(named - set(files) - wanted)
    return files | (read_files(host, more) if more else {})


#: Seconds the node list (``--all-nodes``) is tried for, and the pause between tries: right after a repair the API
#: servers behind the load balancer restart one by one, and a request can meet one that is going away (seen in CI: an
#: SSL EOF).
NODE_LIST_WAIT = 10.0
NODE_LIST_PAUSE = 2.0


def node_inventory(node: NodeRoot, options: RetrustOptions) -> Inventory:
    """The nodes to reach over SSH: ``--inventory``, or else the cluster's Node objects through admin.conf."""
    if options.inventory is not None:
        return options.inventory
    found: list[Inventory] = []

    def listed() -> tuple[bool, str]:
        found.append(from_node_objects(_node_objects(node), options.ssh_user, options.ssh_port))
        return True, ""

    waited = poll_until("the node list", NODE_LIST_WAIT, listed, NODE_LIST_PAUSE)
    if not waited.ok:
        raise PlanError(
            f"--all-nodes: the node list cannot be read from the API ({waited.last})",
            "pass the nodes with --inventory FILE (docs/inventory.md)",
        )
    return found[0]


def check_other_nodes(
    report: certs.CertsReport,
    root: str,
    options: RetrustOptions,
    progress: Progress,
    cfg: KubeadmConfig | None = None,
) -> certs.CertsReport:
    """``report`` plus the kubelet certificates of every other node, read over SSH (the inventory, or the
    cluster's Node objects through admin.conf), and with ``cfg`` every certificate of each other control-plane node;
    a node that cannot be read is an ``invalid`` item."""
    return certs.with_items(report, other_node_items(report, root, options, progress, cfg))


def _pki_ca(node: NodeRoot) -> tuple[x509.Certificate | None, bool]:
    """This node's cluster CA certificate (None: missing) and whether its key is there."""
    cdir = paths.PKI_DIR
    ca_data = node.read(cdir / "ca.crt")
    ca = pki.load_certificate(ca_data, str(cdir / "ca.crt")) if ca_data is not None else None
    return ca, node.exists(cdir / "ca.key")


def other_node_items(
    report: certs.CertsReport,
    root: str,
    options: RetrustOptions,
    progress: Progress,
    cfg: KubeadmConfig | None = None,
) -> list[certs.CertItem]:
    """The kubelet items of every other node, every item of each other control-plane node (with ``cfg``: its
    pki, kubeconfigs and kubelet, checked as this node's; :func:`check_other_nodes`)."""
    node = NodeRoot(Path(root))
    inventory = node_inventory(node, options)
    others = [n for n in inventory.nodes if n.name != report.node_name]
    ca, ca_key = _pki_ca(node)

    def one(n: InventoryNode, t: Transport) -> list[certs.CertItem]:
        if cfg is not None and n.is_control_plane:
            peer = read_peer(SshHost(t, n.name), n.name, cfg)
            return peer_items(peer, report.now, report.warning_days, report.config_source)
        files = read_kubelet_files(SshHost(t, n.name))
        snap = d.NodeSnapshot(root=n.name, now=report.now, hostname=n.name, files=files)
        return certs.kubelet_items(snap, ca, ca_key, n.name, report.now, report.warning_days, other_node=n.name)

    progress(f"reading the kubelet certificates of {len(others)} other node(s) over SSH")
    results = run_on_nodes(
        others, one, connect(options), name=lambda n: n.name, concurrency=options.concurrency, timeout=120
    )
    extra: list[certs.CertItem] = []
    for name, r in results.items():
        extra += r.value if r.ok and r.value is not None else [certs.unreachable_item(name, r.error or "")]
    extra += [certs.unreachable_item(name, why) for name, why in inventory.skipped]
    return extra


def plan_other_kubelets(
    report: certs.CertsReport,
    root: str,
    options: RetrustOptions,
    everything: bool,
    progress: Progress,
    cfg: KubeadmConfig | None = None,
) -> tuple[list[certs.NodeRenewal] | None, str]:
    """What ``--all-nodes`` would do on each other node, read now over SSH; None (and why) when the node list
    cannot be read yet (no ``--inventory`` and the API does not answer: it is read again once the API is back)."""
    try:
        items = other_node_items(report, root, options, progress, cfg)
    except PlanError as exc:
        if options.inventory is not None:
            raise
        return None, (
            f"the other nodes are read after the API server is back ({exc.message}); "
            "pass --inventory FILE to see them in the plan"
        )
    by_node: dict[str, list[certs.CertItem]] = {}
    for item in items:
        by_node.setdefault(item.node or "", []).append(item)
    return [certs.node_renewal(name, its, everything) for name, its in by_node.items()], ""


#: The v1beta4 ClusterConfiguration's validity fields -> the :class:`ClusterConfiguration` attribute (its default).
VALIDITY_FIELDS = {
    "certificateValidityPeriod": "certificate_validity",
    "caCertificateValidityPeriod": "ca_certificate_validity",
}


def stored_validity(
    root: str, config_file: str | None, cfg: KubeadmConfig, key: str = "certificateValidityPeriod"
) -> tuple[timedelta, str]:
    """The validity ``key`` (one of :data:`VALIDITY_FIELDS`: renewed leaves', or ``caCertificateValidityPeriod``
    for ``ca extend``) and where it comes from: ``--config``, else the stored ClusterConfiguration
    (``kube-system/kubeadm-config``, read through admin.conf), else kubeadm's default."""
    validity: timedelta = getattr(cfg.cluster, VALIDITY_FIELDS[key])
    if config_file is not None:
        return validity, f"--config {config_file}"
    node = NodeRoot(Path(root))
    try:
        api = admin_client(node, timeout=5)
        cm = api.get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
        text = str(((cm or {}).get("data") or {}).get("ClusterConfiguration") or "")
        raw = yaml.safe_load(text) if text else None
        if not isinstance(raw, dict):
            raise PlanError("kube-system/kubeadm-config has no ClusterConfiguration", "")
        value = raw.get(key)
        stored = parse_duration(str(value), key) if value else validity
        return stored, "the stored ClusterConfiguration (kube-system/kubeadm-config)"
    except (KubereviveError, yaml.YAMLError, ValueError) as exc:
        why = exc.message if isinstance(exc, KubereviveError) else str(exc)
        return validity, f"kubeadm's default (the stored ClusterConfiguration cannot be read: {why})"


def steps_for(targets: list[str], live: bool, all_nodes: bool = False) -> list[str]:
    """The step ids the targets need (``live``: the node's own root, so restarts and waits apply; ``all_nodes``:
    the other nodes' kubelets too, last, once the API answers)."""
    kinds = {name: group_of(name) for name in targets}
    steps: list[str] = []
    if certs.KUBELET_CLIENT in targets:
        steps += ["kubelet-client"] + (["kubelet-restart"] if live else [])
    if certs.Group.CERTIFICATE in kinds.values():
        steps.append("leaves")
    if certs.Group.KUBECONFIG in kinds.values():
        steps.append("kubeconfigs")
    if live and all_nodes:
        steps.append("peer-certificates")  # before this node restarts: with every certificate expired, etcd's
        # members need each other's new certificates to have a quorum again
    if live and any(set(files) & set(targets) for files in COMPONENT_FILES.values()):
        steps.append("restart-control-plane")
    if live and targets:
        steps.append("api-ready")
    if live and certs.KUBELET_CLIENT in targets:
        steps.append("node-ready")
    if live and all_nodes:
        steps += ([] if "api-ready" in steps else ["api-ready"]) + ["peer-restarts", "other-kubelets"]
    return steps


def group_of(name: str) -> certs.Group:
    if name == certs.KUBELET_CLIENT:
        return certs.Group.KUBELET
    if name in (ADMIN_CONF, SUPER_ADMIN_CONF, CONTROLLER_MANAGER_CONF, SCHEDULER_CONF):
        return certs.Group.KUBECONFIG
    return certs.Group.CERTIFICATE


@dataclass(kw_only=True)
class StepsResult:
    """What a resumable command (``certs renew``, ``ca extend``) reports: its steps (planned, or left when resumed),
    where the configuration came from, what was applied and noticed, and how long it took."""

    #: Step id -> title.
    titles: ClassVar[Mapping[str, str]]
    steps: list[str]
    config_source: str = ""
    applied: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    resumed: bool = False
    seconds: float | None = None

    def steps_dict(self) -> dict[str, Any]:
        return {
            "steps": [{"id": s, "title": self.titles[s]} for s in self.steps],
            "config_source": self.config_source,
            "applied": self.applied,
            "messages": self.messages,
            "resumed": self.resumed,
            "seconds": self.seconds,
        }


@dataclass(kw_only=True)
class RenewResult(StepsResult):
    titles = STEP_TITLES
    targets: list[dict[str, Any]]
    validity: str = ""
    """The renewed certificates' validity and where it comes from."""
    nodes: list[dict[str, Any]] | None = None
    """``--all-nodes``: what is done on each other node (:meth:`certs.NodeRenewal.as_json`); None: not read yet."""
    nodes_note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "targets": self.targets,
            **self.steps_dict(),
            "validity": self.validity,
            "nodes": self.nodes,
            "nodes_note": self.nodes_note,
        }


def _target_json(item: certs.CertItem) -> dict[str, Any]:
    return {
        "name": item.name,
        "path": item.path,
        "status": item.status.value,
        "not_after": rfc3339_or_none(item.not_after),
        "problems": list(item.problems),
    }


def require_cfg(cfg: KubeadmConfig | None) -> KubeadmConfig:
    if cfg is None:
        raise PlanError(
            "no kubeadm configuration could be reconstructed from this node's files",
            "pass the cluster's kubeadm configuration with --config",
        )
    return cfg


def validity_text(validity: timedelta, source: str) -> str:
    return f"{format_duration(validity)}, from {source}"


def plan(
    root: str,
    config_file: str | None,
    warning_days: int,
    everything: bool,
    *,
    live: bool,
    options: RetrustOptions | None = None,
    progress: Progress = lambda _text: None,
) -> RenewResult:
    """What ``--apply`` would do; reads only. A renewal interrupted earlier is shown as resumed. ``options``:
    ``--all-nodes`` (the other nodes' kubelets, read over SSH)."""
    node = NodeRoot(Path(root))
    journal = RenewJournal.load(node, JOURNAL)
    if journal is not None and journal.status == "running":
        targets = list(journal.targets)
        all_steps = steps_for([t["name"] for t in targets], live, journal.all_nodes)
        todo = [s for s in all_steps if not journal.step_done(s)]
        validity = timedelta(seconds=journal.validity_seconds or 0)
        return RenewResult(
            targets=targets,
            steps=todo,
            config_source=journal.config_source,
            resumed=True,
            validity=validity_text(validity, journal.validity_source),
        )
    report, cfg = read_report(root, config_file, warning_days, live=live)
    items = certs.renewal_targets(report, everything)
    nodes, note = (None, "")
    if options is not None:
        nodes, note = plan_other_kubelets(report, root, options, everything, progress, cfg)
    result = RenewResult(
        targets=[_target_json(i) for i in items],
        steps=[],
        config_source=report.config_source,
        nodes=[n.as_json() for n in nodes] if nodes is not None else None,
        nodes_note=note,
    )
    if items or _nodes_need_work(nodes, options):
        validity, source = stored_validity(root, config_file, require_cfg(cfg))
        result.validity = validity_text(validity, source)
        result.steps = steps_for([i.name for i in items], live, options is not None)
    return result


def _nodes_need_work(nodes: list[certs.NodeRenewal] | None, options: RetrustOptions | None) -> bool:
    """Whether ``--all-nodes`` has something to do: a node to renew or not reached, or nodes not read yet."""
    if options is None:
        return False
    return nodes is None or any(n.restart or not n.reached for n in nodes)


def admin_client(root: NodeRoot, timeout: float = 10) -> KubeApi:
    """A client of the API server with the node's admin.conf (renew's and ca extend's steps that wait for it, and
    the stored ClusterConfiguration's reader)."""
    data = root.read(paths.KUBERNETES_DIR / ADMIN_CONF)
    if data is None:
        raise PlanError("/etc/kubernetes/admin.conf is missing", "restore it, then run the command again")
    return KubeApi.from_kubeconfig(data, read_file=lambda p: root.read(p) or b"", timeout=timeout)


def renew_effects(environ: Mapping[str, str]) -> Effects:
    """The real clients and clocks, and the fault hook ``KUBEREVIVE_FAULT_AFTER_STEP`` from ``environ``."""
    return Effects(api_client=admin_client, faults=Faults.from_environ(environ))


class RenewExecutor:
    """Runs renew's steps; ``ca extend``'s executor extends it with its own steps and table."""

    #: Step id -> title (``ca extend`` has its own steps).
    titles = STEP_TITLES
    #: What resumes a run that stopped (named in a failed wait's error).
    rerun = "kuberevive certs renew --apply"

    def __init__(
        self,
        host: LocalHost,
        journal: RenewJournal,
        cfg: KubeadmConfig,
        progress: Progress,
        result: StepsResult,
        fx: Effects | None = None,
    ) -> None:
        self.fx = fx or renew_effects({})
        self.node = host.root
        self.host = host
        self.journal = journal
        self.cfg = cfg
        self.progress = progress
        self.result = result
        self.targets = [t["name"] for t in journal.targets]
        #: ``--all-nodes``: how to reach the other nodes (None: not given in this run).
        self.options: RetrustOptions | None = None
        #: How the ``other-kubelets`` step opens a node and sees it as a host (tests give fakes).
        self.connect: Callable[[InventoryNode, Deadline], Transport] | None = None
        self.remote: Callable[[Transport, str], Host] = lambda t, name: SshHost(t, name)

    def _pki(self) -> dict[PurePosixPath, bytes]:
        return self.node.read_tree(self.cfg.cluster.certificates_dir)

    def _recorded(self, step: str, compute: Callable[[], list[Artifact]]) -> list[Artifact]:
        artifacts = self.journal.artifacts(step)
        if artifacts is None:
            artifacts = compute()
            self.journal.record_artifacts(step, artifacts)
        return artifacts

    def _write(self, artifacts: list[Artifact]) -> None:
        for r in self.node.write_all(artifacts, force=True):
            if r.moved_aside_to:
                self.result.messages.append(f"{r.artifact.path} moved aside to {r.moved_aside_to}")
        self.progress(f"      wrote {len(artifacts)} file(s)")

    def _now(self) -> datetime:
        return self.fx.utcnow()

    def _wait(self, what: str, timeout: float, probe: Callable[[], tuple[bool, str]], interval: float = 0.5) -> float:
        return wait_for(what, timeout, probe, interval, self.rerun, clock=self.fx.monotonic, sleep=self.fx.sleep)

    # -- steps ----------------------------------------------------------------------------------

    def step_kubelet_client(self) -> None:
        def compute() -> list[Artifact]:
            conf = self.node.read(paths.KUBELET_CONF)
            files = self._pki()
            current = self.node.read(paths.KUBELET_CLIENT_CURRENT)  # its key algorithm is kept
            if current is not None:
                files[paths.KUBELET_CLIENT_CURRENT] = current
            renewed = certs.renew_kubelet_client(
                self.cfg, files, conf, self.journal.node_name, self._now(), self.journal.stamp
            )
            return certs.kubelet_client_artifacts(*renewed)

        arts = self._recorded("kubelet-client", compute)
        pem, rest = arts[0], arts[1:]
        self.node.write_all([pem], force=True)
        current = paths.KUBELET_CLIENT_CURRENT
        aside = self.host.repoint_symlink(current, str(pem.path))
        if aside is not None:
            self.result.messages.append(f"{current} moved aside to {aside}")
        if rest:
            self._write(rest)
        self.progress(f"      {current} -> {pem.path}")

    def _restart_kubelet(self) -> None:
        self.journal.timing("kubelet_restarted", self.fx.clock())
        self.host.restart_unit("kubelet")
        self._wait("the kubelet service", KUBELET_TIMEOUT, lambda: (self.host.unit_active("kubelet"), "not active"))

    def step_kubelet_restart(self) -> None:
        self._restart_kubelet()

    def step_leaves(self) -> None:
        def compute() -> list[Artifact]:
            pki_files, now = self._pki(), self._now()
            out: list[Artifact] = []
            for name in self.targets:
                if group_of(name) is certs.Group.CERTIFICATE:
                    out += certs.renew_leaf(name, self.cfg, pki_files, now)
            return out

        self._write(self._recorded("leaves", compute))

    def step_kubeconfigs(self) -> None:
        def compute() -> list[Artifact]:
            pki_files, now = self._pki(), self._now()
            out: list[Artifact] = []
            for name in self.targets:
                if group_of(name) is certs.Group.KUBECONFIG:
                    path = paths.KUBERNETES_DIR / name
                    data = self.node.read(path)
                    if data is None:
                        raise PlanError(f"{path} disappeared during the renewal", "restore it, then run again")
                    out.append(certs.renew_kubeconfig(path, data, self.cfg, pki_files, now))
            return out

        self._write(self._recorded("kubeconfigs", compute))

    def step_restart_control_plane(self) -> None:
        cri = self.cfg.init.node_registration.cri_socket or None
        components = [c for c, files in COMPONENT_FILES.items() if set(files) & set(self.targets)]
        stopped = stop_control_plane(self.host, components, cri)
        self.progress(f"      stopped: {', '.join(stopped)}; restarting the kubelet (clears any crash-loop back-off)")
        self._restart_kubelet()

    def _api(self) -> KubeApi:
        """A client of admin.conf's server: on HA the control-plane endpoint (the load balancer), which may send a
        request to any master; asked only once every master this run restarts is renewed (:meth:`wait_endpoint`)."""
        return self.fx.api_client(self.node)

    def _own_api(self) -> KubeApi:
        """A client of THIS node's own API server (its advertise address) with admin.conf's credentials: the one
        this run renewed and restarted, whatever the load balancer would pick."""
        return api_at(self, local_api_endpoint(self.cfg))

    def wait_endpoint(self) -> None:
        """Wait until the API answers ``/readyz`` through admin.conf's server (the control-plane endpoint)."""
        api = self._api()
        took = self._wait(f"the API through {api.server} (/readyz)", API_TIMEOUT, api.readyz, 1.0)
        self.progress(f"      the API answers through {api.server} ({took:.0f} s)")

    def step_api_ready(self) -> None:
        api = self._own_api()
        took = self._wait(f"this node's API server (/readyz at {api.server})", API_TIMEOUT, api.readyz, 1.0)
        self.progress(f"      this node's API server is ready ({took:.0f} s)")

    def step_other_kubelets(self) -> None:
        other_kubelets(self)

    def step_peer_certificates(self) -> None:
        step_peer_certificates(self)

    def step_peer_restarts(self) -> None:
        step_peer_restarts(self)

    def step_node_ready(self) -> None:
        api = self._own_api()
        name = self.journal.node_name
        since = datetime.fromtimestamp((self.journal.timing("kubelet_restarted") or self.fx.clock()) - 2, UTC)
        self._wait(
            f"node {name} Ready", NODE_TIMEOUT, lambda: ready_since(api.get(f"/api/v1/nodes/{name}"), since), 1.0
        )

    def run(self, steps: list[str], table: Mapping[str, Callable[[Self], None]]) -> None:
        """Run ``steps`` (ids of ``table``, the executor's checked step table) in order; those the journal
        records as done are skipped."""
        total = len(steps)
        for index, sid in enumerate(steps, start=1):
            if self.journal.step_done(sid):
                self.progress(f"[{index}/{total}] {self.titles[sid]}: done before")
                continue
            self.progress(f"[{index}/{total}] {self.titles[sid]}")
            started = self.fx.monotonic()
            self.journal.mark(sid, "started")
            table[sid](self)
            self.journal.mark(sid, "done", seconds=round(self.fx.monotonic() - started, 3))
            self.result.applied.append(sid)
            self.fx.faults.after(index)


#: Step id -> its handler, in the plan's order; checked against :data:`STEP_TITLES` (renew's step ids) at import.
RENEW_STEPS: dict[str, Callable[[RenewExecutor], None]] = {
    "kubelet-client": RenewExecutor.step_kubelet_client,
    "kubelet-restart": RenewExecutor.step_kubelet_restart,
    "leaves": RenewExecutor.step_leaves,
    "kubeconfigs": RenewExecutor.step_kubeconfigs,
    "peer-certificates": RenewExecutor.step_peer_certificates,
    "restart-control-plane": RenewExecutor.step_restart_control_plane,
    "api-ready": RenewExecutor.step_api_ready,
    "node-ready": RenewExecutor.step_node_ready,
    "peer-restarts": RenewExecutor.step_peer_restarts,
    "other-kubelets": RenewExecutor.step_other_kubelets,
}
check_table(RENEW_STEPS, tuple(STEP_TITLES), "kuberevive.run.renew")


def other_kubelets(ex: RenewExecutor) -> None:
    """The ``other-kubelets`` step: on every other node not done yet, in parallel over SSH, what
    :func:`certs.node_renewal` says (read there now), then the kubelet restarted and the Node awaited Ready.
    Unreachable or failed nodes are reported after the others are done; the next run resumes with them."""
    options = ex.options
    if options is None:
        raise PlanError(
            "this renewal was started with --all-nodes; the other nodes' kubelets are not done yet",
            "run 'kuberevive certs renew --apply --all-nodes' again with the SSH options (--ssh-key, --known-hosts)",
        )
    journal, me = ex.journal, ex.journal.node_name
    inventory = node_inventory(ex.node, options)
    nodes = [
        n
        for n in inventory.nodes
        if n.name != me
        and not n.is_control_plane  # the other control-plane nodes: peer-certificates and peer-restarts
        and journal.other_nodes.get(n.name, {}).get("state") != "done"
    ]
    pki_files = ex._pki()
    ca, _key = _pki_ca(ex.node)
    lock = threading.Lock()  # the nodes run in threads; the journal is one file

    def record(name: str, **values: Any) -> None:
        with lock:
            journal.other_nodes.setdefault(name, {}).update(values)
            journal.save()

    def one(n: InventoryNode, t: Transport) -> list[str]:
        host = ex.remote(t, n.name)
        key = f"node:{n.name}"
        with lock:
            started = journal.other_nodes.get(n.name, {}).get("state") == "started"
            arts = journal.artifacts(key) if started else None
        now = datetime.now(UTC)
        if not started:  # look at the node first; after a kill, what was decided and recorded is carried out
            files = read_kubelet_files(host)
            snap = d.NodeSnapshot(root=n.name, now=now, hostname=n.name, files=files)
            items = certs.kubelet_items(snap, ca, True, n.name, now, journal.warning_days, other_node=n.name)
            todo = certs.node_renewal(n.name, items, journal.everything)
            notes = [f"{n.name}: {note}" for note in todo.notes]
            if not todo.restart:
                record(n.name, state="done", new_serving=False)
                return [*notes, f"{n.name}: nothing to renew ({todo.client.status.value})"]
            arts = []
            if todo.renew_client:
                current = files.get(paths.KUBELET_CLIENT_CURRENT)
                conf = files.get(paths.KUBELET_CONF)
                node_files = dict(pki_files)
                if current is not None and current.content is not None:
                    node_files[paths.KUBELET_CLIENT_CURRENT] = current.content  # its key algorithm is kept
                renewed = certs.renew_kubelet_client(
                    ex.cfg, node_files, conf.content if conf else None, n.name, now, journal.stamp
                )
                arts = certs.kubelet_client_artifacts(*renewed)
            with lock:
                journal.record_artifacts(key, arts)
            record(n.name, state="started", new_serving=todo.new_serving)
        else:
            notes = []
        out = notes + put_kubelet_files(host, n.name, arts or [])
        if journal.other_nodes[n.name].get("new_serving"):
            out += move_aside_serving(host, n.name)
        since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
        host.restart_unit("kubelet")
        api = ex._api()
        path = f"/api/v1/nodes/{n.name}"
        took = wait_for(
            f"node {n.name} Ready", options.node_timeout, lambda: ready_since(api.get(path), since), 1.0, ex.rerun
        )
        record(n.name, state="done")
        return [*out, f"{n.name}: kubelet restarted, Ready after {took:.0f} s"]

    ex.progress(f"      {len(nodes)} other node(s) over SSH")
    connect_to = ex.connect or connect(options)
    results = run_on_nodes(
        nodes, one, connect_to, name=lambda n: n.name, concurrency=options.concurrency, timeout=options.node_timeout
    )
    failed = [f"{name}: {r.error}" for name, r in results.items() if not r.ok]
    failed += [f"{name}: {why}" for name, why in inventory.skipped]
    for r in results.values():
        for line in r.value or []:
            ex.result.messages.append(line)
            ex.progress(f"      {line}")
    if failed:
        names = [f.split(":", 1)[0] for f in failed]
        # a node where nothing was written yet gets a kubelet.conf to copy there by hand
        untouched = [r.node for r in results.values() if not r.ok and r.node not in journal.other_nodes]
        copies = _kubelet_confs_to_copy(ex, untouched)
        by_hand = (
            f"; or by hand on {', '.join(untouched)} (kubeadm's fix for an expired kubelet client certificate): move "
            "aside /etc/kubernetes/kubelet.conf and /var/lib/kubelet/pki/kubelet-client-current.pem, copy "
            f"{paths.RENEW_DIR}/nodes/<node>/kubelet.conf from this node (written now, 0600) to "
            "/etc/kubernetes/kubelet.conf (0600) and run 'systemctl restart kubelet' there"
            if copies
            else ""
        )
        raise PlanError(
            f"the kubelet certificates of {len(failed)} node(s) were not renewed (the other nodes are done): "
            + "; ".join(failed),
            f"make {', '.join(names)} reachable over SSH from this node (or give its address with --inventory FILE), "
            "then run 'kuberevive certs renew --apply --all-nodes' again: it resumes with the nodes left" + by_hand,
        )


def _kubelet_confs_to_copy(ex: RenewExecutor, names: list[str]) -> list[Artifact]:
    """For each node not reached: a kubelet.conf with a new client certificate embedded, written on this node."""
    pki_files, now = ex._pki(), datetime.now(UTC)
    arts = [
        Artifact(
            paths.RENEW_DIR / "nodes" / name / "kubelet.conf",
            0o600,
            ArtifactKind.KUBECONFIG,
            f"kubelet.conf for {name}, to copy there by hand",
            certs.kubelet_conf_to_copy(ex.cfg, pki_files, name, now),
        )
        for name in names
    ]
    if arts:
        ex._write(arts)
    return arts


def move_aside_serving(host: Host, name: str) -> list[str]:
    """Move aside the kubelet's self-signed serving certificate and key: it makes new ones when it starts."""
    out = []
    for p in (paths.KUBELET_SERVING_CERT, paths.KUBELET_SERVING_CERT.with_suffix(".key")):
        aside = host.move_aside(p)
        if aside is not None:
            out.append(f"{name}: {p} moved aside to {aside} (the kubelet makes a new one)")
    return out


def put_kubelet_files(host: Host, name: str, arts: list[Artifact]) -> list[str]:
    """Write the new client pem, point ``kubelet-client-current.pem`` at it (the old link moved aside) and write
    the rest (kubelet.conf; the old one moved aside). Each part is a no-op when done already."""
    if not arts:
        return []
    out = []
    pem, rest = arts[0], arts[1:]
    host.write(pem.path, pem.content, pem.mode)
    current = paths.KUBELET_CLIENT_CURRENT
    if host.readlink(current) != str(pem.path):
        aside = host.move_aside(current)
        if aside is not None:
            out.append(f"{name}: {current} moved aside to {aside}")
        host.replace_symlink(current, str(pem.path))
    out.append(f"{name}: {current} -> {pem.path}")
    for a in rest:
        aside = host.write(a.path, a.content, a.mode)
        out.append(f"{name}: {a.path} rewritten" + (f" ({aside} kept)" if aside else ""))
    return out


def apply(
    root: str,
    config_file: str | None,
    warning_days: int,
    everything: bool,
    progress: Progress,
    environ: Mapping[str, str] | None = None,
    *,
    live: bool,
    options: RetrustOptions | None = None,
    host: LocalHost | None = None,
    effects: Effects | None = None,
) -> RenewResult:
    """Renew what needs it (or resume an interrupted renewal) under the node's lock; ``options``: ``--all-nodes``.
    ``host`` (default: the node at ``root``) and ``effects`` (default: the real clients and clocks, the fault hook
    from ``environ``) are what a test replaces."""
    if options is not None and not live:
        raise PlanError(
            f"--all-nodes renews the other nodes from this node's own root, not from --root {root}",
            "run it on the control-plane node itself, without --root",
        )
    host = host or LocalHost(NodeRoot(Path(root)), live=live)
    node = host.root
    fx = effects or renew_effects(os.environ if environ is None else environ)
    started = fx.monotonic()
    with host.lock("certs renew", error=PlanError):
        journal = RenewJournal.load(node, JOURNAL)
        resumed = journal is not None and journal.status == "running"
        report, cfg_or_none = read_report(root, config_file, warning_days, live=live)
        if journal is None or not resumed:
            result = plan(root, config_file, warning_days, everything, live=live, options=options, progress=progress)
            if not result.steps:
                return result
            cfg = require_cfg(cfg_or_none)
            validity, source = stored_validity(root, config_file, cfg)
            if journal is not None:  # a finished renewal, and now another one
                node.move_aside(JOURNAL)
            journal = RenewJournal.new(
                node,
                JOURNAL,
                targets=result.targets,
                node_name=report.node_name,
                config_source=report.config_source,
                stamp=fx.utcnow().strftime("%Y-%m-%d-%H-%M-%S"),
                all_nodes=options is not None,
                everything=everything,
                warning_days=warning_days,
                validity_seconds=validity.total_seconds(),
                validity_source=source,
            )
        else:
            assert journal is not None
            cfg = require_cfg(cfg_or_none)
            targets = list(journal.targets)
            result = RenewResult(
                targets=targets,
                steps=steps_for([t["name"] for t in targets], live, journal.all_nodes),
                config_source=journal.config_source,
                resumed=True,
            )
            progress(f"resuming the renewal started at {journal.started_at} (journal {JOURNAL})")
        validity = timedelta(seconds=journal.validity_seconds or cfg.cluster.certificate_validity.total_seconds())
        result.validity = validity_text(validity, journal.validity_source or "the configuration")
        cfg = replace(cfg, cluster=replace(cfg.cluster, certificate_validity=validity))
        executor = RenewExecutor(host, journal, cfg, progress, result, fx)
        executor.options = options
        try:
            executor.run(result.steps, RENEW_STEPS)
        except KubeApiError as exc:
            raise PlanError(
                f"the renewal stopped at a step that talks to the API server: {exc.message}",
                "fix the cause, then run 'kuberevive certs renew --apply' again: it resumes where it stopped",
            ) from exc
        except KubereviveError as exc:
            if journal.all_nodes and "resumes" not in exc.hint:
                exc.hint = (exc.hint + "; " if exc.hint else "") + "then run 'kuberevive certs renew --apply "
                exc.hint += "--all-nodes' again: it resumes where it stopped"
            raise
        journal.finish()
    result.seconds = round(fx.monotonic() - started, 1)
    if not live:
        result.messages.append(f"--root {root}: files written; nothing was restarted (restart the control plane)")
    return result


# ---------------------------------------------------------------- HA: the other control-plane nodes ("peers")
# The other control-plane nodes of an HA control plane ("peers"), over SSH: ``certs check --all-nodes`` reads each
# one's certificates like this node's, ``certs renew --apply --all-nodes`` renews them with that node's own SANs and
# restarts the control planes one node at a time (docs/certs.md, "HA").
#
# A peer is a node of the inventory (``--inventory``, or the Node objects) with the control-plane role; when neither
# can be read (every certificate expired: the API does not answer), the members of this node's etcd (stacked etcd:
# one member per control-plane node; name and peer URL host).
#
# Renewal on a peer, two steps of ``certs renew`` (:data:`kuberevive.run.renew.RENEW_STEPS`):
#
# * ``peer-certificates`` (before this node's control plane restarts, so that with every certificate expired the
#   etcd members can reach each other again): on each peer, its files are read, checked (:func:`certs.check` with the
#   peer's node name and advertise address) and what needs it is renewed, signed with this node's CA keys (the same
#   CAs; a peer with another CA is refused): leaves (with the peer's own SANs plus the old certificate's),
#   kubeconfigs, the kubelet's client certificate (a new ``kubelet-client-<stamp>.pem``, the link swapped). The files
#   are recorded in the journal before anything is written there; nothing is restarted yet.
# * ``peer-restarts`` (after this node's API server and etcd are healthy again): ONE peer at a time, its control-plane
#   containers whose files changed are stopped gracefully in :data:`STOP_ORDER` (the kubelet starts them again) and its
#   kubelet restarted; the next peer starts only when that peer's own API server answers ``/readyz``, its etcd member
#   is healthy and its Node is Ready (asked of this node's own API server), so an HA API (and etcd quorum) stays up.
#   A failure stops the step there (the next run resumes). Every wait until then asks a given API server, never the
#   load balancer (with every master expired it may pick one not renewed yet); once every master is done, the API is
#   awaited through admin.conf's server (the control-plane endpoint), once.

CONTROL_PLANE_ROLE = "control-plane"
#: Time limit of one peer's API server, etcd member and Node after its restart.
PEER_TIMEOUT = 300.0
#: How long ``peer-certificates`` asks this node's etcd for its members when the API cannot list the nodes (the
#: kubelet restarted by this run may still be starting etcd).
ETCD_LIST_TIMEOUT = 90.0


class PeerHost(Host, Protocol):
    """A peer as a host that can also stop containers (:class:`SshHost`)."""

    def stop_containers(self, name: str, cri_socket: str | None = None, grace: int = STOP_GRACE_SECONDS) -> int: ...


@dataclass(frozen=True)
class Peer:
    """One other control-plane node as read over SSH: its files, its configuration (this cluster's, with its node
    name and advertise address) and its endpoints."""

    name: str
    files: dict[PurePosixPath, d.FileInfo]
    cfg: KubeadmConfig
    endpoints: salvage.PeerEndpoints

    def content(self) -> dict[PurePosixPath, bytes]:
        return {p: f.content for p, f in self.files.items() if f.content is not None}


def control_plane_paths(cfg: KubeadmConfig) -> list[PurePosixPath]:
    """What :func:`certs.check` reads on a control-plane node besides the kubelet's files, and the two manifests
    that say where its API server and etcd answer."""
    cdir = str(certs.certificates_dir(cfg))
    out = [p for spec in pki.certificate_specs(cfg) for p in (spec.cert_path(cdir), spec.key_path(cdir))]
    out += [paths.KUBERNETES_DIR / name for name, _required in certs.CHECKED_KUBECONFIGS]
    return [*out, paths.APISERVER_MANIFEST, paths.ETCD_MANIFEST]


def read_peer(host: Host, name: str, cfg: KubeadmConfig) -> Peer:
    """A peer's files over SSH, and its configuration: ``cfg`` with the peer's node name and the advertise address
    kubeadm wrote on its kube-apiserver manifest (so its leaves get its own SANs)."""
    files = read_kubelet_files(host, control_plane_paths(cfg))

    def content(p: PurePosixPath) -> bytes | None:
        f = files.get(p)
        return f.content if f is not None else None

    endpoints = salvage.peer_endpoints(name, content(paths.APISERVER_MANIFEST), content(paths.ETCD_MANIFEST))
    init = cfg.init
    peer_cfg = replace(
        cfg,
        init=replace(
            init,
            node_registration=replace(init.node_registration, name=name),
            local_api_endpoint=replace(
                init.local_api_endpoint, advertise_address=endpoints.api_host, bind_port=endpoints.api_port
            ),
        ),
    )
    return Peer(name, files, peer_cfg, endpoints)


def peer_items(peer: Peer, now: datetime, warning_days: int, source: str) -> list[certs.CertItem]:
    """Every certificate row of a peer, as ``certs check`` shows this node's, each with ``node`` set."""
    snap = d.NodeSnapshot(root=peer.name, now=now, hostname=peer.name, files=peer.files)
    report = certs.check(snap, peer.cfg, peer.name, now, warning_days, source)
    return [replace(i, node=peer.name) for i in report.items]


def with_local_ca_keys(peer: Peer, local_pki: dict[PurePosixPath, bytes]) -> Peer:
    """``peer`` holding this node's CA keys (renewal signs with them): each of the peer's CA certificates must be
    the same CA as this node's (subject and key); a PlanError names the one that is not."""
    cdir = certs.certificates_dir(peer.cfg)
    files = dict(peer.files)
    for crt, key in paths.CA_PAIRS:
        mine, theirs, my_key = local_pki.get(cdir / crt), peer.content().get(cdir / crt), local_pki.get(cdir / key)
        if theirs is None or mine is None or my_key is None:
            continue
        a, b = pki.load_certificate(mine, crt), pki.load_certificate(theirs, f"{peer.name}:{crt}")
        if not caextend.same_ca(a, b):
            raise PlanError(
                f"{peer.name}: its {cdir / crt} is another CA than this node's; nothing was written there",
                "a control-plane node of this cluster holds the same CAs: check the inventory",
            )
        files[cdir / key] = d.FileInfo(cdir / key, "file", 0o600, 0, 0, len(my_key), my_key)
    return replace(peer, files=files)


@dataclass(frozen=True)
class PeerRenewal:
    """What is written on a peer: the kubelet's new client pem (and kubelet.conf), the other files, and the
    control-plane components that read a renewed file at start (stopped, then started by its kubelet)."""

    kubelet: list[Artifact]
    files: list[Artifact]
    components: list[str]
    names: list[str]
    new_serving: bool
    """The kubelet's expiring self-signed serving certificate is moved aside before its restart."""


def peer_renewal(peer: Peer, everything: bool, now: datetime, warning_days: int, stamp: str) -> PeerRenewal:
    """What ``certs renew`` renews on ``peer`` (holding the CA keys: :func:`with_local_ca_keys`), made now."""
    snap = d.NodeSnapshot(root=peer.name, now=now, hostname=peer.name, files=peer.files)
    report = certs.check(snap, peer.cfg, peer.name, now, warning_days)
    targets = [i.name for i in certs.renewal_targets(report, everything)]
    content = peer.content()
    kubelet: list[Artifact] = []
    files: list[Artifact] = []
    for name in targets:
        if name == certs.KUBELET_CLIENT:
            conf = content.get(paths.KUBELET_CONF)
            renewed = certs.renew_kubelet_client(peer.cfg, content, conf, peer.name, now, stamp)
            kubelet = certs.kubelet_client_artifacts(*renewed)
        elif group_of(name) is certs.Group.KUBECONFIG:
            path = paths.KUBERNETES_DIR / name
            files.append(certs.renew_kubeconfig(path, content[path], peer.cfg, content, now))
        else:
            files += certs.renew_leaf(name, peer.cfg, content, now)
    components = [c for c, names in COMPONENT_FILES.items() if set(names) & set(targets)]
    kubelet_items = [i for i in report.items if i.group is certs.Group.KUBELET]
    new_serving = certs.node_renewal(peer.name, kubelet_items, everything).new_serving
    return PeerRenewal(kubelet, files, components, targets, new_serving)


def discover(ex: RenewExecutor, options: RetrustOptions, etcd_wait: float = 0.0) -> tuple[list[InventoryNode], str]:
    """This node's control-plane peers and where the list comes from: the inventory (``--inventory``, or the Node
    objects through the API), else this node's etcd members (asked for up to ``etcd_wait`` seconds: a kubelet just
    restarted is still starting etcd); ([], why) when neither can be read."""
    me = ex.journal.node_name
    try:
        inventory = node_inventory(ex.node, options)
        return [n for n in inventory.nodes if n.is_control_plane and n.name != me], inventory.source or "inventory"
    except KubereviveError as exc:
        why = exc.message
    listed: list[Member] = []

    def members() -> tuple[bool, str]:
        try:
            listed[:] = _peer_port(ex).peer_members()  # answered also without a quorum
        except KubereviveError as exc:
            try:
                listed[:] = ex.fx.etcd_client(ex.node, ex.cfg).members()
            except KubereviveError as client_exc:
                raise EtcdError(f"{exc.message}; its client port: {client_exc.message}", "") from None
        return True, ""

    waited = poll_until(
        "this node's etcd to list its members",
        etcd_wait,
        members,
        1.0,
        clock=ex.fx.monotonic,
        sleep=ex.fx.sleep,
    )
    if not waited.ok:
        return [], f"neither the node list ({why}) nor the etcd members ({waited.last}) could be read"
    nodes = []
    for m in listed:
        host = urlsplit(m.peer_urls[0]).hostname if m.peer_urls else None
        if m.name and m.name != me and host:
            roles = frozenset({CONTROL_PLANE})
            nodes.append(InventoryNode(m.name, host, port=options.ssh_port, user=options.ssh_user, roles=roles))
    return nodes, "the etcd members"


def _peer_port(ex: RenewExecutor) -> EtcdClient:
    """A client of this node's etcd member at its peer URL (its manifest's ``--initial-advertise-peer-urls``) with its
    peer certificate."""
    data = ex.node.read(paths.ETCD_MANIFEST)
    flags = manifests.manifest_flags(manifests.parse_manifest(data)) if data is not None else {}
    url = flags.get("initial-advertise-peer-urls", "").split(",")[0]
    cdir = PurePosixPath(ex.cfg.cluster.certificates_dir)
    ca, cert, key = (ex.node.read(cdir / n) for n in ("etcd/ca.crt", "etcd/peer.crt", "etcd/peer.key"))
    if not url or ca is None or cert is None or key is None:
        raise EtcdError(f"no peer URL in {paths.ETCD_MANIFEST}, or no etcd peer certificate", "")
    return ex.fx.peer_etcd_client(url, ca, cert, key)


def _record_peers(ex: RenewExecutor, nodes: Sequence[InventoryNode]) -> None:
    for n in nodes:
        entry = ex.journal.other_nodes.setdefault(n.name, {"state": "pending"})
        entry.update(role=CONTROL_PLANE_ROLE, address=n.address, port=n.port, user=n.user)
    ex.journal.save()


def journal_peers(ex: RenewExecutor) -> list[InventoryNode]:
    """The peers the journal knows (recorded when they were found), in name order."""
    return [
        InventoryNode(name, str(e["address"]), port=int(e.get("port") or 22), user=e.get("user"))
        for name, e in sorted(ex.journal.other_nodes.items())
        if e.get("role") == CONTROL_PLANE_ROLE
    ]


def _require_options(ex: RenewExecutor) -> RetrustOptions:
    if ex.options is None:
        raise PlanError(
            "this renewal was started with --all-nodes; the other control-plane nodes are not done yet",
            "run 'kuberevive certs renew --apply --all-nodes' again with the SSH options (--ssh-key, --known-hosts)",
        )
    return ex.options


def _write_peer(ex: RenewExecutor, lock: threading.Lock, n: InventoryNode, host: Host) -> list[str]:
    """Decide (or take from the journal) and write one peer's renewed files; its state becomes ``written``."""
    journal = ex.journal
    entry = journal.other_nodes[n.name]
    with lock:
        started = entry.get("state") == "started"
        kubelet = journal.artifacts(f"cp-kubelet:{n.name}") if started else None
        files = journal.artifacts(f"cp:{n.name}") if started else None
    notes: list[str] = []
    if not started:
        now = ex._now()
        peer = with_local_ca_keys(read_peer(host, n.name, ex.cfg), ex._pki())
        todo = peer_renewal(peer, journal.everything, now, journal.warning_days, journal.stamp)
        kubelet, files = todo.kubelet, todo.files
        with lock:
            journal.record_artifacts(f"cp-kubelet:{n.name}", kubelet)
            journal.record_artifacts(f"cp:{n.name}", files)
            entry.update(
                state="started",
                components=todo.components,
                kubelet=bool(kubelet),
                new_serving=todo.new_serving,
                api=peer.endpoints.api,
                etcd=peer.endpoints.etcd_client_url,
            )
            journal.save()
        notes.append(f"{n.name}: renewing {', '.join(todo.names) or 'nothing'}")
    out = notes + put_kubelet_files(host, n.name, kubelet or [])
    for a in files or []:
        aside = host.write(a.path, a.content, a.mode)
        out.append(f"{n.name}: {a.path} renewed" + (f" ({aside} kept)" if aside else ""))
    if not any(host.containers(c) for c in ("etcd", "kube-apiserver")):
        # Powered off past expiry: its kubelet is stopped, or cannot start with its expired client certificate, so
        # nothing runs there; without its etcd member this node's etcd has no quorum and its API server never turns
        # ready. Its kubelet is started now, with the renewed files: peer-restarts then only awaits it.
        if entry.get("new_serving"):
            out += move_aside_serving(host, n.name)
        since = ex._now().replace(microsecond=0) - timedelta(seconds=1)
        host.restart_unit("kubelet")
        with lock:
            entry["kubelet_started"] = since.isoformat()
        out.append(f"{n.name}: no etcd or API server ran there: kubelet started with the renewed files")
    with lock:
        entry["state"] = "written"
        journal.save()
    return out


def step_peer_certificates(ex: RenewExecutor) -> None:
    """``peer-certificates``: find the peers, then write each one's renewed files (in parallel; no restart)."""
    options = _require_options(ex)
    nodes, source = discover(ex, options, ETCD_LIST_TIMEOUT)
    if not nodes and not journal_peers(ex):
        note = f"no other control-plane node ({source})"
        ex.result.messages.append(note)
        ex.progress(f"      {note}")
        return
    _record_peers(ex, nodes)
    todo = [n for n in journal_peers(ex) if ex.journal.other_nodes[n.name].get("state") in ("pending", "started")]
    ex.progress(f"      {len(todo)} other control-plane node(s) over SSH (from {source})")
    _on_peers(ex, options, todo, lambda n, t, lock: _write_peer(ex, lock, n, ex.remote(t, n.name)), parallel=True)


def _on_peers(
    ex: RenewExecutor,
    options: RetrustOptions,
    nodes: Sequence[InventoryNode],
    one: Callable[[InventoryNode, Transport, threading.Lock], list[str]],
    *,
    parallel: bool,
) -> None:
    """``one`` on each node over SSH (all at once, or one after the other stopping at the first failure); the
    lines each returns become messages; a failure is one PlanError naming the nodes."""
    lock = threading.Lock()
    connect_to = ex.connect or connect(options)
    batches = [list(nodes)] if parallel else [[n] for n in nodes]
    failed: list[str] = []
    for batch in batches:
        results = run_on_nodes(
            batch,
            lambda n, t: one(n, t, lock),
            connect_to,
            name=lambda n: n.name,
            concurrency=options.concurrency,
            timeout=options.node_timeout + 3 * PEER_TIMEOUT,  # generous: a login to a loaded node costs seconds
        )
        for name, r in results.items():
            for line in r.value or []:
                ex.result.messages.append(line)
                ex.progress(f"      {line}")
            if not r.ok:
                failed.append(f"{name}: {r.error}")
        if failed:
            break
    if failed:
        left = [n.name for n in nodes if ex.journal.other_nodes.get(n.name, {}).get("state") != "done"]
        raise PlanError(
            "the other control-plane nodes are not all done: " + "; ".join(failed),
            f"fix the cause on {', '.join(left)}, then run 'kuberevive certs renew --apply --all-nodes' again: "
            "it resumes with the nodes left",
        )


def api_at(ex: RenewExecutor, host_port: str) -> KubeApi:
    """A client of one API server (``host:port``) with this node's admin.conf credentials and CA."""
    data = ex.node.read(paths.ADMIN_CONF)
    if data is None:
        raise PlanError(f"{paths.ADMIN_CONF} is missing", "restore it, then run again")
    doc: Any = yamlload.load(data)
    for entry in doc.get("clusters") or []:
        entry["cluster"]["server"] = f"https://{host_port}"
    return ex.fx.kubeconfig_api(ex.node, yamlfmt.dump(doc).encode())


def wait_healthy(ex: RenewExecutor, name: str, api: KubeApi, etcd_url: str | None) -> float:
    """Wait until ``name``'s own API server answers ``/readyz`` and its etcd member is healthy (quorum)."""
    started = ex.fx.monotonic()
    ex._wait(f"{name}'s API server (/readyz at {api.server})", PEER_TIMEOUT, api.readyz, 1.0)
    if etcd_url is not None:
        client = ex.fx.peer_etcd_client(etcd_url, *etcd_client_files(ex.node, ex.cfg))
    else:
        client = ex.fx.etcd_client(ex.node, ex.cfg)
    ex._wait(f"{name}'s etcd member ({client.endpoint})", PEER_TIMEOUT, client.health, 1.0)
    return ex.fx.monotonic() - started


def _restart_peer(ex: RenewExecutor, lock: threading.Lock, n: InventoryNode, host: PeerHost) -> list[str]:
    entry = ex.journal.other_nodes[n.name]
    out: list[str] = []
    if entry.get("state") in ("pending", "started"):  # found only now (the API was down before), or killed mid-way
        out += _write_peer(ex, lock, n, host)
    components = list(entry.get("components") or [])
    if not components and not entry.get("kubelet") and not entry.get("new_serving"):
        with lock:
            entry["state"] = "done"
            ex.journal.save()
        return [*out, f"{n.name}: nothing renewed, nothing restarted"]
    if entry.get("kubelet_started"):  # nothing ran there: started with the renewed files by peer-certificates
        since = datetime.fromisoformat(str(entry["kubelet_started"]))
    else:
        if entry.get("new_serving"):
            out += move_aside_serving(host, n.name)
        stopped = stop_control_plane(host, components)
        since = ex._now().replace(microsecond=0) - timedelta(seconds=1)
        host.restart_unit("kubelet")
        out.append(f"{n.name}: stopped {', '.join(stopped) or 'nothing'}; kubelet restarted")
    took = wait_healthy(ex, n.name, api_at(ex, str(entry["api"])), str(entry["etcd"]))
    own = ex._own_api()  # not the load balancer: it may pick a master not renewed yet
    ex._wait(f"node {n.name} Ready", PEER_TIMEOUT, lambda: ready_since(own.get(f"/api/v1/nodes/{n.name}"), since))
    with lock:
        entry["state"] = "done"
        ex.journal.save()
    return [*out, f"{n.name}: API server ready, etcd member healthy and Node Ready ({took:.0f} s)"]


def step_peer_restarts(ex: RenewExecutor) -> None:
    """``peer-restarts``: this node's own API server and etcd first, then each peer in turn, then the API through the
    control-plane endpoint (see the module)."""
    options = _require_options(ex)
    nodes, _source = discover(ex, options)  # the API answers now: peers not found before are found here
    _record_peers(ex, nodes)
    todo = [n for n in journal_peers(ex) if ex.journal.other_nodes[n.name].get("state") != "done"]
    if todo:
        took = wait_healthy(ex, ex.journal.node_name, ex._own_api(), None)
        ex.progress(f"      this node's API server and etcd member are healthy ({took:.0f} s)")
        ex.progress(f"      {len(todo)} other control-plane node(s), one at a time")

        def one(n: InventoryNode, t: Transport, lock: threading.Lock) -> list[str]:
            return _restart_peer(ex, lock, n, cast(PeerHost, ex.remote(t, n.name)))

        _on_peers(ex, options, todo, one, parallel=False)
    ex.wait_endpoint()  # every master is renewed: the load balancer may pick any of them now
