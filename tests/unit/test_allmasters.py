"""All masters lost ``/etc/kubernetes`` (issue 12): the plan and the executor's control flow on fakes.

The pure part (:mod:`kuberevive.core.allmasters`) against real keys and certificates; the whole recovery on the
executor's fakes (tests/unit/test_executor.py: this node's files under a temporary root, a fake API and etcd, a
fake clock) with two other masters, each a fake host over its own temporary root (what ``--apply`` writes
there over SSH lands in it; the SSH scripts themselves are tested in tests/unit/test_remotehost.py). The proof
on a real 3+1 cluster is tests/lab/test_ha_lab.py::test_all_masters_lost_are_recovered_from_one_node.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from cryptography import x509

from kuberevive.core import allmasters, pki
from kuberevive.core import recover as core
from kuberevive.core.etcdsafety import Member
from kuberevive.core.guard import is_guarded
from kuberevive.core.manifests import manifest_flags, parse_manifest
from kuberevive.errors import PlanError, TransportError
from kuberevive.io.etcd import EtcdClient
from kuberevive.io.host import Host
from kuberevive.io.kubeapi import KubeApi
from kuberevive.io.noderoot import NodeRoot
from kuberevive.io.transport import Result
from kuberevive.model import paths
from kuberevive.model.inventory import InventoryNode
from kuberevive.model.recover import NodeIdentity, RetrustOptions
from kuberevive.run.context import Effects, Faults
from kuberevive.run.recover import RecoveryResult, apply_recovery, plan_recovery
from tests.unit.test_executor import (
    ADDRESS,
    KUBELET_YAML,
    Cluster,
    FakeApi,
    FakeClock,
    FakeEtcd,
    FakeHost,
    Killed,
    _kill,
)

PKI = PurePosixPath("/etc/kubernetes/pki")
CP2, CP3 = "172.30.2.13", "172.30.2.14"
ADDRESSES = {"cp1": ADDRESS, "cp2": CP2, "cp3": CP3}
MEMBERS = [
    Member(f"{i}abc", n, (f"https://{a}:2380",), (f"https://{a}:2379",)) for i, (n, a) in enumerate(ADDRESSES.items())
]


def _identity(name: str) -> NodeIdentity:
    return NodeIdentity(
        name, ADDRESSES[name], 6443, "unix:///run/containerd/containerd.sock", "/var/lib/etcd", "v1.33.13", ""
    )


class Master(FakeHost):
    """Another control-plane node after the seed disaster, reached "over SSH": its files under its own root."""

    def __init__(self, base: Path, name: str) -> None:
        top = base / name
        (top / "var/lib/etcd/member/snap").mkdir(parents=True)
        (top / "var/lib/kubelet/pki").mkdir(parents=True)
        (top / "var/lib/kubelet/config.yaml").write_text(KUBELET_YAML)
        super().__init__(NodeRoot(top))
        self.name = name
        self.reachable = True
        self.sessions = 0
        self.sessions_left: int | None = None
        """After this many more sessions the node cannot be reached (None: no limit)."""

    def run(self, argv: Sequence[str], input: bytes | None = None, timeout: float = 60) -> Result:
        self.commands.append(" ".join(argv[:2]))
        return Result(0, b"/etc/ssl/certs\n", b"")  # the CA-certificate directories that exist there

    def files(self) -> dict[str, bytes]:
        out = {}
        for top in ("/etc/kubernetes", "/var/lib/kubelet/pki"):
            for p in self.root.walk(top):
                st = self.root.lstat(p)
                if st is not None and stat.S_ISREG(st.st_mode):
                    out[str(p)] = self.root.read_existing(p)
        return out


class HaApi(FakeApi):
    """The fake API with the other masters' Nodes, whose kubelets post a heartbeat once restarted."""

    def __init__(self, clock: FakeClock, node: NodeRoot, masters: dict[str, Master]) -> None:
        super().__init__(clock, node)
        self.masters = masters
        for name in masters:
            self.objects[f"/api/v1/nodes/{name}"] = {
                "kind": "Node",
                "metadata": {"name": name, "labels": {"node-role.kubernetes.io/control-plane": ""}},
                "status": {"addresses": [{"type": "InternalIP", "address": ADDRESSES[name]}]},
            }

    def _controllers(self) -> None:
        super()._controllers()
        beat = self.clock.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
        for name, m in self.masters.items():
            if "systemctl restart kubelet" in m.commands:
                self.objects[f"/api/v1/nodes/{name}"]["status"]["conditions"] = [
                    {"type": "Ready", "status": "True", "lastHeartbeatTime": beat}
                ]


class HaEtcd(FakeEtcd):
    def members(self) -> list[Member]:
        return list(MEMBERS)


class AllMasters(Cluster):
    """cp1 (this node) and cp2, cp3 (the other masters), all after the seed disaster."""

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.masters = {n: Master(base, n) for n in ("cp2", "cp3")}
        self.api = HaApi(self.clock, self.root, self.masters)
        self.etcd = HaEtcd()
        peers = tuple(InventoryNode(n, ADDRESSES[n], roles=frozenset({"control-plane"})) for n in self.masters)
        self.options = RetrustOptions(peers=peers)
        self.member_health: dict[str, bool] = {}
        self.kubelet_pems: dict[str, bytes] = {}

    def peer_files(
        self, node: InventoryNode, opts: RetrustOptions, wanted: Sequence[PurePosixPath]
    ) -> dict[PurePosixPath, bytes | None]:
        m = self.masters[node.name]
        if not m.reachable:
            raise TransportError(f"cannot connect to {node.address}:22: connection refused", "check SSH")
        return {w: m.root.read(w) for w in wanted}

    @contextlib.contextmanager
    def master_host(self, node: InventoryNode, opts: RetrustOptions) -> Iterator[Host]:
        m = self.masters[node.name]
        if m.sessions_left is not None:
            m.reachable = m.sessions_left > 0
            m.sessions_left -= 1
        if not m.reachable:
            raise TransportError(f"cannot connect to {node.address}:22: connection refused", "check SSH")
        m.sessions += 1
        yield m

    def peer_etcd(self, url: str, ca: bytes, cert: bytes, key: bytes) -> EtcdClient:
        # this node's client certificate is one of the etcd CA the member's files were written with
        name = next(n for n, a in ADDRESSES.items() if f"//{a}:" in url)
        m = self.masters[name]
        member_ca = m.root.read(PKI / "etcd/ca.crt")
        assert member_ca == ca and pki.verify_signed_by(pki.load_certificate(cert, "c"), pki.load_certificate(ca, "ca"))
        return self.etcd

    def own_api(self, root: NodeRoot, kubeconfig: bytes) -> KubeApi:
        return self.api

    def fx(self, faults: Faults | None = None) -> Effects:
        return dataclasses.replace(
            self.effects(faults),
            peer_files=self.peer_files,
            master_host=self.master_host,
            peer_etcd_client=self.peer_etcd,
            kubeconfig_api=self.own_api,
        )

    def recover(self, faults: Faults | None = None, config_text: str | None = None) -> RecoveryResult:
        return apply_recovery(
            self.host, {}, None, self.progress.append, environ={}, options=self.options, effects=self.fx(faults)
        )

    def plan(self) -> Any:
        return plan_recovery(self.host, {}, None, environ={}, effects=self.fx(), options=self.options)


def kubelet_cert(c: AllMasters) -> None:
    """Every node's surviving kubelet client certificate, from the lost CA (as after the seed disaster)."""
    old = pki.build_certificates(core.bootstrap_config(_identity("cp1")), c.clock.utcnow(), {}).artifacts
    ca = next(a.content for a in old if a.path == PKI / "ca.crt")
    key = next(a.content for a in old if a.path == PKI / "ca.key")
    for name, host in (("cp1", c.host), *c.masters.items()):
        pem = core.kubelet_files(core.bootstrap_config(_identity(name)), ca, key, c.clock.utcnow(), "old").pem
        host.root.write_all([pem], force=True)
        host.replace_symlink(paths.KUBELET_CLIENT_CURRENT, str(pem.path))


def _sans(cert_pem: bytes) -> set[str]:
    cert = pki.load_certificate(cert_pem, "c")
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(ext.get_values_for_type(x509.DNSName))


def _server(conf: bytes) -> str:
    server: str = yaml.safe_load(conf)["clusters"][0]["cluster"]["server"]
    return server


def assert_all_masters_recovered(c: AllMasters) -> None:
    here = c.files()
    trust = {n: here[str(PKI / n)][1] for n in paths.TRUST_FILES}
    etcd_ca = pki.load_certificate(trust["etcd/ca.crt"], "etcd ca")  # type: ignore[arg-type]
    ca = pki.load_certificate(trust["ca.crt"], "ca")  # type: ignore[arg-type]
    for name, m in c.masters.items():
        files = m.files()
        address = ADDRESSES[name]
        for n in paths.TRUST_FILES:  # byte-identical on every master
            assert files[str(PKI / n)] == trust[n], (name, n)
        for n in ("etcd/server.crt", "etcd/peer.crt"):
            cert = files[str(PKI / n)]
            assert pki.verify_signed_by(pki.load_certificate(cert, n), etcd_ca)
            assert {address, name} <= _sans(cert), (name, n)
        apiserver = files[str(PKI / "apiserver.crt")]
        assert pki.verify_signed_by(pki.load_certificate(apiserver, "a"), ca) and address in _sans(apiserver)
        for n in ("controller-manager.conf", "scheduler.conf", "kubelet.conf"):  # its own API server
            assert _server(files[f"/etc/kubernetes/{n}"]) == f"https://{address}:6443", (name, n)
        etcd = manifest_flags(parse_manifest(files["/etc/kubernetes/manifests/etcd.yaml"]))
        assert etcd["name"] == name and etcd["initial-advertise-peer-urls"] == f"https://{address}:2380"
        assert etcd["initial-cluster"] == ",".join(f"{n}=https://{a}:2380" for n, a in ADDRESSES.items())
        assert etcd["initial-cluster-state"] == "existing" and etcd["data-dir"] == "/var/lib/etcd"
        api = manifest_flags(parse_manifest(files["/etc/kubernetes/manifests/kube-apiserver.yaml"]))
        assert api["advertise-address"] == address
        kcm = parse_manifest(files["/etc/kubernetes/manifests/kube-controller-manager.yaml"])
        assert not is_guarded(kcm)
        current = m.root.readlink(paths.KUBELET_CLIENT_CURRENT)
        assert current is not None and current.startswith("/var/lib/kubelet/pki/kubelet-client-2")
        pem = pki.load_certificate(files[current], "kubelet")
        assert pki.verify_signed_by(pem, ca)
        assert "systemctl restart kubelet" in m.commands
        for key in ("ca.key", "sa.key", "etcd/ca.key", "apiserver.key", "etcd/peer.key"):
            st = m.root.lstat(PKI / key)
            assert st is not None and st.st_mode & 0o777 == 0o600, (name, key)
    j = c.journal()
    assert j.status == "done" and {n: s.state for n, s in j.retrust.items()} == {
        "cp2": "done",
        "cp3": "done",
    }


# ------------------------------------------------------------------------------------- pure


def test_a_peer_lost_its_trust_only_when_none_of_the_files_is_there() -> None:
    assert allmasters.trust_lost({})
    assert allmasters.trust_lost(dict.fromkeys(paths.TRUST_FILES))
    assert not allmasters.trust_lost({"sa.key": b"x"})


def test_a_master_named_otherwise_than_its_kubelet_certificate_is_refused() -> None:
    local = _identity("cp1")
    m = allmasters.master_identity(local, "cp2", CP2, "system:node:cp2")
    assert (m.node_name, m.advertise_address, m.etcd_data_dir) == ("cp2", CP2, "/var/lib/etcd")
    assert allmasters.master_identity(local, "cp2", CP2, None).node_name == "cp2"  # no certificate left: trusted
    with pytest.raises(PlanError, match=r"cp2 .* has a client certificate for system:node:cp9"):
        allmasters.master_identity(local, "cp2", CP2, "system:node:cp9")


def test_etcd_members_must_be_exactly_the_masters() -> None:
    masters = [_identity(n) for n in ADDRESSES]
    allmasters.check_members([(m.name, m.peer_urls) for m in MEMBERS], masters)
    with pytest.raises(PlanError, match=r"etcd's members .* are not the control-plane nodes"):
        allmasters.check_members([(m.name, m.peer_urls) for m in MEMBERS[:2]], masters)
    moved = [(m.name, ("https://10.9.9.9:2380",) if m.name == "cp3" else m.peer_urls) for m in MEMBERS]
    with pytest.raises(PlanError, match="not the control-plane nodes"):
        allmasters.check_members(moved, masters)


# ------------------------------------------------------------------------------------- plan


def test_the_plan_recovers_every_master_when_no_peer_holds_trust_and_writes_nothing(tmp_path: Path) -> None:
    c = AllMasters(tmp_path)
    kubelet_cert(c)
    before = (c.files(), {n: m.files() for n, m in c.masters.items()})
    plan = c.plan()
    assert [s.id for s in plan.steps] == list(core.ALL_MASTERS_IDS)
    assert any("every control-plane peer lost its trust material too (cp2, cp3)" in n for n in plan.notes)
    step = next(s for s in plan.steps if s.id == "masters-etcd")
    assert (
        "cp2:/etc/kubernetes/manifests/etcd.yaml" in step.files and "cp3:/etc/kubernetes/pki/etcd/ca.key" in step.files
    )
    assert (c.files(), {n: m.files() for n, m in c.masters.items()}) == before
    assert all(m.sessions == 0 for m in c.masters.values())  # the plan only read the peers' files


def test_a_peer_that_still_holds_trust_material_means_salvage_not_all_masters(tmp_path: Path) -> None:
    c = AllMasters(tmp_path)
    c.masters["cp3"].root.write_all(
        [a for a in pki.build_certificates(core.bootstrap_config(_identity("cp3")), c.clock.utcnow(), {}).artifacts],
        force=True,
    )
    plan = c.plan()
    assert plan.steps[0].id == "salvage-trust" and "masters-etcd" not in [s.id for s in plan.steps]


# ------------------------------------------------------------------------------------- executor


def _n(step_id: str) -> int:
    """The number the run prints for a step of the all-masters case."""
    return core.ALL_MASTERS_IDS.index(step_id) + 1


def test_one_run_recovers_every_master_in_a_quorum_safe_order(tmp_path: Path) -> None:
    c = AllMasters(tmp_path)
    kubelet_cert(c)
    result = c.recover()
    assert result.applied == list(core.ALL_MASTERS_IDS)
    assert_all_masters_recovered(c)
    said = "\n".join(c.progress)
    assert said.index("cp3: 11 etcd file(s) in place") < said.index(f"[{_n('etcd-ready')}/26] wait for etcd")
    read_config = said.index(f"[{_n('read-config')}/26] read the cluster configuration")
    assert said.index("healthy members: cp1, cp2, cp3 (of 3)") < read_config
    # the other masters' kube-controller-manager comes only after the guard is removed
    assert said.index("eviction guard") < said.index("cp2: kube-controller-manager manifest in place")
    nodes = {n["name"]: n for n in result.report["nodes"]}
    assert set(nodes) == {"cp1", "cp2", "cp3"} and all(n["ready"] for n in nodes.values())


def test_a_master_not_reachable_is_named_and_the_recovery_resumes_when_it_is(tmp_path: Path) -> None:
    c = AllMasters(tmp_path)
    kubelet_cert(c)
    # cp3 goes away after the etcd step: etcd has quorum, cp2 is recovered, cp3's control plane waits for it
    c.masters["cp3"].sessions_left = 1
    with pytest.raises(PlanError) as err:
        c.recover()
    msg = err.value.message
    assert msg.startswith("1 control-plane node(s) could not be recovered: cp3 (172.30.2.14): cannot connect"), msg
    assert "resumes at this step" in err.value.hint
    j = c.journal()
    assert j.step_done("etcd-quorum") and not j.step_done("masters-control-plane")
    assert {n: s.state for n, s in j.retrust.items()} == {"cp2": "done"}
    assert "/etc/kubernetes/admin.conf" not in c.masters["cp3"].files()
    c.masters["cp3"].sessions_left = None
    c.masters["cp3"].reachable = True
    c.recover()
    assert_all_masters_recovered(c)


def test_both_other_masters_unreachable_is_no_majority_and_nothing_else_is_written(tmp_path: Path) -> None:
    c = AllMasters(tmp_path)
    kubelet_cert(c)
    # the plan sees them; by the time of the etcd step both are gone
    fx = c.fx()
    unreachable = dataclasses.replace(fx, master_host=lambda node, opts: _refuse(node))
    with pytest.raises(PlanError) as err:
        apply_recovery(c.host, {}, None, c.progress.append, environ={}, options=c.options, effects=unreachable)
    assert "etcd needs a majority of its 3 members, but 2 control-plane node(s) cannot be reached" in err.value.message
    assert not c.journal().step_done("masters-etcd")
    assert not c.root.exists(paths.ETCD_MANIFEST)  # this member is not started alone
    assert all(m.files() == {k: v for k, v in m.files().items() if "kubelet" in k} for m in c.masters.values())


def _refuse(node: InventoryNode) -> contextlib.AbstractContextManager[Host]:
    raise TransportError(f"cannot connect to {node.address}:22: connection refused", "check SSH")


KILL_STEPS = ("masters-etcd", "etcd-quorum", "masters-control-plane", "masters-controller-managers")


@pytest.mark.parametrize("step_id", KILL_STEPS)
def test_a_run_killed_after_a_step_resumes_to_the_same_result(tmp_path: Path, step_id: str) -> None:
    c = AllMasters(tmp_path)
    kubelet_cert(c)
    index = core.ALL_MASTERS_IDS.index(step_id) + 1
    with pytest.raises(Killed):
        c.recover(Faults(after_step=index, kill=_kill))
    assert c.journal().step_done(step_id) and c.journal().status == "running"
    result = c.recover()
    assert result.applied == list(core.ALL_MASTERS_IDS[index:])
    assert_all_masters_recovered(c)


@pytest.mark.parametrize("step_id", ("masters-etcd", "masters-control-plane"))
def test_a_run_killed_in_the_middle_of_a_remote_write_writes_the_same_bytes_when_resumed(
    tmp_path: Path, step_id: str
) -> None:
    c = AllMasters(tmp_path)
    kubelet_cert(c)
    index = core.ALL_MASTERS_IDS.index(step_id) + 1
    with pytest.raises(Killed):
        c.recover(Faults(mid_step=index, kill=_kill))
    j = c.journal()
    recorded = {k: v for k, v in j.artifact_records.items() if k.startswith(f"{step_id}:cp2")}
    (records,) = recorded.values()
    half = c.masters["cp2"].files()
    written = [r for r in records if r.path in half]
    assert 0 < len(written) < len(records)  # part of cp2's files were written when the run died
    c.recover()
    files = c.masters["cp2"].files()
    for r in records:
        if r.path.endswith("kube-controller-manager.yaml"):
            continue
        assert hashlib.sha256(files[r.path]).hexdigest() == r.sha256, r.path
    assert_all_masters_recovered(c)


def test_the_journal_keeps_the_masters_and_a_resumed_plan_shows_their_steps(tmp_path: Path) -> None:
    c = AllMasters(tmp_path)
    kubelet_cert(c)
    with pytest.raises(Killed):
        c.recover(Faults(after_step=2, kill=_kill))
    j = c.journal()
    assert [m.node_name for m in j.masters or []] == ["cp2", "cp3"]
    plan = c.plan()
    assert [s.id for s in plan.steps] == list(core.ALL_MASTERS_IDS)
    assert plan.done_steps == ("etcd-certs", "masters-etcd")
