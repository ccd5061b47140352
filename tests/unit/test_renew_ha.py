"""``certs check/renew --all-nodes`` on an HA control plane: the other control-plane nodes (peers) read whole, renewed
with their own SANs and this node's CA keys, and restarted one at a time (run/renew.py), against in-memory hosts;
the lab test runs it over SSH against real masters: tests/lab/test_ha_lab.py."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from kuberevive.core import caextend as caextend_core
from kuberevive.core import certs, pki, salvage
from kuberevive.core.etcdsafety import Member
from kuberevive.core.generate import Target, generate
from kuberevive.core.kubeconfig import Kubeconfig
from kuberevive.errors import EtcdError, NodeFsError, PlanError
from kuberevive.io.etcd import EtcdClient
from kuberevive.io.host import Container, LocalHost
from kuberevive.io.noderoot import NodeRoot
from kuberevive.io.transport import Deadline, Result, Transport
from kuberevive.model import paths
from kuberevive.model.config import KubeadmConfig, NodeFacts
from kuberevive.model.inventory import CONTROL_PLANE, WORKER, Inventory, InventoryNode
from kuberevive.model.recover import RetrustOptions
from kuberevive.run import caextend, renew
from kuberevive.run.context import Effects
from kuberevive.run.journal import CaExtendJournal, RenewJournal
from tests.unit.test_certs import contents
from tests.unit.test_diagnose import CONFIG_TEXT, NOW, PKI, _cfg
from tests.unit.test_remotehost import Canned
from tests.unit.test_renew_nodes import TREE, FakeHost, ReadyApi, kubelet_files

# TREE (test_renew_nodes'): master-a, this node, with the cluster's CAs
CA_FILES = {p: d for p, d in contents(TREE).items() if p.name in ("ca.crt", "ca.key") or "-ca." in p.name}
REAL_NOW = datetime.now(UTC)
ADDRESSES = {"master-b": "10.20.30.50", "master-c": "10.20.30.60"}
LB = "https://lb.prod-eu.example:6443"


def peer_cfg(name: str) -> KubeadmConfig:
    text = CONFIG_TEXT.replace("master-a", name).replace("10.20.30.40", ADDRESSES[name])
    # ECDSA keys: quick to make (a renewal keeps each old key's algorithm)
    return _cfg(text.replace("clusterName: prod-eu", "clusterName: prod-eu\nencryptionAlgorithm: ECDSA-P256"))


@functools.cache
def _peer_files(name: str, other_ca: bool) -> tuple[tuple[PurePosixPath, bytes], ...]:
    ca_files = OTHER_CA() if other_ca else CA_FILES
    return tuple(peer_files(name, ca_files).items())


def cached_peer_files(name: str, other_ca: bool = False) -> dict[PurePosixPath, bytes]:
    return dict(_peer_files(name, other_ca))


def OTHER_CA() -> dict[PurePosixPath, bytes]:
    """Another cluster's CAs (made once)."""
    return _other_ca()


@functools.cache
def _other_ca() -> dict[PurePosixPath, bytes]:
    cfg = peer_cfg("master-b")
    result = generate(Target.CERTS, cfg, NodeFacts(hostname="master-b"), NOW, {})
    return {a.path: a.content for a in result.artifacts if a.path in CA_FILES}


def peer_files(name: str, ca_files: dict[PurePosixPath, bytes] = CA_FILES) -> dict[PurePosixPath, bytes]:
    """What ``kubeadm join --control-plane`` leaves on ``name``: its own leaves and manifests, the cluster's CAs
    (keys included: --upload-certs), its kubelet's files; no super-admin.conf."""
    cfg = peer_cfg(name)
    result = generate(Target.ALL, cfg, NodeFacts(hostname=name), NOW, ca_files)
    files = {a.path: a.content for a in result.artifacts if a.path.name != "super-admin.conf"}
    return files | {**ca_files} | kubelet_files(cfg, name)


class PeerHost(FakeHost):
    """A control-plane peer in memory that also stops containers; every stop and restart goes to ``events``."""

    def __init__(self, name: str, files: dict[PurePosixPath, bytes], events: list[str]) -> None:
        super().__init__(name, files)
        self.events = events
        self.stopped: list[str] = []
        self.graces: dict[str, int] = {}
        self.running = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}  # empty: powered off

    def containers(self, name: str | None = None) -> list[Container]:
        return [Container(f"id-{c}", c, "CONTAINER_RUNNING", 0.0) for c in sorted(self.running) if name in (None, c)]

    def stop_containers(self, name: str, cri_socket: str | None = None, grace: int = 30) -> int:
        self.graces[name] = grace
        self.stopped.append(name)
        self.events.append(f"{self.name}: stop {name}")
        return 1

    def restart_unit(self, unit: str) -> None:
        super().restart_unit(unit)
        self.events.append(f"{self.name}: restart {unit}")

    def cert(self, path: PurePosixPath) -> Any:
        return pki.load_certificate(self.read(path) or b"", str(path))


class HealthyApi:
    """One API server: its /readyz and every Node Ready with a heartbeat now, each request logged."""

    def __init__(self, server: str, events: list[str]) -> None:
        self.server, self.events = server, events

    def readyz(self) -> tuple[bool, str]:
        self.events.append(f"readyz {self.server}")
        return True, "ok"

    def get(self, path: str, **query: Any) -> Any:
        self.events.append(f"get {path} at {self.server}")
        return ReadyApi().get(path)


class LoadBalancer(HealthyApi):
    """admin.conf's server on HA: the control-plane endpoint, which may send a request to ANY master. With every
    master's certificates expired, one not renewed yet answers with them: asking it before every master this run
    restarts is done fails the test (``renewed()`` says when)."""

    def __init__(self, events: list[str], renewed: Callable[[], bool]) -> None:
        super().__init__(LB, events)
        self.renewed = renewed

    def _asked(self, what: str) -> None:
        if not self.renewed():
            pytest.fail(f"the load balancer was asked ({what}) before every master was renewed")

    def readyz(self) -> tuple[bool, str]:
        self._asked("/readyz")
        return super().readyz()

    def get(self, path: str, **query: Any) -> Any:
        self._asked(path)
        return super().get(path)


class HealthyEtcd:
    def __init__(self, endpoint: str, events: list[str]) -> None:
        self.endpoint, self.events = endpoint, events

    def health(self) -> tuple[bool, str]:
        self.events.append(f"etcd {self.endpoint}")
        return True, ""

    def members(self) -> list[Member]:
        return [
            Member("1", n, (f"https://{ip}:2380",), ()) for n, ip in [("master-a", "10.20.30.40"), *ADDRESSES.items()]
        ]


def executor(
    tmp_path: Path, hosts: dict[str, FakeHost], events: list[str], inventory: Inventory | None
) -> tuple[renew.RenewExecutor, RenewJournal]:
    """An executor on master-a (a temporary root with TREE's pki and admin.conf) whose peers are ``hosts``."""
    root = NodeRoot(tmp_path)
    for p, data in contents(TREE).items():
        if p.is_relative_to(PKI) or p == paths.ADMIN_CONF:
            root.atomic_write(p, data, 0o600)
    cfg = _cfg()
    cfg = replace(cfg, cluster=replace(cfg.cluster, certificate_validity=timedelta(days=365)))
    journal = RenewJournal.load(root, renew.JOURNAL) or RenewJournal.new(
        root,
        renew.JOURNAL,
        node_name="master-a",
        stamp="2026-12-05-00-00-00",
        all_nodes=True,
        warning_days=400,  # every certificate of the tree (one year from NOW) is expiring
    )

    def api(_node: NodeRoot, data: bytes) -> Any:
        return HealthyApi(str(yaml.safe_load(data)["clusters"][0]["cluster"]["server"]), events)

    fx = Effects(
        kubeconfig_api=api,
        peer_etcd_client=lambda url, *_creds: HealthyEtcd(url, events),  # type: ignore[arg-type]
        etcd_client=lambda _node, _cfg: HealthyEtcd("https://127.0.0.1:2379", events),  # type: ignore[arg-type,return-value]
        sleep=lambda _s: None,
    )
    ex = renew.RenewExecutor(
        LocalHost(root, live=False), journal, cfg, lambda _t: None, renew.RenewResult(targets=[], steps=[]), fx
    )
    ex.options = RetrustOptions(inventory=inventory, node_timeout=5)

    def connect(n: InventoryNode, _deadline: Deadline) -> Transport:
        if n.name not in hosts:
            raise NodeFsError(f"{n.name}: no route", "")
        return Canned(Result(1, b"", b"the fake host runs no command"))

    ex.connect = connect
    ex.remote = lambda _t, name: hosts[name]  # type: ignore[assignment,return-value]

    def renewed() -> bool:  # every peer the journal knows is done
        masters = [e for e in journal.other_nodes.values() if e.get("role") == renew.CONTROL_PLANE_ROLE]
        return bool(masters) and all(e.get("state") == "done" for e in masters)

    lb = LoadBalancer(events, renewed)
    ex._api = lambda: lb  # type: ignore[assignment,method-assign,return-value]
    return ex, journal


def inventory(*names: str) -> Inventory:
    nodes = [InventoryNode("master-a", "10.20.30.40", roles=frozenset({CONTROL_PLANE}))]
    nodes += [InventoryNode(n, ADDRESSES[n], roles=frozenset({CONTROL_PLANE})) for n in names]
    nodes.append(InventoryNode("worker-1", "10.20.30.70", roles=frozenset({WORKER})))
    return Inventory(tuple(nodes))


def test_a_peer_is_read_whole_and_checked_with_its_own_name_and_address():
    host = PeerHost("master-b", cached_peer_files("master-b"), [])
    peer = renew.read_peer(host, "master-b", _cfg())  # type: ignore[arg-type]
    assert (peer.cfg.node_name, peer.cfg.advertise_address) == ("master-b", "10.20.30.50")
    assert (peer.endpoints.api_host, peer.endpoints.etcd_client_url) == ("10.20.30.50", "https://10.20.30.50:2379")
    items = {i.name: i for i in renew.peer_items(peer, REAL_NOW, 30, "test")}
    assert {i.node for i in items.values()} == {"master-b"}
    assert items["apiserver"].status is certs.Status.OK and items["apiserver"].signer_verified
    assert items["kubelet-client"].status is certs.Status.OK  # its CN is master-b's, checked against master-b
    assert items["super-admin.conf"].status is certs.Status.MISSING and not items["super-admin.conf"].counts
    assert items["ca"].status is certs.Status.OK
    # with a 400-day warning every leaf, kubeconfig and the kubelet's certificate is expiring
    later = renew.peer_items(peer, REAL_NOW, 400, "t")
    expiring = {i.name for i in later if i.status is certs.Status.EXPIRING}
    assert {"apiserver", "etcd-peer", "admin.conf", "kubelet-client"} <= expiring


def test_peer_renewal_has_the_peers_own_sans_and_is_signed_with_this_nodes_ca():
    host = PeerHost("master-b", cached_peer_files("master-b"), [])
    local_pki = {p: d for p, d in contents(TREE).items() if p.is_relative_to(PKI)}
    peer = renew.with_local_ca_keys(renew.read_peer(host, "master-b", _cfg()), local_pki)  # type: ignore[arg-type]
    todo = renew.peer_renewal(peer, False, REAL_NOW, 400, "2026-12-05-00-00-00")
    assert todo.components == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
    assert "super-admin.conf" not in todo.names and "kubelet-client" in todo.names
    by_path = {a.path: a for a in todo.files}
    ca = pki.load_certificate(CA_FILES[PKI / "ca.crt"], "ca")
    etcd_ca = pki.load_certificate(CA_FILES[PKI / "etcd/ca.crt"], "etcd ca")
    apiserver = pki.load_certificate(by_path[PKI / "apiserver.crt"].content, "apiserver")
    assert pki.verify_signed_by(apiserver, ca)
    sans = pki.certificate_alt_names(apiserver)
    ips = {str(ip) for ip in sans.ips}
    assert "10.20.30.50" in ips and "10.20.30.40" not in ips  # master-b's address, not master-a's
    assert "master-b" in sans.dns and "master-a" not in sans.dns
    etcd_server = pki.load_certificate(by_path[PKI / "etcd/server.crt"].content, "etcd server")
    assert pki.verify_signed_by(etcd_server, etcd_ca)
    assert "master-b" in pki.certificate_alt_names(etcd_server).dns
    assert "10.20.30.40" not in {str(ip) for ip in pki.certificate_alt_names(etcd_server).ips}
    assert abs(apiserver.not_valid_after_utc - (REAL_NOW + peer.cfg.cluster.certificate_validity)) < timedelta(1)
    assert by_path[PKI / "apiserver.key"].mode == 0o600
    # the kubelet's client certificate for master-b, first the pem, then (here) nothing else: kubelet.conf refers to
    # the link already
    pem = todo.kubelet[0]
    cert = pki.load_certificate(pem.content, "kubelet")
    assert cert.subject.rfc4514_string() == "CN=system:node:master-b,O=system:nodes" and pem.mode == 0o600


def test_a_peer_with_another_ca_is_refused_before_anything_is_written():
    host = PeerHost("master-b", cached_peer_files("master-b", other_ca=True), [])
    local_pki = {p: d for p, d in contents(TREE).items() if p.is_relative_to(PKI)}
    with pytest.raises(PlanError) as refused:
        renew.with_local_ca_keys(renew.read_peer(host, "master-b", _cfg()), local_pki)  # type: ignore[arg-type]
    assert "master-b" in refused.value.message and "another CA" in refused.value.message


def test_peers_are_written_first_then_restarted_one_at_a_time_each_awaited_healthy(tmp_path: Path):
    events: list[str] = []
    b = PeerHost("master-b", cached_peer_files("master-b"), events)
    c = PeerHost("master-c", cached_peer_files("master-c"), events)
    old_b = b.cert(PKI / "apiserver.crt").serial_number
    ex, journal = executor(tmp_path, {"master-b": b, "master-c": c}, events, inventory("master-b", "master-c"))

    ex.step_peer_certificates()
    # written on both, nothing restarted yet; each file recorded in the journal before it was written
    assert events == [] and b.restarts == 0 and c.restarts == 0
    assert b.cert(PKI / "apiserver.crt").serial_number != old_b
    assert {journal.other_nodes[n]["state"] for n in ("master-b", "master-c")} == {"written"}
    assert "worker-1" not in journal.other_nodes  # a worker is other-kubelets' (its kubelet only)
    saved = RenewJournal.load(NodeRoot(tmp_path), renew.JOURNAL)
    assert saved is not None and saved.artifacts("cp:master-b") is not None
    recorded = {a.path: a.content for a in saved.artifacts("cp:master-b") or []}
    assert recorded[PKI / "apiserver.crt"] == b.read(PKI / "apiserver.crt")
    # master-b's old files were moved aside, not lost
    assert any(str(p).endswith("/etc/kubernetes/pki/apiserver.crt") for p in b.aside)

    ex.step_peer_restarts()
    # this node's API server and etcd first, then master-b whole (stopped, restarted, healthy, its Node Ready asked of
    # this node's own API server), then master-c; the load balancer only once both are done
    assert events[0] == "readyz https://10.20.30.40:6443" and events[1] == "etcd https://127.0.0.1:2379"
    b_ready = events.index("etcd https://10.20.30.50:2379")
    b_node = events.index("get /api/v1/nodes/master-b at https://10.20.30.40:6443")
    assert events.index("readyz https://10.20.30.50:6443") < b_ready < b_node
    assert (
        b_node
        < events.index("master-c: stop kube-apiserver")
        == min(i for i, e in enumerate(events) if e.startswith("master-c:"))
    )
    assert max(i for i, e in enumerate(events) if e.startswith("master-b:")) < b_ready
    assert events[-2:] == ["get /api/v1/nodes/master-c at https://10.20.30.40:6443", f"readyz {LB}"]
    # each master's API server first (it fails /readyz and drains while its etcd answers), then etcd, then the rest
    assert b.stopped == ["kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler"] == c.stopped
    # each with the grace of that node's own manifest: its API server (no shutdown delay) 5 s, the others 30 s
    assert b.graces == {"kube-apiserver": 5, "etcd": 30, "kube-controller-manager": 30, "kube-scheduler": 30}
    assert (b.restarts, c.restarts) == (1, 1)
    assert {journal.other_nodes[n]["state"] for n in ("master-b", "master-c")} == {"done"}
    # a second run: nothing is done again
    ex.step_peer_restarts()
    assert (b.restarts, c.restarts) == (1, 1)


def test_until_the_last_master_is_renewed_every_wait_asks_a_given_api_server_never_the_load_balancer(tmp_path: Path):
    """Every master past expiry: the load balancer (admin.conf's server) may send a request to a master not renewed
    yet, which answers with expired certificates. api-ready, node-ready and each peer's Node wait ask this node's own
    API server (its advertise address); the load balancer is awaited once, after the last master, and the workers'
    kubelets come after that (the fake load balancer fails the test if asked earlier)."""
    events: list[str] = []
    b = PeerHost("master-b", cached_peer_files("master-b"), events)
    c = PeerHost("master-c", cached_peer_files("master-c"), events)
    w = PeerHost("worker-1", kubelet_files(_cfg(), "worker-1"), events)
    hosts: dict[str, FakeHost] = {"master-b": b, "master-c": c, "worker-1": w}
    ex, journal = executor(tmp_path, hosts, events, inventory("master-b", "master-c"))
    ex.step_peer_certificates()
    ex.step_api_ready()
    ex.step_node_ready()
    ex.step_peer_restarts()
    ex.step_other_kubelets()
    own = "https://10.20.30.40:6443"
    assert events[:2] == [f"readyz {own}", f"get /api/v1/nodes/master-a at {own}"]
    lb_first = events.index(f"readyz {LB}")
    assert max(i for i, e in enumerate(events) if e.startswith(("master-b:", "master-c:"))) < lb_first
    assert [e for e in events[:lb_first] if e.startswith("get ")] == [
        f"get /api/v1/nodes/{n} at {own}" for n in ("master-a", "master-b", "master-c")
    ]
    assert events.index("worker-1: restart kubelet") > lb_first and w.restarts == 1
    assert events[-1] == f"get /api/v1/nodes/worker-1 at {LB}"  # the workers after it: through it
    assert {n: e["state"] for n, e in journal.other_nodes.items()} == dict.fromkeys(hosts, "done")


def test_a_peer_that_fails_stops_the_rolling_restart_and_the_next_run_resumes_with_it(tmp_path: Path):
    events: list[str] = []
    b = PeerHost("master-b", cached_peer_files("master-b"), events)
    c = PeerHost("master-c", cached_peer_files("master-c"), events)
    ex, _journal = executor(tmp_path, {"master-b": b, "master-c": c}, events, inventory("master-b", "master-c"))
    ex.step_peer_certificates()
    written = c.read(PKI / "apiserver.crt")

    def dead(_unit: str) -> None:
        raise NodeFsError("master-b: 'systemctl restart kubelet' failed", "")

    b.restart_unit = dead  # type: ignore[method-assign,assignment]
    with pytest.raises(PlanError) as failed:
        ex.step_peer_restarts()
    assert "master-b" in failed.value.message and "resumes" in failed.value.hint
    assert c.stopped == [] and c.restarts == 0  # master-c is never touched while master-b is not healthy
    del b.restart_unit
    ex2, journal2 = executor(tmp_path, {"master-b": b, "master-c": c}, events, inventory("master-b", "master-c"))
    assert journal2.other_nodes["master-b"]["state"] == "written"
    ex2.step_peer_restarts()
    assert (b.restarts, c.restarts) == (1, 1) and c.read(PKI / "apiserver.crt") == written  # not renewed twice


def test_peers_come_from_the_etcd_members_when_the_api_is_down(tmp_path: Path):
    """No --inventory and no API (every certificate expired): the members of this node's etcd are the peers."""
    events: list[str] = []
    b = PeerHost("master-b", cached_peer_files("master-b"), events)
    c = PeerHost("master-c", cached_peer_files("master-c"), events)
    ex, journal = executor(tmp_path, {"master-b": b, "master-c": c}, events, None)  # Node objects: admin.conf fails
    nodes, source = renew.discover(ex, ex.options or RetrustOptions())
    assert [(n.name, n.address) for n in nodes] == [("master-b", "10.20.30.50"), ("master-c", "10.20.30.60")]
    assert source == "the etcd members"
    ex.step_peer_certificates()
    assert {journal.other_nodes[n]["state"] for n in ("master-b", "master-c")} == {"written"}


def test_powered_off_peers_get_their_kubelet_started_with_the_renewed_files_before_this_node_waits(tmp_path: Path):
    """Powered off past expiry: nothing runs on the peers (kubelet stopped, or unable to start with its expired client
    certificate), so this node's etcd has no quorum and its API server cannot turn ready until the peers' etcd members
    run again. peer-certificates starts each such peer's kubelet once its files are renewed; peer-restarts then stops
    and restarts nothing there, it only awaits each peer; a running peer is restarted there as before."""
    events: list[str] = []
    b = PeerHost("master-b", cached_peer_files("master-b"), events)
    c = PeerHost("master-c", cached_peer_files("master-c"), events)
    b.running = set()  # powered off; master-c runs its control plane
    ex, journal = executor(tmp_path, {"master-b": b, "master-c": c}, events, inventory("master-b", "master-c"))
    ex.step_peer_certificates()
    assert events == ["master-b: restart kubelet"] and (b.restarts, c.restarts) == (1, 0)
    assert (
        journal.other_nodes["master-b"]["state"] == "written" and "kubelet_started" in journal.other_nodes["master-b"]
    )
    assert "kubelet_started" not in journal.other_nodes["master-c"]
    renewed = {a.path: a.content for a in journal.artifacts("cp:master-b") or []}
    assert b.read(PKI / "apiserver.crt") == renewed[PKI / "apiserver.crt"]  # written before the kubelet started
    assert any("master-b: no etcd or API server ran there" in m for m in ex.result.messages)
    events.clear()
    ex.step_peer_restarts()
    assert b.stopped == [] and b.restarts == 1  # only awaited
    assert "readyz https://10.20.30.50:6443" in events and "etcd https://10.20.30.50:2379" in events
    assert c.stopped == ["kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler"] and c.restarts == 1
    assert {journal.other_nodes[n]["state"] for n in ("master-b", "master-c")} == {"done"}


def test_the_etcd_members_come_from_its_peer_port_without_a_quorum_and_are_awaited(tmp_path: Path):
    """Powered off past expiry, every master down: this node's etcd (started by the kubelet this run restarted) has no
    quorum, so its client port serves nothing; its PEER port (the manifest's --initial-advertise-peer-urls, this
    node's peer certificate) lists the members all the same. Asked each second while etcd starts; after the limit,
    no peers and both reasons, not an endless wait."""
    events: list[str] = []
    ex, _journal = executor(tmp_path, {}, events, None)
    manifest = contents(TREE)[paths.ETCD_MANIFEST]
    NodeRoot(tmp_path).atomic_write(paths.ETCD_MANIFEST, manifest, 0o600)
    etcd = HealthyEtcd("https://127.0.0.1:2379", events)
    answers = iter([EtcdError("connection refused", ""), EtcdError("connection refused", "")])
    asked: list[tuple[str, bytes]] = []

    class PeerPort(HealthyEtcd):
        def peer_members(self) -> list[Member]:
            error = next(answers, None)
            if error is not None:
                raise error
            return self.members()

    def peer_port(url: str, ca: bytes, cert: bytes, key: bytes) -> PeerPort:
        asked.append((url, cert))
        return PeerPort(url, events)

    def no_quorum() -> list[Member]:
        raise EtcdError("cannot reach etcd at https://127.0.0.1:2379: timed out", "")

    etcd.members = no_quorum  # type: ignore[method-assign]
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    ex.fx = replace(
        ex.fx,
        etcd_client=lambda _node, _cfg: etcd,  # type: ignore[arg-type,return-value]
        peer_etcd_client=peer_port,  # type: ignore[arg-type]
        monotonic=lambda: now[0],
        sleep=sleep,
    )
    nodes, source = renew.discover(ex, RetrustOptions(), 90)
    assert [n.name for n in nodes] == ["master-b", "master-c"] and source == "the etcd members"
    assert now[0] == 2.0  # asked three times, a second apart
    assert {a for a in asked} == {("https://10.20.30.40:2380", contents(TREE)[PKI / "etcd/peer.crt"])}
    answers = iter([EtcdError("connection refused", "")] * 1000)
    now[0] = 0.0
    nodes, source = renew.discover(ex, RetrustOptions(), 90)
    assert nodes == [] and now[0] == 90.0
    assert "connection refused; its client port: cannot reach etcd" in source, source


def test_peer_members_reads_raft_s_list_from_the_peer_port():
    """etcd's peer ``/members`` JSON (ids as numbers, an unstarted member without a name) as Members."""
    client = EtcdClient.__new__(EtcdClient)
    client.shown = "https://10.20.30.40:2380"
    body = [
        {"id": 3863817050583135255, "peerURLs": ["https://10.20.30.50:2380"], "name": "master-b", "clientURLs": []},
        {"id": 18183673491693686697, "peerURLs": ["https://10.20.30.60:2380"], "isLearner": True},
    ]
    client._request = lambda _method, path, _body=None: (200, body) if path == "/members" else (404, {})  # type: ignore[method-assign,assignment]
    members = client.peer_members()
    assert [(m.id, m.name, m.peer_urls, m.is_learner) for m in members] == [
        ("359f0922d91af417", "master-b", ("https://10.20.30.50:2380",), False),
        ("fc5962b31016cfa9", "", ("https://10.20.30.60:2380",), True),
    ]
    client._request = lambda _method, _path, _body=None: (503, {"message": "not ready"})  # type: ignore[method-assign,assignment]
    with pytest.raises(EtcdError):
        client.peer_members()


def test_steps_with_all_nodes_write_the_peers_before_this_node_restarts():
    steps = renew.steps_for(["kubelet-client", "apiserver", "admin.conf"], True, all_nodes=True)
    assert steps == [
        "kubelet-client",
        "kubelet-restart",
        "leaves",
        "kubeconfigs",
        "peer-certificates",
        "restart-control-plane",
        "api-ready",
        "node-ready",
        "peer-restarts",
        "other-kubelets",
    ]
    assert renew.steps_for([], True, all_nodes=True) == [
        "peer-certificates",
        "api-ready",
        "peer-restarts",
        "other-kubelets",
    ]
    assert "peer-certificates" not in renew.steps_for(["apiserver"], True)


def test_ca_extend_puts_the_extended_ca_on_each_master_one_at_a_time_then_on_the_workers(tmp_path: Path):
    """ca extend's other-nodes step on HA: each other master's CA certificate, kubeconfigs and kubelet.conf hold the
    extended CA, its components that read the CA at start are restarted, one master at a time, each awaited healthy;
    then the workers (kubelet.conf, restart); the cluster objects settled again after the masters."""
    events: list[str] = []
    b = PeerHost("master-b", cached_peer_files("master-b"), events)
    c = PeerHost("master-c", cached_peer_files("master-c"), events)
    w = PeerHost("worker-1", kubelet_files(_cfg(), "worker-1"), events)
    old = pki.load_certificate(CA_FILES[PKI / "ca.crt"], "ca")
    new = pki.extend_ca(old, pki.load_private_key(CA_FILES[PKI / "ca.key"], "ca.key"), REAL_NOW, timedelta(days=3650))
    extended = [caextend_core.Extended("ca", PKI / "ca.crt", old, new)]
    base, _journal = executor(tmp_path, {"master-b": b, "master-c": c, "worker-1": w}, events, None)
    journal = CaExtendJournal.new(NodeRoot(tmp_path), caextend.JOURNAL, node_name="master-a", all_nodes=True)
    ex = caextend._Executor(
        base.host, journal, base.cfg, lambda _t: None, base.result, base.fx, extended=extended, options=None
    )
    ex.options = RetrustOptions(inventory=inventory("master-b", "master-c"), node_timeout=5)
    ex.connect, ex.remote = base.connect, base.remote
    lb = LoadBalancer(events, lambda: {"master-b", "master-c"} <= set(journal.nodes_done))
    ex._api = lambda: lb  # type: ignore[assignment,method-assign,return-value]
    ex.step_cluster_objects = lambda: events.append("cluster-objects")  # type: ignore[method-assign]
    new_pem = pki.encode_certificate_pem(new)

    ex.step_other_nodes()
    for host in (b, c):
        assert host.read(PKI / "ca.crt") == new_pem and host.read(PKI / "ca.key") == CA_FILES[PKI / "ca.key"]
        for conf in ("admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf"):
            cluster, _user = Kubeconfig.from_yaml(host.read(paths.KUBERNETES_DIR / conf) or b"").current()
            assert cluster.certificate_authority_data == new_pem, (host.name, conf)
        assert host.stopped == ["kube-apiserver", "kube-controller-manager", "kube-scheduler"] and host.restarts == 1
        assert any(str(p).endswith("/etc/kubernetes/pki/ca.crt") for p in host.aside)  # the old one kept
    # one master at a time, each healthy before the next; the cluster objects again; then the worker
    b_healthy = events.index("etcd https://10.20.30.50:2379")
    assert max(i for i, e in enumerate(events) if e.startswith("master-b:")) < b_healthy
    assert b_healthy < min(i for i, e in enumerate(events) if e.startswith("master-c:"))
    asked_lb = events.index(f"readyz {LB}")  # the load balancer once every master holds the extended CA
    assert events.index("etcd https://10.20.30.60:2379") < asked_lb < events.index("cluster-objects")
    assert events.index("cluster-objects") < events.index("worker-1: restart kubelet")
    cluster, _user = Kubeconfig.from_yaml(w.read(paths.KUBELET_CONF) or b"").current()
    assert cluster.certificate_authority_data == new_pem and w.stopped == [] and w.restarts == 1
    assert journal.nodes_done == ["master-b", "master-c", "worker-1"]


def test_ca_extend_after_the_ca_expired_puts_it_on_every_master_at_once_before_waiting_for_this_one(tmp_path: Path):
    """Repair mode on HA: with the CA expired every etcd member rejects the others' certificates, so this node's
    API server (its etcd without a quorum) can never turn ready while the other masters trust only the expired CA.
    peer-repair comes between this node's restart and api-ready; it rewrites every other master and restarts its
    components at once, awaiting nothing (the API and the load balancer are not asked); other-nodes then leaves
    them out and does the workers."""
    assert caextend.steps_for(True, True, repair=True) == [
        "files",
        "restart-control-plane",
        "peer-repair",
        "api-ready",
        "other-nodes",
        "node-ready",
        "restart-kube-proxy",
    ]
    assert "peer-repair" not in caextend.steps_for(True, True) + caextend.steps_for(True, False, repair=True)
    events: list[str] = []
    b = PeerHost("master-b", cached_peer_files("master-b"), events)
    c = PeerHost("master-c", cached_peer_files("master-c"), events)
    w = PeerHost("worker-1", kubelet_files(_cfg(), "worker-1"), events)
    old = pki.load_certificate(CA_FILES[PKI / "ca.crt"], "ca")
    key = pki.load_private_key(CA_FILES[PKI / "ca.key"], "ca.key")
    new = pki.extend_ca(old, key, old.not_valid_after_utc + timedelta(days=1), timedelta(days=3650))
    extended = [caextend_core.Extended("ca", PKI / "ca.crt", old, new)]
    assert caextend.is_repair(extended, old.not_valid_after_utc + timedelta(seconds=1))
    assert not caextend.is_repair(extended, old.not_valid_after_utc - timedelta(seconds=1))
    base, _journal = executor(tmp_path, {"master-b": b, "master-c": c, "worker-1": w}, events, None)
    journal = CaExtendJournal.new(
        NodeRoot(tmp_path), caextend.JOURNAL, node_name="master-a", all_nodes=True, repair=True
    )
    ex = caextend._Executor(
        base.host, journal, base.cfg, lambda _t: None, base.result, base.fx, extended=extended, options=None
    )
    ex.options = RetrustOptions(inventory=inventory("master-b", "master-c"), node_timeout=5)
    ex.connect, ex.remote = base.connect, base.remote
    lb = LoadBalancer(events, lambda: False)  # asked at all: the test fails
    ex._api = lambda: lb  # type: ignore[assignment,method-assign,return-value]
    new_pem = pki.encode_certificate_pem(new)

    ex.step_peer_repair()
    for host in (b, c):
        assert host.read(PKI / "ca.crt") == new_pem
        cluster, _user = Kubeconfig.from_yaml(host.read(paths.KUBELET_CONF) or b"").current()
        assert cluster.certificate_authority_data == new_pem
        assert host.stopped == ["kube-apiserver", "kube-controller-manager", "kube-scheduler"] and host.restarts == 1
    assert not [e for e in events if e.startswith(("readyz", "get ", "etcd "))]  # nothing awaited
    assert sorted(journal.nodes_done) == ["master-b", "master-c"] and w.restarts == 0
    ex.step_cluster_objects = lambda: events.append("cluster-objects")  # type: ignore[method-assign]
    ex.step_other_nodes()
    assert (b.restarts, c.restarts, w.restarts) == (1, 1, 1)
    assert events.index("cluster-objects") < events.index("worker-1: restart kubelet")  # every master holds it
    assert journal.nodes_done[-1] == "worker-1"


def test_an_ipv6_masters_own_api_server_and_a_peers_are_addressed_in_brackets(tmp_path: Path):
    """The own-API-server and peer URLs keep an IPv6 host's brackets (``https://fd00::10:6443`` is no URL)."""
    ex, _journal = executor(tmp_path, {}, [], None)
    ex.cfg = _cfg(CONFIG_TEXT.replace("advertiseAddress: 10.20.30.40", "advertiseAddress: fd00::10"))
    assert ex._own_api().server == "https://[fd00::10]:6443"
    files = cached_peer_files("master-b")
    manifest = files[paths.APISERVER_MANIFEST].replace(b"endpoint: 10.20.30.50:6443", b"endpoint: '[fd00::50]:6443'")
    endpoints = salvage.peer_endpoints("master-b", manifest, files[paths.ETCD_MANIFEST])
    assert (endpoints.api_host, endpoints.api) == ("fd00::50", "[fd00::50]:6443")
    assert renew.api_at(ex, endpoints.api).server == "https://[fd00::50]:6443"
