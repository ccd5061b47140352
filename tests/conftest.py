"""Test-session setup shared by every suite.

With pytest-xdist (``-n N``, set in pyproject.toml), each worker gets its own lab instance, so lab
test modules run side by side on separate two-node clusters: worker ``gwK`` uses
``KUBEREVIVE_LAB_INSTANCE`` = base + K (base: the variable's value when pytest starts, default 0).
Each instance has its own namespaces, addresses (172.30.<instance>.0/24), state and run directories.

The HA lab (three control planes, ``ha_lab`` in tests/lab/conftest.py) never shares an instance with those
two-node labs: worker ``gwK`` of N uses base + max(N, 2) + K (CI, ``-n 3``: 1+1 labs on 0, 1 and 2, HA labs on
3, 4 and 5); without xdist it uses ``KUBEREVIVE_LAB_INSTANCE`` when that is set, else 2.
``KUBEREVIVE_HA_LAB_INSTANCE`` overrides both. The value given at start is kept in ``KUBEREVIVE_LAB_INSTANCE_GIVEN``.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict

import pytest

#: The lab modules by their time in CI, longest first (each waits minutes for expiries, grace periods or a second
#: lab); every other module keeps its place after them. With ``--dist loadfile --no-loadscope-reorder`` (pyproject)
#: xdist hands the modules out in this order, two to each worker to start with (so the pairs even out), and no long
#: module starts last (by default xdist orders modules by their number of tests: these few-test ones came last).
LONGEST_FIRST = (
    "tests/lab/test_ha_certs_lab.py",
    "tests/lab/test_ha_lab.py",
    "tests/lab/test_previous_minor_lab.py",
    "tests/lab/test_certs_lab.py",
    "tests/lab/test_ca_extend_lab.py",
    "tests/lab/test_recover_partial_lab.py",
    "tests/lab/test_zero_impact_lab.py",
    "tests/lab/test_replace_lab.py",
    "tests/lab/test_recover_lab.py",
    "tests/lab/test_eviction_without_guard_lab.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(LONGEST_FIRST)))  # stable: the rest as is


def pytest_configure() -> None:
    # as pytest was started (xdist workers inherit the controller's environment, before the override below)
    os.environ.setdefault("KUBEREVIVE_LAB_INSTANCE_GIVEN", os.environ.get("KUBEREVIVE_LAB_INSTANCE", ""))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        base = os.environ.get("KUBEREVIVE_LAB_INSTANCE", "0") or "0"  # as pytest was started (workers inherit it)
        os.environ["KUBEREVIVE_LAB_INSTANCE"] = str(int(base) + int(worker[2:]))


#: Per xdist worker, the lab modules it ran: (module, seconds of setup + call + teardown, first start on the clock).
_WORKER_MODULES: dict[str, dict[str, list[float]]] = defaultdict(dict)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Adds each test phase's duration to its worker's module (in the controller: ``report.node`` names the worker)."""
    node = getattr(report, "node", None)
    worker = getattr(getattr(node, "gateway", None), "id", None) or os.environ.get("PYTEST_XDIST_WORKER", "main")
    module = report.nodeid.split("::", 1)[0]
    entry = _WORKER_MODULES[worker].setdefault(module, [0.0, getattr(report, "start", time.time())])
    entry[0] += report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each worker's busy time and its modules in the order it ran them: where CI's wall time goes."""
    if not _WORKER_MODULES:
        return
    terminalreporter.section("time per worker (its modules of 30 s or more, in the order run)")
    for worker, modules in sorted(_WORKER_MODULES.items()):
        busy = sum(seconds for seconds, _ in modules.values())
        order = sorted(modules.items(), key=lambda item: item[1][1])
        shown = ", ".join(f"{m.rsplit('/', 1)[-1]} {s:.0f}" for m, (s, _) in order if s >= 30)
        terminalreporter.write_line(f"{worker}: {busy:.0f} s busy: {shown}")
