"""LocalTransport in a temporary root and run_on_nodes' concurrency, deadlines and isolation."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from kuberevive.errors import TransportError, TransportTimeout
from kuberevive.io.transport import Deadline, LocalTransport, Transport, run_on_nodes


def test_local_run_and_read(tmp_path: Path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "f").write_bytes(b"two")
    t = LocalTransport("here", tmp_path)
    r = t.run(["sh", "-c", "cat; echo e >&2; exit 3"], input=b"x")
    assert (r.exit_code, r.stdout, r.stderr, r.ok) == (3, b"x", b"e\n", False)
    assert t.read_file("/etc/f") == b"two"
    assert not hasattr(t, "write_file")  # files are written by SshHost's one atomic writer


def test_hold_keeps_the_command_running_until_the_context_ends(tmp_path: Path):
    t = LocalTransport("here", tmp_path)
    mark = tmp_path / "ended"
    with t.hold(["sh", "-c", f"echo held; cat; echo done > {mark}"]) as r:
        assert r is None
        assert not mark.exists()  # still running, reading its stdin
    assert mark.read_text() == "done\n"  # its stdin closed: it ended, and hold waited for it
    with t.hold(["sh", "-c", "echo busy; echo more; echo err >&2; exit 5"]) as r:
        assert r is not None and (r.exit_code, r.stdout, r.stderr) == (5, b"busy\nmore\n", b"err\n")
    with t.hold(["sh", "-c", "exit 4"]) as r:
        assert r is not None and (r.exit_code, r.stdout) == (4, b"")
    with pytest.raises(TransportTimeout, match=r"said nothing within 0\.2s"), t.hold(["sleep", "5"], timeout=0.2):
        pass


def test_local_errors_are_one_sentence(tmp_path: Path):
    t = LocalTransport("here", tmp_path)
    with pytest.raises(
        TransportError, match=r"^here: cannot read /nope: No such file or directory\. Check the path\.$"
    ):
        t.read_file("/nope")
    with pytest.raises(TransportError, match="is not an absolute path"):
        t.read_file("relative")
    with pytest.raises(TransportError, match="cannot run /no/such/program"):
        t.run(["/no/such/program"])
    with pytest.raises(TransportTimeout, match=r"^here: sleep 5 did not finish within 0.2s"):
        t.run(["sleep", "5"], timeout=0.2)


def test_deadline_limits_every_operation():
    d = Deadline.after(0.05)
    assert d.limit(10) is not None and d.limit(10) <= 0.05  # type: ignore[operator]
    time.sleep(0.06)
    with pytest.raises(TransportTimeout, match="time limit is used up"):
        d.limit(10)
    assert Deadline().limit(None) is None


def test_run_on_nodes_bounds_concurrency_and_keeps_order(tmp_path: Path):
    lock = threading.Lock()
    running = 0
    peak = 0

    def fn(node: str, t: Transport) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.1)
        with lock:
            running -= 1
        return t.run(["echo", node]).text.strip()

    nodes = [f"n{i}" for i in range(7)]
    results = run_on_nodes(nodes, fn, lambda n, d: LocalTransport(n, tmp_path, d), concurrency=3, timeout=10)
    assert list(results) == nodes
    assert all(r.ok and r.value == r.node for r in results.values())
    assert peak == 3


def test_one_nodes_failure_or_timeout_does_not_stop_the_others(tmp_path: Path):
    def fn(node: str, t: Transport) -> int:
        if node == "slow":
            t.run(["sleep", "10"])
        if node == "broken":
            t.read_file("/does-not-exist")
        return t.run(["true"]).exit_code

    start = time.monotonic()
    results = run_on_nodes(["ok", "slow", "broken"], fn, lambda n, d: LocalTransport(n, tmp_path, d), timeout=0.5)
    assert time.monotonic() - start < 5
    assert results["ok"].ok and results["ok"].value == 0
    assert results["slow"].timed_out and not results["slow"].ok
    assert results["broken"].error.startswith("broken: cannot read /does-not-exist")
    assert not results["broken"].timed_out


def test_run_on_nodes_rejects_duplicate_names_and_zero_concurrency(tmp_path: Path):
    with pytest.raises(ValueError, match="unique"):
        run_on_nodes(["a", "a"], lambda n, t: None, lambda n, d: LocalTransport(n, tmp_path, d))
    with pytest.raises(ValueError, match="at least 1"):
        run_on_nodes(["a"], lambda n, t: None, lambda n, d: LocalTransport(n, tmp_path, d), concurrency=0)
