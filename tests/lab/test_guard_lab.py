"""The eviction guard on the lab's real kube-controller-manager (v1.33.13).

Writes the guarded manifest on cp1 (through the node), waits until the kubelet has restarted
kube-controller-manager with ``-taint-eviction-controller`` (mirror pod spec, the running process's
command line, Ready) and restores the original bytes, waiting for the normal controller-manager
again. The original manifest is kept aside on the node and put back even if the test fails.
kube-controller-manager refuses unknown controller names at start, so a Ready guarded pod also
proves the controller name is right for this version.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kuberevive.core.guard import GUARD_ANNOTATION, guard, is_guarded, unguard
from kuberevive.core.manifests import manifest_flags, parse_manifest, render_manifest
from kuberevive.errors import KubeApiError
from kuberevive.io.kubeapi import KubeApi

from .conftest import OnNode

pytestmark = pytest.mark.lab

MANIFEST = "/etc/kubernetes/manifests/kube-controller-manager.yaml"
ASIDE = "/etc/kubernetes/kube-controller-manager.yaml.kuberevive-test-original"
POD = "/api/v1/namespaces/kube-system/pods/kube-controller-manager-cp1"


def _write_on_node(on_node: OnNode, path: str, text: str) -> None:
    # the temporary file is a dotfile: the kubelet ignores hidden files in the manifest directory
    on_node(
        "cp1",
        "sh",
        "-c",
        'tmp="$(dirname "$1")/.$(basename "$1").tmp"; umask 077 && cat > "$tmp" && mv -f "$tmp" "$1"',
        "sh",
        path,
        input=text,
    )


def _wait(what: str, check: Callable[[], bool], seconds: float = 180) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            if check():
                return time.monotonic() - start
        except KubeApiError:
            pass  # the mirror pod is recreated while the kubelet restarts the static pod
        time.sleep(1)
    raise AssertionError(f"{what}: not within {seconds}s")


def _running_command(on_node: OnNode) -> list[str]:
    ids = on_node("cp1", "crictl", "ps", "--name", "kube-controller-manager", "--state", "running", "-q").stdout.split()
    if len(ids) != 1:
        return []
    info = json.loads(on_node("cp1", "crictl", "inspect", ids[0]).stdout)
    pid = info["info"]["pid"]
    return on_node("cp1", "cat", f"/proc/{pid}/cmdline").stdout.split("\0")[:-1]


def _ready_with(api: KubeApi, on_node: OnNode, controllers: str) -> bool:
    pod: dict[str, Any] = api.get(POD)
    if manifest_flags(pod).get("controllers") != controllers:
        return False
    conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    if conditions.get("Ready") != "True":
        return False
    return f"--controllers={controllers}" in _running_command(on_node)


@pytest.fixture
def original(on_node: OnNode) -> Iterator[str]:
    text = on_node("cp1", "cat", MANIFEST).stdout
    on_node("cp1", "cp", "-p", MANIFEST, ASIDE)
    yield text
    if on_node("cp1", "cat", MANIFEST).stdout != text:
        on_node("cp1", "cp", "-p", ASIDE, MANIFEST)
    on_node("cp1", "rm", "-f", ASIDE)


def test_guarded_controller_manager_runs_without_taint_eviction_and_restores(original: str, on_node: OnNode):
    api = KubeApi.from_kubeconfig(on_node("cp1", "cat", "/etc/kubernetes/admin.conf").stdout)
    pod = parse_manifest(original)
    assert not is_guarded(pod)
    normal = manifest_flags(pod)["controllers"]
    guarded = guard(pod)
    guarded_value = manifest_flags(guarded)["controllers"]
    assert guarded_value == normal + ",-taint-eviction-controller"
    assert render_manifest(unguard(guarded)) == original  # the restore path gives kubeadm's exact text

    _write_on_node(on_node, MANIFEST, render_manifest(guarded))
    took = _wait("guarded kube-controller-manager Ready", lambda: _ready_with(api, on_node, guarded_value))
    print(f"guarded kube-controller-manager Ready after {took:.0f}s")
    mirror = api.get(POD)
    assert mirror["metadata"]["annotations"][GUARD_ANNOTATION] == normal
    # once it holds the leader lease (the old instance does not release it: up to the 15 s lease duration)
    # it starts its controllers and names the one it skips
    logs: list[str] = []

    def skipped_taint_eviction() -> bool:
        script = "crictl logs $(crictl ps --name kube-controller-manager -q) 2>&1"
        logs[:] = [
            ln
            for ln in on_node("cp1", "sh", "-c", script).stdout.splitlines()
            if 'controller="taint-eviction-controller"' in ln
        ]
        return bool(logs)

    took = _wait("guarded kube-controller-manager leading", skipped_taint_eviction, 90)
    print(f"guarded kube-controller-manager leading after {took:.0f}s more: {logs[0]}")
    assert "controller is disabled" in logs[0]

    # restore from what the guarded manifest says (unguard), and check it equals the original bytes
    restored = render_manifest(unguard(parse_manifest(on_node("cp1", "cat", MANIFEST).stdout)))
    assert restored == original
    _write_on_node(on_node, MANIFEST, restored)
    took = _wait("normal kube-controller-manager Ready", lambda: _ready_with(api, on_node, normal))
    print(f"normal kube-controller-manager Ready again after {took:.0f}s")
    assert GUARD_ANNOTATION not in (api.get(POD)["metadata"].get("annotations") or {})
    assert on_node("cp1", "cat", MANIFEST).stdout == original
