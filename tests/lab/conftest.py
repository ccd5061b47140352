"""Fixtures for tests that need the real two-node lab (``@pytest.mark.lab``).

``lab``: a running lab, session-scoped. An already running lab is reused (and left running); a lab
this session had to start is taken down at the end unless ``KUBEREVIVE_LAB_KEEP=1``.
``on_node``: ``on_node("cp1", "kubectl", "get", "nodes")`` runs a command inside a node (its network
and mount namespaces, the lab PATH, ``KUBECONFIG=/etc/kubernetes/admin.conf`` on the control plane)
and returns the CompletedProcess (text); ``check=True`` by default.
Lab tests skip only when not root; anything else missing (binaries, programs) is an error.
Every lab runs ``KUBEREVIVE_LAB_KUBERNETES_VERSION`` (e.g. ``1.37.2``; default the lab's, v1.37.2), whose binaries
must be built (the error says how).

``ha_lab``: the HA lab (cp1..cp3 with stacked etcd behind haproxy, worker1), module-scoped: each module that
uses it brings one up (or reuses a running HA lab on its instance) and takes it down at its end unless
``KUBEREVIVE_LAB_KEEP=1``. Its instance never collides with the two-node labs (see tests/conftest.py and
:func:`ha_lab_instance`). ``ha_on_node(node, *argv)`` is ``on_node`` for it (any node: cp1..cp3, worker1).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
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
    was_up = _lab_is_up(the_lab)
    the_lab.up()
    yield the_lab
    if not was_up and os.environ.get("KUBEREVIVE_LAB_KEEP") != "1":
        the_lab.down()


def node_runner(lab: Lab) -> OnNode:
    """``run(node, *argv, check=True, timeout=120, input=None)`` inside a node of ``lab``."""

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


@pytest.fixture(scope="session")
def on_node(lab: Lab) -> OnNode:
    return node_runner(lab)


def ha_lab_instance(environ: Mapping[str, str] | None = None) -> int:
    """The lab instance of the HA lab in this pytest process (see tests/conftest.py for the rule)."""
    env = os.environ if environ is None else environ
    if env.get("KUBEREVIVE_HA_LAB_INSTANCE"):
        return int(env["KUBEREVIVE_HA_LAB_INSTANCE"])
    given = env.get("KUBEREVIVE_LAB_INSTANCE_GIVEN", "")
    worker = env.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        count = int(env.get("PYTEST_XDIST_WORKER_COUNT", "2") or "2")
        return int(given or "0") + max(count, 2) + int(worker[2:])
    return int(given) if given else 2


def _lab_is_up(the_lab: Lab) -> bool:
    return the_lab.read_state().get("status") == "up" and all(s.state == "up" for s in the_lab.status())


def module_lab(
    control_planes: int, workers: int, kubernetes_version: str | None = None, **settings: str
) -> Iterator[Lab]:
    """A lab of its own for one module, on the HA lab's instance (one module at a time uses it in a process): brought
    up (or a running one reused: ``up`` refuses another version) and taken down at the module's end unless
    ``KUBEREVIVE_LAB_KEEP=1``. ``settings``: other :class:`LabConfig` values (e.g. ``certificate_validity``); such a
    lab is always made anew (a running one, made without them, is taken down first)."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network/mount namespaces, cgroups)")
    env = {**os.environ, "KUBEREVIVE_LAB_INSTANCE": str(ha_lab_instance())}
    cfg = LabConfig.from_env(env, control_planes=control_planes, workers=workers, kubernetes_version=kubernetes_version)
    the_lab = Lab(dataclasses.replace(cfg, **settings), progress=_progress)  # type: ignore[arg-type]
    if settings:
        the_lab.down()
    was_up = _lab_is_up(the_lab)
    t0 = time.monotonic()
    the_lab.up()
    _progress(f"lab {cfg.state_dir} (v{cfg.k8s_version}) up in {time.monotonic() - t0:.1f}s (reused: {was_up})")
    yield the_lab
    if not was_up and os.environ.get("KUBEREVIVE_LAB_KEEP") != "1":
        the_lab.down()


@pytest.fixture(scope="module")
def ha_lab() -> Iterator[Lab]:
    yield from module_lab(control_planes=3, workers=1)


@pytest.fixture(scope="module")
def ha_on_node(ha_lab: Lab) -> OnNode:
    return node_runner(ha_lab)


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
