"""The control for test_zero_impact_lab.py: the same run with ``--no-eviction-guard`` shows the evictions.

Its own module so that pytest-xdist can run it beside the guarded run, on another lab instance.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kuberevive.lab import Lab
from tests.lab.test_zero_impact_lab import OnNode, _evictions, _labapp_pods, _run, rebuilt_lab

pytestmark = pytest.mark.lab

__all__ = ["rebuilt_lab"]  # the fixture, imported for this module


def test_without_the_eviction_guard_the_pods_are_evicted(rebuilt_lab: Lab, on_node: OnNode, tmp_path: Path) -> None:
    r = _run(rebuilt_lab, on_node, tmp_path, guard=False)
    evicted = _evictions(on_node)
    print(f"without the guard: {len(evicted)} eviction event(s): {evicted}; probe {r['probe']}")
    assert any("krlab/labapp-" in e for e in evicted), evicted
    worker_before = {u for u, p in r["pods_before"].items() if p["node"] == "worker1"}
    assert worker_before - set(_labapp_pods(on_node)), "the labapp pod on worker1 should have been replaced"
