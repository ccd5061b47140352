"""``kuberevive certs renew``: plan, and execute step by step under the node's lock, resumable through a journal.

Steps (only those the targets need, in this order):

1. ``kubelet-client``: a new client certificate for ``system:node:<node>`` signed locally with ``ca.key``, written
   as ``/var/lib/kubelet/pki/kubelet-client-<stamp>.pem`` with ``kubelet-client-current.pem`` pointed at it (the
   old link moved aside), kubelet.conf rewritten only when it does not refer to that link yet;
2. ``kubelet-restart``: ``systemctl restart kubelet`` (containers keep running), so that it can run the static pods;
3. ``leaves``: every expiring, expired or invalid leaf of kubeadm's list, new key and certificate;
4. ``kubeconfigs``: every kubeconfig whose embedded client certificate needs it (admin.conf included);
5. ``restart-control-plane``: the control-plane containers whose files changed are stopped and the kubelet
   restarted (which also clears a crash-loop back-off); the kubelet starts them again from their unchanged
   static Pod manifests, reading the new files;
6. ``api-ready``: the API server answers ``/readyz`` to the renewed admin.conf;
7. ``node-ready``: this node is Ready with a heartbeat posted after the kubelet restart.

The journal (``/var/lib/kuberevive/renew/journal.json``, 0600) records the targets and, before a step writes, the
exact files it writes, so a run killed at any point resumes with ``--apply`` and writes the same keys. Replaced
files are moved aside to ``/var/lib/kuberevive/backup/<timestamp>/``. The lock is recover's: the two never run
at the same time. With ``--root`` other than ``/`` the files are written but nothing is restarted or awaited.
Test hook (as recover's): ``KUBEREVIVE_FAULT_AFTER_STEP=<n>`` SIGKILLs the run right after step n is done.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Self

from kuberevive.core import certs, pki
from kuberevive.core import diagnose as d
from kuberevive.core.diagnose import detect_role, resolve_config
from kuberevive.core.kubeconfig import ADMIN_CONF, CONTROLLER_MANAGER_CONF, SCHEDULER_CONF, SUPER_ADMIN_CONF, Kubeconfig
from kuberevive.core.retrust import ready_since
from kuberevive.errors import CollectError, KubeApiError, KubereviveError, NotAControlPlane, PlanError
from kuberevive.io.host import LocalHost
from kuberevive.io.kubeapi import KubeApi
from kuberevive.io.noderoot import NodeRoot
from kuberevive.io.snapshot import collect
from kuberevive.io.transport import Transport, run_on_nodes
from kuberevive.model import paths
from kuberevive.model.artifacts import Artifact, ArtifactKind
from kuberevive.model.config import KubeadmConfig
from kuberevive.model.document import rfc3339_or_none
from kuberevive.model.inventory import Inventory, InventoryNode, from_node_objects
from kuberevive.model.recover import RetrustOptions
from kuberevive.run.context import Effects, Faults, check_table
from kuberevive.run.journal import RenewJournal
from kuberevive.run.retrust import connect
from kuberevive.waiting import wait_for

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
STEP_TITLES = {
    "kubelet-client": "renew the kubelet's client certificate (signed locally with ca.key)",
    "kubelet-restart": "restart the kubelet (its containers keep running)",
    "leaves": "renew the leaf certificates",
    "kubeconfigs": "renew the kubeconfigs' client certificates",
    "restart-control-plane": "restart the control-plane containers through the kubelet",
    "api-ready": "wait for the API server (/readyz) with the renewed admin.conf",
    "node-ready": "wait for this node to be Ready",
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


def _read_kubelet_files(t: Transport) -> dict[PurePosixPath, d.FileInfo]:
    """The kubelet's kubelet.conf and certificates on a node, as diagnose's snapshot holds them."""
    files: dict[PurePosixPath, d.FileInfo] = {}

    def read(path: PurePosixPath) -> bytes | None:
        r = t.run(["cat", "--", str(path)], timeout=30)
        if r.ok:
            files[path] = d.FileInfo(path, "file", 0o600, 0, 0, len(r.stdout), r.stdout)
        return r.stdout if r.ok else None

    conf = read(paths.KUBELET_CONF)
    wanted = {paths.KUBELET_CLIENT_CURRENT, paths.KUBELET_SERVING_CURRENT, paths.KUBELET_SERVING_CERT}
    wanted.add(paths.KUBELET_SERVING_CERT.with_suffix(".key"))
    if conf is not None:
        try:
            _cluster, user = Kubeconfig.from_yaml(conf).current()
            wanted |= {PurePosixPath(p) for p in (user.client_certificate, user.client_key) if p}
        except (KubereviveError, ValueError, TypeError):
            pass
    for p in sorted(wanted):
        read(p)
    return files


def node_inventory(node: NodeRoot, options: RetrustOptions) -> Inventory:
    """The nodes to reach over SSH: ``--inventory``, or else the cluster's Node objects through admin.conf."""
    if options.inventory is not None:
        return options.inventory
    try:
        return from_node_objects(_node_objects(node), options.ssh_user, options.ssh_port)
    except KubereviveError as exc:
        raise PlanError(
            f"--all-nodes: the node list cannot be read from the API ({exc.message})",
            "pass the nodes with --inventory FILE (docs/inventory.md)",
        ) from exc


def check_other_nodes(
    report: certs.CertsReport, root: str, options: RetrustOptions, progress: Progress
) -> certs.CertsReport:
    """``report`` plus the kubelet certificates of every other node, read over SSH (the inventory, or the
    cluster's Node objects through admin.conf); a node that cannot be read is an ``invalid`` item."""
    node = NodeRoot(Path(root))
    inventory = node_inventory(node, options)
    others = [n for n in inventory.nodes if n.name != report.node_name]
    cdir = paths.PKI_DIR
    ca_data = node.read(cdir / "ca.crt")
    ca = pki.load_certificate(ca_data, str(cdir / "ca.crt")) if ca_data is not None else None
    ca_key = node.exists(cdir / "ca.key")

    def one(n: InventoryNode, t: Transport) -> list[certs.CertItem]:
        files = _read_kubelet_files(t)
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
    return certs.with_items(report, extra)


def steps_for(targets: list[str], live: bool) -> list[str]:
    """The step ids the targets need (``live``: the node's own root, so restarts and waits apply)."""
    kinds = {name: _group(name) for name in targets}
    steps: list[str] = []
    if certs.KUBELET_CLIENT in targets:
        steps += ["kubelet-client"] + (["kubelet-restart"] if live else [])
    if certs.Group.CERTIFICATE in kinds.values():
        steps.append("leaves")
    if certs.Group.KUBECONFIG in kinds.values():
        steps.append("kubeconfigs")
    if live and any(set(files) & set(targets) for files in COMPONENT_FILES.values()):
        steps.append("restart-control-plane")
    if live and targets:
        steps.append("api-ready")
    if live and certs.KUBELET_CLIENT in targets:
        steps.append("node-ready")
    return steps


def _group(name: str) -> certs.Group:
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

    def as_dict(self) -> dict[str, Any]:
        return {"targets": self.targets, **self.steps_dict()}


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


def plan(root: str, config_file: str | None, warning_days: int, everything: bool, *, live: bool) -> RenewResult:
    """What ``--apply`` would do; reads only. A renewal interrupted earlier is shown as resumed."""
    node = NodeRoot(Path(root))
    journal = RenewJournal.load(node, JOURNAL)
    if journal is not None and journal.status == "running":
        targets = list(journal.targets)
        todo = [s for s in steps_for([t["name"] for t in targets], live) if not journal.step_done(s)]
        return RenewResult(targets=targets, steps=todo, config_source=journal.config_source, resumed=True)
    report, cfg = read_report(root, config_file, warning_days, live=live)
    items = certs.renewal_targets(report, everything)
    if items:
        require_cfg(cfg)
    return RenewResult(
        targets=[_target_json(i) for i in items],
        steps=steps_for([i.name for i in items], live),
        config_source=report.config_source,
    )


def admin_client(root: NodeRoot) -> KubeApi:
    """A client of the API server with the node's admin.conf (renew's and ca extend's steps that wait for it)."""
    data = root.read(paths.KUBERNETES_DIR / ADMIN_CONF)
    if data is None:
        raise PlanError("/etc/kubernetes/admin.conf is missing", "restore it, then run the command again")
    return KubeApi.from_kubeconfig(data, read_file=lambda p: root.read(p) or b"", timeout=10)


def renew_effects(environ: Mapping[str, str]) -> Effects:
    """The real clients and clocks, and the fault hook ``KUBEREVIVE_FAULT_AFTER_STEP`` from ``environ``."""
    return Effects(api_client=admin_client, faults=Faults.from_environ(environ))


class RenewExecutor:
    """Runs renew's steps; ``ca extend``'s executor extends it with its own steps and table."""

    #: Step id -> title (``ca extend`` has its own steps).
    titles = STEP_TITLES

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
        return wait_for(what, timeout, probe, interval, clock=self.fx.monotonic, sleep=self.fx.sleep)

    # -- steps ----------------------------------------------------------------------------------

    def step_kubelet_client(self) -> None:
        def compute() -> list[Artifact]:
            conf = self.node.read(paths.KUBELET_CONF)
            files = self._pki()
            current = self.node.read(paths.KUBELET_CLIENT_CURRENT)  # its key algorithm is kept
            if current is not None:
                files[paths.KUBELET_CLIENT_CURRENT] = current
            trust, rewrite = certs.renew_kubelet_client(
                self.cfg,
                files,
                conf,
                self.journal.node_name,
                self._now(),
                self.journal.stamp,
            )
            pem = Artifact(
                PurePosixPath(trust.pem_path), 0o600, ArtifactKind.PRIVATE_KEY, "kubelet client certificate", trust.pem
            )
            out = [pem]
            if rewrite:
                out.append(
                    Artifact(
                        paths.KUBELET_CONF,
                        0o600,
                        ArtifactKind.KUBECONFIG,
                        "kubelet.conf referring to kubelet-client-current.pem",
                        trust.kubeconfig,
                    )
                )
            return out

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
                if _group(name) is certs.Group.CERTIFICATE:
                    out += certs.renew_leaf(name, self.cfg, pki_files, now)
            return out

        self._write(self._recorded("leaves", compute))

    def step_kubeconfigs(self) -> None:
        def compute() -> list[Artifact]:
            pki_files, now = self._pki(), self._now()
            out: list[Artifact] = []
            for name in self.targets:
                if _group(name) is certs.Group.KUBECONFIG:
                    path = paths.KUBERNETES_DIR / name
                    data = self.node.read(path)
                    if data is None:
                        raise PlanError(f"{path} disappeared during the renewal", "restore it, then run again")
                    out.append(certs.renew_kubeconfig(path, data, self.cfg, pki_files, now))
            return out

        self._write(self._recorded("kubeconfigs", compute))

    def step_restart_control_plane(self) -> None:
        cri = self.cfg.init.node_registration.cri_socket or None
        stopped = []
        for component, files in COMPONENT_FILES.items():
            if set(files) & set(self.targets):
                n = self.host.stop_containers(component, cri)
                stopped.append(f"{component} ({n})")
        self.progress(f"      stopped: {', '.join(stopped)}; restarting the kubelet (clears any crash-loop back-off)")
        self._restart_kubelet()

    def _api(self) -> KubeApi:
        return self.fx.api_client(self.node)

    def step_api_ready(self) -> None:
        api = self._api()
        took = self._wait("the API server (/readyz)", API_TIMEOUT, api.readyz, 1.0)
        self.progress(f"      the API server is ready ({took:.0f} s)")

    def step_node_ready(self) -> None:
        api = self._api()
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
    "restart-control-plane": RenewExecutor.step_restart_control_plane,
    "api-ready": RenewExecutor.step_api_ready,
    "node-ready": RenewExecutor.step_node_ready,
}
check_table(RENEW_STEPS, tuple(STEP_TITLES), "kuberevive.run.renew")


def apply(
    root: str,
    config_file: str | None,
    warning_days: int,
    everything: bool,
    progress: Progress,
    environ: Mapping[str, str] | None = None,
    *,
    live: bool,
    host: LocalHost | None = None,
    effects: Effects | None = None,
) -> RenewResult:
    """Renew what needs it (or resume an interrupted renewal) under the node's lock. ``host`` (default: the
    node at ``root``) and ``effects`` (default: the real clients and clocks, the fault hook from ``environ``)
    are what a test replaces."""
    host = host or LocalHost(NodeRoot(Path(root)), live=live)
    node = host.root
    fx = effects or renew_effects(os.environ if environ is None else environ)
    started = fx.monotonic()
    with host.lock("certs renew", error=PlanError):
        journal = RenewJournal.load(node, JOURNAL)
        resumed = journal is not None and journal.status == "running"
        report, cfg_or_none = read_report(root, config_file, warning_days, live=live)
        if journal is None or not resumed:
            items = certs.renewal_targets(report, everything)
            result = RenewResult(
                targets=[_target_json(i) for i in items],
                steps=steps_for([i.name for i in items], live),
                config_source=report.config_source,
            )
            if not items:
                return result
            cfg = require_cfg(cfg_or_none)
            if journal is not None:  # a finished renewal, and now another one
                node.move_aside(JOURNAL)
            journal = RenewJournal.new(
                node,
                JOURNAL,
                targets=result.targets,
                node_name=report.node_name,
                config_source=report.config_source,
                stamp=fx.utcnow().strftime("%Y-%m-%d-%H-%M-%S"),
            )
        else:
            assert journal is not None
            cfg = require_cfg(cfg_or_none)
            targets = list(journal.targets)
            result = RenewResult(
                targets=targets,
                steps=steps_for([t["name"] for t in targets], live),
                config_source=journal.config_source,
                resumed=True,
            )
            progress(f"resuming the renewal started at {journal.started_at} (journal {JOURNAL})")
        executor = RenewExecutor(host, journal, cfg, progress, result, fx)
        try:
            executor.run(result.steps, RENEW_STEPS)
        except KubeApiError as exc:
            raise PlanError(
                f"the renewal stopped at a step that talks to the API server: {exc.message}",
                "fix the cause, then run 'kuberevive certs renew --apply' again: it resumes where it stopped",
            ) from exc
        journal.finish()
    result.seconds = round(fx.monotonic() - started, 1)
    if not live:
        result.messages.append(f"--root {root}: files written; nothing was restarted (restart the control plane)")
    return result
