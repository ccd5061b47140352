"""``kuberevive quorum-restore``: read every master's etcd facts, plan (:mod:`kuberevive.core.quorum`), and execute
step by step under this node's lock, resumable through a journal.

Run on a master (stacked etcd). The members come from this node's etcd db (the v3 store's ``members`` bucket: it
answers without quorum), each master is reached over SSH at its peer URL's host (``--ssh-key``, ``--known-hosts``;
this node directly), and for each: its etcd manifest, whether its data directory holds a member, the revision of
its db (read along the db's rightmost bbolt pages: locally with ``pread``, on another master with ``dd``) and
whether its etcd answers ``/health``. The journal (``/var/lib/kuberevive/quorum/journal.json``, 0600) records the
plan's facts, the stamp and each stopped manifest before it is moved aside; ``--apply`` again resumes.
Test hook (as recover's): ``KUBEREVIVE_FAULT_AFTER_STEP=<n>`` SIGKILLs the run right after step n is done.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from kuberevive.core import backup as core_backup
from kuberevive.core import etcdsafety
from kuberevive.core import quorum as core
from kuberevive.core import replace as core_replace
from kuberevive.core.manifests import manifest_flags, parse_manifest
from kuberevive.core.netaddr import join_host_port, url_host
from kuberevive.core.retrust import ready_since
from kuberevive.errors import ConfigError, EtcdError, KubeApiError, KubereviveError, PlanError, TransportError
from kuberevive.io import backupfile, etcdprobe
from kuberevive.io.etcd import EtcdClient
from kuberevive.io.host import LocalHost
from kuberevive.io.noderoot import NodeRoot
from kuberevive.io.remotehost import SshHost
from kuberevive.io.transport import Transport
from kuberevive.model import paths
from kuberevive.model.inventory import from_node_objects
from kuberevive.model.recover import RetrustOptions
from kuberevive.run.context import Faults, check_table
from kuberevive.run.journal import Journal
from kuberevive.run.replace import (
    API_TIMEOUT,
    HEALTH_TIMEOUT,
    NODE_TIMEOUT,
    PROMOTE_TIMEOUT,
    Progress,
    ReplaceResult,
    admin_api,
    local_etcd,
    ssh_to_master,
)
from kuberevive.waiting import wait_for

JOURNAL = paths.STATE_DIR / "quorum" / "journal.json"
PLANNING = paths.STATE_DIR / "quorum" / "planning.json"
"""The record of a run being planned (before its journal exists): only the decrypted snapshot it makes."""
# the learner promotion, API and node-back waits and the etcd health probe are replace-control-plane's (same
# membership work); restart-components waits NODE_TIMEOUT for each node to be back
STOP_TIMEOUT = 300.0
ETCD_TIMEOUT = 300.0
RESTORE_TIMEOUT = 3600.0

Machine = LocalHost | SshHost
"""A master: this node, or another over SSH (both can also stop containers)."""


@dataclass(kw_only=True)
class QuorumJournal(Journal):
    """``quorum-restore``'s journal: the facts the plan was made from (they change as it runs), the stamp of every
    name it gives, each stopped manifest's content (node -> component -> YAML) and each learner's id."""

    stamp: str = ""
    local: str = ""
    masters: list[dict[str, Any]] = field(default_factory=list)
    manifests: dict[str, dict[str, str]] = field(default_factory=dict)
    learners: dict[str, str] = field(default_factory=dict)
    snapshot: str = ""
    """The snapshot file restored on this node instead of the best member's db ("" for none)."""
    snapshot_revision: int | None = None
    backup: str = ""
    """``--backup``: the kuberevive backup whose snapshot is restored ("" for none); ``snapshot`` is then the tool's
    temporary file it was decrypted into, decrypted again (from ``--backup`` given again) when a resumed run still
    has to restore it."""
    temporary: list[str] = field(default_factory=list)
    """The decrypted snapshots (``--backup``: cluster Secrets in plaintext) this operation made, each recorded before
    it exists: removed by the run that made it when it ends, else (killed) by the next (:func:`remove_leftovers`)."""

    def record_temporary(self, node_path: PurePosixPath) -> None:
        self.temporary.append(str(node_path))
        self.save()


def remove_leftovers(node: NodeRoot) -> list[str]:
    """The decrypted snapshots a killed run of this operation left (recorded in its journal, or in the planning
    record of a run killed before its journal existed), removed, and their records with them; only files named as
    the tool names them (:func:`backupfile.is_snapshot_sink`). Called under the node's lock: no run uses them."""
    removed: list[str] = []
    planning = QuorumJournal.load(node, PLANNING)
    journal = QuorumJournal.load(node, JOURNAL)
    for j in (planning, journal):
        if j is None or not j.temporary:
            continue
        removed += [p for p in j.temporary if backupfile.remove_snapshot_sink(node, p)]
        if j is journal:
            j.temporary = []
            j.save()
    if planning is not None:
        node.remove_own(PLANNING)
    return removed


@contextlib.contextmanager
def _planning(node: NodeRoot) -> Iterator[QuorumJournal]:
    """The record of a run being planned (:data:`PLANNING`, written only when it records a decrypted snapshot),
    removed when the context ends (its file is removed before: an ExitStack unwinds in reverse)."""
    try:
        yield QuorumJournal(root=node, path=PLANNING, status="planning")
    finally:
        node.remove_own(PLANNING)


QuorumResult = ReplaceResult
"""What the restore did: the plan, the steps applied, whether it resumed, etcd's members at the end (the same
document shape as replace-control-plane's result)."""


# ------------------------------------------------------------------------------------------------ facts


def remote_reader(host: Machine, path: PurePosixPath) -> Callable[[int, int], bytes]:
    """``read(offset, size)`` of a file on ``host`` with ``dd`` (a page at a time, the file never read whole)."""

    def read(offset: int, size: int) -> bytes:
        argv = ["dd", f"if={path}", "iflag=skip_bytes,count_bytes", f"skip={offset}", f"count={size}", "status=none"]
        r = host.run(argv, timeout=60)
        if not r.ok:
            raise ValueError(f"{host.name}: cannot read {path}")
        return r.stdout

    return read


def _revision(host: Machine, local: NodeRoot | None, db: PurePosixPath) -> int | None:
    if local is not None:
        return etcdprobe.stored_revision(local, db)
    if not host.exists(db):
        return None
    try:
        return etcdsafety.stored_revision(remote_reader(host, db))
    except (ValueError, IndexError, OSError):
        return None


def _health(url: str, files: tuple[bytes, bytes, bytes]) -> tuple[bool, str]:
    try:
        return EtcdClient(url, *files, timeout=HEALTH_TIMEOUT).health()
    except EtcdError:
        return False, "unreachable"


def stored_member_list(root: NodeRoot) -> tuple[etcdsafety.Member, ...]:
    """The members as this node's etcd db holds them (no quorum needed); PlanError when it has none."""
    s = etcdprobe.settings(root)
    if s is None:
        raise PlanError(
            f"{paths.ETCD_MANIFEST} is missing or unreadable: this is not a master with stacked etcd",
            "run quorum-restore on the master whose etcd data survived",
        )
    members = etcdprobe.stored_members(root, s.data_dir / "member" / "snap" / "db")
    if not members:
        raise PlanError(
            f"this node's etcd data ({s.data_dir}) holds no member list: its data did not survive",
            "run quorum-restore on the master whose etcd data survived",
        )
    return members


def read_master(
    host: Machine, member: etcdsafety.Member, local: NodeRoot | None, files: tuple[bytes, bytes, bytes]
) -> tuple[core.MasterEtcd, bytes]:
    """One master's facts and its etcd manifest (PlanError without one: its files must be recovered first)."""
    manifest = host.read(paths.ETCD_MANIFEST)
    s = etcdprobe.settings(NodeRoot(Path("/")), manifest) if manifest is not None else None
    if manifest is None or s is None:
        raise PlanError(
            f"{member.name} has no readable {paths.ETCD_MANIFEST}",
            f"recover {member.name}'s files first ('kuberevive recover' there), then run quorum-restore again",
        )
    peer = member.peer_urls[0] if member.peer_urls else ""
    client = member.client_urls[0] if member.client_urls else f"https://{join_host_port(url_host(peer), 2379)}"
    healthy, why = _health(client, files)
    db = s.data_dir / "member" / "snap" / "db"
    m = core.MasterEtcd(
        node=member.name,
        address=url_host(peer),
        member=s.name,
        peer_url=peer,
        client_url=client,
        data_dir=str(s.data_dir),
        has_data=host.exists(s.data_dir / "member"),
        revision=_revision(host, local, db),
        healthy=healthy,
        why="" if healthy else why,
    )
    return m, manifest


# ------------------------------------------------------------------------------------------------ hosts


class Hosts:
    """This node (``LocalHost``) and the other masters over SSH, opened once each and closed at the end."""

    def __init__(self, local: LocalHost, local_name: str, options: RetrustOptions) -> None:
        self.local, self.local_name, self.options = local, local_name, options
        self._open: dict[str, tuple[SshHost, Transport]] = {}

    def get(self, name: str, address: str) -> Machine:
        if name == self.local_name:
            return self.local
        if name not in self._open:
            transport = ssh_to_master(self.options, name, address)
            self._open[name] = (SshHost(transport, name), transport)
        return self._open[name][0]

    def close(self) -> None:
        for _host, transport in self._open.values():
            with contextlib.suppress(Exception):
                transport.close()
        self._open.clear()


def read_masters(hosts: Hosts, files: tuple[bytes, bytes, bytes]) -> tuple[list[core.MasterEtcd], dict[str, bytes]]:
    members = stored_member_list(hosts.local.root)
    out, manifests = [], {}
    for member in members:
        if member.is_learner or not member.peer_urls:
            continue
        address = url_host(member.peer_urls[0])
        local = member.name == hosts.local_name
        try:
            host = hosts.get(member.name, address)
            m, manifest = read_master(host, member, hosts.local.root if local else None, files)
        except TransportError as exc:
            raise PlanError(
                f"master {member.name} cannot be reached over SSH at {address}: {exc.message}",
                "quorum-restore needs every master (pass --ssh-key and --known-hosts); a master whose machine is "
                "gone is replaced afterwards with 'kuberevive replace-control-plane'",
            ) from exc
        out.append(m)
        manifests[m.node] = manifest
    return out, manifests


# ------------------------------------------------------------------------------------------------ executor


def _wait_for(what: str, timeout: float, probe: Callable[[], tuple[bool, str]], interval: float) -> float:
    """:func:`wait_for` naming the command that resumes a restore (not recover's)."""
    return wait_for(what, timeout, probe, interval, "kuberevive quorum-restore --apply")


class QuorumExecutor:
    def __init__(
        self,
        planned: core.QuorumPlan,
        journal: QuorumJournal,
        hosts: Callable[[core.MasterEtcd], Machine],
        etcd: Callable[[str], EtcdClient],
        api_ready: Callable[[core.MasterEtcd, int], tuple[bool, str]],
        progress: Progress,
        result: QuorumResult,
        faults: Faults,
        wait: Callable[[str, float, Callable[[], tuple[bool, str]], float], float] = _wait_for,
        workers: Callable[[], list[tuple[str, Callable[[], Machine]]]] = list,
        node_ready: Callable[[str, datetime], tuple[bool, str]] | None = None,
    ) -> None:
        self.p = planned
        self.journal = journal
        self.hosts = hosts
        self.etcd = etcd
        self.api_ready = api_ready
        self.progress = progress
        self.result = result
        self.faults = faults
        self.wait = wait
        self.workers = workers
        """The other nodes (name, how to reach it), asked once the API answers again."""
        self.node_ready = node_ready
        """Whether a Node is Ready with a heartbeat at or after a time (the API's view); None: not asked."""

    # -- helpers ------------------------------------------------------------------------------

    def _manifest(self, node: str, component: str) -> bytes:
        text = self.journal.manifests.get(node, {}).get(component)
        if text is None:
            raise PlanError(
                f"the journal {self.journal.path} lacks {node}'s {component} manifest",
                f"put it back by hand from {paths.STATE_DIR}/backup, then move the journal aside",
            )
        return text.encode()

    def _start(self, m: core.MasterEtcd, component: str, content: bytes | None = None) -> None:
        host = self.hosts(m)
        aside = host.write(
            paths.MANIFESTS_DIR / f"{component}.yaml", content or self._manifest(m.node, component), 0o600
        )
        if aside is not None:
            self.result.messages.append(f"{m.node}: {component}.yaml moved aside to {aside}")

    def _healthy(self, m: core.MasterEtcd) -> tuple[bool, str]:
        try:
            return self.etcd(m.client_url).health()
        except EtcdError as exc:
            return False, exc.message

    def _wait_api(self, m: core.MasterEtcd) -> None:
        flags = manifest_flags(parse_manifest(self._manifest(m.node, "kube-apiserver")))
        port = int(flags.get("secure-port", "6443") or 6443)
        took = self.wait(f"the API server of {m.node} (/readyz)", API_TIMEOUT, lambda: self.api_ready(m, port), 2.0)
        self.progress(f"      API server of {m.node} ready ({took:.0f} s)")

    # -- steps --------------------------------------------------------------------------------

    def step_stop_control_plane(self, _node: str) -> None:
        for m in self.p.masters:
            host = self.hosts(m)
            for component in core.STOPPED:
                path = paths.MANIFESTS_DIR / f"{component}.yaml"
                data = host.read(path)
                if data is None:
                    continue  # moved before (a resumed run) or never there
                self.journal.manifests.setdefault(m.node, {})[component] = data.decode()
                self.journal.save()  # recorded before it is moved
                aside = host.move_aside(path)
                self.result.messages.append(f"{m.node}: {path} moved aside to {aside}")
        for m in self.p.masters:
            host = self.hosts(m)

            def stopped(host: Machine = host) -> tuple[bool, str]:
                running = [c.name for comp in core.STOPPED for c in host.containers(comp)]
                return not running, f"running: {', '.join(running)}"

            self.wait(f"etcd and the API server of {m.node} to stop", STOP_TIMEOUT, stopped, 1.0)
        self.progress(f"      stopped on {', '.join(m.node for m in self.p.masters)}")

    def step_keep_data(self, _node: str) -> None:
        for m in self.p.masters:
            host = self.hosts(m)
            src, dst = PurePosixPath(m.data_dir), core.kept_name(m.data_dir, self.journal.stamp)
            if host.exists(dst) or not host.exists(src):
                continue
            host.rename(src, dst)
            self.result.messages.append(f"{m.node}: {src} kept as {dst}")
            self.progress(f"      {m.node}: {src} kept as {dst}")

    def step_restore_donor(self, _node: str) -> None:
        d = self.p.donor
        host = self.hosts(d)
        target = PurePosixPath(d.data_dir)
        if host.exists(target / "member"):
            self.progress(f"      {target} restored before")
            return
        if host.exists(target):  # an empty directory something created meanwhile: kept, never deleted
            host.rename(target, target.with_name(f"{target.name}.kuberevive-empty-{_now_stamp()}"))
        source, skip_hash_check = self.p.source(self.journal.stamp)
        staging = target.with_name(f"{target.name}.kuberevive-restore-{_now_stamp()}")
        token = manifest_flags(parse_manifest(self._manifest(d.node, "etcd"))).get("initial-cluster-token")
        args = core.restore_args(d, source, str(staging), token, skip_hash_check=skip_hash_check)
        r = host.run(["etcdutl", *args], timeout=RESTORE_TIMEOUT)
        if not r.ok:
            last = (r.stderr.decode(errors="replace").strip().splitlines() or ["(no output)"])[-1][:300]
            raise EtcdError(
                f"{d.node}: etcdutl snapshot restore of {source} failed: {last}",
                f"check etcdutl on {d.node} (of the cluster's etcd release) and the db with 'etcdutl snapshot status'",
            )
        host.rename(staging, target)
        self.progress(f"      {d.node}: {source} restored into {target} (a one-member etcd)")

    def step_start_donor(self, _node: str) -> None:
        d = self.p.donor
        self._start(d, "etcd")
        took = self.wait(f"etcd on {d.node} to be healthy", ETCD_TIMEOUT, lambda: self._healthy(d), 2.0)
        self.progress(f"      etcd on {d.node} healthy ({took:.0f} s)")
        self._start(d, "kube-apiserver")
        self._wait_api(d)

    def step_regrow(self, node: str) -> None:
        m = next(x for x in self.p.masters if x.node == node)
        donor = self.etcd(self.p.donor.client_url)
        members = donor.members()
        existing = next((x for x in members if m.peer_url in x.peer_urls), None)
        if existing is None:
            existing = donor.member_add([m.peer_url], learner=True)
            members = donor.members()
        self.journal.learners[node] = existing.id
        self.journal.save()
        cluster = core_replace.initial_cluster(
            [core_replace.EtcdMember(x.id, x.name, x.peer_urls, x.is_learner) for x in members], m.member, m.address
        )
        if not self.hosts(m).exists(PurePosixPath(m.data_dir) / "member"):
            self._start(m, "etcd", core.rejoin_manifest(self._manifest(node, "etcd"), cluster))
        learner = existing.id

        def promoted() -> tuple[bool, str]:
            member = next((x for x in donor.members() if x.id == learner), None)
            if member is None:
                raise PlanError(f"the learner {learner} ({node}) is no longer an etcd member", "run again")
            if not member.is_learner:
                return True, ""
            try:
                donor.member_promote(learner)
            except EtcdError as exc:
                return False, exc.message
            return True, ""

        took = self.wait(f"{node}'s learner {learner} to catch up and be promoted", PROMOTE_TIMEOUT, promoted, 2.0)
        self.progress(f"      {node}: promoted to a voting member ({took:.0f} s)")
        self._start(m, "kube-apiserver")
        self._wait_api(m)

    def _back(self, name: str, host: Machine | None, since: datetime) -> None:
        """Wait until ``name``'s restarted kubelet posts Ready again (and, on a master, its controller-manager and
        scheduler run again) before the next node is restarted: one node's restart at a time, so that the CPU its
        components take to start and its pods' re-probed readiness never add up across nodes (a Service request
        timed out while every master restarted at once). Too slow is a message: the restore itself is done."""

        def back() -> tuple[bool, str]:
            missing = [c for c in core.RESTARTED if host is not None and not host.containers(c)]
            if missing:
                return False, f"not running yet: {', '.join(missing)}"
            return self.node_ready(name, since) if self.node_ready is not None else (True, "")

        try:
            took = self.wait(f"{name} to be back after its kubelet restart", NODE_TIMEOUT, back, 1.0)
        except KubereviveError as exc:
            self.result.messages.append(f"{name}: {exc.message}")
            return
        self.progress(f"      {name}: back ({took:.0f} s)")

    def step_restart_components(self, _node: str) -> None:
        for m in self.p.masters:
            host = self.hosts(m)
            since = datetime.now(UTC).replace(microsecond=0)  # heartbeats have whole seconds
            stopped = sum(host.stop_containers(c) for c in core.RESTARTED)
            host.restart_unit("kubelet")
            self.progress(f"      {m.node}: {stopped} container(s) restarted, kubelet restarted")
            self._back(m.node, host, since)
        # the other nodes' kubelets: their watches would relist by themselves, so one that cannot be reached is
        # a message, not a failure
        try:
            workers = self.workers()
        except KubereviveError as exc:
            self.result.messages.append(f"the other nodes' kubelets not restarted: {exc.message}")
            workers = []
        for name, worker in workers:
            since = datetime.now(UTC).replace(microsecond=0)
            try:
                worker().restart_unit("kubelet")
            except KubereviveError as exc:
                self.result.messages.append(f"{name}: kubelet not restarted: {exc.message}")
                continue
            self.progress(f"      {name}: kubelet restarted")
            self._back(name, None, since)

    def run(self) -> None:
        total = len(self.p.steps)
        for index, step in enumerate(self.p.steps, start=1):
            title = step.title + (f" ({step.node})" if step.node else "")
            if self.journal.step_done(step.key):
                self.progress(f"[{index}/{total}] {title}: done before")
                continue
            self.progress(f"[{index}/{total}] {title}")
            started = datetime.now(UTC).timestamp()
            self.journal.mark(step.key, "started")
            QUORUM_STEPS[step.id](self, step.node)
            self.journal.mark(step.key, "done", seconds=round(datetime.now(UTC).timestamp() - started, 3))
            self.result.applied.append(step.key)
            self.faults.after(index)


def _now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


#: Step id -> its handler; checked against :data:`core.STEP_TITLES` at import.
QUORUM_STEPS: dict[str, Callable[[QuorumExecutor, str], None]] = {
    "stop-control-plane": QuorumExecutor.step_stop_control_plane,
    "keep-data": QuorumExecutor.step_keep_data,
    "restore-donor": QuorumExecutor.step_restore_donor,
    "start-donor": QuorumExecutor.step_start_donor,
    "regrow": QuorumExecutor.step_regrow,
    "restart-components": QuorumExecutor.step_restart_components,
}
check_table(QUORUM_STEPS, tuple(core.STEP_TITLES), "kuberevive.run.quorum")


# ------------------------------------------------------------------------------------------------ entry points


def _masters_of(journal: QuorumJournal) -> list[core.MasterEtcd]:
    return [core.MasterEtcd(**m) for m in journal.masters]


def _local_name(root: NodeRoot) -> str:
    s = etcdprobe.settings(root)
    return s.name if s is not None else ""


def read_snapshot(root: NodeRoot, path: str | None) -> core.Snapshot | None:
    """``--snapshot``: the file and the revision of its v3 store (None when it is not one: the plan refuses)."""
    if path is None:
        return None
    p = PurePosixPath(path)
    if not p.is_absolute() or not root.exists(p):
        raise PlanError(f"--snapshot {path}: no such file on this node", "pass the snapshot's absolute path")
    return core.Snapshot(str(p), etcdprobe.stored_revision(root, p))


@dataclass(frozen=True)
class BackupSource:
    """``--backup``: a kuberevive backup (``backup create --etcd-snapshot``) and how to open it, as restore-etcd."""

    path: str
    secret: core_backup.Secret
    allow_foreign: bool = False
    ca_cert_hash: str | None = None
    allow_unauthenticated: bool = False


@contextlib.contextmanager
def backup_snapshot(
    root: NodeRoot,
    source: BackupSource,
    data_dir: PurePosixPath,
    warn: Progress,
    record: backupfile.Record | None = None,
) -> Iterator[core.Snapshot]:
    """The backup's etcd snapshot decrypted (streamed: :func:`backupfile.backup_snapshot`, restore-etcd's path)
    into a 0600 file in a 0700 directory beside ``data_dir`` (``record``-ed before it exists), with its revision; the
    file is removed when the context ends. A wrong key, a damaged file, a backup of another cluster or one without a
    snapshot: one error before anything changed."""
    path = Path(source.path)
    if not core_backup.is_age_file(backupfile.read_head(path)):
        raise PlanError(
            f"--backup {source.path} is not a kuberevive backup (no age header); nothing was changed",
            "pass a file made by 'kuberevive backup create --etcd-snapshot', or a plain etcd snapshot with --snapshot",
        )
    with backupfile.backup_snapshot(
        root,
        path,
        source.secret,
        data_dir,
        allow_foreign=source.allow_foreign,
        ca_cert_hash=source.ca_cert_hash,
        allow_unauthenticated=source.allow_unauthenticated,
        record=record,
    ) as extracted:
        for warning in extracted.warnings:
            warn(warning)
        node_path = extracted.node_path
        yield core.Snapshot(str(node_path), etcdprobe.stored_revision(root, node_path), backup=source.path)


def _source(
    stack: contextlib.ExitStack,
    root: NodeRoot,
    snapshot: str | None,
    backup: BackupSource | None,
    data_dir: PurePosixPath | None,
    warn: Progress,
    record: backupfile.Record | None = None,
) -> core.Snapshot | None:
    """What the donor restores instead of its own db: ``--snapshot``, ``--backup`` (decrypted for the stack's
    lifetime, ``record``-ed first) or None."""
    if backup is None:
        return read_snapshot(root, snapshot)
    if snapshot is not None:
        raise PlanError("--snapshot and --backup exclude each other", "pass one of them")
    if data_dir is None:
        s = etcdprobe.settings(root)
        data_dir = s.data_dir if s is not None else paths.ETCD_DATA_DIR
    return stack.enter_context(backup_snapshot(root, backup, data_dir, warn, record))


def plan(
    root: str,
    options: RetrustOptions,
    snapshot: str | None = None,
    backup: BackupSource | None = None,
    warn: Progress = lambda _s: None,
) -> dict[str, Any]:
    node = NodeRoot(Path(root))
    etcd = local_etcd(node)
    hosts = Hosts(LocalHost(node, live=True), _local_name(node), options)
    # a backup's snapshot: decrypted to read its revision, then removed (a plan writes no record of it: killed with
    # SIGKILL it leaves the file in its 0700 directory)
    with contextlib.ExitStack() as stack:
        snap = _source(stack, node, snapshot, backup, None, warn)
        try:
            masters, _ = read_masters(hosts, etcd.files)
        finally:
            hosts.close()
        return core.plan(masters, hosts.local_name, snapshot=snap).document()


def _resumed_source(
    stack: contextlib.ExitStack, node: NodeRoot, journal: QuorumJournal, backup: BackupSource | None, warn: Progress
) -> core.Snapshot | None:
    """The snapshot a resumed run restores: the journal's; a backup's is decrypted again (its temporary file went
    with the stopped run) while the donor still has to be restored, and must be the same (its revision)."""
    if not journal.snapshot:
        return None
    if not journal.backup or journal.step_done("restore-donor"):
        return core.Snapshot(journal.snapshot, journal.snapshot_revision, backup=journal.backup)
    if backup is None:
        raise PlanError(
            f"the stopped restore was from the backup {journal.backup} and has not restored it yet",
            f"run 'kuberevive quorum-restore --apply --backup {journal.backup}' with its key again",
        )
    local = next((m for m in _masters_of(journal) if m.node == journal.local), None)
    data_dir = PurePosixPath(local.data_dir) if local else paths.ETCD_DATA_DIR
    snap = stack.enter_context(backup_snapshot(node, backup, data_dir, warn, journal.record_temporary))
    if snap.revision != journal.snapshot_revision:
        raise PlanError(
            f"the backup {backup.path} holds revision {snap.revision}, the stopped restore planned revision "
            f"{journal.snapshot_revision} from {journal.backup}",
            f"pass the same backup ({journal.backup})",
        )
    journal.snapshot = snap.path
    journal.save()
    return snap


def _api_ready(root: NodeRoot) -> Callable[[core.MasterEtcd, int], tuple[bool, str]]:
    def ready(m: core.MasterEtcd, port: int) -> tuple[bool, str]:
        host = f"[{m.address}]" if ":" in m.address else m.address
        try:
            return admin_api(root, f"https://{host}:{port}").readyz()
        except (KubeApiError, PlanError, ConfigError) as exc:
            return False, exc.message

    return ready


def _node_ready(root: NodeRoot) -> Callable[[str, datetime], tuple[bool, str]]:
    def ready(name: str, since: datetime) -> tuple[bool, str]:
        try:
            return ready_since(admin_api(root).get(f"/api/v1/nodes/{name}"), since)
        except (KubeApiError, PlanError, ConfigError) as exc:
            return False, exc.message

    return ready


def _workers(
    root: NodeRoot, options: RetrustOptions, hosts: Hosts, masters: set[str]
) -> Callable[[], list[tuple[str, Callable[[], Machine]]]]:
    """The nodes that are not masters (the inventory's, else the Node objects'), each with how to reach it."""

    def listed() -> list[tuple[str, Callable[[], Machine]]]:
        inventory = options.inventory
        if inventory is None:
            items = admin_api(root).get("/api/v1/nodes").get("items") or []
            inventory = from_node_objects(items, options.ssh_user, options.ssh_port)
        return [
            (n.name, lambda n=n: hosts.get(n.name, n.address))  # type: ignore[misc]
            for n in inventory.nodes
            if n.name not in masters
        ]

    return listed


def apply(
    root: str,
    options: RetrustOptions,
    progress: Progress,
    environ: Mapping[str, str] | None = None,
    snapshot: str | None = None,
    backup: BackupSource | None = None,
    warn: Progress | None = None,
) -> QuorumResult:
    """Restore quorum (or resume a restore that stopped) under this node's lock. ``backup``: its etcd snapshot is
    decrypted to a temporary file on this node, restored, and the file removed at the end."""
    local = LocalHost(NodeRoot(Path(root)), live=True)
    node = local.root
    faults = Faults.from_environ(os.environ if environ is None else environ)
    t0 = datetime.now(UTC).timestamp()
    with local.lock("quorum-restore", error=PlanError):
        for path in remove_leftovers(node):
            progress(f"removed {path}: the decrypted snapshot a stopped run left")
        journal, result = _apply_locked(node, local, options, progress, faults, snapshot, backup, warn)
        journal.temporary = []  # removed with the run's ExitStack
        journal.finish()
    result.seconds = round(datetime.now(UTC).timestamp() - t0, 1)
    return result


def _apply_locked(
    node: NodeRoot,
    local: LocalHost,
    options: RetrustOptions,
    progress: Progress,
    faults: Faults,
    snapshot: str | None,
    backup: BackupSource | None,
    warn: Progress | None,
) -> tuple[QuorumJournal, QuorumResult]:
    """:func:`apply` under the node's lock; a decrypted snapshot is removed when this returns or raises."""
    with contextlib.ExitStack() as stack:
        journal = QuorumJournal.load(node, JOURNAL)
        resumed = journal is not None and journal.status == "running"
        # a stopped run may have moved this node's etcd manifest aside: the journal holds it
        kept = journal.manifests.get(journal.local, {}).get("etcd") if resumed and journal else None
        etcd = local_etcd(node, kept.encode() if kept else None)
        hosts = Hosts(local, journal.local if resumed and journal else _local_name(node), options)
        try:
            if resumed and journal is not None:
                progress(f"resuming the quorum restore started at {journal.started_at} (journal {JOURNAL})")
                snap = _resumed_source(stack, node, journal, backup, warn or progress)
                planned = core.plan(_masters_of(journal), journal.local, resumed=True, snapshot=snap)
            else:
                planning = stack.enter_context(_planning(node))
                snap = _source(stack, node, snapshot, backup, None, warn or progress, planning.record_temporary)
                masters, manifests = read_masters(hosts, etcd.files)
                planned = core.plan(masters, hosts.local_name, snapshot=snap)
                if journal is not None:
                    node.move_aside(JOURNAL)
                journal = QuorumJournal.new(
                    node,
                    JOURNAL,
                    stamp=_now_stamp(),
                    local=hosts.local_name,
                    masters=[asdict(m) for m in masters],
                    manifests={n: {} for n in manifests},
                    snapshot=snap.path if snap else "",
                    snapshot_revision=snap.revision if snap else None,
                    backup=snap.backup if snap else "",
                    temporary=planning.temporary,
                )
                node.remove_own(PLANNING)  # its record is in the journal now
            result = QuorumResult(planned.document(), resumed=resumed)
            executor = QuorumExecutor(
                planned,
                journal,
                lambda m: hosts.get(m.node, m.address),
                lambda url: EtcdClient(url, *etcd.files, timeout=10),
                _api_ready(node),
                progress,
                result,
                faults,
                workers=_workers(node, options, hosts, {m.node for m in planned.masters}),
                node_ready=_node_ready(node),
            )
            executor.run()
            result.members = [
                {"id": m.id, "name": m.name, "peer_urls": list(m.peer_urls), "is_learner": m.is_learner}
                for m in EtcdClient(planned.donor.client_url, *etcd.files, timeout=10).members()
            ]
        except KubereviveError as exc:
            if "resumes" not in exc.hint:
                exc.hint = (exc.hint + "; " if exc.hint else "") + (
                    "then run 'kuberevive quorum-restore --apply' again: it resumes where it stopped"
                )
            raise
        finally:
            hosts.close()
    return journal, result
