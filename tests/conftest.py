"""Test-session setup shared by every suite.

With pytest-xdist (``-n N``, set in pyproject.toml), each worker gets its own lab instance, so lab
test modules run side by side on separate two-node clusters: worker ``gwK`` uses
``KUBEREVIVE_LAB_INSTANCE`` = base + K (base: the variable's value when pytest starts, default 0).
Each instance has its own namespaces, addresses (172.30.<instance>.0/24), state and run directories.
"""

from __future__ import annotations

import os


def pytest_configure() -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        base = os.environ.get("KUBEREVIVE_LAB_INSTANCE", "0") or "0"  # as pytest was started (workers inherit it)
        os.environ["KUBEREVIVE_LAB_INSTANCE"] = str(int(base) + int(worker[2:]))
