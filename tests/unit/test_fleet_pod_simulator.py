"""The fleet benchmark's pod simulator (``kuberevive.lab.fleet.PodSimulator``) against a fake API: a step whose
request failed is done again from the pod as the API server then has it, as a kubelet retries.

The 10,000-Secret run lost one step per worker thread (8): its first request after the pods had been quiet for
over 90 s failed, the step was marked done and never tried again, so 8 old pods of daemonset-000 stayed terminating
and the DaemonSet controller waited for them for good (92 of 100 pods updated)."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pytest

from kuberevive.errors import KubeApiError
from kuberevive.lab import fleet
from kuberevive.lab.fleet import PodSimulator

PATH = "/api/v1/namespaces/ns/pods/p"


def _pod(uid: str = "u1", terminating: bool = False, node: str | None = "n1") -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": "ns", "name": "p", "uid": uid}
    if terminating:
        meta["deletionTimestamp"] = "2026-12-06T00:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": node, "containers": [{"name": "c"}]}, "status": {}}


class FakeApi:
    """Answers from ``pods`` (GET), fails the first ``fail`` mutating requests as an unreachable server does
    (status None), records the mutating requests that went through."""

    def __init__(self, pod: dict[str, Any] | None, fail: int, fail_status: int | None = None) -> None:
        self.pod, self.fail, self.fail_status = pod, fail, fail_status
        self.done: queue.Queue[tuple[str, str]] = queue.Queue()
        self.gets = 0

    def _mutate(self, method: str, path: str) -> dict[str, Any]:
        if self.fail:
            self.fail -= 1
            raise KubeApiError(f"cannot reach the API server: {method} {path} broke", status=self.fail_status)
        self.done.put((method, path))
        return {}

    def get(self, path: str, **_: Any) -> Any:
        self.gets += 1
        if self.pod is None:
            raise KubeApiError("not found", status=404)
        return self.pod

    def request(self, method: str, path: str, obj: Any = None, **_: Any) -> Any:
        return self._mutate(method, path)

    def create(self, path: str, obj: Any) -> Any:
        return self._mutate("POST", path)

    def patch(self, path: str, obj: Any, patch_type: str = "merge") -> Any:
        return self._mutate("PATCH", path)


@pytest.fixture(autouse=True)
def quick_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet, "RETRY_S", 0.01)


def _run(api: FakeApi, pod: dict[str, Any], want: int) -> tuple[PodSimulator, list[tuple[str, str]]]:
    sim = PodSimulator(api, ["n1"], workers=2)  # type: ignore[arg-type]
    for _ in range(sim.workers):
        threading.Thread(target=sim._work, daemon=True).start()
    sim.queue.put(pod)
    done = [api.done.get(timeout=5) for _ in range(want)]
    time.sleep(0.1)  # nothing more comes
    sim.stop()
    return sim, done + list(api.done.queue)


def test_a_failed_delete_is_done_again_from_the_pod_as_it_is_now() -> None:
    api = FakeApi(_pod(terminating=True), fail=2)
    sim, done = _run(api, _pod(terminating=True), want=1)
    assert done == [("DELETE", PATH)]  # once, after two failures
    assert sim.counts == {"bind": 0, "run": 0, "delete": 1, "errors": 2}
    assert api.gets == 2  # each retry read the pod again
    assert len(sim.failures) == 2 and "broke" in sim.failures[0]


def test_a_failed_bind_is_retried_and_the_pod_then_run() -> None:
    unbound = _pod(node=None)
    api = FakeApi(_pod(node="n1"), fail=1)  # the retry reads it bound (the scheduler's bind had gone through)
    sim, done = _run(api, unbound, want=1)
    assert done == [("PATCH", f"{PATH}/status")]  # bound already: the next step, not a second bind
    assert sim.counts == {"bind": 0, "run": 1, "delete": 0, "errors": 1}


def test_a_pod_gone_before_the_retry_is_left_alone() -> None:
    api = FakeApi(None, fail=1)
    sim = PodSimulator(api, ["n1"], workers=1)  # type: ignore[arg-type]
    threading.Thread(target=sim._work, daemon=True).start()
    sim.queue.put(_pod(terminating=True))
    deadline = time.monotonic() + 5
    while api.gets == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    sim.stop()
    assert api.gets == 1 and api.done.empty()
    assert sim.counts == {"bind": 0, "run": 0, "delete": 0, "errors": 1}


def test_404_and_409_are_not_failures() -> None:
    for status in (404, 409):
        api = FakeApi(_pod(terminating=True), fail=1, fail_status=status)
        sim = PodSimulator(api, ["n1"], workers=1)  # type: ignore[arg-type]
        sim.queue.put(_pod(terminating=True))
        sim.queue.put(None)
        sim._work()
        time.sleep(0.05)
        assert (sim.counts["errors"], sim.counts["delete"], api.gets) == (0, 1, 0), status
