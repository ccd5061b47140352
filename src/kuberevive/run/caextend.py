"""``kuberevive ca extend``: the plan, and ``--apply`` step by step under the node's lock, resumable through a
journal (docs/certs.md).

Steps (only those that apply, in this order):

1. ``files``: the extended CA certificates (same key, subject and key identifiers, new NotAfter) and every file on
   this node that holds an old one: kubeconfigs' ``certificate-authority-data`` and the kubelet's
   ``clientCAFile``; each replaced file moved aside;
2. ``restart-control-plane``: the control-plane containers that read a changed CA at start are stopped gracefully,
   the API server first (:func:`renew.stop_control_plane`), and the kubelet is restarted (it reads kubelet.conf at
   start); the kubelet starts them again from their unchanged static Pod manifests;
3. ``peer-repair`` (``--all-nodes``, only when a CA has expired: repair mode): every etcd member rejects the others'
   certificates while it trusts only the expired CA, so this node's etcd has no quorum (and its API server is never
   ready) until the other control-plane nodes hold the extended CAs too: on each of them at once (found as ``certs
   renew`` finds its peers: the inventory, the Node objects, else this node's etcd members), the CA certificates,
   kubeconfigs and kubelet.conf are rewritten and the components that read a CA at start stopped and the kubelet
   restarted, without waiting (the API is down anyway); ``other-nodes`` leaves them out;
4. ``api-ready``: this node's own API server (its advertise address, not the load balancer) answers ``/readyz`` to
   admin.conf's credentials;
5. ``cluster-objects`` (without ``--all-nodes``): ``kube-public/cluster-info``, ``kube-root-ca.crt`` in every
   namespace and ``kube-system/extension-apiserver-authentication`` hold exactly the extended CAs (recover's trust
   plan);
6. ``other-nodes`` (``--all-nodes``, instead of 5): the other control-plane nodes one at a time (as ``certs renew``'s
   ``peer-restarts``), then the API through admin.conf's server (the control-plane endpoint) and only then the cluster
   objects as in 5 (until every master is restarted, the controller-manager that leads on another one publishes its
   old ``--root-ca-file`` into ``kube-root-ca.crt`` again, and each API server its client CA); then on every worker,
   over SSH, kubelet.conf and the kubelet's ``clientCAFile`` get the extended CA (old files moved aside) and the
   kubelet is restarted (containers keep running);
7. ``node-ready``: this node is Ready with a heartbeat posted after the kubelet restart;
8. ``restart-kube-proxy`` (when ``ca`` is extended; in repair mode only with ``--all-nodes``): kube-proxy reads the
   cluster CA once at start, from its pod's projected ``ca.crt`` (``kube-root-ca.crt``), and keeps it in memory.
   Before expiry it works until the old CA's NotAfter, then fails at its next connection (``x509: certificate has
   expired``: Go checks the root's validity too) and its Service rules go stale; after a repair it holds the expired
   CA already (the ``kubernetes`` Service without an endpoint for minutes on the HA lab). Once ``kube-root-ca.crt``
   holds the extended CA (checked again first), its DaemonSet is restarted through the API (``kubectl rollout
   restart``, one node at a time: recover's rollout code, :mod:`kuberevive.io.restarts_apply`), so each new pod
   reads the extended CA. Before expiry ``--all-nodes`` is not needed: the new pods get the CA from the ConfigMap,
   not from the node's files, and every kubelet still reaches the API server with the old, still valid CA (same
   key); in repair mode the other nodes' kubelets trust only the expired CA until ``other-nodes`` (``--all-nodes``)
   and could not start the new pods. Other clients that read the CA once (CoreDNS, CNI agents, operators) are not
   restarted: the result says so, with the old NotAfter (:func:`restart_notes`).

The new certificates are made once and kept in the journal (``/var/lib/kuberevive/ca-extend/journal.json``),
so a run killed at any point resumes with ``--apply`` and writes the same certificates everywhere. With
``--root`` other than ``/`` only step 1 runs. Test hook: ``KUBEREVIVE_FAULT_AFTER_STEP=<n>``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, cast

from kuberevive.core import caextend, certs, pki, salvage
from kuberevive.core.retrust import client_ca_file, ready_since
from kuberevive.errors import KubeApiError, KubereviveError, PlanError
from kuberevive.io import restarts_apply
from kuberevive.io.host import Host, LocalHost
from kuberevive.io.noderoot import NodeRoot
from kuberevive.io.transport import Transport, run_on_nodes
from kuberevive.io.trust_apply import apply_trust_plan, read_trust_plan
from kuberevive.model import paths
from kuberevive.model.artifacts import Artifact
from kuberevive.model.config import KubeadmConfig
from kuberevive.model.document import rfc3339_or_none
from kuberevive.model.inventory import InventoryNode
from kuberevive.model.recover import RetrustOptions
from kuberevive.run import renew
from kuberevive.run.context import Effects, check_table
from kuberevive.run.journal import CaExtendJournal
from kuberevive.run.retrust import connect

JOURNAL = paths.CA_EXTEND_DIR / "journal.json"
OBJECTS_TIMEOUT = 120.0
STEP_TITLES = {
    "files": "write the extended CA certificates and every file on this node that holds an old one",
    "restart-control-plane": "restart the control-plane containers and the kubelet (they read the CAs at start)",
    "peer-repair": "the other control-plane nodes at once, over SSH: the extended CAs, their control planes restarted "
    "(every etcd member needs them for a quorum)",
    "api-ready": "wait for the API server (/readyz)",
    "cluster-objects": "put the extended CAs into cluster-info, kube-root-ca.crt and "
    "extension-apiserver-authentication",
    "other-nodes": "other nodes over SSH: kubelet.conf and clientCAFile, then restart the kubelet",
    "node-ready": "wait for this node to be Ready",
    "restart-kube-proxy": "restart kube-proxy through the API, one node at a time (it read the CA once at start: "
    "its new pods read the extended one)",
}
#: CA -> the control-plane components that read it (or a kubeconfig holding it) only when they start.
READERS = {
    "ca": ("kube-apiserver", "kube-controller-manager", "kube-scheduler"),
    "front-proxy-ca": ("kube-apiserver", "kube-controller-manager", "kube-scheduler"),
    "etcd-ca": ("etcd", "kube-apiserver"),
}
#: The pods a repair restarts (namespace, label selector): kubeadm's kube-proxy DaemonSet reads ``ca.crt`` at start.
KUBE_PROXY = ("kube-system", "k8s-app=kube-proxy")
#: The clients that typically read the cluster CA once at start too and that ca extend does not restart.
READ_ONCE_OTHERS = (
    "CoreDNS, CNI agents (Calico, Cilium, Flannel) and operators or controllers using the in-cluster configuration"
)
KUBE_PROXY_RESTART = "daemonset kube-system/kube-proxy (rollout restart, one node at a time)"
#: What a repair without ``--all-nodes`` tells the operator (the other nodes' kubelets cannot run new pods yet).
KUBE_PROXY_HINT = (
    "kube-proxy still holds the expired CA: once every node holds the extended CA, run "
    "'kubectl -n kube-system rollout restart daemonset/kube-proxy' (with --all-nodes, ca extend does it)"
)
#: kubeadm's modes of the files a worker holds the CA in.
WORKER_MODES = {paths.KUBELET_CONF: 0o600}


@dataclass(kw_only=True)
class ExtendResult(renew.StepsResult):
    titles = STEP_TITLES
    cas: list[dict[str, Any]]
    files: list[dict[str, str]]
    restarts: list[str]
    all_nodes: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "cas": self.cas,
            "files": self.files,
            "objects": [
                "kube-public/configmaps/cluster-info",
                "<every namespace>/configmaps/kube-root-ca.crt",
                "kube-system/configmaps/extension-apiserver-authentication",
            ],
            "other_nodes": [str(paths.KUBELET_CONF), "the kubelet's clientCAFile"] if self.all_nodes else [],
            "restarts": self.restarts,
            **self.steps_dict(),
        }


def steps_for(live: bool, all_nodes: bool, repair: bool = False, cluster_ca: bool = True) -> list[str]:
    """The step ids (``repair``: a CA has expired; ``cluster_ca``: ``ca`` is among the CAs extended, the one pods
    read from ``kube-root-ca.crt``)."""
    if not live:
        return ["files"]
    return (
        ["files", "restart-control-plane"]
        + (["peer-repair"] if all_nodes and repair else [])
        + ["api-ready"]
        + (["other-nodes"] if all_nodes else ["cluster-objects"])
        + ["node-ready"]
        + (["restart-kube-proxy"] if cluster_ca and (all_nodes or not repair) else [])
    )


def is_repair(extended: Sequence[caextend.Extended], now: datetime) -> bool:
    """Whether a CA to extend has expired (repair mode)."""
    return any(e.old.not_valid_after_utc <= now for e in extended)


def restarts_for(names: Sequence[str], live: bool = True, kube_proxy: bool = False) -> list[str]:
    """The control-plane components to restart for these CAs (in kubeadm's manifest order), and the kubelet;
    ``kube_proxy`` (a repair with ``--all-nodes``): kube-proxy's DaemonSet last; none under another ``--root``."""
    if not live or not names:
        return []
    wanted = {c for n in names for c in READERS[n]}
    components = [c for c in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler") if c in wanted]
    return [*components, "kubelet", *([KUBE_PROXY_RESTART] if kube_proxy else [])]


def repair_notes(live: bool, all_nodes: bool, repair: bool) -> list[str]:
    """What the operator must still do after a repair without ``--all-nodes``."""
    return [KUBE_PROXY_HINT] if live and repair and not all_nodes else []


def _old_ca_not_after(extended: Sequence[caextend.Extended]) -> datetime | None:
    """The old NotAfter of the cluster CA (``ca``: what pods read from ``kube-root-ca.crt``), if it is extended."""
    return next((e.old.not_valid_after_utc for e in extended if e.name == "ca"), None)


def _extends_cluster_ca(extended: Sequence[caextend.Extended]) -> bool:
    """``ca`` is among the CAs extended: the one pods read from ``kube-root-ca.crt`` (``restart-kube-proxy``)."""
    return _old_ca_not_after(extended) is not None


def kube_proxy_why(not_after: datetime, repair: bool) -> str:
    """Why kube-proxy's pods are restarted (the restart plan's reason)."""
    at = rfc3339_or_none(not_after)
    if repair:
        return f"it read the cluster CA once at start and holds the one that expired at {at}"
    return f"it read the cluster CA once at start and would fail to reach the API server at the old NotAfter {at}"


def restart_notes(extended: Sequence[caextend.Extended], live: bool, all_nodes: bool, repair: bool) -> list[str]:
    """What the plan and the result say about the clients that read the cluster CA once at start: kube-proxy (restarted
    by ``restart-kube-proxy``, or what to do in a repair without ``--all-nodes``) and the others, which ca extend does
    not restart, with the old CA's NotAfter."""
    not_after = _old_ca_not_after(extended)
    if not live or not_after is None:
        return []
    at = rfc3339_or_none(not_after)
    kube_proxy = repair_notes(live, all_nodes, repair) or [
        "kube-proxy is restarted last (rollout restart of its DaemonSet, once kube-root-ca.crt holds the extended CA): "
        + kube_proxy_why(not_after, repair)
    ]
    when = f"hold the CA that expired at {at}: restart them now" if repair else f"fail after {at}: restart them before"
    others = (
        "not restarted by ca extend: other clients that read the cluster CA once at start, typically "
        f"{READ_ONCE_OTHERS}, keep the old CA in memory and {when} (kubectl rollout restart), once their pods' "
        "ca.crt holds the extended CA (the kubelet refreshes it within about a minute)"
    )
    return [*kube_proxy, others]


def _local_files(node: NodeRoot, extended: Sequence[caextend.Extended]) -> dict[PurePosixPath, tuple[bytes, int]]:
    """This node's files that may hold a CA: the CA certificates, every kubeconfig, the kubelet's clientCAFile."""
    wanted = [e.path for e in extended] + [paths.KUBERNETES_DIR / n for n in paths.KUBECONFIG_NAMES]
    wanted.append(PurePosixPath(client_ca_file(node.read(paths.KUBELET_CONFIG))))
    out: dict[PurePosixPath, tuple[bytes, int]] = {}
    for path in wanted:
        data, st = node.read(path), node.stat(path)
        if data is not None and st is not None:
            out[path] = (data, st.st_mode)
    return out


def _file_json(artifacts: Sequence[Artifact]) -> list[dict[str, str]]:
    return [{"path": str(a.path), "what": a.description} for a in artifacts]


def _ca_json(e: caextend.Extended, item: certs.CertItem | None = None) -> dict[str, Any]:
    return {
        "name": e.name,
        "path": str(e.path),
        "status": item.status.value if item is not None else None,
        "not_after": rfc3339_or_none(e.old.not_valid_after_utc),
        "new_not_after": rfc3339_or_none(e.new.not_valid_after_utc),
        "serial": format(e.old.serial_number, "x"),
        "new_serial": format(e.new.serial_number, "x"),
    }


def _journal_extended(journal: CaExtendJournal) -> list[caextend.Extended]:
    return [
        caextend.Extended(
            c["name"],
            PurePosixPath(c["path"]),
            pki.load_certificate(c["old"].encode(), c["path"]),
            pki.load_certificate(c["new"].encode(), c["path"]),
        )
        for c in journal.cas
    ]


def new_validity(root: str, config_file: str | None, cfg: KubeadmConfig) -> tuple[timedelta, str]:
    """The validity of the extended CAs without ``--validity``, and where it comes from: the
    ``caCertificateValidityPeriod`` of ``--config``, else of the stored ClusterConfiguration (read through admin.conf
    when the API answers; not in repair mode), else kubeadm's default (ten years); as ``certs renew`` takes its
    leaves' validity."""
    return renew.stored_validity(root, config_file, cfg, "caCertificateValidityPeriod")


def _prepare(
    root: str,
    config_file: str | None,
    warning_days: int,
    wanted: Sequence[str],
    everything: bool,
    validity: timedelta | None,
    live: bool,
) -> tuple[list[caextend.Extended], list[certs.CertItem], str, list[str]]:
    """The CAs to extend with their new certificates (made now), the rows chosen, the configuration's source and a
    message saying the validity's. ``validity``: from now; None: the cluster's ``caCertificateValidityPeriod``
    (:func:`new_validity`)."""
    report, cfg = renew.read_report(root, config_file, warning_days, live=live)
    items = caextend.select(report, wanted, everything)
    if not items:
        return [], [], report.config_source, []
    validity, source = (validity, "--validity") if validity else new_validity(root, config_file, renew.require_cfg(cfg))
    node = NodeRoot(Path(root))
    files = node.read_many([PurePosixPath(p) for i in items for p in (i.path, i.key_path or i.path)])
    note = f"the extended CAs are valid for {renew.validity_text(validity, source)}"
    return caextend.extend(items, files, datetime.now(UTC), validity), items, report.config_source, [note]


def plan(
    root: str,
    config_file: str | None,
    warning_days: int,
    wanted: Sequence[str],
    everything: bool,
    all_nodes: bool,
    validity: timedelta | None = None,
    *,
    live: bool,
) -> ExtendResult:
    """What ``--apply`` would do; reads only (the new certificates shown are examples: their serial is new)."""
    node = NodeRoot(Path(root))
    journal = CaExtendJournal.load(node, JOURNAL)
    if journal is not None and journal.status == "running":
        extended = _journal_extended(journal)
        cluster_ca = _extends_cluster_ca(extended)
        todo = [s for s in steps_for(live, journal.all_nodes, journal.repair, cluster_ca) if not journal.step_done(s)]
        files = _file_json(journal.artifacts("files") or caextend.rewrites(_local_files(node, extended), extended))
        return ExtendResult(
            cas=[_ca_json(e) for e in extended],
            files=files,
            steps=todo,
            restarts=restarts_for([e.name for e in extended], live, "restart-kube-proxy" in todo),
            config_source=journal.config_source,
            all_nodes=journal.all_nodes,
            resumed=True,
            messages=restart_notes(extended, live, journal.all_nodes, journal.repair),
        )
    extended, items, source, notes = _prepare(root, config_file, warning_days, wanted, everything, validity, live)
    by_name = {i.name: i for i in items}
    repair = is_repair(extended, datetime.now(UTC))
    steps = steps_for(live, all_nodes, repair, _extends_cluster_ca(extended)) if extended else []
    return ExtendResult(
        cas=[_ca_json(e, by_name[e.name]) for e in extended],
        files=_file_json(caextend.rewrites(_local_files(node, extended), extended)) if extended else [],
        steps=steps,
        restarts=restarts_for([e.name for e in extended], live, "restart-kube-proxy" in steps),
        config_source=source,
        all_nodes=all_nodes,
        messages=[*notes, *restart_notes(extended, live, all_nodes, repair)] if extended else [],
    )


class _Executor(renew.RenewExecutor):
    titles = STEP_TITLES
    rerun = "kuberevive ca extend --apply"

    journal: CaExtendJournal

    def __init__(self, *args: Any, extended: list[caextend.Extended], options: RetrustOptions | None) -> None:
        super().__init__(*args)
        self.extended = extended
        self.options = options

    def step_files(self) -> None:
        self._write(
            self._recorded("files", lambda: caextend.rewrites(_local_files(self.node, self.extended), self.extended))
        )

    def step_restart_control_plane(self) -> None:
        cri = self.cfg.init.node_registration.cri_socket or None
        components = restarts_for([e.name for e in self.extended])[:-1]
        stopped = renew.stop_control_plane(self.host, components, cri)
        self.progress(f"      stopped: {', '.join(stopped)}; restarting the kubelet")
        self._restart_kubelet()

    def step_cluster_objects(self) -> None:
        api = self._own_api()  # not the load balancer: another master may still hold the old CA
        pki_dir = self.cfg.cluster.certificates_dir
        ca = self.node.read_existing(PurePosixPath(pki_dir) / "ca.crt")
        front_proxy = self.node.read(PurePosixPath(pki_dir) / "front-proxy-ca.crt")

        def settled() -> tuple[bool, str]:
            todo = [c for c in read_trust_plan(api, ca, front_proxy).changes if c.action != "report"]
            if not todo:
                return True, ""
            failed = [a.message for a in apply_trust_plan(api, read_trust_plan(api, ca, front_proxy)) if not a.ok]
            for a in todo:
                self.progress(f"      {a.ref}: {'; '.join(a.reasons)}")
            return False, "; ".join(failed) or "applied; checking again"

        took = self._wait("the cluster objects holding the CAs", OBJECTS_TIMEOUT, settled, 1.0)
        self.progress(
            f"      cluster-info, kube-root-ca.crt and extension-apiserver-authentication hold the CAs ({took:.0f} s)"
        )

    def step_peer_repair(self) -> None:
        options = self._require_options()
        nodes, source = renew.discover(self, options, renew.ETCD_LIST_TIMEOUT)
        todo = [n for n in nodes if n.name not in self.journal.nodes_done]
        if not todo:
            self.progress(f"      no other control-plane node ({source})")
            return
        self.progress(f"      {len(todo)} other control-plane node(s) over SSH, at once (from {source})")
        components = restarts_for([e.name for e in self.extended])[:-1]
        extra = _peer_files(self.cfg)

        def one(n: InventoryNode, t: Transport) -> list[str]:
            host = cast(renew.PeerHost, self.remote(t, n.name))
            out = [f"{n.name}: {line}" for line in _rewrite_node(host, self.extended, extra)]
            stopped = renew.stop_control_plane(host, components)
            host.restart_unit("kubelet")
            return [*out, f"{n.name}: stopped {', '.join(stopped)}; kubelet restarted"]

        failed = self._on_nodes(todo, one, renew.PEER_TIMEOUT)
        self.journal.save()
        if failed:
            raise PlanError(
                "the extended CAs did not reach every other control-plane node: " + "; ".join(failed),
                "fix the access, then run 'kuberevive ca extend --apply --all-nodes' again: it resumes",
            )

    def _on_nodes(
        self, nodes: list[InventoryNode], one: Callable[[InventoryNode, Transport], list[str]], timeout: float
    ) -> list[str]:
        """``one`` on each node over SSH, in parallel: its lines become messages, a node it went through is done
        (the journal, saved by the caller); the failures, one line a node."""
        options = self._require_options()
        results = run_on_nodes(
            nodes,
            one,
            self.connect or connect(options),
            name=lambda n: n.name,
            concurrency=options.concurrency,
            timeout=timeout,
        )
        failed = []
        for name, r in results.items():
            for line in r.value or []:
                self.result.messages.append(line)
                self.progress(f"      {line}")
            if r.ok:
                self.journal.nodes_done.append(name)
            else:
                failed.append(f"{name}: {r.error}")
        return failed

    def step_restart_kube_proxy(self) -> None:
        """kube-proxy's pods started before this extension began (they read the old CA once, at start): restarted
        through their DaemonSet (recover's rollout code: one node at a time, PodDisruptionBudgets respected), once
        ``kube-root-ca.crt`` holds the extended CA (checked, and put back, right before: on HA a controller-manager
        not restarted yet may have published the old one again), so each new pod reads the extended CA. In repair
        mode every node holds the extended CAs first (``other-nodes``): a kubelet trusting only the expired CA could
        not start the new pod; before expiry every kubelet still reaches the API server."""
        self.step_cluster_objects()
        # before expiry (without --all-nodes) or after every master holds the extended CAs: any API server will do
        api = self._api()
        since = datetime.strptime(self.journal.started_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        not_after = _old_ca_not_after(self.extended)
        assert not_after is not None  # the step is planned only when the cluster CA is extended
        why = kube_proxy_why(not_after, self.journal.repair)
        plan = restarts_apply.read_pods_restart_plan(api, *KUBE_PROXY, since, why)
        if not plan.actions:
            self.progress(f"      no kube-proxy pod started before the extension ({KUBE_PROXY[0]}, {KUBE_PROXY[1]})")
            return
        results = restarts_apply.apply_restart_plan(api, plan, lambda line: self.progress(f"      {line.strip()}"))
        self.result.messages += [r.line() for r in results]
        failed = [r for r in results if r.outcome == "failed"]
        if failed:
            raise PlanError(
                "kube-proxy was not restarted with the extended CA: " + "; ".join(r.line() for r in failed)[:600],
                "look at it (kubectl -n kube-system rollout status daemonset/kube-proxy), then run "
                "'kuberevive ca extend --apply --all-nodes' again",
            )

    def _require_options(self) -> RetrustOptions:
        if self.options is None:
            raise PlanError(
                "this extension was started with --all-nodes; the other nodes still need the extended CA",
                "run 'kuberevive ca extend --apply --all-nodes' again with the SSH options (--ssh-key, --known-hosts)",
            )
        return self.options

    def step_other_nodes(self) -> None:
        options = self._require_options()
        me = self.journal.node_name
        done = self.journal.nodes_done
        inventory = renew.node_inventory(self.node, options)
        nodes = [n for n in inventory.nodes if n.name != me and n.name not in done]
        peers = [n for n in nodes if n.is_control_plane]
        workers = [n for n in nodes if not n.is_control_plane]
        extended = self.extended

        def one(n: InventoryNode, t: Transport) -> list[str]:
            host = self.remote(t, n.name)
            out = [f"{n.name}: {line}" for line in _rewrite_node(host, extended, [])]
            if out:
                host.restart_unit("kubelet")
                out.append(f"{n.name}: kubelet restarted")
            return out

        failed = self._peers(peers) if peers else []
        if not failed:
            if peers:
                self.wait_endpoint()  # every master holds the extended CAs: the load balancer may pick any
            # only now: until every master is restarted, the controller-manager leading on another one (and each API
            # server) still holds the old CAs and puts them back
            self.step_cluster_objects()
            failed = self._on_nodes(workers, one, 180)
        self.journal.save()
        if failed or inventory.skipped:
            failed += [f"{name}: {why}" for name, why in inventory.skipped]
            raise PlanError(
                "the extended CA did not reach every node: " + "; ".join(failed),
                "fix the access, then run 'kuberevive ca extend --apply --all-nodes' again: it resumes",
            )

    def _peers(self, peers: list[InventoryNode]) -> list[str]:
        """The other control-plane nodes, ONE at a time (this node's API server and etcd healthy first): their CA
        certificates, kubeconfigs and clientCAFile rewritten, the components that read a changed CA at start
        stopped (the kubelet starts them again) and the kubelet restarted; the next node only once this one's API
        server answers /readyz, its etcd member is healthy and its Node is Ready. Stops at the first failure."""
        assert self.options is not None
        own = self._own_api()
        took = renew.wait_healthy(self, self.journal.node_name, own, None)
        self.progress(f"      this node's API server and etcd member are healthy ({took:.0f} s)")
        components = restarts_for([e.name for e in self.extended])[:-1]
        extra = _peer_files(self.cfg)

        def one(n: InventoryNode, t: Transport) -> list[str]:
            host = cast(renew.PeerHost, self.remote(t, n.name))
            endpoints = salvage.peer_endpoints(
                n.name, host.read(paths.APISERVER_MANIFEST), host.read(paths.ETCD_MANIFEST)
            )
            out = [f"{n.name}: {line}" for line in _rewrite_node(host, self.extended, extra)]
            stopped = renew.stop_control_plane(host, components)
            since = self._now().replace(microsecond=0) - timedelta(seconds=1)
            host.restart_unit("kubelet")
            out.append(f"{n.name}: stopped {', '.join(stopped)}; kubelet restarted")
            api = renew.api_at(self, endpoints.api)
            took = renew.wait_healthy(self, n.name, api, endpoints.etcd_client_url)
            self._wait(
                f"node {n.name} Ready",
                renew.PEER_TIMEOUT,
                lambda: ready_since(own.get(f"/api/v1/nodes/{n.name}"), since),  # this node's, not the LB
                1.0,
            )
            return [*out, f"{n.name}: API server ready, etcd member healthy and Node Ready ({took:.0f} s)"]

        for n in peers:
            results = run_on_nodes(
                [n],
                one,
                self.connect or connect(self.options),
                name=lambda m: m.name,
                concurrency=1,
                timeout=renew.PEER_TIMEOUT * 2,
            )
            r = results[n.name]
            self.result.messages += r.value or []
            for line in r.value or []:
                self.progress(f"      {line}")
            if not r.ok:
                return [f"{n.name}: {r.error} (the control-plane nodes after it were not touched)"]
            self.journal.nodes_done.append(n.name)
            self.journal.save()
        return []


def _peer_files(cfg: KubeadmConfig) -> list[PurePosixPath]:
    """What another control-plane node holds a CA in, besides its kubelet's files: the CA certificates and the
    kubeconfigs."""
    cdir = PurePosixPath(cfg.cluster.certificates_dir)
    return [cdir / crt for crt, _key in paths.CA_PAIRS] + [paths.KUBERNETES_DIR / n for n in paths.KUBECONFIG_NAMES]


def _rewrite_node(host: Host, extended: Sequence[caextend.Extended], extra: Sequence[PurePosixPath]) -> list[str]:
    """On another node: kubelet.conf, the kubelet's clientCAFile and ``extra`` (a control-plane node's CA
    certificates and kubeconfigs) rewritten to hold the extended CAs (old files moved aside); what was done."""
    ca_file = PurePosixPath(client_ca_file(host.read(paths.KUBELET_CONFIG)))
    files: dict[PurePosixPath, tuple[bytes, int]] = {}
    for p in dict.fromkeys([paths.KUBELET_CONF, ca_file, *extra]):
        data = host.read(p)
        if data is not None:
            mode = WORKER_MODES.get(p, 0o600 if p.suffix == ".conf" else pki.MODE_CERT)
            files[p] = (data, mode)
    out = []
    for a in caextend.rewrites(files, extended, with_cas=False):
        aside = host.write(a.path, a.content, a.mode)
        out.append(f"{a.path} rewritten" + (f" ({aside} kept)" if aside else ""))
    return out


#: Step id -> its handler, in the plan's order; checked against :data:`STEP_TITLES` at import.
CA_EXTEND_STEPS: dict[str, Callable[[_Executor], None]] = {
    "files": _Executor.step_files,
    "restart-control-plane": _Executor.step_restart_control_plane,
    "peer-repair": _Executor.step_peer_repair,
    "api-ready": _Executor.step_api_ready,
    "cluster-objects": _Executor.step_cluster_objects,
    "other-nodes": _Executor.step_other_nodes,
    "node-ready": _Executor.step_node_ready,
    "restart-kube-proxy": _Executor.step_restart_kube_proxy,
}
check_table(CA_EXTEND_STEPS, tuple(STEP_TITLES), "kuberevive.run.caextend")


def apply(
    root: str,
    config_file: str | None,
    warning_days: int,
    wanted: Sequence[str],
    everything: bool,
    options: RetrustOptions | None,
    progress: renew.Progress,
    environ: Mapping[str, str] | None = None,
    validity: timedelta | None = None,
    *,
    live: bool,
    host: LocalHost | None = None,
    effects: Effects | None = None,
) -> ExtendResult:
    """Extend the CAs (or resume an interrupted extension) under the node's lock; ``host`` and ``effects`` as
    for :func:`renew.apply`."""
    environ = os.environ if environ is None else environ
    host = host or LocalHost(NodeRoot.with_test_hooks(Path(root), environ), live=live)
    node = host.root
    fx = effects or renew.renew_effects(environ)
    started = fx.monotonic()
    with host.lock("ca extend", error=PlanError):
        journal = CaExtendJournal.load(node, JOURNAL)
        resumed = journal is not None and journal.status == "running"
        _report, cfg_or_none = renew.read_report(root, config_file, warning_days, live=live)
        cfg = renew.require_cfg(cfg_or_none)
        if journal is None or not resumed:
            extended, items, source, notes = _prepare(
                root, config_file, warning_days, wanted, everything, validity, live
            )
            repair = is_repair(extended, fx.utcnow())
            steps = steps_for(live, options is not None, repair, _extends_cluster_ca(extended)) if extended else []
            result = ExtendResult(
                cas=[_ca_json(e, i) for e, i in zip(extended, items, strict=True)],
                files=[],
                steps=steps,
                restarts=restarts_for([e.name for e in extended], live, "restart-kube-proxy" in steps),
                config_source=source,
                all_nodes=options is not None,
                messages=notes,
            )
            if not extended:
                return result
            if journal is not None:
                node.move_aside(JOURNAL)
            journal = CaExtendJournal.new(
                node,
                JOURNAL,
                targets=[{"name": e.name} for e in extended],
                cas=[
                    {
                        "name": e.name,
                        "path": str(e.path),
                        "old": pki.encode_certificate_pem(e.old).decode(),
                        "new": e.new_pem.decode(),
                    }
                    for e in extended
                ],
                node_name=_report.node_name,
                config_source=source,
                all_nodes=options is not None,
                repair=repair,
                stamp=fx.utcnow().strftime("%Y-%m-%d-%H-%M-%S"),
            )
        else:
            assert journal is not None
            extended = _journal_extended(journal)
            steps = steps_for(live, journal.all_nodes, journal.repair, _extends_cluster_ca(extended))
            result = ExtendResult(
                cas=[_ca_json(e) for e in extended],
                files=[],
                steps=steps,
                restarts=restarts_for([e.name for e in extended], live, "restart-kube-proxy" in steps),
                config_source=journal.config_source,
                all_nodes=journal.all_nodes,
                resumed=True,
            )
            progress(f"resuming the CA extension started at {journal.started_at} (journal {JOURNAL})")
        executor = _Executor(host, journal, cfg, progress, result, fx, extended=extended, options=options)
        try:
            executor.run(result.steps, CA_EXTEND_STEPS)
        except KubeApiError as exc:
            raise PlanError(
                f"the CA extension stopped at a step that talks to the API server: {exc.message}",
                "fix the cause, then run 'kuberevive ca extend --apply' again: it resumes where it stopped",
            ) from exc
        except KubereviveError as exc:
            exc.hint = exc.hint or "run 'kuberevive ca extend --apply' again: it resumes where it stopped"
            raise
        result.files = _file_json(journal.artifacts("files") or [])
        result.messages += restart_notes(extended, live, journal.all_nodes, journal.repair)
        journal.finish()
    result.seconds = round(fx.monotonic() - started, 1)
    if not live:
        result.messages.append(f"--root {root}: files written; nothing was restarted (restart the control plane)")
    return result
