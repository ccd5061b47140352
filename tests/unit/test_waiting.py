"""run/waiting.py: the one poll helper, with an injected clock and sleep (no real waiting) and its heartbeats."""

from __future__ import annotations

import io
import itertools
import json
import re

import pytest

from kuberevive import logs
from kuberevive.errors import KubeApiError, PlanError
from kuberevive.run.waiting import HEARTBEAT, poll_until, wait_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        self.now += seconds


def test_a_30_s_wait_prints_at_least_5_heartbeats_with_elapsed_limit_and_last_answer():
    clock = FakeClock()
    lines: list[str] = []
    with pytest.raises(PlanError) as err:
        wait_for(
            "etcd",
            30,
            lambda: (False, "connection refused"),
            clock=clock,
            sleep=clock.sleep,
            progress=lines.append,
        )
    assert len(lines) >= 5, lines
    assert lines[0] == "waiting for etcd: 5 s of 30 s (last: connection refused)"
    elapsed = [int(re.search(r": (\d+) s of 30 s", line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert elapsed == sorted(elapsed) and elapsed[-1] <= 30
    assert all(b - a >= HEARTBEAT for a, b in itertools.pairwise(elapsed))
    assert "etcd did not come up within 30 s (last: connection refused)" in str(err.value)
    assert 30 <= clock.now - 1000.0 <= 30.5  # it stopped at the limit, not later


def test_success_returns_the_seconds_and_says_nothing_when_quick():
    clock, answers = FakeClock(), iter([(False, "starting"), (False, "starting"), (True, "ok")])
    lines: list[str] = []
    took = wait_for(
        "the API server", 300, lambda: next(answers), 0.5, clock=clock, sleep=clock.sleep, progress=lines.append
    )
    assert took == 1.0 and lines == []


def test_an_expected_error_is_the_last_answer_and_fail_stops_at_once():
    clock = FakeClock()

    def probe() -> tuple[bool, str]:
        raise KubeApiError("cannot reach the API server at https://127.0.0.1:6443: refused")

    waited = poll_until("x", 10, probe, clock=clock, sleep=clock.sleep, progress=lambda _s: None)
    assert not waited.ok and "refused" in waited.last and waited.seconds >= 10
    with pytest.raises(KubeApiError):  # retry=() lets it through
        poll_until("x", 10, probe, clock=clock, sleep=clock.sleep, retry=())
    stopped = poll_until("x", 10, lambda: (False, "no"), clock=clock, sleep=clock.sleep, fail=lambda: "rollout failed")
    assert not stopped.ok and stopped.last == "rollout failed" and stopped.seconds == 0


def test_heartbeats_through_the_log_carry_a_timestamp_and_fields():
    """The default sink is the run's log: text lines start with a UTC time, JSON lines carry the wait's fields."""
    clock = FakeClock()
    text, js = io.StringIO(), io.StringIO()
    undo = logs.configure(text, "text", tty=True)
    undo2 = logs.configure(js, "json")
    try:
        poll_until("node cp1 Ready", 12, lambda: (False, "NotReady"), 1.0, clock=clock, sleep=clock.sleep)
    finally:
        undo()
        undo2()
    # on a terminal the heartbeats share one status line (each erases the one before), cleared at the end
    lines = [part for part in text.getvalue().split(logs.CLEAR_LINE) if part]
    assert len(lines) == 2 and text.getvalue().endswith(logs.CLEAR_LINE), lines
    for line in lines:
        assert re.fullmatch(r"\d\d:\d\d:\d\d waiting for node cp1 Ready: \d+ s of 12 s \(last: NotReady\)", line), line
    docs = [json.loads(line) for line in js.getvalue().splitlines()]
    assert [d["elapsed_s"] for d in docs] == [5.0, 10.0]
    for d in docs:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", d["time"])
        assert d["level"] == "info" and d["waiting"] == "node cp1 Ready" and d["last"] == "NotReady"


class _EvictionApi:
    """An API server whose eviction endpoint answers 429 (a PodDisruptionBudget) ``refusals`` times."""

    def __init__(self, refusals: int, then: int | None = None) -> None:
        self.refusals, self.then, self.calls = refusals, then, 0

    def create(self, path: str, body: dict[str, object]) -> None:
        self.calls += 1
        if self.calls <= self.refusals:
            raise KubeApiError("Cannot evict pod as it would violate the pod's disruption budget.", status=429)
        if self.then is not None:
            raise KubeApiError("gone", status=self.then)

    def get_or_none(self, path: str) -> None:
        return None  # the evicted pod is gone


def test_an_eviction_refused_by_a_pdb_is_retried_through_the_poll_helper():
    import time

    from kuberevive.core.restarts import PodRef
    from kuberevive.io import restarts_apply

    pod = PodRef("ns", "web-1", "uid-1")
    said: list[str] = []
    api = _EvictionApi(3)
    restarts_apply._evict_one(api, pod, time.monotonic() + 30, 0.001, said.append)  # type: ignore[arg-type]
    assert api.calls == 4 and said == ["  eviction of ns/web-1 refused by a PodDisruptionBudget; retrying"]
    gone = _EvictionApi(0, then=404)
    restarts_apply._evict_one(gone, pod, time.monotonic() + 30, 0.001, said.append)  # type: ignore[arg-type]
    assert gone.calls == 1
    with pytest.raises(restarts_apply._Fail, match="eviction of ns/web-1 still refused by a PodDisruptionBudget"):
        restarts_apply._evict_one(_EvictionApi(10**6), pod, time.monotonic() + 0.05, 0.001, said.append)  # type: ignore[arg-type]
