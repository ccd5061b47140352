"""Re-trusting other nodes' kubelets in place over SSH (a new cluster CA, a client certificate from it,
kubelet.conf, the kubelet restarted; containers untouched), for the ``retrust-nodes`` step and for repairing
the nodes of a healthy control plane whose kubelet no longer reports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from kuberevive.core import retrust as core
from kuberevive.core.kubeconfig import control_plane_url
from kuberevive.errors import PlanError
from kuberevive.io.host import Host
from kuberevive.io.kubeapi import KubeApi
from kuberevive.io.remotehost import SshHost
from kuberevive.io.retrust_node import NodeTrustState, read_node_state, retrust_node
from kuberevive.io.transport import Deadline, NodeResult, SshTarget, SshTransport, Transport, run_on_nodes
from kuberevive.model.config import KubeadmConfig
from kuberevive.model.inventory import InventoryNode, from_node_objects
from kuberevive.model.recover import RetrustOptions
from kuberevive.waiting import wait_for as _wait

Progress = Callable[[str], None]


def connect(opts: RetrustOptions) -> Callable[[InventoryNode, Deadline], Transport]:
    """How to open an SSH transport to one node with ``opts`` (known_hosts, keys, user), within its deadline."""

    def to_node(node: InventoryNode, deadline: Deadline) -> Transport:
        target = SshTarget(
            node.name,
            node.address,
            port=node.port,
            user=node.user or opts.ssh_user,
            identity_files=(node.identity_file,) if node.identity_file else opts.identity_files,
            known_hosts=opts.known_hosts,
        )
        return SshTransport(target, deadline)

    return to_node


PEER_READ_TIMEOUT = 60.0
#: Seconds between two looks at a re-trusted node's Node object (one GET per node being re-trusted; the nodes in
#: flight are --concurrency at most): its first heartbeat after the restart comes 1-3 s after it.
READY_POLL = 0.5


def read_peer_files(
    node: InventoryNode, opts: RetrustOptions, files: Sequence[PurePosixPath]
) -> dict[PurePosixPath, bytes | None]:
    """Read ``files`` on another node over SSH (None: absent); nothing is written there. TransportError or
    NodeFsError when the node cannot be reached or a file cannot be read."""
    transport = connect(opts)(node, Deadline.after(PEER_READ_TIMEOUT))
    try:
        host = SshHost(transport, node.name)
        return {f: host.read(f) for f in files}
    finally:
        transport.close()


def retrust_in_place(
    api: KubeApi,
    cfg: KubeadmConfig,
    ca: bytes,
    key: bytes,
    opts: RetrustOptions,
    todo: list[InventoryNode],
    probe: Callable[[InventoryNode, NodeTrustState], list[str]] | None = None,
    *,
    reach: Reach | None = None,
) -> dict[str, NodeResult[list[str]]]:
    """Over SSH, in parallel: the cluster CA at each kubelet's clientCAFile, a client certificate from it,
    kubelet.conf, the kubelet restarted; done when the Node is Ready with a heartbeat after the restart.

    ``probe`` (the node-repair mode) looks at the node's files first: when it finds nothing wrong the node
    is left untouched and the result says so (a ``ProbeClean`` error). ``reach``: how a node is reached
    (default: :func:`connect` with ``opts``, an :class:`SshHost` over it)."""
    reach = reach or Reach(connect(opts))
    now = datetime.now(UTC)  # names the backup directory of every node's old files
    pem_stamp = now.strftime("%Y-%m-%d-%H-%M-%S")  # as the kubelet names kubelet-client-<stamp>.pem
    default_server = control_plane_url(cfg)

    def one(node: InventoryNode, t: Transport) -> list[str]:
        host = reach.host(t, node.name)
        state = read_node_state(host)
        found: list[str] = []
        if probe is not None:
            found = probe(node, state)
            if not found:
                raise ProbeClean(
                    f"{node.name}: its kubelet's files are in order (cluster CA, kubelet.conf, a valid client "
                    "certificate), so new credentials would not help; left untouched",
                    "look at the node itself: its kubelet (journalctl -u kubelet), network and disk",
                )
        server = core.kubelet_conf_server(state.kubelet_conf, default_server)
        files = core.node_trust_files(cfg, ca, key, node.name, server, state.client_ca_path, now, pem_stamp)
        since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
        moved = retrust_node(host, files, now)
        path = f"/api/v1/nodes/{node.name}"
        _wait(f"node {node.name} Ready", opts.node_timeout, lambda: core.ready_since(api.get(path), since), READY_POLL)
        return [*(f"{node.name}: {p}" for p in found), *moved]

    return run_on_nodes(
        todo,
        one,
        reach.connect,
        name=lambda n: n.name,
        concurrency=opts.concurrency,
        timeout=opts.node_timeout + 60,
    )


@dataclass(frozen=True)
class Reach:
    """How the other nodes are reached: a transport to each (within its deadline) and the host over it."""

    connect: Callable[[InventoryNode, Deadline], Transport]
    host: Callable[[Transport, str], Host] = SshHost


class ProbeClean(PlanError):
    """The node's kubelet files are fine: repair would not help."""


@dataclass
class NodeRepair:
    """Run on a healthy control plane: nodes whose kubelet no longer reports, probed and repaired in place."""

    candidates: list[tuple[str, str]]
    repaired: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    """Not repaired on purpose: its kubelet files are in order, or it is not in the inventory."""
    failed: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidates": [{"name": n, "why": w} for n, w in self.candidates],
            "repaired": self.repaired,
            "left_alone": self.left,
            "failed": self.failed,
        }


def repair_nodes(
    api: KubeApi,
    cfg: KubeadmConfig,
    ca: bytes,
    key: bytes,
    candidates: list[tuple[str, str]],
    opts: RetrustOptions,
    progress: Progress,
    reach: Reach | None = None,
) -> NodeRepair:
    """Probe each candidate over SSH and repair those whose kubelet credentials are lost or stale, exactly
    as the re-trust step does after a new CA; the others are reported and left alone."""
    out = NodeRepair(candidates)
    nodes = api.get("/api/v1/nodes").get("items") or []
    inventory = opts.inventory or from_node_objects(nodes, opts.ssh_user, opts.ssh_port)
    todo = []
    for name, _why in candidates:
        target = inventory.get(name)
        if target is None:
            out.left.append(
                f"{name}: {dict(inventory.skipped).get(name, f'not in the inventory ({inventory.source})')}"
            )
        else:
            todo.append(target)

    clean: set[str] = set()

    def probe(node: InventoryNode, state: NodeTrustState) -> list[str]:
        pem = state.client_pem
        found = core.trust_problems(node.name, ca, state.client_ca, state.kubelet_conf, pem, datetime.now(UTC))
        if not found:
            clean.add(node.name)
        return found

    if todo:
        progress(f"probing {', '.join(n.name for n in todo)} over SSH")
        for name, r in retrust_in_place(api, cfg, ca, key, opts, todo, probe, reach=reach).items():
            if r.ok:
                out.repaired.append(name)
                out.messages.extend(r.value or [])
                progress(f"  {name}: repaired in place and Ready ({r.seconds:.1f} s)")
            elif name in clean:
                out.left.append(f"{name}: {r.error}")
                progress(f"  {name}: left alone: {r.error}")
            else:
                out.failed.append(f"{name}: {r.error}")
                progress(f"  {name}: FAILED: {r.error}")
    return out
