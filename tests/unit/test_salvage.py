"""Salvaging the trust material from a healthy control-plane peer (issue 12, one master lost ``/etc/kubernetes``).

The pure part (checks, the joined etcd member's flags, the plan) against real keys and certificates; the
salvage-trust step and the whole recovery on the executor's fakes (tests/unit/test_executor.py: fake node
root, fake API and etcd, fake clock) with a fake peer reached "over SSH" (a dict of its files); the TLS check
against a real TLS server is tests/integration/test_tls.py. The end-to-end proof on a real 3+1 cluster is
tests/lab/test_ha_one_master_lab.py."""

from __future__ import annotations

import dataclasses
import ssl
import stat
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest

from kuberevive.core import pki, salvage
from kuberevive.core import recover as core
from kuberevive.core.etcdsafety import Member
from kuberevive.core.kubeconfig import Kubeconfig
from kuberevive.core.manifests import build_manifests, manifest_flags, parse_manifest
from kuberevive.errors import ConfigError, PlanError, TransportError
from kuberevive.io.etcd import EtcdClient
from kuberevive.io.kubeapi import KubeApi
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model import paths
from kuberevive.model.config import NodeFacts
from kuberevive.model.inventory import InventoryNode
from kuberevive.model.recover import NodeIdentity, RetrustOptions
from kuberevive.run.context import Effects, Faults
from kuberevive.run.journal import JOURNAL, RecoveryJournal
from kuberevive.run.peers import peer_findings
from kuberevive.run.recover import RecoveryResult, apply_recovery, plan_recovery
from tests.unit.test_executor import ADDRESS, Cluster, FakeEtcd, Killed, _kill, assert_recovered

CRI = "unix:///run/containerd/containerd.sock"
ISSUED = datetime(2026, 12, 1, tzinfo=UTC)  # before the fake clock's start
PKI = PurePosixPath("/etc/kubernetes/pki")
CP0, CP2 = "172.30.2.10", "172.30.2.12"
MEMBERS = [
    Member("8e9e05c52164694d", "cp0", (f"https://{CP0}:2380",), (f"https://{CP0}:2379",)),
    Member("a1b2c3d4e5f60718", "cp1", (f"https://{ADDRESS}:2380",), (f"https://{ADDRESS}:2379",)),
    Member("ffee001122334455", "cp2", (f"https://{CP2}:2380",), (f"https://{CP2}:2379",)),
]


def _identity(name: str, address: str) -> NodeIdentity:
    return NodeIdentity(name, address, 6443, CRI, "/var/lib/etcd", "v1.33.13", "registry.k8s.io/etcd:3.5.24-0")


def cluster_pki(name: str = "cp0", address: str = CP0) -> dict[str, bytes]:
    """Every kubeadm PKI file of a control-plane node (pki-relative name -> bytes), with new CAs."""
    cfg = core.bootstrap_config(_identity(name, address))
    return {str(a.path.relative_to(PKI)): a.content for a in pki.build_certificates(cfg, ISSUED, {}).artifacts}


def trust(files: dict[str, bytes]) -> dict[str, bytes]:
    return {n: files[n] for n in salvage.SALVAGE_FILES}


class Peer:
    """A healthy control-plane node as the salvage step sees it: its files, its API server's CA, its etcd."""

    def __init__(self, name: str, address: str, pki_files: dict[str, bytes] | None = None) -> None:
        self.node = InventoryNode(name, address, roles=frozenset({"control-plane"}))
        self.pki = pki_files if pki_files is not None else cluster_pki(name, address)
        cfg = core.bootstrap_config(_identity(name, address))
        manifests = {a.path: a.content for a in build_manifests(cfg, NodeFacts(hostname=name))}
        self.files: dict[PurePosixPath, bytes | None] = {PKI / n: d for n, d in self.pki.items()}
        self.files.update(manifests)
        self.serving_ca = self.pki["ca.crt"]
        self.reachable = True
        self.reads: list[PurePosixPath] = []


class Peers:
    """The fake peers behind the step's effects: files read "over SSH", the TLS check, the peer's etcd."""

    def __init__(self, *peers: Peer) -> None:
        self.by_name = {p.node.name: p for p in peers}
        self.tls: list[tuple[str, int]] = []
        self.etcd_urls: list[str] = []

    def files(
        self, node: InventoryNode, opts: RetrustOptions, wanted: Sequence[PurePosixPath]
    ) -> dict[PurePosixPath, bytes | None]:
        peer = self.by_name[node.name]
        if not peer.reachable:
            raise TransportError(f"cannot connect to {node.address}:22: connection refused", "check SSH")
        peer.reads += wanted
        return {w: peer.files.get(w) for w in wanted}

    def verify_tls(self, host: str, port: int, ca: bytes) -> None:
        self.tls.append((host, port))
        peer = next(p for p in self.by_name.values() if p.node.address == host)
        if peer.serving_ca != ca:
            raise ssl.SSLCertVerificationError("certificate verify failed: unable to get local issuer certificate")

    def etcd(self, url: str, ca: bytes, cert: bytes, key: bytes) -> EtcdClient:
        self.etcd_urls.append(url)
        assert pki.verify_signed_by(pki.load_certificate(cert, "client"), pki.load_certificate(ca, "etcd ca"))
        return HaEtcd()


class HaEtcd(FakeEtcd):
    """The cluster's etcd, three members (this node's among them)."""

    def members(self) -> list[Member]:
        return list(MEMBERS)


class HaCluster(Cluster):
    def __init__(self, base: Path, *peers: Peer) -> None:
        super().__init__(base)
        self.etcd = HaEtcd()
        self.peers = Peers(*peers)
        self.options = RetrustOptions(peers=tuple(p.node for p in peers))
        self.bridged: list[str] = []

    def fx(self, faults: Faults | None = None) -> Effects:
        p = self.peers
        return dataclasses.replace(
            self.effects(faults),
            peer_files=p.files,
            verify_tls=p.verify_tls,
            peer_etcd_client=p.etcd,
            kubeconfig_api=self._bridge_api,
        )

    def _bridge_api(self, root: NodeRoot, kubeconfig: bytes) -> KubeApi:
        """The peer's API server as the bridged kubelet reaches it (the fake cluster's API)."""
        self.bridged.append(str(Kubeconfig.from_yaml(kubeconfig).current()[0].server))
        return self.api

    def recover(self, faults: Faults | None = None, config_text: str | None = None) -> RecoveryResult:
        return apply_recovery(
            self.host, {}, None, self.progress.append, environ={}, options=self.options, effects=self.fx(faults)
        )

    def kubelet_cert_from(self, files: dict[str, bytes]) -> None:
        """This node's surviving kubelet client certificate, issued by the CA of ``files``."""
        cfg = core.bootstrap_config(_identity("cp1", ADDRESS))
        pem = core.kubelet_files(cfg, files["ca.crt"], files["ca.key"], ISSUED, "2026-12-01-00-00-00").pem
        self.root.write_all([pem], force=True)
        self.host.replace_symlink(paths.KUBELET_CLIENT_CURRENT, str(pem.path))


# ------------------------------------------------------------------------------------- pure: checks


def test_complete_matching_material_passes_and_each_defect_is_named() -> None:
    files = cluster_pki()
    assert salvage.material_problems(trust(files), ISSUED) == []
    other = cluster_pki()
    cases: dict[str, dict[str, bytes | None]] = {
        "etcd/ca.key is missing": {"etcd/ca.key": None},
        "ca.key does not belong to ca.crt": {"ca.key": other["ca.key"]},
        "front-proxy-ca.key does not belong to front-proxy-ca.crt": {"front-proxy-ca.key": other["front-proxy-ca.key"]},
        "sa.pub does not belong to sa.key": {"sa.pub": other["sa.pub"]},
        "ca.crt is not a CA certificate": {"ca.crt": files["apiserver.crt"], "ca.key": files["apiserver.key"]},
    }
    for expected, change in cases.items():
        problems = salvage.material_problems({**trust(files), **change}, ISSUED)
        assert problems == [expected], expected
    later = datetime(2040, 1, 1, tzinfo=UTC)  # after the CAs' ten years
    assert all("not valid now" in p for p in salvage.material_problems(trust(files), later))


def test_the_peer_ca_must_have_issued_this_nodes_kubelet_certificate() -> None:
    files, other = cluster_pki(), cluster_pki()
    cfg = core.bootstrap_config(_identity("cp1", ADDRESS))
    ours = core.kubelet_files(cfg, files["ca.crt"], files["ca.key"], ISSUED, "x").pem.content
    theirs = core.kubelet_files(cfg, other["ca.crt"], other["ca.key"], ISSUED, "x").pem.content
    assert salvage.material_problems(trust(files), ISSUED, ours) == []
    (problem,) = salvage.material_problems(trust(files), ISSUED, theirs)
    assert "did not issue this node's kubelet client certificate" in problem


def test_peer_endpoints_come_from_kubeadm_annotations_and_a_missing_manifest_is_named() -> None:
    peer = Peer("cp0", CP0)
    api, etcd = peer.files[paths.APISERVER_MANIFEST], peer.files[paths.ETCD_MANIFEST]
    assert salvage.peer_endpoints("cp0", api, etcd) == salvage.PeerEndpoints(CP0, 6443, f"https://{CP0}:2379")
    with pytest.raises(PlanError, match=r"peer cp0 has no /etc/kubernetes/manifests/kube-apiserver.yaml"):
        salvage.peer_endpoints("cp0", None, etcd)
    with pytest.raises(PlanError, match="lacks kubeadm's advertise-address annotation"):
        salvage.peer_endpoints("cp0", b"apiVersion: v1\nkind: Pod\nmetadata: {}\n", etcd)


def test_the_rejoining_member_gets_kubeadms_joined_etcd_flags() -> None:
    joined = salvage.initial_cluster([(m.name, m.peer_urls) for m in MEMBERS], "cp1", ADDRESS)
    assert joined == (
        ("cp0", f"https://{CP0}:2380"),
        ("cp1", f"https://{ADDRESS}:2380"),
        ("cp2", f"https://{CP2}:2380"),
    )
    cfg = core.bootstrap_config(_identity("cp1", ADDRESS))
    (art,) = core.manifests_for(cfg, NodeFacts(hostname="cp1"), ("etcd",), joined)
    (single,) = core.manifests_for(cfg, NodeFacts(hostname="cp1"), ("etcd",))
    flags, init_flags = manifest_flags(parse_manifest(art.content)), manifest_flags(parse_manifest(single.content))
    assert flags["initial-cluster"] == f"cp0=https://{CP0}:2380,cp1=https://{ADDRESS}:2380,cp2=https://{CP2}:2380"
    assert flags["initial-cluster-state"] == "existing" and "initial-cluster-state" not in init_flags
    assert flags["name"] == "cp1" and flags["data-dir"] == "/var/lib/etcd"
    assert {k: v for k, v in flags.items() if not k.startswith("initial-cluster")} == {
        k: v for k, v in init_flags.items() if k != "initial-cluster"
    }
    # kubeadm sorts the default flags: initial-cluster-state right after initial-cluster
    cmd = parse_manifest(art.content)["spec"]["containers"][0]["command"]
    i = next(n for n, c in enumerate(cmd) if c.startswith("--initial-cluster="))
    assert cmd[i + 1] == "--initial-cluster-state=existing"


def test_a_node_removed_from_etcd_cannot_rejoin() -> None:
    others = [(m.name, m.peer_urls) for m in MEMBERS if m.name != "cp1"]
    with pytest.raises(PlanError, match=r"no member named cp1 .*this node was removed"):
        salvage.initial_cluster(others, "cp1", ADDRESS)
    with pytest.raises(PlanError, match="not this node's address"):
        salvage.initial_cluster([(m.name, m.peer_urls) for m in MEMBERS], "cp1", "10.9.9.9")


def test_peers_are_named_with_peer_else_taken_from_the_inventory() -> None:
    cp0 = salvage.parse_peer("cp0=10.0.0.10", 2222)
    assert (cp0.name, cp0.address, cp0.port, cp0.is_control_plane) == ("cp0", "10.0.0.10", 2222, True)
    for bad in ("cp0", "=10.0.0.1", "cp0=", "a=b=c"):
        with pytest.raises(ConfigError, match="is not NAME=ADDRESS"):
            salvage.parse_peer(bad)
    worker = InventoryNode("w1", "10.0.0.20", roles=frozenset({"worker"}))
    me = InventoryNode("cp1", ADDRESS, roles=frozenset({"control-plane"}))
    cp2 = InventoryNode("cp2", CP2, roles=frozenset({"control-plane"}))
    assert salvage.candidates((), (worker, me, cp2), "cp1") == (cp2,)
    assert salvage.candidates((cp0,), (worker, me, cp2), "cp1") == (cp0,)


# ------------------------------------------------------------------------------------- the plan and the step


def test_the_plan_salvages_from_the_peer_first_and_writes_nothing(tmp_path: Path) -> None:
    c = HaCluster(tmp_path, Peer("cp0", CP0))
    plan = plan_recovery(c.host, {}, None, environ={}, effects=c.fx(), options=c.options)
    assert [s.id for s in plan.steps] == list(core.SALVAGE_STEP_IDS)  # salvage-trust, then the seed steps
    first = plan.steps[0]
    assert first.id == "salvage-trust" and "peer cp0" in first.title
    assert set(first.files) == {str(PKI / n) for n in salvage.SALVAGE_FILES}
    assert any("healthy control-plane peers: cp0" in n for n in plan.notes)
    # nothing written here or there; the peer only read (to tell salvage from the all-masters case): its trust
    # files and kubelet client certificate
    wanted = [PKI / n for n in paths.TRUST_FILES] + [paths.KUBELET_CLIENT_CURRENT]
    assert c.files() == {} and c.peers.by_name["cp0"].reads == wanted
    plain = plan_recovery(c.host, {}, None, environ={}, effects=c.fx())
    assert [s.id for s in plain.steps] == list(core.SEED_STEP_IDS)


def test_peer_and_ca_from_together_are_refused(tmp_path: Path) -> None:
    c = HaCluster(tmp_path, Peer("cp0", CP0))
    kept = trust(cluster_pki())
    with pytest.raises(PlanError, match="both --peer and --ca-from"):
        plan_recovery(c.host, kept, None, environ={}, effects=c.fx(), options=c.options)


def test_a_recovery_with_a_healthy_peer_keeps_the_clusters_trust(tmp_path: Path) -> None:
    peer = Peer("cp0", CP0)
    c = HaCluster(tmp_path, peer)
    c.kubelet_cert_from(peer.pki)
    result = c.recover()
    assert result.applied == list(core.SALVAGE_STEP_IDS)
    assert_recovered(c, result)
    files = c.files()
    for name in salvage.SALVAGE_FILES:  # byte-identical to the peer's, kubeadm's modes
        mode, data = files[str(PKI / name)]
        assert data == peer.pki[name], name
        assert mode == (0o644 if name.endswith(".crt") else 0o600), name
    # leaf certificates are this node's (its SANs), signed by the peer's CA
    apiserver = pki.load_certificate(files[str(PKI / "apiserver.crt")][1], "apiserver.crt")  # type: ignore[arg-type]
    assert pki.verify_signed_by(apiserver, pki.load_certificate(peer.pki["ca.crt"], "ca.crt"))
    assert ADDRESS in {str(ip) for ip in pki.certificate_alt_names(apiserver).ips}
    # etcd rejoins its peers: kubeadm's joined-member flags, in both the etcd step and the final manifests
    etcd = manifest_flags(parse_manifest(files["/etc/kubernetes/manifests/etcd.yaml"][1]))
    assert etcd["initial-cluster-state"] == "existing"
    assert etcd["initial-cluster"].split(",") == [f"{m.name}={m.peer_urls[0]}" for m in MEMBERS]
    # meanwhile the kubelet reported through the peer's API server (a kubelet.conf with its surviving
    # certificate), then kubeadm's kubelet.conf came back (the bridge one moved aside) and it was restarted again
    assert c.bridged == [f"https://{CP0}:6443", f"https://{ADDRESS}:6443"]  # and its own API server's /readyz
    assert c.host.commands.count("systemctl restart kubelet") == 2
    (bridge,) = c.journal().artifact_records["kubelet-via-peer"]
    assert bridge.path == "/etc/kubernetes/kubelet.conf" and bridge.mode == 0o600
    final = Kubeconfig.from_yaml(files["/etc/kubernetes/kubelet.conf"][1]).current()
    assert final[0].server == f"https://{ADDRESS}:6443"
    assert final[1].client_certificate == str(paths.KUBELET_CLIENT_CURRENT)
    # the peer was only read; its API server was checked with its CA; its etcd gave the member list
    assert c.peers.tls == [(CP0, 6443)] and c.peers.etcd_urls == [f"https://{CP0}:2379"]
    j = c.journal()
    assert j.salvage_peer == "cp0" and j.trust is not None and not (j.trust.new_ca or j.trust.new_sa)
    assert j.guard == "off" and result.report["eviction_guard"] == "off"  # nothing else to re-trust
    assert not any(s["state"] == "started" for s in [dataclasses.asdict(r) for r in j.steps.values()])


def test_a_peer_that_fails_a_check_is_named_and_the_next_one_is_used(tmp_path: Path) -> None:
    good = Peer("cp2", CP2)
    broken = Peer("cp0", CP0, trust(good.pki) | {"ca.key": cluster_pki()["ca.key"]})
    unreachable = Peer("cp3", "172.30.2.13", good.pki)
    unreachable.reachable = False
    c = HaCluster(tmp_path, broken, unreachable, good)
    c.kubelet_cert_from(good.pki)
    result = c.recover()
    assert result.applied == list(core.SALVAGE_STEP_IDS)
    assert c.files()[str(PKI / "ca.key")][1] == good.pki["ca.key"]
    said = "\n".join(c.progress)
    assert "peer cp0 cannot be used: its trust material cannot be used: ca.key does not belong to ca.crt" in said
    assert "peer cp3 cannot be used: cannot connect to 172.30.2.13:22" in said
    assert c.journal().salvage_peer == "cp2"


def test_no_usable_peer_stops_before_anything_is_written(tmp_path: Path) -> None:
    impostor = Peer("cp0", CP0)
    impostor.serving_ca = cluster_pki()["ca.crt"]  # its API server serves with another CA than its pki's
    stranger = Peer("cp2", CP2)
    c = HaCluster(tmp_path, impostor, stranger)
    c.kubelet_cert_from(impostor.pki)  # cp2 holds another cluster's CAs
    before = c.files()
    with pytest.raises(PlanError) as err:
        c.recover()
    msg = err.value.message
    assert msg.startswith("no peer could give its trust material: cp0 (172.30.2.10): its API server at ")
    assert "does not serve with its ca.crt" in msg
    assert "cp2 (172.30.2.12): its trust material cannot be used: its ca.crt did not issue" in msg
    assert "--peer NAME=ADDRESS" in err.value.hint
    assert c.files() == before  # nothing written here (the journal aside)
    # the refused run left no "running" journal: it was moved aside, with what it held
    assert RecoveryJournal.load(c.root) is None
    (aside,) = [p for p in c.root.walk(paths.BACKUP_DIR) if p.name == JOURNAL.name]
    stuck = RecoveryJournal.load(c.root, aside)
    assert stuck is not None and stuck.salvage_from == ["cp0", "cp2"] and stuck.salvage_peer is None
    assert not stuck.step_done("salvage-trust") and stuck.artifact_records == {}


def test_a_refused_run_does_not_block_the_rerun_with_another_peer(tmp_path: Path) -> None:
    """The stuck journal (issue 12 noticed): no peer passed the checks, so nothing was written; the rerun with a
    healthy peer plans afresh instead of being refused ("from cp0, but this run was not told how to reach it")."""
    impostor, good = Peer("cp0", CP0), Peer("cp2", CP2)
    impostor.serving_ca = cluster_pki()["ca.crt"]
    c = HaCluster(tmp_path, impostor, good)
    c.kubelet_cert_from(good.pki)
    c.options = RetrustOptions(peers=(impostor.node,))
    with pytest.raises(PlanError, match="no peer could give its trust material"):
        c.recover()
    assert RecoveryJournal.load(c.root) is None
    c.options = RetrustOptions(peers=(good.node,))
    result = c.recover()
    assert result.applied == list(core.SALVAGE_STEP_IDS)
    assert c.journal().salvage_peer == "cp2" and c.journal().status == "done"
    assert c.files()[str(PKI / "ca.key")][1] == good.pki["ca.key"]


def test_a_run_killed_in_the_salvage_step_resumes_with_the_same_bytes_without_the_peer(tmp_path: Path) -> None:
    peer = Peer("cp0", CP0)
    c = HaCluster(tmp_path, peer)
    with pytest.raises(Killed):
        c.recover(Faults(mid_step=1, kill=_kill))  # half of the material written
    half = c.files()
    assert 0 < len(half) < len(salvage.SALVAGE_FILES)
    peer.reachable = False  # the journal holds what was read: the peer is not needed again
    peer.files[PKI / "ca.key"] = cluster_pki()["ca.key"]  # nor re-read (it would fail the checks now)
    result = c.recover()
    assert result.applied == list(core.SALVAGE_STEP_IDS)
    files = c.files()
    assert all(files[str(PKI / n)][1] == peer.pki[n] for n in salvage.SALVAGE_FILES)
    assert {p: v for p, v in files.items() if p in half} == half


def test_a_run_killed_after_the_salvage_step_resumes_without_peer_options(tmp_path: Path) -> None:
    peer = Peer("cp0", CP0)
    c = HaCluster(tmp_path, peer)
    with pytest.raises(Killed):
        c.recover(Faults(after_step=core.SALVAGE_STEP_IDS.index("etcd-manifest") + 1, kill=_kill))
    assert c.journal().etcd_members is not None
    c.options = RetrustOptions()  # the rerun names no peer: the journal has everything
    plan = plan_recovery(c.host, {}, None, environ={}, effects=c.fx())
    assert plan.steps[0].id == "salvage-trust" and "salvage-trust" in plan.done_steps
    result = c.recover()
    assert result.applied == list(core.SALVAGE_STEP_IDS[core.SALVAGE_STEP_IDS.index("etcd-manifest") + 1 :])
    assert c.peers.etcd_urls == [f"https://{CP0}:2379"]  # the member list was read once
    assert all(c.files()[str(PKI / n)][1] == peer.pki[n] for n in salvage.SALVAGE_FILES)


def test_a_run_killed_while_the_peer_is_read_finishes_when_rerun_with_the_peer(tmp_path: Path) -> None:
    c = HaCluster(tmp_path, Peer("cp0", CP0))
    read = c.peers.files

    def killed_while_reading(
        node: InventoryNode, opts: RetrustOptions, wanted: Sequence[PurePosixPath]
    ) -> dict[PurePosixPath, bytes | None]:
        raise Killed  # SIGKILL while the peer's files were read: the salvage step started, nothing recorded

    c.peers.files = killed_while_reading  # type: ignore[method-assign]
    with pytest.raises(Killed):
        c.recover()
    c.peers.files = read  # type: ignore[method-assign]
    # the rerun with the same --peer finishes the salvage
    assert c.recover().applied[-1] == core.SALVAGE_STEP_IDS[-1]
    assert c.journal().salvage_peer == "cp0" and c.journal().status == "done"


def test_a_different_key_found_on_the_node_is_moved_aside_and_the_peers_written_0600(tmp_path: Path) -> None:
    peer = Peer("cp0", CP0)
    c = HaCluster(tmp_path, peer)
    stale = cluster_pki()
    c.root.write_all(salvage.salvage_artifacts(str(PKI), trust(stale), "a failed attempt")[:2], force=True)
    c.recover()
    st = c.root.lstat(PKI / "ca.key")
    assert st is not None and stat.S_IMODE(st.st_mode) == 0o600
    assert c.root.read(PKI / "ca.key") == peer.pki["ca.key"]
    backups = {p.name: c.root.read(p) for p in c.root.walk(paths.BACKUP_DIR) if p.suffix in (".key", ".crt")}
    assert backups["ca.key"] == stale["ca.key"] and backups["ca.crt"] == stale["ca.crt"]  # moved aside, not lost


def test_the_cli_reads_peer_options_into_the_node_access_options() -> None:
    from kuberevive.cli.app import build_parser
    from kuberevive.cli.commands.recover import node_access

    args = build_parser().parse_args(
        ["recover", "--peer", "cp0=10.0.0.10", "--peer", "cp2=10.0.0.12", "--ssh-port", "2222"]
    )
    opts = node_access(args)
    assert [(p.name, p.address, p.port) for p in opts.peers] == [("cp0", "10.0.0.10", 2222), ("cp2", "10.0.0.12", 2222)]
    with pytest.raises(ConfigError, match="--peer 'cp0' is not NAME=ADDRESS"):
        node_access(build_parser().parse_args(["recover", "--peer", "cp0"]))


def test_diagnose_says_which_peers_hold_the_trust_material() -> None:
    good = Peer("cp0", CP0)
    stranger = Peer("cp2", CP2)
    down = Peer("cp3", "172.30.2.13", good.pki)
    down.reachable = False
    fake = Peers(good, stranger, down)
    cfg = core.bootstrap_config(_identity("cp1", ADDRESS))
    kubelet = core.kubelet_files(cfg, good.pki["ca.crt"], good.pki["ca.key"], ISSUED, "x").pem.content
    nodes = [good.node, stranger.node, down.node]
    found = peer_findings(kubelet, nodes, RetrustOptions(), str(PKI), ISSUED, fake.files, fake.verify_tls)
    by_peer = {f.subject: f for f in found}
    ok = by_peer[f"peer cp0 ({CP0})"]
    assert ok.id == "recovery.peer-trust" and f"recover --apply --peer cp0={CP0}" in ok.hint
    assert by_peer[f"peer cp2 ({CP2})"].id == "recovery.peer-unusable"
    assert "did not issue this node's kubelet client certificate" in by_peer[f"peer cp2 ({CP2})"].message
    assert "cannot connect to 172.30.2.13:22" in by_peer["peer cp3 (172.30.2.13)"].message
