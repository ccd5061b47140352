"""What every recovery step is a function of: :class:`StepContext`.

A step (``run/steps``) gets one context and its 1-based index in the plan, and reaches the node, the cluster,
the journal, the options, the clock and the fault hook only through it, so that a test can run every step
against a fake host, a fake API and a fake etcd (``tests/unit/test_executor.py``). Nothing here imports the
executor: steps depend on the context, the executor on the steps.

Test hooks (:class:`Faults`, read once from the environment by :func:`Faults.from_environ`):
``KUBEREVIVE_FAULT_AFTER_STEP=<n>`` kills the run right after step n is recorded as done;
``KUBEREVIVE_FAULT_MID_STEP=<n>`` kills it in the middle of step n (after part of its files are written, or
before its verification); ``KUBEREVIVE_RETRUST_DELAY=<seconds>`` waits that long before re-trusting the other
nodes (a slow or unreachable fleet), so a test can let the node-monitor grace period and the pods' NotReady
tolerations run out while the eviction guard holds.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from kuberevive.core import recover as core
from kuberevive.core import uploadcerts
from kuberevive.errors import KubereviveError, NodeFsError, PlanError
from kuberevive.io.etcd import EtcdClient
from kuberevive.io.host import Host, LocalHost
from kuberevive.io.kubeapi import KubeApi
from kuberevive.io.noderoot import NodeRoot
from kuberevive.io.remotehost import SshHost
from kuberevive.io.tls import verify_server
from kuberevive.io.transport import Deadline
from kuberevive.model.artifacts import Artifact
from kuberevive.model.config import KubeadmConfig, NodeFacts
from kuberevive.model.inventory import InventoryNode
from kuberevive.model.paths import ADMIN_CONF
from kuberevive.model.recover import NodeIdentity, RecoveryPlan, RetrustOptions
from kuberevive.run import keys
from kuberevive.run.journal import RecoveryJournal
from kuberevive.run.retrust import connect, read_peer_files

Progress = Callable[[str], None]

PLACEHOLDER_TIMEOUT = 90.0


@dataclass
class RecoveryResult:
    plan: RecoveryPlan
    applied: list[str] = field(default_factory=list)
    join_command: str = ""
    control_plane_join_command: str = ""
    """With a controlPlaneEndpoint: ``join_command`` for a new control-plane node, with a fresh certificate key."""
    timings: dict[str, float] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.as_dict(),
            "applied": self.applied,
            "join_command": self.join_command,
            "control_plane_join_command": self.control_plane_join_command,
            "timings": self.timings,
            "messages": self.messages,
            "report": self.report,
        }


def _sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def check_table(table: Mapping[str, object], step_ids: Sequence[str], owner: str = "kuberevive.run.steps") -> None:
    """Raise ``ImportError`` when a step table (step id -> handler) and the plan's step ids differ, in either
    direction or in order; every executor checks its table with it when its module is imported."""
    if tuple(table) != tuple(step_ids):
        missing = [s for s in step_ids if s not in table]
        extra = [s for s in table if s not in step_ids]
        raise ImportError(
            f"{owner}: the step table does not match the plan's steps (no handler: {missing}, "
            f"no such step: {extra}, or another order)"
        )


@dataclass(frozen=True)
class Faults:
    """Where a test wants the run killed (1-based step indexes); ``kill`` is SIGKILL unless a test injects one."""

    after_step: int | None = None
    mid_step: int | None = None
    retrust_delay: float = 0.0
    """Seconds to wait before re-trusting the other nodes (a slow fleet): the guard must hold meanwhile."""
    kill: Callable[[], None] = _sigkill

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Faults:
        def index(name: str) -> int | None:
            value = environ.get(name, "")
            return int(value) if value.isdigit() else None

        delay = float(environ.get("KUBEREVIVE_RETRUST_DELAY", "0") or 0)
        return cls(index("KUBEREVIVE_FAULT_AFTER_STEP"), index("KUBEREVIVE_FAULT_MID_STEP"), delay)

    def armed_mid(self, index: int) -> bool:
        return self.mid_step == index

    def mid(self, index: int) -> None:
        if self.mid_step == index:
            self.kill()

    def after(self, index: int) -> None:
        if self.after_step == index:
            self.kill()


def kubeconfig_api(root: NodeRoot, kubeconfig: bytes, timeout: float = 10.0) -> KubeApi:
    """A client of the API server a kubeconfig names; the files it refers to are read on the node."""
    return KubeApi.from_kubeconfig(kubeconfig, read_file=lambda p: root.read(p) or b"", timeout=timeout)


def admin_api(root: NodeRoot, timeout: float = 5.0) -> KubeApi | None:
    """A client of the API server with the node's admin.conf, None when there is none."""
    data = root.read(ADMIN_CONF)
    if data is None:
        return None
    return kubeconfig_api(root, data, timeout)


def node_api(root: NodeRoot) -> KubeApi:
    api = admin_api(root, timeout=10)
    if api is None:
        raise PlanError(f"{ADMIN_CONF} is missing although its step is done", "run recover again")
    return api


def etcd_client_files(root: NodeRoot, cfg: KubeadmConfig) -> tuple[bytes, bytes, bytes]:
    """The etcd CA and the healthcheck client certificate and key of the node's etcd PKI."""
    cdir = PurePosixPath(cfg.cluster.certificates_dir)
    files = [root.read(cdir / n) for n in ("etcd/ca.crt", "etcd/healthcheck-client.crt", "etcd/healthcheck-client.key")]
    if any(f is None for f in files):
        raise PlanError("the etcd certificates are missing although their step is done", "run recover again")
    ca, cert, key = (f or b"" for f in files)
    return ca, cert, key


def node_etcd(root: NodeRoot, cfg: KubeadmConfig) -> EtcdClient:
    """The local etcd member, with the healthcheck client certificate of the node's etcd PKI."""
    ca, cert, key = etcd_client_files(root, cfg)
    return EtcdClient("https://127.0.0.1:2379", ca, cert, key, timeout=5)


def peer_etcd(url: str, ca: bytes, cert: bytes, key: bytes) -> EtcdClient:
    """A peer's etcd member at its client URL, with this node's etcd client credentials."""
    return EtcdClient(url, ca, cert, key, timeout=10)


#: Time limit of the SSH session to another master in one step (its writes, a kubelet restart, the waits).
MASTER_SESSION_TIMEOUT = 900.0


@contextlib.contextmanager
def ssh_master(node: InventoryNode, opts: RetrustOptions) -> Iterator[Host]:
    """Another control-plane node over SSH, as a :class:`Host`, for one step (the all-masters case)."""
    transport = connect(opts)(node, Deadline.after(MASTER_SESSION_TIMEOUT))
    try:
        yield SshHost(transport, node.name)
    finally:
        transport.close()


def bootstrap_config(identity: NodeIdentity, given: KubeadmConfig | None) -> KubeadmConfig:
    """The configuration until the stored one is read from etcd: ``--config``, else kubeadm's defaults for
    this node."""
    return given if given is not None else core.bootstrap_config(identity)


def final_config(identity: NodeIdentity, given: KubeadmConfig | None, journal: RecoveryJournal) -> KubeadmConfig:
    """The configuration once ``read-config`` is done: ``--config`` (checked against etcd), else the stored one."""
    stored = journal.config
    if stored is None:
        raise PlanError("the journal has no stored configuration although read-config is done", "run again")
    if given is not None:
        return given
    return core.final_config(identity, stored.cluster, stored.kubelet)


def _utcnow() -> datetime:
    return datetime.now(UTC)


in_background = keys.in_thread


@dataclass
class AheadStop:
    """A unit stopped in the background from the run's start, ahead of the step that restarts it (the kubelet:
    ``kubeadm init phase kubelet-start`` also stops it before it writes the kubelet's files). The step
    calls :meth:`settle`: a stop not begun yet is called off (the step's restart stops the unit itself), one under way
    is waited for. States: ``asked``, ``stopping``, then ``stopped``, ``failed: <why>`` or ``called off``."""

    unit: str
    state: str = "asked"
    changed: threading.Condition = field(default_factory=threading.Condition)

    def run(self, stop: Callable[[str], None]) -> None:
        """The background work: ``stop(unit)`` unless called off first."""
        with self.changed:
            if self.state != "asked":
                return
            self.state = "stopping"
        try:
            stop(self.unit)
            state = "stopped"
        except KubereviveError as exc:
            state = f"failed: {exc}"
        with self.changed:
            self.state = state
            self.changed.notify_all()

    def settle(self, timeout: float) -> str:
        """Call the stop off when it has not begun, else wait up to ``timeout`` seconds for it; the state."""
        with self.changed:
            if self.state == "asked":
                self.state = "called off"
            self.changed.wait_for(lambda: self.state != "stopping", timeout)
            return self.state


@dataclass(frozen=True)
class Effects:
    """How steps reach the world beyond the node's files: clients, clocks, sleep and the fault hooks. The
    defaults are the real ones; a test passes fakes."""

    api_client: Callable[[NodeRoot], KubeApi] = node_api
    etcd_client: Callable[[NodeRoot, KubeadmConfig], EtcdClient] = node_etcd
    clock: Callable[[], float] = time.time
    """Wall clock (UNIX seconds), for the journal's timings."""
    utcnow: Callable[[], datetime] = _utcnow
    """Validity start of certificates, and ``since`` of readiness checks."""
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    faults: Faults = field(default_factory=Faults)
    peer_files: Callable[
        [InventoryNode, RetrustOptions, Sequence[PurePosixPath]], dict[PurePosixPath, bytes | None]
    ] = read_peer_files
    """Files of a healthy control-plane peer, read over SSH (salvage-trust)."""
    verify_tls: Callable[[str, int, bytes], None] = verify_server
    """A TLS handshake with host:port verified with a CA (the peer's API server serves with its ca.crt)."""
    peer_etcd_client: Callable[[str, bytes, bytes, bytes], EtcdClient] = peer_etcd
    kubeconfig_api: Callable[[NodeRoot, bytes], KubeApi] = kubeconfig_api
    master_host: Callable[[InventoryNode, RetrustOptions], contextlib.AbstractContextManager[Host]] = ssh_master
    """Another control-plane node, to write its files and restart its kubelet (the all-masters case)."""
    """A client from a kubeconfig's bytes (the kubelet's, through a peer: kubelet-via-peer)."""
    random_bytes: Callable[[int], bytes] = secrets.token_bytes
    """Secrets the run makes: the certificate key, tokens, AES-GCM nonces."""
    background: Callable[[Callable[[], None]], None] = in_background
    """Work that may overlap the steps (the keys the first steps need, made ahead while the run plans)."""


@dataclass
class StepContext:
    """One recovery run: the node, who it is, its configuration, the journal, the options and the effects."""

    host: LocalHost
    identity: NodeIdentity
    given: KubeadmConfig | None
    """``--config``, when passed."""
    kept: Mapping[str, bytes]
    facts: NodeFacts
    journal: RecoveryJournal
    options: RetrustOptions = field(default_factory=RetrustOptions)
    progress: Progress = print
    fx: Effects = field(default_factory=Effects)
    messages: list[str] = field(default_factory=list)
    """What the run moved aside or noticed, for the final result."""
    report: dict[str, Any] = field(default_factory=dict)
    kubelet_stop: AheadStop | None = None
    """The kubelet stopped from the run's start, when kubelet-start restarts it in the early order."""

    @property
    def faults(self) -> Faults:
        return self.fx.faults

    def clock(self) -> float:
        return self.fx.clock()

    def utcnow(self) -> datetime:
        return self.fx.utcnow()

    def monotonic(self) -> float:
        return self.fx.monotonic()

    def sleep(self, seconds: float) -> None:
        self.fx.sleep(seconds)

    @property
    def root(self) -> NodeRoot:
        return self.host.root

    # -- configuration -------------------------------------------------------------------

    def bootstrap_cfg(self) -> KubeadmConfig:
        """The configuration etcd's steps use: the bootstrap one, or the stored one when it was read from etcd's
        data files before etcd ran (``early_config``)."""
        if self.journal.early_config:
            return self.final_cfg()
        return bootstrap_config(self.identity, self.given)

    def final_cfg(self) -> KubeadmConfig:
        return final_config(self.identity, self.given, self.journal)

    # -- clients -------------------------------------------------------------------------

    def api(self) -> KubeApi:
        return self.fx.api_client(self.root)

    def etcd(self, cfg: KubeadmConfig) -> EtcdClient:
        return self.fx.etcd_client(self.root, cfg)

    # -- the node's files ----------------------------------------------------------------

    def on_node(self, cfg: KubeadmConfig) -> dict[PurePosixPath, bytes]:
        """Every file of the PKI and /etc/kubernetes as the node has it now."""
        return self.root.read_tree(cfg.cluster.certificates_dir) | self.root.read_tree("/etc/kubernetes")

    def ca_pair(self) -> tuple[bytes, bytes]:
        cfg = self.final_cfg()
        return core.ca_pair(cfg, self.on_node(cfg))

    def join_command(self) -> str:
        """``kubeadm join`` with the new bootstrap token and the CA's discovery hash."""
        ca, _key = self.ca_pair()
        return core.join_command(self.final_cfg(), self.journal.require_token(), ca)

    def control_plane_join_command(self, worker_join: str) -> str:
        """``worker_join`` for a new control-plane node when the run uploaded the certificates, else empty."""
        key = self.journal.certificate_key
        return uploadcerts.control_plane_join_command(worker_join, key) if key else ""

    def move_aside(self, path: PurePosixPath, now: datetime | None = None) -> PurePosixPath:
        """Move a file or symlink to the backup directory (also across file systems); its new path."""
        aside = self.host.move_aside(path, now or self.utcnow())
        if aside is None:
            raise NodeFsError(f"cannot move {path} aside: it is gone", "run 'kuberevive recover --apply' again")
        return aside

    def write_step_files(self, step_id: str, index: int, compute: Callable[[], list[Artifact]]) -> list[str]:
        """Write the step's files, recorded in the journal first (a resumed run writes exactly the same bytes);
        returns the paths that were already in place."""
        artifacts = self.journal.artifacts(step_id)
        if artifacts is None:
            artifacts = compute()
            self.journal.record_artifacts(step_id, artifacts)
        if self.faults.armed_mid(index) and len(artifacts) > 1:
            self.root.write_all(artifacts[: len(artifacts) // 2], force=True)
            self.faults.mid(index)
        # An old static pod the kubelet still runs (it re-lists a re-created manifest directory only every
        # 20 s) makes the container runtime create an empty directory at a missing hostPath file, e.g.
        # controller-manager.conf, again and again until the kubelet drops the pod: move it aside and retry.
        deadline = self.monotonic() + PLACEHOLDER_TIMEOUT
        while True:
            try:
                self._move_aside_replaced(artifacts)
                results = self.root.write_all(artifacts, force=True)
                break
            except (NodeFsError, IsADirectoryError):
                if self.monotonic() > deadline or not any(self.root.is_placeholder_dir(a.path) for a in artifacts):
                    raise
                self.progress("      an empty directory came back where a file belongs (an old static pod): retrying")
                self.sleep(2)
        changed = [r for r in results if r.action.value != "unchanged"]
        for r in changed:
            if r.moved_aside_to:
                self.messages.append(f"{r.artifact.path} moved aside to {r.moved_aside_to}")
        if changed:
            written = self.journal.changed_files
            written.extend(str(r.artifact.path) for r in changed if str(r.artifact.path) not in written)
            self.journal.save()
        self.progress(f"      wrote {len(changed)} file(s), {len(results) - len(changed)} already in place")
        return [str(r.artifact.path) for r in results if r.action.value == "unchanged"]

    def _move_aside_replaced(self, artifacts: list[Artifact]) -> None:
        for a in artifacts:  # move replaced files aside first: /etc and /var may be different file systems
            if self.root.is_placeholder_dir(a.path):  # left by the container runtime; holds nothing
                aside = self.move_aside(a.path)
                self.messages.append(f"{a.path} was an empty directory: moved aside to {aside}")
            current = self.root.read(a.path)
            if current is not None and current != a.content:
                aside = self.move_aside(a.path)
                self.messages.append(f"{a.path} moved aside to {aside}")


StepFn = Callable[[StepContext, int], None]
"""One step: the context and the step's 1-based index in the plan (for the fault hooks)."""
