"""quorum-restore's executor (run/quorum.py) against fake masters and a fake etcd: the order of what it does on
each master, the resume from the journal, and an etcdutl failure that leaves the kept data as it was."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from kuberevive.core import quorum as q
from kuberevive.core.etcdsafety import Member
from kuberevive.errors import EtcdError, PlanError, TransportError
from kuberevive.io.host import Container
from kuberevive.io.noderoot import NodeRoot
from kuberevive.io.transport import Result
from kuberevive.model import paths
from kuberevive.run import quorum as run
from kuberevive.run.context import Faults

ETCD_YAML = b"""apiVersion: v1
kind: Pod
metadata: {name: etcd, namespace: kube-system}
spec:
  containers:
  - name: etcd
    command: [etcd, --name=NAME, --data-dir=/var/lib/etcd, --initial-cluster=NAME=https://ADDR:2380,
      --initial-cluster-state=new]
"""
API_YAML = b"""apiVersion: v1
kind: Pod
metadata: {name: kube-apiserver, namespace: kube-system}
spec:
  containers:
  - name: kube-apiserver
    command: [kube-apiserver, --secure-port=6443]
"""
ETCD = paths.MANIFESTS_DIR / "etcd.yaml"
API = paths.MANIFESTS_DIR / "kube-apiserver.yaml"
DATA = PurePosixPath("/var/lib/etcd")


class FakeHost:
    """A master: files (path -> bytes, a directory is b"<dir>"), running static pods from its manifests."""

    def __init__(self, name: str, log: list[str], address: str) -> None:
        self.name, self.log = name, log
        self.files: dict[PurePosixPath, bytes] = {
            ETCD: ETCD_YAML.replace(b"NAME", name.encode()).replace(b"ADDR", address.encode()),
            API: API_YAML,
            DATA: b"<dir>",
            DATA / "member": b"<dir>",
        }
        self.fail_etcdutl = False

    def _event(self, what: str) -> None:
        self.log.append(f"{self.name}: {what}")

    def read(self, path: PurePosixPath) -> bytes | None:
        return self.files.get(path)

    def exists(self, path: PurePosixPath) -> bool:
        return path in self.files

    def move_aside(self, path: PurePosixPath, now: datetime | None = None) -> PurePosixPath | None:
        aside = PurePosixPath("/var/lib/kuberevive/backup/T") / path.relative_to("/")
        self.files[aside] = self.files.pop(path)
        self._event(f"aside {path.name}")
        return aside

    def rename(self, src: PurePosixPath, dst: PurePosixPath) -> None:
        assert dst not in self.files
        for p in [p for p in self.files if p == src or src in p.parents]:
            self.files[dst / p.relative_to(src) if p != src else dst] = self.files.pop(p)
        self._event(f"rename {src} {dst}")

    def write(self, path: PurePosixPath, content: bytes, mode: int) -> PurePosixPath | None:
        assert mode == 0o600 and path not in self.files
        self.files[path] = content
        self._event(f"write {path.name}")
        return None

    def containers(self, name: str | None = None) -> list[Container]:
        running = {"etcd": ETCD, "kube-apiserver": API}.get(name or "")
        if running is None:  # the controller-manager and scheduler: the kubelet starts them again at once
            return [Container(name or "", name or "", "CONTAINER_RUNNING", 0)]
        return [Container(name or "", name or "", "CONTAINER_RUNNING", 0)] if running in self.files else []

    def run(self, argv: Sequence[str], input: bytes | None = None, timeout: float = 0) -> Result:
        self._event(" ".join(argv))
        if self.fail_etcdutl:
            return Result(1, b"", b"snapshot file has wrong size\n")
        target = PurePosixPath(next(a for a in argv if a.startswith("--data-dir=")).split("=", 1)[1])
        self.files[target] = self.files[target / "member"] = b"<dir>"
        return Result(0, b"", b"")

    def stop_containers(self, name: str, cri_socket: str | None = None) -> int:
        self._event(f"stop {name}")
        return 1

    def restart_unit(self, unit: str) -> None:
        self._event(f"restart {unit}")


class FakeEtcd:
    """The donor's etcd after the restore: one member, learners added and promoted."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.list = [Member("d1", "cp1", ("https://10.0.0.11:2380",))]
        self.promote_tries = 0

    def health(self) -> tuple[bool, str]:
        return True, ""

    def members(self) -> list[Member]:
        return list(self.list)

    def member_add(self, peer_urls: list[str], learner: bool) -> Member:
        assert learner
        m = Member(f"l{len(self.list)}", "", tuple(peer_urls), is_learner=True)
        self.list.append(m)
        self.log.append(f"etcd: add learner {peer_urls[0]}")
        return m

    def member_promote(self, member: str) -> None:
        self.promote_tries += 1
        if self.promote_tries % 2:
            raise EtcdError("can only promote a learner member which is in sync with leader")
        # a started member has its name (cpN at 10.0.0.1N)
        self.list = [
            Member(m.id, "cp" + m.peer_urls[0].split(":")[1][-1], m.peer_urls) if m.id == member else m
            for m in self.list
        ]
        self.log.append(f"etcd: promote {member}")


def _master(node: str, revision: int | None) -> q.MasterEtcd:
    i = node[-1]
    return q.MasterEtcd(
        node, f"10.0.0.1{i}", node, f"https://10.0.0.1{i}:2380", f"https://10.0.0.1{i}:2379", str(DATA), True,
        revision, why="unreachable",
    )  # fmt: skip


def _wait(what: str, timeout: float, probe: Callable[[], tuple[bool, str]], interval: float) -> float:
    for _ in range(10):
        if probe()[0]:
            return 0.0
    raise AssertionError(f"{what}: never")


def _setup(
    tmp_path: Path, done: Sequence[str] = (), snapshot: q.Snapshot | None = None
) -> tuple[Any, dict[str, FakeHost], FakeEtcd, list[str]]:
    log: list[str] = []
    masters = [_master("cp1", 900), _master("cp2", 1), _master("cp3", None)]
    hosts = {m.node: FakeHost(m.node, log, m.address) for m in masters}
    etcd = FakeEtcd(log)
    planned = q.plan(masters, "cp1", snapshot=snapshot)
    journal = run.QuorumJournal.new(NodeRoot(tmp_path), run.JOURNAL, stamp="S", local="cp1")
    for key in done:
        journal.mark(key, "done")
    result = run.QuorumResult(planned.document())

    def api_ready(m: q.MasterEtcd, port: int) -> tuple[bool, str]:
        log.append(f"{m.node}: api ready? :{port}")
        return API in hosts[m.node].files, "not yet"

    executor = run.QuorumExecutor(
        planned, journal, lambda m: hosts[m.node], lambda url: etcd, api_ready,  # type: ignore[arg-type,return-value]
        lambda _s: None, result, Faults(), wait=_wait,
    )  # fmt: skip
    return executor, hosts, etcd, log


def test_every_master_is_stopped_and_kept_before_the_donor_is_restored_then_each_member_regrown_in_turn(
    tmp_path: Path,
) -> None:
    executor, hosts, etcd, log = _setup(tmp_path)

    def unreachable() -> FakeHost:
        raise TransportError("worker2: cannot connect: timed out", "check SSH")

    executor.workers = lambda: [("worker1", lambda: FakeHost("worker1", log, "10.0.0.21")), ("worker2", unreachable)]
    executor.run()
    assert executor.result.applied == [s.key for s in executor.p.steps]
    # every other node's kubelet restarted last; one that cannot be reached is a message, not a failure
    assert log[-1] == "worker1: restart kubelet"
    assert executor.result.messages[-1] == "worker2: kubelet not restarted: worker2: cannot connect: timed out"
    first_restore = next(i for i, e in enumerate(log) if "etcdutl" in e)
    # nothing is restored before etcd and the API server are stopped and the data kept on every master
    for node in ("cp1", "cp2", "cp3"):
        assert log.index(f"{node}: aside etcd.yaml") < first_restore
        assert log.index(f"{node}: rename /var/lib/etcd /var/lib/etcd.kuberevive-S") < first_restore
        assert hosts[node].files[PurePosixPath("/var/lib/etcd.kuberevive-S/member")] == b"<dir>"  # kept
    restore = log[first_restore].split()
    assert restore[1:5] == ["etcdutl", "snapshot", "restore", "/var/lib/etcd.kuberevive-S/member/snap/db"]
    assert "--skip-hash-check" in restore and "--mark-compacted" in restore
    assert "--initial-cluster=cp1=https://10.0.0.11:2380" in restore
    # cp2 is added, started, promoted and its API server started before cp3 is added
    order = [
        "cp1: write etcd.yaml",
        "cp1: write kube-apiserver.yaml",
        "etcd: add learner https://10.0.0.12:2380",
        "cp2: write etcd.yaml",
        "etcd: promote l1",
        "cp2: write kube-apiserver.yaml",
        "etcd: add learner https://10.0.0.13:2380",
        "cp3: write etcd.yaml",
        "etcd: promote l2",
        "cp3: write kube-apiserver.yaml",
        "cp1: restart kubelet",
    ]
    assert [e for e in log if e in order] == order
    cp3 = hosts["cp3"].files[ETCD].decode()
    assert "--initial-cluster=cp1=https://10.0.0.11:2380,cp2=https://10.0.0.12:2380,cp3=https://10.0.0.13:2380" in cp3
    assert "--initial-cluster-state=existing" in cp3
    assert [m.is_learner for m in etcd.list] == [False, False, False]
    assert {f"{n}: restart kubelet" for n in ("cp1", "cp2", "cp3")} <= set(log)
    # the stopped manifests were recorded in the journal before they were moved
    saved = run.QuorumJournal.load(NodeRoot(tmp_path), run.JOURNAL)
    assert saved is not None and saved.manifests["cp2"]["kube-apiserver"] == API_YAML.decode()


def test_a_resumed_run_does_only_what_is_left_and_adds_no_second_learner(tmp_path: Path) -> None:
    executor, _hosts, etcd, log = _setup(tmp_path)
    executor.faults = Faults(after_step=5, kill=lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        executor.run()  # killed right after cp2 was re-grown
    assert executor.result.applied[-1] == "regrow:cp2"
    # killed again in cp3's regrow, after its learner was added: the journal has the learner
    journal = run.QuorumJournal.load(NodeRoot(tmp_path), run.JOURNAL)
    assert journal is not None
    executor2 = run.QuorumExecutor(
        q.plan([q.MasterEtcd(**asdict(m)) for m in executor.p.masters], "cp1", resumed=True),
        journal, executor.hosts, executor.etcd, executor.api_ready, lambda _s: None,
        run.QuorumResult({}), Faults(), wait=_wait,
    )  # fmt: skip
    etcd.member_add(["https://10.0.0.13:2380"], learner=True)  # added before the kill
    log.clear()
    executor2.run()
    assert executor2.result.applied == ["regrow:cp3", "restart-components"]
    assert not any("add learner" in e or "etcdutl" in e or "aside" in e for e in log), log
    assert len(etcd.list) == 3 and not any(m.is_learner for m in etcd.list)


def test_an_etcdutl_failure_stops_with_the_kept_data_in_place(tmp_path: Path) -> None:
    executor, hosts, _etcd, _log = _setup(tmp_path)
    hosts["cp1"].fail_etcdutl = True
    with pytest.raises(EtcdError, match=r"cp1: etcdutl snapshot restore of .* failed: snapshot file has wrong size"):
        executor.run()
    assert executor.result.applied == ["stop-control-plane", "keep-data"]
    assert hosts["cp1"].files[PurePosixPath("/var/lib/etcd.kuberevive-S/member")] == b"<dir>"
    assert DATA not in hosts["cp1"].files  # nothing restored, nothing deleted
    assert not executor.journal.step_done("restore-donor")


def test_a_snapshot_is_restored_with_its_hash_checked(tmp_path: Path) -> None:
    executor, _hosts, _etcd, log = _setup(tmp_path, snapshot=q.Snapshot("/var/backups/etcd.db", 800))
    executor.run()
    [restore] = [e.split() for e in log if "etcdutl" in e]
    assert restore[:5] == ["cp1:", "etcdutl", "snapshot", "restore", "/var/backups/etcd.db"]
    assert "--skip-hash-check" not in restore and "--bump-revision=1000000000" in restore


def test_the_nodes_are_restarted_one_at_a_time_each_back_before_the_next(tmp_path: Path) -> None:
    executor, _hosts, _etcd, log = _setup(tmp_path)
    asked: dict[str, int] = {}

    def node_ready(name: str, since: datetime) -> tuple[bool, str]:
        asked[name] = asked.get(name, 0) + 1
        log.append(f"{name}: ready? {asked[name]}")
        return name != "cp3" and asked[name] >= 3, "Ready=False"

    def wait(what: str, timeout: float, probe: Callable[[], tuple[bool, str]], interval: float) -> float:
        for _ in range(5):
            if probe()[0]:
                return 0.0
        raise PlanError(f"{what} did not come up within {int(timeout)} s", "look")

    executor.node_ready, executor.wait = node_ready, wait
    executor.workers = lambda: [("worker1", lambda: FakeHost("worker1", log, "10.0.0.21"))]
    executor.step_restart_components("")
    assert [e for e in log if "restart kubelet" in e or "ready? 3" in e or "ready? 5" in e] == [
        "cp1: restart kubelet",
        "cp1: ready? 3",  # back (Ready with a fresh heartbeat) before the next node's restart
        "cp2: restart kubelet",
        "cp2: ready? 3",
        "cp3: restart kubelet",
        "cp3: ready? 3",
        "cp3: ready? 5",  # never back: a message, and the next node is still restarted
        "worker1: restart kubelet",
        "worker1: ready? 3",
    ]
    assert executor.result.messages == ["cp3: cp3 to be back after its kubelet restart did not come up within 300 s"]
