"""SshHost against worker1's real sshd: the same operations as NodeRoot, the same outcome (issue 11).

One module fixture runs tests/lab/remote_host_scenario.py twice on worker1: through :class:`SshHost` (from the
host, over SSH, login umask 022) and through NodeRoot at ``/`` inside the node (umask 077). Its two file systems
are the node's ``/var`` (an overlay, where ``/var/lib/kuberevive/backup`` is) and its ``/run`` (a tmpfs).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from kuberevive.errors import TransportError
from kuberevive.io.remotehost import SshHost
from kuberevive.io.transport import SshTarget, SshTransport
from kuberevive.lab import Lab
from kuberevive.model import paths
from tests.lab.conftest import OnNode, wait_ready_since
from tests.lab.remote_host_scenario import KUBEADM_DIR, OWNER, scenario

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
NODE = "worker1"


@dataclass
class Outcomes:
    host: SshHost
    ssh: dict[str, Any]
    local: dict[str, Any]
    ssh_umask: str


def _backups(on_node: OnNode) -> set[str]:
    return set(on_node(NODE, "sh", "-c", f"ls {paths.BACKUP_DIR} 2>/dev/null || true").stdout.split())


def _cleanup(on_node: OnNode, had_state_dir: bool, backups_before: set[str]) -> None:
    """Remove what the test made on the node, nothing else."""
    made = [f"/var/tmp/kuberevive-hosttest-{s}" for s in ("ssh", "local")]
    made += [f"/run/kuberevive-hosttest-{s}" for s in ("ssh", "local")]
    made += [str(paths.BACKUP_DIR / stamp) for stamp in _backups(on_node) - backups_before]
    on_node(NODE, "rm", "-rf", "--", *made, str(KUBEADM_DIR))
    if not had_state_dir:
        on_node(NODE, "rm", "-rf", "--", str(paths.STATE_DIR))


@pytest.fixture(scope="module")
def outcomes(lab: Lab, on_node: OnNode) -> Iterator[Outcomes]:
    assert on_node(NODE, "test", "-e", str(KUBEADM_DIR), check=False).returncode != 0, f"{KUBEADM_DIR} exists"
    had_state_dir = on_node(NODE, "test", "-e", str(paths.STATE_DIR), check=False).returncode == 0
    backups_before = _backups(on_node)
    ssh = lab.cfg.ssh_dir
    spec = lab.cfg.node(NODE)
    target = SshTarget(
        NODE,
        spec.ip,
        identity_files=(str(ssh / "id_ed25519"),),
        known_hosts=(str(ssh / "known_hosts"),),
        use_agent=False,
    )
    now = datetime.now(UTC)
    transport = SshTransport(target)
    try:
        host = SshHost(transport)
        ssh_umask = host.run(["sh", "-c", "umask"]).text.strip()
        remote = json.loads(
            json.dumps(
                scenario(
                    host,
                    PurePosixPath("/var/tmp/kuberevive-hosttest-ssh"),
                    PurePosixPath("/run/kuberevive-hosttest-ssh"),
                    now,
                )
            )
        )
        on_node(NODE, "rm", "-rf", "--", str(KUBEADM_DIR))  # so that the local run makes it again
        later = (now + timedelta(seconds=1)).isoformat()
        script = (
            f"umask 077 && cd {REPO} && exec {sys.executable} -m tests.lab.remote_host_scenario "
            f"/var/tmp/kuberevive-hosttest-local /run/kuberevive-hosttest-local {later}"
        )
        local = json.loads(on_node(NODE, "sh", "-c", script, timeout=180).stdout)
        yield Outcomes(host, remote, local, ssh_umask)
    finally:
        transport.close()
        _cleanup(on_node, had_state_dir, backups_before)


def test_ssh_and_noderoot_give_the_same_outcome(outcomes: Outcomes) -> None:
    assert outcomes.ssh_umask == "0022"  # the SSH login's umask; the local run had 077: neither changes a mode
    assert list(outcomes.ssh) == list(outcomes.local)
    differ = {k: (outcomes.ssh[k], outcomes.local[k]) for k in outcomes.ssh if outcomes.ssh[k] != outcomes.local[k]}
    assert not differ, json.dumps(differ, indent=1)


def test_the_outcome_is_the_one_kubeadm_needs(outcomes: Outcomes) -> None:
    o = outcomes.ssh
    root_file, root_dir = "0:0 regular file", "0:0 directory"
    assert o["write a key into a missing parent"] == [None, f"600 {root_file}", f"755 {root_dir}"]
    assert o["read it back"] is True
    assert o["write a certificate"] == [None, f"644 {root_file}"]
    assert o["no temporary file left"] == ["new.crt", "new.key"]
    assert o["replace the key"] == ["<backup><base>/pki/new.key", f"600 {root_file}", True, "OTHER\n"]
    assert o["same content and mode again"] is None
    assert o["same content, other mode"] == ["<backup><base>/pki/new.key", f"600 {root_file}", f"640 {root_file}"]
    assert o["write into a missing kubeadm directory"] == [None, f"700 {root_dir}", f"600 {root_file}"]
    assert o["replace a symlink"] == ["/var/lib/kubelet/pki/kubelet-client-b.pem", "777 0:0 symbolic link", None]
    assert o["write over a symlink moves the link aside"] == [
        "<backup><base>/via",
        "pki/new.crt",
        f"600 {root_file}",
        "CERT\n",
    ]
    assert o["the two file systems differ"] is True
    assert o["move aside across file systems"] == [
        "<backup><tmpfs>/owned.conf",
        f"640 {OWNER} regular file",
        "OWNED\n",
        False,
    ]
    assert o["move a symlink aside across file systems"] == ["<backup><tmpfs>/link", "/etc/hostname", None]
    assert o["move aside on the same file system"] == [
        "<backup><base>/owned-here.conf",
        f"604 {OWNER} regular file",
        "HERE\n",
        False,
    ]
    assert o["move aside what is not there"] is None
    assert o["repoint a symlink over a file, then again"] == [
        "<backup><base>/kubelet-client-now.pem",
        "A FILE WHERE THE LINK BELONGS\n",
        None,
        "<base>/kubelet-client-a.pem",
    ]
    assert o["repoint it elsewhere"] == [
        "<backup><base>/kubelet-client-now.pem",
        "<base>/kubelet-client-a.pem",
        "<base>/kubelet-client-b.pem",
    ]
    assert o["rename a directory"] == [False, "DB\n", f"755 {root_dir}"]
    assert o["rename over something that exists"].startswith(
        "NodeFsError: cannot rename <base>/etcd.kuberevive-old to <base>/etcd: that exists already; nothing was moved"
    )
    assert o["rename what is not there"].startswith(
        "NodeFsError: cannot rename <base>/absent to <base>/etcd.kuberevive-old: <base>/absent does not exist"
    )
    assert o["rename across file systems"].startswith(
        "NodeFsError: cannot rename <base>/etcd.kuberevive-old to <tmpfs>/etcd: Invalid cross-device link; nothing"
    )
    assert o["after the refused renames"] == [True, False]
    assert o["the node's lock, taken twice"].startswith(
        "NodeFsError: another 'kuberevive scenario' is running on this node (lock /var/lib/kuberevive/recover/lock "
        "held by pid <pid>)"
    )
    assert o["the node's lock after it was left"] == "taken"
    assert o["read what is not there"] == [None, False]
    assert o["read a FIFO"] == "NodeFsError: <base>/fifo is not a regular file (a FIFO). Move it away and run again."
    assert (
        o["read a directory"].startswith("NodeFsError: ") and "is a directory, expected a file" in o["read a directory"]
    )
    assert "a parent of" in o["read below a file"] and "is a file, expected a directory" in o["read below a file"]
    assert o["write over a FIFO"].startswith("NodeFsError: ") and "(a FIFO)" in o["write over a FIFO"]
    assert o["a command over its time limit"].startswith("sleep 30 did not finish within 1s")
    assert o["exit code is a result"] is True


def test_containers_lists_the_real_kube_proxy(outcomes: Outcomes, on_node: OnNode) -> None:
    [proxy] = outcomes.host.containers("kube-proxy")
    assert proxy.id == on_node(NODE, "crictl", "ps", "-q", "--name", "^kube-proxy$").stdout.strip()
    assert (proxy.state, proxy.pod_namespace) == ("CONTAINER_RUNNING", "kube-system")
    assert proxy.pod_name.startswith("kube-proxy-") and proxy.created_at > 1.6e9
    every = outcomes.host.containers()
    assert proxy in every and {"kube-proxy", "labapp"} <= {c.name for c in every}


def test_restart_unit_restarts_the_kubelet_and_the_node_is_ready_again(
    lab: Lab, outcomes: Outcomes, on_node: OnNode
) -> None:
    pid_file = lab.cfg.node_run_dir(NODE) / "kubelet.pid"
    before, pid_before = {c.id for c in outcomes.host.containers()}, pid_file.read_text().strip()
    since = datetime.now(UTC).replace(microsecond=0)
    outcomes.host.restart_unit("kubelet")
    assert on_node(NODE, "systemctl", "is-active", "kubelet").stdout.strip() == "active"
    wait_ready_since(on_node, NODE, since)  # a fresh Ready heartbeat: the restarted kubelet is back
    assert {c.id for c in outcomes.host.containers()} == before  # containers keep running
    assert pid_file.read_text().strip() != pid_before  # a new kubelet process


def test_restart_unit_failure_is_one_sentence_naming_the_unit(outcomes: Outcomes) -> None:
    with pytest.raises(TransportError, match=r"^worker1: 'systemctl restart kuberevive-no-such' failed: .+\. Look at"):
        outcomes.host.restart_unit("kuberevive-no-such")
