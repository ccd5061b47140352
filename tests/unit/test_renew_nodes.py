"""``certs renew --all-nodes``: what is planned for each other node (pure), and the ``other-kubelets`` step against
fake hosts (in memory; the lab test runs it over SSH against real kubelets: tests/lab/test_certs_lab.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from kuberevive.core import certs, pki
from kuberevive.core.kubeconfig import Kubeconfig, control_plane_url
from kuberevive.errors import NodeFsError, PlanError, TransportError
from kuberevive.io.host import LocalHost
from kuberevive.io.noderoot import NodeRoot
from kuberevive.io.transport import Deadline, Result, Transport
from kuberevive.model import paths
from kuberevive.model.config import EncryptionAlgorithm, KubeadmConfig
from kuberevive.model.inventory import Inventory, InventoryNode
from kuberevive.model.recover import RetrustOptions
from kuberevive.run import renew
from kuberevive.run.journal import RenewJournal
from tests.unit.test_certs import contents, with_kubelet_pem
from tests.unit.test_diagnose import NOW, PKI, _cfg, _file, make_tree, snapshot
from tests.unit.test_remotehost import Canned

CURRENT = paths.KUBELET_CLIENT_CURRENT
SERVING = paths.KUBELET_SERVING_CERT
REAL_NOW = datetime.now(UTC)
TREE = make_tree()  # one cluster CA for the control plane and every node of these tests
EXPIRED = replace(_cfg().cluster, certificate_validity=timedelta(days=1))  # issued at make_tree's NOW: long expired


def kubelet_files(cfg: KubeadmConfig, node: str, expired: bool = False) -> dict[PurePosixPath, bytes]:
    """A joined node's kubelet files, its client certificate from the cluster CA of TREE (valid, or long expired)."""
    if expired:
        old = replace(EXPIRED, encryption_algorithm=cfg.cluster.encryption_algorithm)
        files = with_kubelet_pem(TREE, replace(cfg, cluster=old), node=node, now=NOW)
    else:
        files = with_kubelet_pem(TREE, cfg, node=node, now=REAL_NOW)
    keep = (paths.KUBELET_CONF, CURRENT, PurePosixPath(f"{paths.KUBELET_PKI}/kubelet-client-stamp.pem"))
    return {p: files[p].content or b"" for p in keep}


class FakeHost:
    """A node in memory: files, symlinks, what was moved aside and how often the kubelet was restarted."""

    def __init__(self, name: str, files: dict[PurePosixPath, bytes]) -> None:
        self.name = name
        self.files = {p: d for p, d in files.items() if p != CURRENT}
        self.links = {CURRENT: f"{paths.KUBELET_PKI}/kubelet-client-stamp.pem"} if CURRENT in files else {}
        self.aside: dict[PurePosixPath, bytes | str] = {}
        self.restarts = 0
        self.modes: dict[PurePosixPath, int] = {}

    def read(self, node_path: PurePosixPath, limit: int = 0) -> bytes | None:
        target = self.links.get(node_path)
        return self.files.get(PurePosixPath(target) if target else node_path)

    def read_many(self, node_paths: Sequence[PurePosixPath]) -> dict[PurePosixPath, bytes | None]:
        return {p: self.read(p) for p in node_paths}

    def readlink(self, node_path: PurePosixPath) -> str | None:
        return self.links.get(node_path)

    def write(
        self, node_path: PurePosixPath, content: bytes, mode: int, now: datetime | None = None
    ) -> PurePosixPath | None:
        aside = None
        if node_path in self.files and self.files[node_path] != content:
            aside = self.move_aside(node_path)
        self.files[node_path], self.modes[node_path] = content, mode
        return aside

    def move_aside(self, node_path: PurePosixPath, now: datetime | None = None) -> PurePosixPath | None:
        backup = PurePosixPath(f"/var/lib/kuberevive/backup/{len(self.aside)}{node_path}")
        if node_path in self.links:
            self.aside[backup] = self.links.pop(node_path)
        elif node_path in self.files:
            self.aside[backup] = self.files.pop(node_path)
        else:
            return None
        return backup

    def replace_symlink(self, node_path: PurePosixPath, target: str) -> None:
        self.links[node_path] = target

    def restart_unit(self, unit: str) -> None:
        assert unit == "kubelet"
        self.restarts += 1

    def client_cert(self) -> Any:
        return pki.load_certificate(self.read(CURRENT) or b"", "client")


class ReadyApi:
    """The API as the ready wait sees it: every Node Ready with a heartbeat now."""

    def get(self, path: str, **query: Any) -> Any:
        beat = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": beat}]}}


def executor(
    tmp_path: Path, hosts: dict[str, FakeHost], down: set[str], validity: timedelta
) -> tuple[renew.RenewExecutor, RenewJournal]:
    """An executor on a temporary control-plane root (make_tree's PKI) whose other nodes are ``hosts``."""
    root = NodeRoot(tmp_path)
    for p, data in contents(TREE).items():
        if p.is_relative_to(PKI):
            root.atomic_write(p, data, 0o600)
    cfg = _cfg()
    cfg = replace(cfg, cluster=replace(cfg.cluster, certificate_validity=validity))
    journal = RenewJournal.load(root, renew.JOURNAL) or RenewJournal.new(
        root, renew.JOURNAL, node_name="master-a", stamp="2026-12-05-00-00-00", all_nodes=True, warning_days=30
    )
    ex = renew.RenewExecutor(
        LocalHost(root, live=False), journal, cfg, lambda _t: None, renew.RenewResult(targets=[], steps=[])
    )
    nodes = tuple(InventoryNode(n, f"192.0.2.{i}") for i, n in enumerate(["master-a", *hosts, *down], start=1))
    ex.options = RetrustOptions(inventory=Inventory(nodes), node_timeout=5)

    def connect(n: InventoryNode, _deadline: Deadline) -> Transport:
        if n.name in down:
            raise TransportError(f"{n.name}: ssh: connect to host {n.address} port 22: No route to host", "")
        return Canned(Result(1, b"", b"the fake host runs no command"))

    ex.connect = connect
    ex.remote = lambda _t, name: hosts[name]  # type: ignore[assignment,return-value]
    ex._api = lambda: ReadyApi()  # type: ignore[assignment,method-assign,return-value]
    return ex, journal


def test_node_renewal_decides_per_certificate():
    cfg = _cfg()
    ca = pki.load_certificate(contents(TREE)[PKI / "ca.crt"], "ca")
    expired = kubelet_files(cfg, "worker-1", expired=True)
    fresh = kubelet_files(cfg, "worker-1")

    def plan(files: dict[PurePosixPath, bytes], everything: bool = False) -> certs.NodeRenewal:
        snap = snapshot({p: _file(p, d, 0o600) for p, d in files.items()})
        items = certs.kubelet_items(snap, ca, True, "worker-1", REAL_NOW, 30, other_node="worker-1")
        return certs.node_renewal("worker-1", items, everything)

    old = plan(expired)
    assert (old.renew_client, old.new_serving, old.restart, old.client.status) == (
        True,
        False,
        True,
        certs.Status.EXPIRED,
    )
    assert old.as_json()["client"]["status"] == "expired" and old.as_json()["restart_kubelet"] is True
    ok = plan(fresh)
    assert (ok.renew_client, ok.restart) == (False, False)
    assert plan(fresh, everything=True).renew_client is True
    gone = certs.node_renewal("worker-2", [certs.unreachable_item("worker-2", "No route to host")])
    assert (gone.reached, gone.restart) == (False, False) and "No route to host" in gone.notes[0]
    missing = plan({})
    assert (missing.renew_client, missing.restart) == (False, False) and "recover --apply" in missing.notes[0]

    # the kubelet's self-signed serving certificate (serverTLSBootstrap off), expired: moved aside, the kubelet
    # makes a new one when it restarts
    key = pki.generate_private_key(cfg.cluster.encryption_algorithm)
    own_ca = pki.new_self_signed_ca("worker-1-ca@1", key, NOW, REAL_NOW - timedelta(days=1))
    serving = {
        SERVING: pki.encode_certificate_pem(own_ca),
        SERVING.with_suffix(".key"): pki.encode_private_key_pem(key),
    }
    both = plan(fresh | serving)
    assert both.serving is not None and both.serving.status is certs.Status.EXPIRED
    assert (both.renew_client, both.new_serving, both.restart) == (False, True, True)
    # signed by the cluster CA through a CSR (serverTLSBootstrap on): only reported
    csr = pki.issue_certificate(
        common_name="system:node:worker-1",
        organization=("system:nodes",),
        usages=(pki.KeyUsage.SERVER_AUTH,),
        public_key=key.public_key(),
        ca_cert=ca,
        ca_key=pki.load_private_key(contents(TREE)[PKI / "ca.key"], "k"),
        not_before=NOW,
        not_after=REAL_NOW - timedelta(days=1),
    )
    bootstrap = plan(fresh | {paths.KUBELET_SERVING_CURRENT: pki.encode_certificate_pem(csr)})
    assert (bootstrap.new_serving, bootstrap.restart) == (False, False)
    assert any("certificate approve" in n for n in bootstrap.notes)


def test_other_kubelets_renews_the_expired_one_reports_the_unreachable_one_and_resumes(tmp_path: Path):
    cfg = _cfg()
    # a TLS-bootstrapped kubelet's key is ECDSA P-256 (the cluster's configuration says RSA-2048): the new one is too
    ecdsa = replace(cfg, cluster=replace(cfg.cluster, encryption_algorithm=EncryptionAlgorithm.ECDSA_P256))
    old_files = kubelet_files(ecdsa, "worker-1", expired=True)
    worker1 = FakeHost("worker-1", old_files)
    worker2 = FakeHost("worker-2", kubelet_files(cfg, "worker-2"))
    ex, journal = executor(tmp_path, {"worker-1": worker1, "worker-2": worker2}, {"worker-3"}, timedelta(minutes=6))
    old_serial = worker1.client_cert().serial_number

    with pytest.raises(PlanError) as failed:
        ex.step_other_kubelets()
    assert "worker-3" in failed.value.message and "No route to host" in failed.value.message
    assert "worker-1" not in failed.value.message and "resumes" in failed.value.hint
    # worker-3, where nothing was written, gets a kubelet.conf to copy there by hand (a new embedded certificate)
    copy = tmp_path / "var/lib/kuberevive/renew/nodes/worker-3/kubelet.conf"
    assert str(copy).removeprefix(str(tmp_path)).replace("worker-3", "<node>") in failed.value.hint
    assert copy.stat().st_mode & 0o777 == 0o600
    _cluster, user = Kubeconfig.from_yaml(copy.read_bytes()).current()
    embedded = pki.load_certificate(user.client_certificate_data or b"", "copy")
    assert embedded.subject.rfc4514_string() == "CN=system:node:worker-3,O=system:nodes"
    assert pki.verify_signed_by(embedded, pki.load_certificate(contents(TREE)[PKI / "ca.crt"], "ca"))
    assert _cluster.server == control_plane_url(_cfg())
    assert not (tmp_path / "var/lib/kuberevive/renew/nodes/worker-1").exists()

    # worker-1: a new client certificate in place, signed by the cluster CA, for its node, with the validity given
    new_pem = PurePosixPath(f"{paths.KUBELET_PKI}/kubelet-client-2026-12-05-00-00-00.pem")
    assert worker1.links[CURRENT] == str(new_pem) and worker1.modes[new_pem] == 0o600
    cert = worker1.client_cert()
    ca = pki.load_certificate(contents(TREE)[PKI / "ca.crt"], "ca")
    assert cert.serial_number != old_serial and pki.verify_signed_by(cert, ca)
    assert cert.subject.rfc4514_string() == "CN=system:node:worker-1,O=system:nodes"
    assert abs(cert.not_valid_after_utc - (datetime.now(UTC) + timedelta(minutes=6))) < timedelta(minutes=1)
    assert pki.key_matches_certificate(pki.load_private_key(worker1.read(CURRENT) or b"", "k"), cert)
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    # the old link is kept (moved aside), the old pem and kubelet.conf untouched (it already refers to the link)
    assert list(worker1.aside.values()) == [f"{paths.KUBELET_PKI}/kubelet-client-stamp.pem"]
    assert worker1.files[PurePosixPath(f"{paths.KUBELET_PKI}/kubelet-client-stamp.pem")] == old_files[CURRENT]
    assert worker1.files[paths.KUBELET_CONF] == old_files[paths.KUBELET_CONF]
    assert worker1.restarts == 1
    # worker-2's certificate is valid: nothing written, no restart
    assert (worker2.restarts, worker2.aside) == (0, {})
    assert journal.other_nodes["worker-1"]["state"] == "done" and journal.other_nodes["worker-2"]["state"] == "done"
    assert "worker-3" not in journal.other_nodes
    assert any("worker-1: kubelet restarted" in m for m in ex.result.messages)

    # the next run (worker-3 reachable now, its certificate expired) does worker-3 only
    worker3 = FakeHost("worker-3", kubelet_files(cfg, "worker-3", expired=True))
    everyone = {"worker-1": worker1, "worker-2": worker2, "worker-3": worker3}
    ex2, journal2 = executor(tmp_path, everyone, set(), timedelta(days=365))  # the journal read from disk
    assert journal2 is not journal and journal2.other_nodes["worker-1"]["state"] == "done"
    ex2.step_other_kubelets()
    assert (worker1.restarts, worker2.restarts, worker3.restarts) == (1, 0, 1)
    assert worker3.client_cert().subject.rfc4514_string() == "CN=system:node:worker-3,O=system:nodes"


def test_other_kubelets_resumes_a_node_killed_between_its_write_and_its_restart(tmp_path: Path):
    """The journal says worker-1 was started (its files recorded): the rerun writes exactly those and restarts the
    kubelet, although the certificate the node now holds is valid."""
    cfg = _cfg()
    worker1 = FakeHost("worker-1", kubelet_files(cfg, "worker-1", expired=True))
    ex, journal = executor(tmp_path, {"worker-1": worker1}, set(), timedelta(days=365))

    def killed(*_a: Any, **_k: Any) -> None:
        raise NodeFsError("killed", "")

    worker1.restart_unit = killed  # type: ignore[method-assign]
    with pytest.raises(PlanError):
        ex.step_other_kubelets()
    assert journal.other_nodes["worker-1"]["state"] == "started"
    written = worker1.read(CURRENT)
    saved = RenewJournal.load(NodeRoot(tmp_path), renew.JOURNAL)
    assert saved is not None and saved.artifacts("node:worker-1") is not None  # recorded before it was written
    del worker1.restart_unit
    worker1.restarts = 0
    ex.step_other_kubelets()
    assert worker1.restarts == 1 and worker1.read(CURRENT) == written
    assert journal.other_nodes["worker-1"]["state"] == "done"


def test_steps_and_validity_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert renew.steps_for(["apiserver"], True, all_nodes=True)[-3:] == ["api-ready", "peer-restarts", "other-kubelets"]
    assert renew.steps_for([], True, all_nodes=True) == [
        "peer-certificates",
        "api-ready",
        "peer-restarts",
        "other-kubelets",
    ]
    assert "other-kubelets" not in renew.steps_for(["apiserver"], True)
    cfg = _cfg()
    assert renew.stored_validity(str(tmp_path), "kubeadm.yaml", cfg) == (
        cfg.cluster.certificate_validity,
        "--config kubeadm.yaml",
    )
    validity, source = renew.stored_validity(str(tmp_path), None, cfg)  # no admin.conf: kubeadm's default
    assert validity == timedelta(days=365) and source.startswith("kubeadm's default") and "admin.conf" in source

    class StoredApi:
        def get(self, path: str, **query: Any) -> Any:
            assert path.endswith("/kube-system/configmaps/kubeadm-config")
            text = yaml.safe_dump({"kind": "ClusterConfiguration", "certificateValidityPeriod": "6m0s"})
            return {"data": {"ClusterConfiguration": text}}

    monkeypatch.setattr(renew, "admin_client", lambda _node, timeout=10: StoredApi())
    assert renew.stored_validity(str(tmp_path), None, cfg) == (
        timedelta(minutes=6),
        "the stored ClusterConfiguration (kube-system/kubeadm-config)",
    )
