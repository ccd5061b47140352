"""Fixtures for tests that need the real two-node lab (``@pytest.mark.lab``).

``lab``: a running lab, session-scoped. An already running lab is reused (and left running); a lab
this session had to start is taken down at the end unless ``KUBEREVIVE_LAB_KEEP=1``.
``on_node``: ``on_node("cp1", "kubectl", "get", "nodes")`` runs a command inside a node (its network
and mount namespaces, the lab PATH, ``KUBECONFIG=/etc/kubernetes/admin.conf`` on the control plane)
and returns the CompletedProcess (text); ``check=True`` by default.
Lab tests skip only when not root; anything else missing (binaries, programs) is an error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

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
