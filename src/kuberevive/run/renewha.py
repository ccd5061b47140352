"""The other control-plane nodes of an HA control plane ("peers"), over SSH: ``certs check --all-nodes`` reads each
one's certificates like this node's, ``certs renew --apply --all-nodes`` renews them with that node's own SANs and
restarts the control planes one node at a time (docs/certs.md, "HA").

A peer is a node of the inventory (``--inventory``, or the Node objects) with the control-plane role; when neither
can be read (every certificate expired: the API does not answer), the members of this node's etcd (stacked etcd:
one member per control-plane node; name and peer URL host).

Renewal on a peer, two steps of ``certs renew`` (:data:`kuberevive.run.renew.RENEW_STEPS`):

* ``peer-certificates`` (before this node's control plane restarts, so that with every certificate expired the
  etcd members can reach each other again): on each peer, its files are read, checked (:func:`certs.check` with the
  peer's node name and advertise address) and what needs it is renewed, signed with this node's CA keys (the same
  CAs; a peer with another CA is refused): leaves (with the peer's own SANs plus the old certificate's),
  kubeconfigs, the kubelet's client certificate (a new ``kubelet-client-<stamp>.pem``, the link swapped). The files
  are recorded in the journal before anything is written there; nothing is restarted yet.
* ``peer-restarts`` (after this node's API server and etcd are healthy again): ONE peer at a time, its control-plane
  containers whose files changed are stopped (the kubelet starts them again) and its kubelet restarted; the next
  peer starts only when that peer's own API server answers ``/readyz``, its etcd member is healthy and its Node is
  Ready, so an HA API (and etcd quorum) stays up. A failure stops the step there (the next run resumes).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

from kuberevive.core import caextend, certs, pki, salvage, yamlfmt
from kuberevive.core import diagnose as d
from kuberevive.core.kubeconfig import local_api_url
from kuberevive.core.retrust import ready_since
from kuberevive.errors import KubereviveError, PlanError
from kuberevive.io.host import Host
from kuberevive.io.kubeapi import KubeApi
from kuberevive.io.transport import Transport, run_on_nodes
from kuberevive.model import paths, yamlload
from kuberevive.model.artifacts import Artifact
from kuberevive.model.config import KubeadmConfig
from kuberevive.model.inventory import CONTROL_PLANE, InventoryNode
from kuberevive.model.recover import RetrustOptions
from kuberevive.run import renew
from kuberevive.run.context import etcd_client_files
from kuberevive.run.retrust import connect

CONTROL_PLANE_ROLE = "control-plane"
#: Time limit of one peer's API server, etcd member and Node after its restart.
PEER_TIMEOUT = 300.0


class PeerHost(Host, Protocol):
    """A peer as a host that can also stop containers (:class:`SshHost`)."""

    def stop_containers(self, name: str, cri_socket: str | None = None) -> int: ...


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
    files = renew.read_kubelet_files(host, control_plane_paths(cfg))

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
        elif renew.group_of(name) is certs.Group.KUBECONFIG:
            path = paths.KUBERNETES_DIR / name
            files.append(certs.renew_kubeconfig(path, content[path], peer.cfg, content, now))
        else:
            files += certs.renew_leaf(name, peer.cfg, content, now)
    components = [c for c, names in renew.COMPONENT_FILES.items() if set(names) & set(targets)]
    kubelet_items = [i for i in report.items if i.group is certs.Group.KUBELET]
    new_serving = certs.node_renewal(peer.name, kubelet_items, everything).new_serving
    return PeerRenewal(kubelet, files, components, targets, new_serving)


def discover(ex: renew.RenewExecutor, options: RetrustOptions) -> tuple[list[InventoryNode], str]:
    """This node's control-plane peers and where the list comes from: the inventory (``--inventory``, or the Node
    objects through the API), else this node's etcd members; ([], why) when neither can be read."""
    me = ex.journal.node_name
    try:
        inventory = renew.node_inventory(ex.node, options)
        return [n for n in inventory.nodes if n.is_control_plane and n.name != me], inventory.source or "inventory"
    except KubereviveError as exc:
        why = exc.message
    try:
        members = ex.fx.etcd_client(ex.node, ex.cfg).members()
    except KubereviveError as exc:
        return [], f"neither the node list ({why}) nor the etcd members ({exc.message}) could be read"
    nodes = []
    for m in members:
        host = urlsplit(m.peer_urls[0]).hostname if m.peer_urls else None
        if m.name and m.name != me and host:
            roles = frozenset({CONTROL_PLANE})
            nodes.append(InventoryNode(m.name, host, port=options.ssh_port, user=options.ssh_user, roles=roles))
    return nodes, "the etcd members"


def _record_peers(ex: renew.RenewExecutor, nodes: Sequence[InventoryNode]) -> None:
    for n in nodes:
        entry = ex.journal.other_nodes.setdefault(n.name, {"state": "pending"})
        entry.update(role=CONTROL_PLANE_ROLE, address=n.address, port=n.port, user=n.user)
    ex.journal.save()


def journal_peers(ex: renew.RenewExecutor) -> list[InventoryNode]:
    """The peers the journal knows (recorded when they were found), in name order."""
    return [
        InventoryNode(name, str(e["address"]), port=int(e.get("port") or 22), user=e.get("user"))
        for name, e in sorted(ex.journal.other_nodes.items())
        if e.get("role") == CONTROL_PLANE_ROLE
    ]


def _require_options(ex: renew.RenewExecutor) -> RetrustOptions:
    if ex.options is None:
        raise PlanError(
            "this renewal was started with --all-nodes; the other control-plane nodes are not done yet",
            "run 'kuberevive certs renew --apply --all-nodes' again with the SSH options (--ssh-key, --known-hosts)",
        )
    return ex.options


def _write_peer(ex: renew.RenewExecutor, lock: threading.Lock, n: InventoryNode, host: Host) -> list[str]:
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
                api=f"{peer.endpoints.api_host}:{peer.endpoints.api_port}",
                etcd=peer.endpoints.etcd_client_url,
            )
            journal.save()
        notes.append(f"{n.name}: renewing {', '.join(todo.names) or 'nothing'}")
    out = notes + renew.put_kubelet_files(host, n.name, kubelet or [])
    for a in files or []:
        aside = host.write(a.path, a.content, a.mode)
        out.append(f"{n.name}: {a.path} renewed" + (f" ({aside} kept)" if aside else ""))
    with lock:
        entry["state"] = "written"
        journal.save()
    return out


def step_peer_certificates(ex: renew.RenewExecutor) -> None:
    """``peer-certificates``: find the peers, then write each one's renewed files (in parallel; no restart)."""
    options = _require_options(ex)
    nodes, source = discover(ex, options)
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
    ex: renew.RenewExecutor,
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


def api_at(ex: renew.RenewExecutor, host_port: str) -> KubeApi:
    """A client of one API server (``host:port``) with this node's admin.conf credentials and CA."""
    data = ex.node.read(paths.ADMIN_CONF)
    if data is None:
        raise PlanError(f"{paths.ADMIN_CONF} is missing", "restore it, then run again")
    doc: Any = yamlload.load(data)
    for entry in doc.get("clusters") or []:
        entry["cluster"]["server"] = f"https://{host_port}"
    return ex.fx.kubeconfig_api(ex.node, yamlfmt.dump(doc).encode())


def wait_healthy(ex: renew.RenewExecutor, name: str, api: KubeApi, etcd_url: str | None) -> float:
    """Wait until ``name``'s own API server answers ``/readyz`` and its etcd member is healthy (quorum)."""
    started = ex.fx.monotonic()
    ex._wait(f"{name}'s API server (/readyz at {api.server})", PEER_TIMEOUT, api.readyz, 1.0)
    if etcd_url is not None:
        client = ex.fx.peer_etcd_client(etcd_url, *etcd_client_files(ex.node, ex.cfg))
    else:
        client = ex.fx.etcd_client(ex.node, ex.cfg)
    ex._wait(f"{name}'s etcd member ({client.endpoint})", PEER_TIMEOUT, client.health, 1.0)
    return ex.fx.monotonic() - started


def _restart_peer(ex: renew.RenewExecutor, lock: threading.Lock, n: InventoryNode, host: PeerHost) -> list[str]:
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
    if entry.get("new_serving"):
        out += renew.move_aside_serving(host, n.name)
    stopped = [f"{c} ({host.stop_containers(c)})" for c in components]
    since = ex._now().replace(microsecond=0) - timedelta(seconds=1)
    host.restart_unit("kubelet")
    out.append(f"{n.name}: stopped {', '.join(stopped) or 'nothing'}; kubelet restarted")
    took = wait_healthy(ex, n.name, api_at(ex, str(entry["api"])), str(entry["etcd"]))
    admin = ex._api()
    ex._wait(f"node {n.name} Ready", PEER_TIMEOUT, lambda: ready_since(admin.get(f"/api/v1/nodes/{n.name}"), since))
    with lock:
        entry["state"] = "done"
        ex.journal.save()
    return [*out, f"{n.name}: API server ready, etcd member healthy and Node Ready ({took:.0f} s)"]


def step_peer_restarts(ex: renew.RenewExecutor) -> None:
    """``peer-restarts``: this node's own API server and etcd first, then each peer in turn (see the module)."""
    options = _require_options(ex)
    nodes, _source = discover(ex, options)  # the API answers now: peers not found before are found here
    _record_peers(ex, nodes)
    todo = [n for n in journal_peers(ex) if ex.journal.other_nodes[n.name].get("state") != "done"]
    if not todo:
        return
    took = wait_healthy(ex, ex.journal.node_name, api_at(ex, host_port(local_api_url(ex.cfg))), None)
    ex.progress(f"      this node's API server and etcd member are healthy ({took:.0f} s)")
    ex.progress(f"      {len(todo)} other control-plane node(s), one at a time")

    def one(n: InventoryNode, t: Transport, lock: threading.Lock) -> list[str]:
        return _restart_peer(ex, lock, n, cast(PeerHost, ex.remote(t, n.name)))

    _on_peers(ex, options, todo, one, parallel=False)


def host_port(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 443}"
