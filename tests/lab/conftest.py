"""Fixtures for tests that need the real two-node lab (``@pytest.mark.lab``).

``lab``: a running lab, session-scoped. An already running lab is reused (and left running); a lab
this session had to start is taken down at the end unless ``KUBEREVIVE_LAB_KEEP=1``.
``on_node``: ``on_node("cp1", "kubectl", "get", "nodes")`` runs a command inside a node (its network
and mount namespaces, the lab PATH, ``KUBECONFIG=/etc/kubernetes/admin.conf`` on the control plane)
and returns the CompletedProcess (text); ``check=True`` by default.
Lab tests skip only when not root; anything else missing (binaries, programs) is an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest

from kuberevive.core.retrust import ready_since
from kuberevive.lab import Lab, LabConfig

OnNode = Callable[..., "subprocess.CompletedProcess[str]"]


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network/mount namespaces, cgroups)")
    the_lab = Lab(LabConfig.from_env(), progress=_progress)
    was_up = the_lab.read_state().get("status") == "up" and all(s.state == "up" for s in the_lab.status())
    the_lab.up()
    yield the_lab
    if not was_up and os.environ.get("KUBEREVIVE_LAB_KEEP") != "1":
        the_lab.down()


@pytest.fixture(scope="session")
def on_node(lab: Lab) -> OnNode:
    def run(
        node: str, *argv: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            lab.node(node).nsenter(argv), capture_output=True, text=True, timeout=timeout, input=input, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{node}: {' '.join(argv)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


def wait_ready_since(on_node: OnNode, node: str, since: datetime, timeout: float = 180) -> None:
    """Poll until ``node`` posts a Ready status with a heartbeat at or after ``since`` (e.g. from a restarted
    kubelet that has synced its pods), asking cp1's API; AssertionError after ``timeout`` seconds."""
    deadline, why = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        ready, why = ready_since(json.loads(on_node("cp1", "kubectl", "get", "node", node, "-o", "json").stdout), since)
        if ready:
            return
        time.sleep(1)
    raise AssertionError(f"{node} posted no fresh Ready status within {timeout:.0f}s: {why}")
