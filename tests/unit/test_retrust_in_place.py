"""Re-trusting other nodes' kubelets (``run/retrust.py`` over ``io/retrust_node.py``) without SSH or a cluster:
each node is a fake host (its files under a temporary root through NodeRoot, its ``systemctl`` recorded), the
API a dict-backed fake whose kubelets post a heartbeat at every request. The same code runs over
:class:`~kuberevive.io.remotehost.SshHost` in the lab (tests/lab/test_recover_lab.py)."""

from __future__ import annotations

import base64
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from kuberevive.core import retrust as core
from kuberevive.errors import TransportError
from kuberevive.io.host import Host, LocalHost
from kuberevive.io.noderoot import NodeRoot
from kuberevive.io.retrust_node import read_node_state, retrust_node
from kuberevive.io.transport import Deadline, LocalTransport, Transport
from kuberevive.model import paths
from kuberevive.model.inventory import Inventory, InventoryNode
from kuberevive.model.recover import RetrustOptions
from kuberevive.run.retrust import READY_POLL, Reach, repair_nodes, retrust_in_place
from tests.unit.test_executor import FakeApi
from tests.unit.test_retrust import _ca, _cfg

OLD_CA = b"-----BEGIN CERTIFICATE-----\nold ca\n-----END CERTIFICATE-----\n"
OLD_PEM = paths.KUBELET_PKI / "kubelet-client-2025-01-01-00-00-00.pem"
KUBELET_YAML = (
    b"apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nclientCAFile: /etc/kubernetes/pki/ca.crt\n"
)


class Worker(LocalHost):
    """A worker node: its files under a temporary root, its unit restarts recorded (or refused)."""

    def __init__(self, root: NodeRoot, name: str, restart_fails: bool = False) -> None:
        super().__init__(root, live=True, name=name)
        self.restarts: list[str] = []
        self.restart_fails = restart_fails

    def restart_unit(self, unit: str) -> None:
        if self.restart_fails:
            raise TransportError(f"{self.name}: 'systemctl restart {unit}' failed: unit not found", "look at it")
        self.restarts.append(unit)


class RealClock:
    """The fake API's clock at real time: the re-trust waits for a heartbeat after its own (real) restart."""

    def tick(self) -> None:
        pass

    def utcnow(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=5)


class Fleet(FakeApi):
    """The fake API with more Nodes, whose kubelets post a Ready heartbeat at every request (at real time unless
    another clock is given)."""

    def __init__(self, node: NodeRoot, workers: list[str], clock: Any = None) -> None:
        super().__init__(clock or RealClock(), node)  # type: ignore[arg-type]
        for name in workers:
            self.objects[f"/api/v1/nodes/{name}"] = {"kind": "Node", "metadata": {"name": name}, "status": {}}

    def _controllers(self) -> None:
        super()._controllers()
        beat = self.clock.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
        for path, obj in self.objects.items():
            if path.startswith("/api/v1/nodes/"):
                obj["status"]["conditions"] = [{"type": "Ready", "status": "True", "lastHeartbeatTime": beat}]


def worker_root(base: Path, name: str, *, lost_conf: bool = False) -> NodeRoot:
    """A joined worker with an old CA: config.yaml, ca.crt, kubelet.conf and the client pem behind its link."""
    root = NodeRoot(base / name)
    (base / name).mkdir()
    root.atomic_write(paths.KUBELET_CONFIG, KUBELET_YAML, 0o644)
    root.atomic_write(paths.CA_CRT, OLD_CA, 0o644)
    if not lost_conf:
        root.atomic_write(paths.KUBELET_CONF, b"old kubelet.conf\n", 0o600)
    root.atomic_write(OLD_PEM, b"old client pem\n", 0o600)
    root.replace_symlink(paths.KUBELET_CLIENT_CURRENT, str(OLD_PEM))
    return root


def _reach(workers: dict[str, Worker]) -> Reach:
    def connect(node: InventoryNode, deadline: Deadline) -> Transport:
        return LocalTransport(node.name, deadline=deadline)  # never used: the fake host does the work

    def host(_t: Transport, name: str) -> Host:
        return workers[name]

    return Reach(connect, host)


def _backups(root: NodeRoot) -> list[PurePosixPath]:
    return sorted(p for p in root.walk(paths.BACKUP_DIR) if root.lstat(p) is not None)


def test_retrust_node_puts_the_new_trust_in_place_and_moves_the_old_aside(tmp_path: Path) -> None:
    cfg = _cfg()
    ca, key = _ca(cfg)
    root = worker_root(tmp_path, "worker1")
    host = Worker(root, "worker1")
    state = read_node_state(host)
    assert (state.client_ca, state.current_link, state.client_pem) == (OLD_CA, str(OLD_PEM), b"old client pem\n")
    now = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)
    files = core.node_trust_files(
        cfg, ca, key, "worker1", "https://10.0.0.1:6443", state.client_ca_path, now, "2026-12-04-20-00-00"
    )
    moved = retrust_node(host, files, now)
    stamp = paths.BACKUP_DIR / "20261204T200000.000000Z"
    assert moved == [
        f"worker1:{paths.CA_CRT} moved aside to {stamp}{paths.CA_CRT}",
        f"worker1:{paths.KUBELET_CONF} moved aside to {stamp}{paths.KUBELET_CONF}",
        f"worker1:{paths.KUBELET_CLIENT_CURRENT} moved aside to {stamp}{paths.KUBELET_CLIENT_CURRENT}",
    ]
    assert root.read(paths.CA_CRT) == ca and root.read(stamp / "etc/kubernetes/pki/ca.crt") == OLD_CA
    assert root.readlink(paths.KUBELET_CLIENT_CURRENT) == files.pem_path
    assert root.readlink(stamp / "var/lib/kubelet/pki/kubelet-client-current.pem") == str(OLD_PEM)
    assert root.read(paths.KUBELET_CONF) == files.kubeconfig and root.read(OLD_PEM) == b"old client pem\n"
    modes = {p: os.stat(root.host_path(p)).st_mode & 0o777 for p in (paths.CA_CRT, paths.KUBELET_CONF)}
    assert modes == {paths.CA_CRT: 0o644, paths.KUBELET_CONF: 0o600}
    assert os.stat(root.host_path(PurePosixPath(files.pem_path))).st_mode & 0o777 == 0o600
    assert host.restarts == ["kubelet"]
    assert retrust_node(host, files, now + timedelta(seconds=1)) == []  # a rerun after a kill: nothing to move
    assert host.restarts == ["kubelet", "kubelet"]


class Counting(Worker):
    """A worker whose file operations are recorded by name, the outermost only (each is one SSH command on an
    SshHost, tests/unit/test_remotehost.py; LocalHost's repoint_symlink is made of three)."""

    def __init__(self, root: NodeRoot, name: str) -> None:
        super().__init__(root, name)
        self.ops: list[str] = []
        depth = [0]
        for op in ("read", "read_many", "readlink", "write", "move_aside", "replace_symlink", "repoint_symlink"):
            original = getattr(self, op)

            def counted(*a: Any, _op: str = op, _f: Any = original, **kw: Any) -> Any:
                if not depth[0]:
                    self.ops.append(_op)
                depth[0] += 1
                try:
                    return _f(*a, **kw)
                finally:
                    depth[0] -= 1

            setattr(self, op, counted)


def test_a_node_is_read_in_two_operations_and_re_trusted_in_four_plus_the_restart(tmp_path: Path) -> None:
    """Issue 17: a node's SSH round trips bound the fleet (19 before). The state is two operations (the files, the
    link); the re-trust writes three files and repoints the link, each write moving aside what it replaces."""
    cfg = _cfg()
    ca, key = _ca(cfg)
    host = Counting(worker_root(tmp_path, "worker1"), "worker1")
    state = read_node_state(host)
    assert host.ops == ["read_many", "readlink"]
    assert (state.client_ca, state.kubelet_conf, state.client_pem) == (
        OLD_CA,
        b"old kubelet.conf\n",
        b"old client pem\n",
    )
    now = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)
    files = core.node_trust_files(cfg, ca, key, "worker1", "https://10.0.0.1:6443", state.client_ca_path, now, "x")
    host.ops.clear()
    moved = retrust_node(host, files, now)
    assert host.ops == ["write", "write", "write", "repoint_symlink"] and host.restarts == ["kubelet"]
    stamp = paths.BACKUP_DIR / "20261204T200000.000000Z"
    assert [m.split(" moved aside to ")[1] for m in moved] == [
        f"{stamp}{p}" for p in (paths.CA_CRT, paths.KUBELET_CONF, paths.KUBELET_CLIENT_CURRENT)
    ]
    root = host.root
    assert (root.read(paths.CA_CRT), root.read(paths.KUBELET_CONF)) == (ca, files.kubeconfig)
    assert root.readlink(paths.KUBELET_CLIENT_CURRENT) == files.pem_path
    assert root.read(stamp / "etc/kubernetes/kubelet.conf") == b"old kubelet.conf\n"
    assert retrust_node(host, files, now) == []  # a rerun after a kill: nothing moved, nothing replaced


def test_a_client_ca_elsewhere_is_read_on_its_own(tmp_path: Path) -> None:
    root = worker_root(tmp_path, "worker1")
    other = PurePosixPath("/etc/kubernetes/pki/kubelet-ca.crt")
    root.atomic_write(other, b"other ca", 0o644)
    config = (
        b"kind: KubeletConfiguration\nauthentication:\n  x509:\n    clientCAFile: /etc/kubernetes/pki/kubelet-ca.crt\n"
    )
    root.atomic_write(paths.KUBELET_CONFIG, config, 0o644)
    host = Counting(root, "worker1")
    state = read_node_state(host)
    assert (state.client_ca_path, state.client_ca) == (str(other), b"other ca")
    assert host.ops == ["read_many", "read", "readlink"]


def test_retrust_in_place_reaches_every_node_and_one_failure_stops_no_other(tmp_path: Path) -> None:
    cfg = _cfg()
    ca, key = _ca(cfg)
    (tmp_path / "cp1").mkdir()
    api = Fleet(NodeRoot(tmp_path / "cp1"), ["worker1", "worker2"])
    workers = {
        "worker1": Worker(worker_root(tmp_path, "worker1"), "worker1"),
        "worker2": Worker(worker_root(tmp_path, "worker2"), "worker2", restart_fails=True),
    }
    todo = [InventoryNode(n, f"10.0.0.{i}") for i, n in enumerate(workers, 2)]
    results = retrust_in_place(api, cfg, ca, key, RetrustOptions(node_timeout=60), todo, reach=_reach(workers))
    one, two = results["worker1"], results["worker2"]
    assert one.ok and one.value is not None and len(one.value) == 3, one.error
    conf = yaml.safe_load(workers["worker1"].root.read_existing(paths.KUBELET_CONF))
    assert base64.b64decode(conf["clusters"][0]["cluster"]["certificate-authority-data"]) == ca
    assert not two.ok and two.error is not None and "'systemctl restart kubelet' failed" in two.error
    assert workers["worker2"].root.read(paths.CA_CRT) == ca  # its files were written before the restart failed
    assert "GET /api/v1/nodes/worker1" in api.requests and "GET /api/v1/nodes/worker2" not in api.requests


def test_repair_leaves_a_node_whose_files_are_in_order_and_repairs_one_that_lost_them(tmp_path: Path) -> None:
    cfg = _cfg()
    ca, key = _ca(cfg)
    (tmp_path / "cp1").mkdir()
    api = Fleet(NodeRoot(tmp_path / "cp1"), ["worker1", "worker2", "worker9"])
    workers = {
        "worker1": Worker(worker_root(tmp_path, "worker1", lost_conf=True), "worker1"),
        "worker2": Worker(worker_root(tmp_path, "worker2"), "worker2"),
    }
    # worker2 already holds a complete, valid trust from this CA: nothing to repair there
    now = datetime.now(UTC)
    good = core.node_trust_files(cfg, ca, key, "worker2", "https://10.0.0.1:6443", str(paths.CA_CRT), now, "x")
    retrust_node(workers["worker2"], good, now, restart=False)
    before = {p: workers["worker2"].root.read(p) for p in (paths.CA_CRT, paths.KUBELET_CONF)}
    nodes = tuple(InventoryNode(n, f"10.0.0.{i}") for i, n in enumerate(workers, 2))
    opts = RetrustOptions(node_timeout=60, inventory=Inventory(nodes, source="inventory.yaml"))
    lines: list[str] = []
    candidates = [("worker1", "NotReady"), ("worker2", "NotReady"), ("worker9", "NotReady")]
    out = repair_nodes(api, cfg, ca, key, candidates, opts, lines.append, reach=_reach(workers))
    assert out.repaired == ["worker1"] and not out.failed
    assert [x.split(":")[0] for x in out.left] == ["worker9", "worker2"]
    assert "its kubelet's files are in order" in out.left[1] and "not in the inventory" in out.left[0]
    assert workers["worker1"].restarts == ["kubelet"] and workers["worker2"].restarts == []
    assert {p: workers["worker2"].root.read(p) for p in before} == before
    assert any("kubelet.conf is missing" in m for m in out.messages)
    assert out.as_dict()["repaired"] == ["worker1"]


class LateHeartbeats(Fleet):
    """The kubelets' first heartbeat comes ``after`` seconds after the restart (real time)."""

    def __init__(self, node: NodeRoot, workers: dict[str, Worker], after: float) -> None:
        super().__init__(node, list(workers))
        self.workers, self.after = workers, after
        self.restarted: dict[str, float] = {}

    def _controllers(self) -> None:
        super()._controllers()
        for name, w in self.workers.items():
            if w.restarts and name not in self.restarted:
                self.restarted[name] = time.monotonic()
            if name not in self.restarted or time.monotonic() < self.restarted[name] + self.after:
                self.objects[f"/api/v1/nodes/{name}"]["status"]["conditions"] = []


def test_a_re_trusted_node_is_seen_ready_within_half_a_second_of_its_first_heartbeat(tmp_path: Path) -> None:
    cfg = _cfg()
    ca, key = _ca(cfg)
    (tmp_path / "cp1").mkdir()
    workers = {"worker1": Worker(worker_root(tmp_path, "worker1"), "worker1")}
    api = LateHeartbeats(NodeRoot(tmp_path / "cp1"), workers, after=0.3)
    todo = [InventoryNode("worker1", "10.0.0.2")]
    (result,) = retrust_in_place(
        api, cfg, ca, key, RetrustOptions(node_timeout=60), todo, reach=_reach(workers)
    ).values()
    assert result.ok, result.error
    assert 0.3 <= result.seconds <= 0.3 + READY_POLL + 0.2  # looked at every second before: 1.0 s
