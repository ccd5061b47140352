"""The fleet benchmark's request counting from the API server's audit log (``kuberevive.lab.fleet``): events counted
by the time the request was received, across the log's rotation, by client; request rates per window.

The 10,000-Secret run counted 0 requests: the API server rotates its audit log at 100 MB even with
``--audit-log-maxsize=0`` (its log writer reads 0 as 100 MB), and the count started at a line number of the file
that had been rotated away. These tests rotate the log as the API server does (``audit-<time>.log``)."""

from __future__ import annotations

import importlib.util
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kuberevive.lab.fleet import AuditEvent, Fleet, audit_events, request_rate

T0 = datetime(2026, 12, 6, 4, 0, 0, tzinfo=UTC).timestamp()


def _line(at: float, user: str, agent: str = "kuberevive") -> str:
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    event = {
        "kind": "Event",
        "stage": "ResponseComplete",
        "user": {"username": user, "groups": ["system:authenticated"]},
        "userAgent": agent,
        "requestReceivedTimestamp": stamp,
        "stageTimestamp": stamp,
    }
    return json.dumps(event) + "\n"


def test_requests_after_the_mark_are_counted_across_a_rotation_of_the_log(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, 0)
    before = "".join(_line(T0 - 10 + i * 0.01, "kubernetes-admin") for i in range(500))
    fleet.audit_log.write_text(before + "".join(_line(T0 + i, "kubernetes-admin") for i in range(3)))
    # the API server rotated the log (the mark's line number would now point past the end of the new file)
    backup = tmp_path / "audit-2026-12-06T04-00-05.123.log"
    fleet.audit_log.rename(backup)
    os.utime(backup, (T0 + 5, T0 + 5))  # a file's last write is after its last event was received
    fleet.audit_log.write_text(
        _line(T0 + 5, "kubernetes-admin")
        + _line(T0 + 6, "system:node:fleet-00001")
        + _line(T0 + 7, "system:serviceaccount:kube-system:deployment-controller")
    )
    os.utime(fleet.audit_log, (T0 + 7, T0 + 7))
    (tmp_path / "audit-policy.yaml").write_text("not a log\n")
    older = tmp_path / "audit-2026-12-06T03-59-00.000.log"  # last written before the mark: not read at all
    older.write_text("".join(_line(T0 + 1, "kubernetes-admin") for _ in range(7)))
    os.utime(older, (T0 - 1, T0 - 1))
    assert fleet.requests_since(T0) == {
        "kubernetes-admin": 4,
        "nodes": 1,
        "system:serviceaccount:kube-system:deployment-controller": 1,
    }
    assert fleet.requests_since(T0 + 5.5) == {"nodes": 1, "system:serviceaccount:kube-system:deployment-controller": 1}
    assert fleet.requests_since(T0 + 60) == {}


def test_a_request_received_before_the_mark_but_logged_after_it_is_not_counted() -> None:
    # the log is in completion order: a slow request received before the mark comes after later ones
    lines = [_line(T0 + 1, "kubernetes-admin").encode(), _line(T0 - 1, "kubernetes-admin").encode()]
    assert [e.at for e in audit_events(lines, T0)] == [T0 + 1]


def test_a_line_cut_short_or_without_a_timestamp_is_left_out() -> None:
    whole = _line(T0 + 1, "kubernetes-admin").encode()
    lines = [whole, whole[:40], b'{"kind": "Event"}\n', b"\n"]
    assert len(list(audit_events(lines, T0))) == 1


def test_clients_are_named_the_tool_the_simulator_and_each_controller() -> None:
    agent = "kube-controller-manager/v1.33.0 (linux/amd64) kubernetes/60a317e"
    assert AuditEvent(T0, "kubernetes-admin", "kuberevive").client() == "tool"
    assert AuditEvent(T0, "kubernetes-super-admin", "kuberevive").client() == "pod simulator"
    assert AuditEvent(T0, "system:node:fleet-00003", "curl/8").client() == "nodes"
    token_controller = AuditEvent(T0, "system:kube-controller-manager", f"{agent}/tokens-controller")
    assert token_controller.client() == "kube-controller-manager/tokens-controller"
    deployments = AuditEvent(
        T0, "system:serviceaccount:kube-system:deployment-controller", f"{agent}/system:serviceaccount:kube-system:x"
    )
    assert deployments.client() == "kube-controller-manager/deployment-controller"
    assert AuditEvent(T0, "system:apiserver", "kube-apiserver").client() == "system:apiserver"


def test_the_rate_is_the_mean_over_the_window_and_the_busiest_second_within_it() -> None:
    # 10 requests in the first half second, then one a second for 9 s; one request before and one after the window
    times = [T0 + i * 0.05 for i in range(10)] + [T0 + 1 + i for i in range(9)] + [T0 - 0.5, T0 + 20]
    assert request_rate(times, T0, T0 + 10) == {"requests": 19, "per_s": 1.9, "peak_per_s": 10}
    assert request_rate([], T0, T0 + 10) == {"requests": 0, "per_s": 0.0, "peak_per_s": 0}
    assert request_rate(times, T0, T0) == {"requests": 0, "per_s": 0.0, "peak_per_s": 0}


def _benchmark() -> Any:
    """benchmarks/fleet.py as a module (it is a script, not part of the package)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "fleet.py"
    spec = importlib.util.spec_from_file_location("fleet_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_rates_per_phase_and_client_and_the_phases_a_stopped_tool_said() -> None:
    bench = _benchmark()
    said = [
        f"sa: phase plan start {T0:.3f}",
        "sa: plan in 1.0 s: {}",
        f"sa: phase plan end {T0 + 1:.3f}",
        f"sa: phase re-mints start {T0 + 1:.3f}",
        "sa:   10 token(s) removed",
    ]
    phases = bench.said_phases(said, T0 + 11)
    assert phases == {"plan": [T0, T0 + 1], "re-mints": [T0 + 1, T0 + 11]}  # not ended: stopped at T0 + 11
    tokens = "kube-controller-manager/v1.33.0 (linux/amd64) kubernetes/60a317e/tokens-controller"
    events = [AuditEvent(T0 + 0.5, "kubernetes-admin", "kuberevive")]
    events += [AuditEvent(T0 + 1 + i / 10, "kubernetes-admin", "kuberevive") for i in range(10)]
    events += [AuditEvent(T0 + 2 + i / 2, "system:kube-controller-manager", tokens) for i in range(20)]
    rates = bench.sa_rates(events, phases, T0, T0 + 11)
    assert rates["plan"] == {
        "seconds": 1.0,
        "clients": {
            "kube-controller-manager": {"requests": 0, "per_s": 0.0, "peak_per_s": 0},
            "pod simulator": {"requests": 0, "per_s": 0.0, "peak_per_s": 0},
            "tool": {"requests": 1, "per_s": 1.0, "peak_per_s": 1},
        },
    }
    remints = rates["re-mints"]["clients"]
    assert remints["tool"] == {"requests": 10, "per_s": 1.0, "peak_per_s": 10}
    assert remints["kube-controller-manager/tokens-controller"] == {"requests": 18, "per_s": 1.8, "peak_per_s": 2}
    assert remints["kube-controller-manager"] == remints["kube-controller-manager/tokens-controller"]
    table = "\n".join(bench.sa_rate_table(rates, 100))
    assert "--kube-api-qps 100 --kube-api-burst 200" in table and "  tokens-controller" in table
