"""SshTransport against the lab nodes' real sshd (OpenSSH), reached from the host at each node's address."""

from __future__ import annotations

import time
from pathlib import Path, PurePosixPath

import pytest

from kuberevive.errors import HostKeyError, TransportError, TransportTimeout
from kuberevive.io.remotehost import SshHost
from kuberevive.io.sshlib import asyncssh
from kuberevive.io.transport import Deadline, SshTarget, SshTransport, Transport, run_on_nodes
from kuberevive.lab import Lab
from kuberevive.lab.config import NodeSpec

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def ssh(lab: Lab) -> Path:
    return lab.cfg.ssh_dir


def _target(ssh: Path, node: NodeSpec, **kw) -> SshTarget:
    args = {
        "identity_files": (str(ssh / "id_ed25519"),),
        "known_hosts": (str(ssh / "known_hosts"),),
        "use_agent": False,
        "connect_timeout": 5.0,
    }
    args.update(kw)
    return SshTarget(node.name, node.ip, **args)  # type: ignore[arg-type]


def _fingerprint(ssh: Path, node: NodeSpec) -> str:
    for line in (ssh / "known_hosts").read_text().splitlines():
        hosts, _, key = line.partition(" ")
        if node.ip in hosts.split(","):
            return str(asyncssh.import_public_key(key).get_fingerprint("sha256"))
    raise AssertionError(f"{node.ip} not in the lab known_hosts")


def test_run_read_write_on_every_node_concurrently(lab: Lab, ssh: Path):
    def work(node: NodeSpec, t: Transport) -> tuple[str, bytes, str]:
        hostname = t.run(["hostname"]).text.strip()
        path = "/var/tmp/kuberevive transport test"  # /var is per node (/tmp is the host's)
        SshHost(t).write(PurePosixPath(path), b"secret\x00bytes\n", 0o600)
        data = t.read_file(path)
        mode = t.run(["stat", "-c", "%a %U", path]).text.strip()
        leftovers = t.run(["sh", "-c", "ls -a /var/tmp | grep -c kuberevive-tmp || true"]).text.strip()
        t.run(["rm", "-f", path])
        assert leftovers == "0"
        return hostname, data, mode

    results = run_on_nodes(
        list(lab.cfg.nodes),
        work,
        lambda n, d: SshTransport(_target(ssh, n), d),
        name=lambda n: n.name,
        concurrency=2,
        timeout=60,
    )
    assert list(results) == ["cp1", "worker1"]
    for name, r in results.items():
        assert r.ok, r.error
        assert r.value == (name, b"secret\x00bytes\n", "600 root")


def test_exit_code_stderr_and_stdin(lab: Lab, ssh: Path):
    with SshTransport(_target(ssh, lab.cfg.node("worker1"))) as t:
        r = t.run(["sh", "-c", "cat; echo oops >&2; exit 7"], input=b"in\n")
        assert (r.exit_code, r.stdout, r.stderr) == (7, b"in\n", b"oops\n")
        with pytest.raises(TransportError, match="cannot read /nonexistent: cat: /nonexistent: No such file"):
            t.read_file("/nonexistent")


def test_a_wrong_host_key_is_refused(lab: Lab, ssh: Path, tmp_path: Path):
    cp1, worker1 = lab.cfg.node("cp1"), lab.cfg.node("worker1")
    # known_hosts that claims cp1's address has worker1's key
    worker_key = next(ln for ln in (ssh / "known_hosts").read_text().splitlines() if worker1.ip in ln.split(" ")[0])
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{cp1.ip} {worker_key.split(' ', 1)[1]}\n")
    t = SshTransport(_target(ssh, cp1, known_hosts=(str(wrong),)))
    with pytest.raises(HostKeyError) as err:
        t.run(["true"])
    assert str(err.value).startswith(f"cp1: the SSH host key of {cp1.ip}:22 does not match known_hosts")
    assert "verify the node's host key out of band" in str(err.value).lower()


def test_an_unknown_host_is_refused(lab: Lab, ssh: Path, tmp_path: Path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError, match="does not match known_hosts"):
        SshTransport(_target(ssh, lab.cfg.node("cp1"), known_hosts=(str(empty),))).run(["true"])
    with pytest.raises(HostKeyError, match=r"the known_hosts file .*/missing does not exist"):
        SshTransport(_target(ssh, lab.cfg.node("cp1"), known_hosts=(str(tmp_path / "missing"),))).run(["true"])


def test_pinned_fingerprint_accepts_the_right_key_and_refuses_another(lab: Lab, ssh: Path):
    cp1, worker1 = lab.cfg.node("cp1"), lab.cfg.node("worker1")
    with SshTransport(_target(ssh, cp1, known_hosts=(), pin_fingerprint=_fingerprint(ssh, cp1))) as t:
        assert t.run(["hostname"]).text.strip() == "cp1"
    wrong_pin = _fingerprint(ssh, worker1)
    with pytest.raises(HostKeyError) as err:
        SshTransport(_target(ssh, cp1, known_hosts=(), pin_fingerprint=wrong_pin)).run(["true"])
    assert f"does not match the pinned fingerprint {wrong_pin} (it presented {_fingerprint(ssh, cp1)})" in str(
        err.value
    )


def test_an_unknown_client_key_is_refused(lab: Lab, ssh: Path, tmp_path: Path):
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(tmp_path / "other"))
    with pytest.raises(TransportError, match=r"root@.* refused every offered key"):
        SshTransport(_target(ssh, lab.cfg.node("cp1"), identity_files=(str(tmp_path / "other"),))).run(["true"])


def test_command_timeout_and_per_node_deadline(lab: Lab, ssh: Path):
    with SshTransport(_target(ssh, lab.cfg.node("cp1"))) as t:
        start = time.monotonic()
        with pytest.raises(TransportTimeout, match=r"cp1: sleep 3133 did not finish within 1s"):
            t.run(["sleep", "3133"], timeout=1)
        assert time.monotonic() - start < 5
        assert t.run(["echo", "still usable"]).text == "still usable\n"
        # the command was stopped on the node too (sshd itself would leave it running)
        assert t.run(["pgrep", "-f", "slee[p] 3133"]).exit_code == 1
        assert t.run(["sh", "-c", "exit 124"]).exit_code == 124  # a quick exit 124 is not a timeout

    def slow_on_worker(node: NodeSpec, t: Transport) -> str:
        t.run(["sleep", "30" if node.name == "worker1" else "0"])
        return "done"

    start = time.monotonic()
    results = run_on_nodes(
        list(lab.cfg.nodes),
        slow_on_worker,
        lambda n, d: SshTransport(_target(ssh, n), d),
        name=lambda n: n.name,
        timeout=4,
    )
    assert time.monotonic() - start < 15
    assert results["cp1"].ok and results["cp1"].value == "done"
    assert not results["worker1"].ok and results["worker1"].timed_out
    assert "worker1: sleep 30 did not finish within" in results["worker1"].error


def test_an_unreachable_node_fails_alone(lab: Lab, ssh: Path):
    ghost = NodeSpec("ghost", lab.cfg.node("cp1").ip.rsplit(".", 1)[0] + ".250", "worker")
    start = time.monotonic()
    results = run_on_nodes(
        [lab.cfg.node("cp1"), ghost],
        lambda n, t: t.run(["true"]).exit_code,
        lambda n, d: SshTransport(_target(ssh, n, connect_timeout=3.0), d),
        name=lambda n: n.name,
        timeout=20,
    )
    assert time.monotonic() - start < 15
    assert results["cp1"].ok and results["cp1"].value == 0
    assert not results["ghost"].ok
    assert results["ghost"].error.startswith("ghost: ")
    assert Deadline.after(None).limit(3) == 3
