"""``kuberevive replace-control-plane NODE``: plan, and execute step by step under the node's lock, resumable
through a journal (the order and the refusals are :mod:`kuberevive.core.replace`'s).

Run on a healthy control-plane node (stacked etcd): the cluster's configuration comes from its API
(``kube-system/kubeadm-config`` and ``kubelet-config``), its trust material from this node's PKI (checked with
:func:`kuberevive.core.salvage.material_problems`), the etcd membership and each member's health from etcd with
this node's etcd client certificate. The new machine is reached over SSH (``--ssh-key``, ``--known-hosts``) and
must be fresh: no etcd data. The journal (``/var/lib/kuberevive/replace/journal.json``, 0600) records the lost
member, the learner and the new machine's files before they are written; ``--apply`` again resumes.
Test hook (as recover's): ``KUBEREVIVE_FAULT_AFTER_STEP=<n>`` SIGKILLs the run right after step n is done.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from kuberevive.core import replace as core
from kuberevive.core import salvage, yamlfmt
from kuberevive.core.manifests import manifest_flags, parse_manifest
from kuberevive.core.netaddr import endpoint_port, url_host
from kuberevive.core.retrust import ready_since
from kuberevive.errors import ConfigError, EtcdError, KubeApiError, KubereviveError, PlanError, TransportError
from kuberevive.io.etcd import EtcdClient
from kuberevive.io.host import LocalHost
from kuberevive.io.kubeapi import KubeApi
from kuberevive.io.node import parse_kubeadm_flags
from kuberevive.io.noderoot import NodeRoot
from kuberevive.io.remotehost import SshHost
from kuberevive.io.transport import Deadline, Transport
from kuberevive.model import paths, yamlload
from kuberevive.model.config import KubeadmConfig
from kuberevive.model.inventory import CONTROL_PLANE, InventoryNode
from kuberevive.model.recover import RetrustOptions
from kuberevive.run.context import Faults, check_table
from kuberevive.run.journal import Journal
from kuberevive.run.retrust import connect
from kuberevive.waiting import wait_for

JOURNAL = paths.STATE_DIR / "replace" / "journal.json"
SSH_TIMEOUT = 900.0
PROMOTE_TIMEOUT = 600.0
API_TIMEOUT = 600.0
NODE_TIMEOUT = 300.0
HEALTH_TIMEOUT = 3.0

Progress = Callable[[str], None]


@dataclass(kw_only=True)
class ReplaceJournal(Journal):
    """``replace-control-plane``'s journal."""

    node: str = ""
    new_name: str = ""
    address: str = ""
    stamp: str = ""
    lost_member_id: str = ""
    learner_id: str = ""


@dataclass
class ReplaceResult:
    plan: dict[str, Any]
    applied: list[str] = field(default_factory=list)
    resumed: bool = False
    members: list[dict[str, Any]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "applied": self.applied,
            "resumed": self.resumed,
            "members": self.members,
            "messages": self.messages,
            "seconds": self.seconds,
        }


@dataclass
class Request:
    """What the command line asks: the lost node, the new machine's name and address, how to reach it."""

    node: str
    new_name: str | None
    address: str | None
    kubelet_args: tuple[tuple[str, str], ...]
    options: RetrustOptions


@dataclass
class Cluster:
    """The cluster as this healthy control-plane node sees it."""

    root: NodeRoot
    api: KubeApi
    etcd: EtcdClient
    etcd_client_files: tuple[bytes, bytes, bytes]
    cluster_configuration: str
    kubelet_configuration: str
    trust: dict[str, bytes]
    this_node: str
    flags: list[tuple[str, str]]
    cri_socket: str
    bind_port: int


def admin_api(root: NodeRoot, server: str | None = None) -> KubeApi:
    data = root.read(paths.ADMIN_CONF)
    if data is None:
        raise PlanError(
            f"{paths.ADMIN_CONF} is missing: this is not a healthy control-plane node",
            "run the command on a healthy control-plane node of the cluster",
        )
    if server is not None:
        doc = yamlload.load(data)
        for c in doc.get("clusters") or []:
            c["cluster"]["server"] = server
        data = yamlfmt.dump(doc).encode()
    return KubeApi.from_kubeconfig(data, read_file=lambda p: root.read(p) or b"", timeout=10)


ETCD_CLIENT_FILES = ("etcd/ca.crt", "etcd/healthcheck-client.crt", "etcd/healthcheck-client.key")


def _flags(root: NodeRoot) -> list[tuple[str, str]]:
    data = root.read(paths.KUBEADM_FLAGS)
    return list(parse_kubeadm_flags(data.decode(errors="replace"))) if data is not None else []


@dataclass
class LocalEtcd:
    """This node's etcd member, reached with its healthcheck client certificate (no API needed: the quorum check
    comes first, and without quorum the API cannot answer)."""

    client: EtcdClient
    files: tuple[bytes, bytes, bytes]


def local_etcd(root: NodeRoot, manifest: bytes | None = None) -> LocalEtcd:
    """This node's etcd client; ``manifest``: its etcd manifest when it is not in place (a stopped etcd)."""
    manifest = manifest if manifest is not None else root.read(paths.ETCD_MANIFEST)
    if manifest is None:
        raise PlanError(
            f"{paths.ETCD_MANIFEST} is missing: this is not a control-plane node with stacked etcd",
            "run the command on a healthy control-plane node of the cluster",
        )
    try:
        trusted = manifest_flags(parse_manifest(manifest)).get("trusted-ca-file", "")
    except ConfigError:
        trusted = ""
    # --trusted-ca-file=<certificatesDir>/etcd/ca.crt
    certs_dir = PurePosixPath(trusted).parent.parent if trusted else paths.PKI_DIR
    client = tuple(root.read(certs_dir / n) for n in ETCD_CLIENT_FILES)
    if any(f is None for f in client):
        raise PlanError(
            f"this node has no etcd client certificate ({', '.join(str(certs_dir / n) for n in ETCD_CLIENT_FILES)})",
            "run replace-control-plane on a control-plane node with stacked etcd",
        )
    ca, cert, key = (f or b"" for f in client)
    return LocalEtcd(EtcdClient("https://127.0.0.1:2379", ca, cert, key, timeout=10), (ca, cert, key))


def read_cluster(root: NodeRoot, etcd: LocalEtcd, now: datetime) -> Cluster:
    """Everything the plan needs from this node and its API; PlanError when this node cannot do it."""
    api = admin_api(root)
    try:
        kubeadm_cm = api.get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
        kubelet_cm = api.get("/api/v1/namespaces/kube-system/configmaps/kubelet-config")
    except KubeApiError as exc:
        raise PlanError(
            f"the cluster's configuration cannot be read through {paths.ADMIN_CONF}: {exc.message}",
            "run replace-control-plane on a control-plane node whose API server answers",
        ) from exc
    cluster_yaml = (kubeadm_cm.get("data") or {}).get("ClusterConfiguration")
    kubelet_yaml = (kubelet_cm.get("data") or {}).get("kubelet")
    if not cluster_yaml or not kubelet_yaml:
        raise PlanError(
            "kube-system/kubeadm-config or kubelet-config lacks its configuration",
            "this is not a kubeadm cluster, or its ConfigMaps were edited: restore them first",
        )
    certs_dir = PurePosixPath(str(yamlload.load(cluster_yaml).get("certificatesDir") or paths.PKI_DIR))
    trust_raw = {n: root.read(certs_dir / n) for n in paths.TRUST_FILES}
    problems = salvage.material_problems(trust_raw, now)
    if problems:
        raise PlanError(
            f"this node's trust material cannot be given to the new machine: {'; '.join(problems)}",
            "run replace-control-plane on a healthy control-plane node",
        )
    flags = _flags(root)
    hostname = (root.read(PurePosixPath("/etc/hostname")) or b"").decode().strip()
    this_node = dict(flags).get("hostname-override") or hostname
    return Cluster(
        root=root,
        api=api,
        etcd=etcd.client,
        etcd_client_files=etcd.files,
        cluster_configuration=cluster_yaml,
        kubelet_configuration=kubelet_yaml,
        trust={n: data for n, data in trust_raw.items() if data is not None},
        this_node=this_node,
        flags=flags,
        cri_socket=dict(flags).get("container-runtime-endpoint", "unix:///var/run/containerd/containerd.sock"),
        bind_port=_bind_port(api, this_node),
    )


def _bind_port(api: KubeApi, this_node: str) -> int:
    pod = api.get_or_none(f"/api/v1/namespaces/kube-system/pods/kube-apiserver-{this_node}")
    endpoint = (((pod or {}).get("metadata") or {}).get("annotations") or {}).get(
        "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint", ""
    )
    return endpoint_port(str(endpoint)) or salvage.DEFAULT_API_PORT


def members_with_health(etcd: LocalEtcd) -> list[core.EtcdMember]:
    """etcd's members in its order, each with whether its client URL answers ``/health`` now (and why not)."""
    try:
        members = etcd.client.members()
    except EtcdError as exc:
        raise PlanError(
            f"this node's etcd does not answer: {exc.message}", "run replace-control-plane on a healthy master"
        ) from exc
    out = []
    for m in members:
        healthy, why = False, "not started"
        for url in m.client_urls[:1]:
            try:
                healthy, why = EtcdClient(url, *etcd.files, timeout=HEALTH_TIMEOUT).health()
            except EtcdError:
                healthy, why = False, "unreachable"
        out.append(core.EtcdMember(m.id, m.name, m.peer_urls, m.is_learner, healthy, "" if healthy else why))
    return out


def member_address(node: str, members: list[core.EtcdMember]) -> str | None:
    """The host of the peer URL of member ``node``."""
    for m in members:
        if m.name == node and m.peer_urls:
            return url_host(m.peer_urls[0]) or None
    return None


def node_address(api: KubeApi, node: str) -> str | None:
    """The first InternalIP of Node ``node``."""
    obj = api.get_or_none(f"/api/v1/nodes/{node}")
    for a in ((obj or {}).get("status") or {}).get("addresses") or []:
        if a.get("type") == "InternalIP" and a.get("address"):
            return str(a["address"])
    return None


@dataclass
class Planned:
    request: Request
    cluster: Cluster
    cfg: KubeadmConfig
    verdict: core.MemberVerdict
    steps: list[str]
    document: dict[str, Any]


def make_plan(root: NodeRoot, request: Request, now: datetime, journal: ReplaceJournal | None = None) -> Planned:
    etcd = local_etcd(root)
    members = members_with_health(etcd)
    new_name = request.new_name or request.node
    old_address = member_address(request.node, members)
    address = request.address or (journal.address if journal else None) or old_address
    if journal is not None and journal.step_done("remove-member"):
        verdict = core.resumed_membership(members, request.node)
    else:
        verdict = core.check_membership(members, request.node, address or "")
    cluster = read_cluster(root, etcd, now)
    if not address:
        address = node_address(cluster.api, request.node)
    if not address:
        raise PlanError(
            f"no address is known for {request.node} (no Node object, no etcd member)",
            "pass the new machine's address with --address",
        )
    if cluster.this_node in (request.node, new_name):
        raise PlanError(
            f"{cluster.this_node} is this node: replace-control-plane replaces another, lost control-plane node",
            "run it on a healthy control-plane node other than the one to replace",
        )
    cfg = core.new_node_config(
        cluster.cluster_configuration,
        cluster.kubelet_configuration,
        new_name,
        address,
        cluster.bind_port,
        cluster.cri_socket,
    )
    steps = core.plan_steps(new_name != request.node)
    # a resumed run removed the lost member already: its old Node (deleted last) still has the address
    old_address = old_address or node_address(cluster.api, request.node)
    notes = [
        f"the trust material (CAs, sa.key) comes from this node ({cluster.this_node}); the new machine gets its own "
        "leaf certificates and kubeconfigs",
        f"the new machine {new_name} is reached over SSH at {address}; it must hold no etcd data",
        f"the address changed ({old_address} -> {address}): a load balancer in front of the API servers must list "
        "the new one"
        if old_address and address != old_address
        else "the address is unchanged: a load balancer's backend for it needs no change",
    ]
    files = [
        str(paths.KUBELET_PKI / "kubelet-client-<stamp>.pem"),
        str(paths.KUBELET_CLIENT_CURRENT),
        *(str(PurePosixPath(cfg.cluster.certificates_dir) / n) for n in paths.TRUST_FILES),
        "leaf certificates, admin.conf, controller-manager.conf, scheduler.conf, kubelet.conf",
        *(
            str(paths.MANIFESTS_DIR / f"{c}.yaml")
            for c in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
        ),
        str(paths.KUBELET_CONFIG),
        str(paths.KUBEADM_FLAGS),
    ]
    doc = core.plan_document(request.node, new_name, address, verdict, steps, files, notes)
    return Planned(request, cluster, cfg, verdict, steps, doc)


def ssh_to_master(options: RetrustOptions, name: str, address: str) -> Transport:
    node = InventoryNode(name, address, port=options.ssh_port, roles=frozenset({CONTROL_PLANE}))
    return connect(options)(node, Deadline.after(SSH_TIMEOUT))


def check_fresh(host: SshHost, cfg: KubeadmConfig) -> None:
    """The new machine must hold no etcd data (its member would start a stranger or an old state)."""
    local = cfg.cluster.etcd_local
    data_dir = PurePosixPath(local.data_dir if local else str(paths.ETCD_DATA_DIR))
    if host.exists(data_dir / "member"):
        raise PlanError(
            f"{host.name} holds etcd data in {data_dir}/member: it is not a fresh machine",
            f"move {data_dir} aside on {host.name} (it is not the cluster's data any more), then run again",
        )


class ReplaceExecutor:
    def __init__(
        self,
        planned: Planned,
        journal: ReplaceJournal,
        host: SshHost,
        progress: Progress,
        result: ReplaceResult,
        faults: Faults,
    ) -> None:
        self.p = planned
        self.cluster = planned.cluster
        self.journal = journal
        self.host = host
        self.progress = progress
        self.result = result
        self.faults = faults

    def _wait(self, what: str, timeout: float, probe: Callable[[], tuple[bool, str]], interval: float = 1.0) -> float:
        rerun = f"kuberevive replace-control-plane {self.p.request.node} --apply"  # it resumes, not recover
        return wait_for(what, timeout, probe, interval, rerun)

    def step_remove_member(self) -> None:
        lost = self.p.verdict.lost
        if lost is None:
            self.progress("      no member to remove (gone already)")
            return
        self.journal.lost_member_id = lost.id
        self.journal.save()
        if any(m.id == lost.id for m in self.cluster.etcd.members()):
            self.cluster.etcd.member_remove(lost.id)
        self.progress(f"      removed member {lost.name} ({lost.id}, {', '.join(lost.peer_urls)})")

    def step_prepare_node(self) -> None:
        cfg = self.p.cfg
        arts = self.journal.artifacts("prepare-node")
        if arts is None:
            check_fresh(self.host, cfg)
            members = [core.EtcdMember(m.id, m.name, m.peer_urls, m.is_learner) for m in self.cluster.etcd.members()]
            initial = core.initial_cluster(members, cfg.node_name, cfg.advertise_address)
            now = datetime.now(UTC)
            flags = core.kubeadm_flags(
                self.cluster.flags, cfg.node_name, cfg.advertise_address, self.p.request.kubelet_args
            )
            arts = core.node_artifacts(
                cfg,
                self.cluster.trust,
                self.cluster.this_node,
                now,
                self.journal.stamp,
                initial,
                core.kubelet_configuration(self.cluster.kubelet_configuration),
                flags,
            )
            self.journal.record_artifacts("prepare-node", arts)
        for a in arts:
            aside = self.host.write(a.path, a.content, a.mode)
            if aside is not None:
                self.result.messages.append(f"{self.host.name}: {a.path} moved aside to {aside}")
        current = paths.KUBELET_CLIENT_CURRENT
        if self.host.readlink(current) != str(arts[0].path):
            aside = self.host.move_aside(current)
            if aside is not None:
                self.result.messages.append(f"{self.host.name}: {current} moved aside to {aside}")
            self.host.replace_symlink(current, str(arts[0].path))
        self.progress(f"      wrote {len(arts)} file(s) on {self.host.name}, {current} -> {arts[0].path}")

    def step_add_learner(self) -> None:
        url = core.peer_url(self.p.cfg.advertise_address)
        existing = next((m for m in self.cluster.etcd.members() if url in m.peer_urls), None)
        member = existing or self.cluster.etcd.member_add([url], learner=True)
        self.journal.learner_id = member.id
        self.journal.save()
        self.progress(f"      learner {member.id} at {url}" + (" (added before)" if existing else ""))

    def step_start_kubelet(self) -> None:
        self.journal.timing("kubelet_started", datetime.now(UTC).timestamp())
        self.host.restart_unit("kubelet")

    def step_promote(self) -> None:
        learner = self.journal.learner_id

        def promoted() -> tuple[bool, str]:
            member = next((m for m in self.cluster.etcd.members() if m.id == learner), None)
            if member is None:
                raise PlanError(f"the learner {learner} is no longer an etcd member", "run replace-control-plane again")
            if not member.is_learner:
                return True, ""
            try:
                self.cluster.etcd.member_promote(learner)
            except EtcdError as exc:
                return False, exc.message
            return True, ""

        took = self._wait(f"learner {learner} to catch up and be promoted", PROMOTE_TIMEOUT, promoted, 2.0)
        self.progress(f"      promoted to a voting member ({took:.0f} s)")

    def _new_api(self) -> KubeApi:
        host = self.p.cfg.advertise_address
        server = (
            f"https://[{host}]:{self.cluster.bind_port}" if ":" in host else f"https://{host}:{self.cluster.bind_port}"
        )
        return admin_api(self.cluster.root, server)

    def step_api_ready(self) -> None:
        api = self._new_api()

        def ready() -> tuple[bool, str]:
            try:
                return api.readyz()
            except KubeApiError as exc:
                return False, exc.message

        took = self._wait(f"the API server of {self.p.cfg.node_name} (/readyz)", API_TIMEOUT, ready, 2.0)
        self.progress(f"      ready ({took:.0f} s)")

    def step_node_ready(self) -> None:
        name = self.p.cfg.node_name
        since = datetime.fromtimestamp((self.journal.timing("kubelet_started") or 0) - 2, UTC)
        api = self.cluster.api

        def ready() -> tuple[bool, str]:
            try:
                return ready_since(api.get(f"/api/v1/nodes/{name}"), since)
            except KubeApiError as exc:
                return False, exc.message

        self._wait(f"node {name} Ready", NODE_TIMEOUT, ready, 2.0)

    def step_old_node(self) -> None:
        old = self.p.request.node
        if self.cluster.api.get_or_none(f"/api/v1/nodes/{old}") is not None:
            self.cluster.api.delete(f"/api/v1/nodes/{old}")
            self.progress(f"      deleted Node {old}")

    def run(self) -> None:
        total = len(self.p.steps)
        for index, sid in enumerate(self.p.steps, start=1):
            title = core.STEP_TITLES[sid]
            if self.journal.step_done(sid):
                self.progress(f"[{index}/{total}] {title}: done before")
                continue
            self.progress(f"[{index}/{total}] {title}")
            started = datetime.now(UTC).timestamp()
            self.journal.mark(sid, "started")
            REPLACE_STEPS[sid](self)
            self.journal.mark(sid, "done", seconds=round(datetime.now(UTC).timestamp() - started, 3))
            self.result.applied.append(sid)
            self.faults.after(index)


#: Step id -> its handler, in the plan's order; checked against :data:`core.STEP_TITLES` at import.
REPLACE_STEPS: dict[str, Callable[[ReplaceExecutor], None]] = {
    "remove-member": ReplaceExecutor.step_remove_member,
    "prepare-node": ReplaceExecutor.step_prepare_node,
    "add-learner": ReplaceExecutor.step_add_learner,
    "start-kubelet": ReplaceExecutor.step_start_kubelet,
    "promote": ReplaceExecutor.step_promote,
    "api-ready": ReplaceExecutor.step_api_ready,
    "node-ready": ReplaceExecutor.step_node_ready,
    "old-node": ReplaceExecutor.step_old_node,
}
check_table(REPLACE_STEPS, tuple(core.STEP_TITLES), "kuberevive.run.replace")


def _running_journal(root: NodeRoot, request: Request) -> ReplaceJournal | None:
    journal = ReplaceJournal.load(root, JOURNAL)
    if journal is None or journal.status != "running":
        return None
    if journal.node != request.node:
        raise PlanError(
            f"a replacement of {journal.node} started at {journal.started_at} is not finished",
            f"finish it first: kuberevive replace-control-plane {journal.node} --apply (journal {JOURNAL})",
        )
    return journal


def plan(root: str, request: Request) -> dict[str, Any]:
    node = NodeRoot(Path(root))
    planned = make_plan(node, request, datetime.now(UTC), _running_journal(node, request))
    transport = ssh_to_master(request.options, planned.cfg.node_name, planned.cfg.advertise_address)
    try:
        check_fresh(SshHost(transport, planned.cfg.node_name), planned.cfg)
    except TransportError as exc:
        raise PlanError(
            f"the new machine {planned.cfg.node_name} cannot be reached over SSH at {planned.cfg.advertise_address}: "
            f"{exc.message}",
            "pass --ssh-key and --known-hosts for it (and --address when it has a new one)",
        ) from exc
    finally:
        transport.close()
    return planned.document


def apply(root: str, request: Request, progress: Progress, environ: Mapping[str, str] | None = None) -> ReplaceResult:
    """Replace the lost node (or resume a replacement that stopped) under this node's lock."""
    host = LocalHost(NodeRoot(Path(root)), live=True)
    node = host.root
    faults = Faults.from_environ(os.environ if environ is None else environ)
    t0 = datetime.now(UTC).timestamp()
    with host.lock("replace-control-plane", error=PlanError):
        journal = _running_journal(node, request)
        resumed = journal is not None
        planned = make_plan(node, request, datetime.now(UTC), journal)
        if journal is None:
            if ReplaceJournal.load(node, JOURNAL) is not None:
                node.move_aside(JOURNAL)
            journal = ReplaceJournal.new(
                node,
                JOURNAL,
                node=request.node,
                new_name=planned.cfg.node_name,
                address=planned.cfg.advertise_address,
                stamp=datetime.now(UTC).strftime("%Y-%m-%d-%H-%M-%S"),
            )
        else:
            progress(f"resuming the replacement started at {journal.started_at} (journal {JOURNAL})")
        result = ReplaceResult(planned.document, resumed=resumed)
        transport = ssh_to_master(request.options, planned.cfg.node_name, planned.cfg.advertise_address)
        try:
            ReplaceExecutor(planned, journal, SshHost(transport, planned.cfg.node_name), progress, result, faults).run()
        except KubereviveError as exc:
            if "resumes" not in exc.hint:
                exc.hint = (exc.hint + "; " if exc.hint else "") + (
                    f"then run 'kuberevive replace-control-plane {request.node} --apply' again: it resumes where it "
                    "stopped"
                )
            raise
        finally:
            transport.close()
        journal.finish()
        result.members = [
            {"id": m.id, "name": m.name, "peer_urls": list(m.peer_urls), "is_learner": m.is_learner}
            for m in planned.cluster.etcd.members()
        ]
    result.seconds = round(datetime.now(UTC).timestamp() - t0, 1)
    return result
