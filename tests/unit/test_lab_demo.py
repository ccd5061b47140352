"""The control flow of ``kuberevive lab demo`` (kuberevive.lab.demo.run_demo) on a fake lab: what it runs where and in
which order, for the 1+1 story and the HA story (``--control-planes 3``). The real run is by hand (docs/lab.md)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from kuberevive.lab import LabConfig, demo
from kuberevive.lab.probe import ProbeResult
from kuberevive.lab.workload import NOT_READY_TOLERATION_SECONDS


class FakeNode:
    def __init__(self, name: str, calls: list[Any]) -> None:
        self.name, self.calls = name, calls

    def run(self, argv: list[str], *, step: str, timeout: float = 120, check: bool = True) -> Any:
        self.calls.append(("run", self.name, argv[-1] == demo.SEED_DISASTER and "disaster"))
        return subprocess.CompletedProcess(argv, 0, "", "")

    def nsenter(self, argv: list[str]) -> list[str]:
        return ["nsenter", self.name, *argv]


class FakeLab:
    def __init__(self, cfg: LabConfig, calls: list[Any]) -> None:
        self.cfg = self.requested = cfg
        self.calls = calls
        self.nodes = {n: FakeNode(n, calls) for n in cfg.node_names}

    def up(self) -> dict[str, Any]:
        self.calls.append(("up",))
        return {}

    def node(self, name: str) -> FakeNode:
        return self.nodes[name]

    def apicaller_logs(self, tail: int = 5) -> str:
        return "apicaller ok status=200"


class FakeProbe:
    def __init__(self, lab: FakeLab, work_dir: Path) -> None:
        self.lab = lab
        self.results: dict[str, ProbeResult] = {}

    def __enter__(self) -> FakeProbe:
        self.lab.calls.append(("probe start",))
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.lab.calls.append(("probe stop",))
        self.results = {n: ProbeResult(n, 100, 0) for n in self.lab.cfg.node_names}
        self.results["worker1"] = ProbeResult("worker1", 99, 1, [[4.5, "timed out"]])  # in the disaster

    def wait_for_answers(self, timeout: float) -> None:
        pass


class FakePopen:
    def __init__(self, calls: list[Any], argv: list[str]) -> None:
        calls.append(("recover", argv))
        self.stderr = iter(["[1/25] etcd certificates\n"])
        self.stdout = FakeStdout(json.dumps({"timings": {"start_to_api_ready_s": 30.5}, "report": {}}))

    def wait(self) -> int:
        return 0


@dataclasses.dataclass
class FakeStdout:
    text: str

    def read(self) -> str:
        return self.text


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, control_planes: int) -> tuple[list[Any], dict[str, Any]]:
    cfg = dataclasses.replace(LabConfig(), state_dir=tmp_path / "state", run_dir=tmp_path / "run")
    cfg = cfg.with_topology(control_planes, 1)
    calls: list[Any] = []
    lab = FakeLab(cfg, calls)
    snapshots = iter([{"u1": {"name": "labapp-a"}, "u2": {"name": "apicaller-x"}}, {"u1": {"name": "labapp-a"}}])
    monkeypatch.setattr(demo, "ServiceProbe", FakeProbe)
    monkeypatch.setattr(demo, "pods", lambda _lab: next(snapshots))
    monkeypatch.setattr(demo, "workload_containers", lambda _lab: {"worker1/labapp-a/labapp": "c1"})
    monkeypatch.setattr(demo, "evictions", lambda _lab: [])
    clock = [1000.0]  # wall clock: only the demo's sleeps advance it

    def sleep(seconds: float) -> None:
        calls.append(("sleep", seconds))
        clock[0] += seconds

    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(time, "time", lambda: clock[0])
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **_kw: FakePopen(calls, argv))
    said: list[str] = []
    report = demo.run_demo(lab, said.append)  # type: ignore[arg-type]
    return calls, report | {"said": said}


def test_the_ha_demo_strikes_every_master_waits_then_recovers_all_from_cp1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, report = _run(tmp_path, monkeypatch, 3)
    kinds = [c[0] for c in calls]
    assert kinds[:2] == ["up", "probe start"]
    assert sorted(c[1] for c in calls if c[0] == "run" and c[2] == "disaster") == ["cp1", "cp2", "cp3"]
    wait = demo.NODE_MONITOR_GRACE_SECONDS + NOT_READY_TOLERATION_SECONDS + 5
    # the wait comes after all three disasters and before the one recovery, which runs on cp1 with --peer cp2, cp3
    assert kinds.index("sleep") == max(i for i, c in enumerate(calls) if c[0] == "run") + 1
    assert calls[kinds.index("sleep")] == ("sleep", wait)
    (recover,) = [c[1] for c in calls if c[0] == "recover"]
    assert kinds.index("recover") > kinds.index("sleep") and kinds.index("recover") < kinds.index("probe stop")
    assert recover[:2] == ["nsenter", "cp1"] and recover[recover.index("kuberevive") :][:3] == [
        "kuberevive",
        "recover",
        "--apply",
    ]
    cfg = dataclasses.replace(LabConfig(), state_dir=tmp_path / "state").with_topology(3, 1)
    peers = [recover[i + 1] for i, a in enumerate(recover) if a == "--peer"]
    assert peers == [f"cp2={cfg.node('cp2').ip}", f"cp3={cfg.node('cp3').ip}"]
    assert "--ssh-key" in recover and "--known-hosts" in recover
    # the impact, as the 1+1 demo prints it
    assert report["control_planes"] == ["cp1", "cp2", "cp3"] and report["recover_exit_code"] == 0
    assert report["failed_requests"] == 1 and sorted(report["requests"]) == ["cp1", "cp2", "cp3", "worker1"]
    assert report["failed_during_recovery"] == dict.fromkeys(["cp1", "cp2", "cp3", "worker1"], 0)
    assert report["pods_replaced"] == ["apicaller-x"] and report["labapp_containers_kept"] == 1
    said = "\n".join(report["said"])
    assert "disaster on cp1, cp2, cp3" in said and "start to API ready 30.5 s" in said
    assert "requests from worker1: 99 answered, 1 failed (0 while recover --apply ran)" in said


def test_the_single_master_demo_strikes_cp1_only_and_names_no_peer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, report = _run(tmp_path, monkeypatch, 1)
    assert [c[1] for c in calls if c[0] == "run"] == ["cp1"]
    (recover,) = [c[1] for c in calls if c[0] == "recover"]
    assert recover[:2] == ["nsenter", "cp1"] and "--peer" not in recover
    assert report["control_planes"] == ["cp1"]
