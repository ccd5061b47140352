"""The single executable (packaging/build-binary.sh) recovers the seed disaster inside cp1 (issue 15).

The file is run by its absolute path with the node's PATH minus the directory of the installed ``kuberevive``
console script, so the Python package installed on this machine plays no part.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator

import pytest

from kuberevive.lab import Lab, LabConfig
from kuberevive.lab.demo import SEED_DISASTER
from tests.single_binary import single_binary

pytestmark = pytest.mark.lab

OnNode = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="module")
def fresh_lab(lab: Lab) -> Iterator[Lab]:
    """The lab, rebuilt after this module (its control plane is destroyed and recovered)."""
    yield lab
    lab.down()
    lab.up()


def _labapp_containers(on_node: OnNode, node: str) -> dict[str, str]:
    items = json.loads(on_node(node, "crictl", "ps", "-o", "json", "--name", "^labapp$").stdout)["containers"]
    return {c["labels"]["io.kubernetes.pod.name"]: c["id"] for c in items}


def test_the_single_binary_recovers_the_seed_disaster(fresh_lab: Lab, on_node: OnNode) -> None:
    binary = single_binary()  # under /var/cache/kuberevive, which the lab nodes see as this machine does
    cfg = LabConfig.from_env()
    path = ":".join(p for p in cfg.node_path().split(":") if p != cfg.python_scripts_dir)
    before = {n: _labapp_containers(on_node, n) for n in ("cp1", "worker1")}
    assert all(before.values()), before

    on_node("cp1", "sh", "-c", SEED_DISASTER, timeout=180)
    assert on_node("cp1", "test", "-e", "/etc/kubernetes", check=False).returncode != 0
    d = cfg.ssh_dir
    ssh = ["--ssh-key", str(d / "id_ed25519"), "--known-hosts", str(d / "known_hosts")]
    run = on_node(
        "cp1", "env", f"PATH={path}", str(binary), "recover", "--apply", "--json", *ssh, check=False, timeout=900
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(run.stdout)["report"]
    assert {n["name"]: n["ready"] for n in report["nodes"]} == {"cp1": True, "worker1": True}, report

    ready = on_node("cp1", "kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "get", "--raw", "/readyz")
    assert ready.stdout.strip() == "ok"
    assert {n: _labapp_containers(on_node, n) for n in ("cp1", "worker1")} == before
    # a second run of the binary on the healthy node has nothing to do
    again = on_node("cp1", "env", f"PATH={path}", str(binary), "recover", "--json", check=False, timeout=300)
    assert again.returncode == 0 and json.loads(again.stdout)["plan"]["steps"] == [], again.stderr
