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
