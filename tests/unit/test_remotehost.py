"""SshHost without a network: its sh scripts run through LocalTransport on a temporary directory (the same scripts
the lab runs over SSH, tests/lab/test_remote_host_lab.py), the crictl JSON parser, the parents' modes, and the
rule that file contents never reach a command line."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest

from kuberevive.errors import NodeFsError, PlanError, TransportError
from kuberevive.io.host import Container, Host, LocalHost, parse_crictl_ps
from kuberevive.io.noderoot import NodeRoot
from kuberevive.io.remotehost import SshHost, _parents
from kuberevive.io.transport import DEFAULT_TIMEOUT, LocalTransport, Result

OWNER = (1234, 2345) if os.geteuid() == 0 else (os.getuid(), os.getgid())  # CI runs as root
SECRET = b"-----BEGIN EC PRIVATE KEY-----\nc2VjcmV0IGtleSBieXRlcw==\n-----END EC PRIVATE KEY-----\n"

#: ``crictl ps -o json`` on a lab worker (crictl v1.33), one container trimmed of its annotations.
CRICTL_PS = b"""{
  "containers": [
    {
      "id": "755c420fc41311f2169985fa88fb1ced751e507b89edff267e3d32022f69dd10",
      "podSandboxId": "153f83e0dbd6951b1356d5fbba91b08cc6544e2bc5aa855610001e9a3f4b689e",
      "metadata": {"name": "kube-proxy", "attempt": 0},
      "image": {"image": "sha256:7995f709b06c5bde38ff2fb5446494dc299872266171c911014a00c53ab40e71"},
      "imageRef": "sha256:7995f709b06c5bde38ff2fb5446494dc299872266171c911014a00c53ab40e71",
      "state": "CONTAINER_RUNNING",
      "createdAt": "1796417341341266616",
      "labels": {
        "io.kubernetes.container.name": "kube-proxy",
        "io.kubernetes.pod.name": "kube-proxy-4z48m",
        "io.kubernetes.pod.namespace": "kube-system",
        "io.kubernetes.pod.uid": "31ace418-a53f-43b5-bf3d-2396361c34eb"
      }
    },
    {
      "id": "5a2b645857f0ceeed9d44679011d43fa6ce538f42141e2386dff593860dbaddd",
      "metadata": {"name": "kube-proxy-sidecar", "attempt": 1},
      "state": "CONTAINER_RUNNING",
      "createdAt": "1796417344274077094",
      "labels": {"io.kubernetes.pod.name": "labapp-564f8778b6-lxfdw", "io.kubernetes.pod.namespace": "krlab"}
    }
  ]
}"""


class Recording:
    """LocalTransport that records every argv and stdin it runs."""

    def __init__(self) -> None:
        self.name = "node-a"
        self.local = LocalTransport("node-a")
        self.calls: list[tuple[list[str], bytes | None]] = []

    def run(self, argv: Sequence[str], input: bytes | None = None, timeout: float = DEFAULT_TIMEOUT) -> Result:
        self.calls.append((list(argv), input))
        return self.local.run(argv, input=input, timeout=timeout)

    def read_file(self, path: str) -> bytes:
        raise AssertionError("SshHost reads through its scripts")

    def hold(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> AbstractContextManager[Result | None]:
        self.calls.append((list(argv), None))
        return self.local.hold(argv, timeout)

    def close(self) -> None:
        pass


class Canned:
    """A transport that answers every command with one result (for the pure error handling)."""

    def __init__(self, result: Result) -> None:
        self.name = "node-b"
        self.result = result

    def run(self, argv: Sequence[str], input: bytes | None = None, timeout: float = DEFAULT_TIMEOUT) -> Result:
        return self.result

    def read_file(self, path: str) -> bytes:
        raise AssertionError

    def hold(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> AbstractContextManager[Result | None]:
        return contextlib.nullcontext(self.result)

    def close(self) -> None:
        pass


@pytest.fixture
def rec() -> Recording:
    return Recording()


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o077)
    yield
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_is_a_live_host_named_after_its_transport(rec: Recording) -> None:
    host: Host = SshHost(rec)
    assert host.live is True and host.name == "node-a"
    assert SshHost(rec, "cp2").name == "cp2"


def test_parents_carry_kubeadm_modes_outermost_first() -> None:
    assert _parents(PurePosixPath("/etc/kubernetes/manifests/etcd.yaml")) == [
        "755",
        "/etc",
        "755",
        "/etc/kubernetes",
        "700",
        "/etc/kubernetes/manifests",
    ]
    assert _parents(PurePosixPath("/var/lib/kuberevive/backup/x/f"))[-6:] == [
        "700",
        "/var/lib/kuberevive",
        "755",
        "/var/lib/kuberevive/backup",
        "755",
        "/var/lib/kuberevive/backup/x",
    ]


def test_write_read_with_final_modes_whatever_the_umask(rec: Recording, tmp_path: Path, umask: None) -> None:
    host = SshHost(rec)
    key, cert = tmp_path / "new" / "pki" / "sa.key", tmp_path / "new" / "pki" / "sa.pub"
    assert host.write(PurePosixPath(key), SECRET, 0o600) is None
    assert host.write(PurePosixPath(cert), b"PUB\n", 0o644) is None  # umask 077 would make it 0600
    os.umask(0)
    other = tmp_path / "new" / "other.key"
    host.write(PurePosixPath(other), SECRET, 0o600)  # umask 000 would make it 0666
    assert (key.read_bytes(), _mode(key), _mode(cert), _mode(other)) == (SECRET, 0o600, 0o644, 0o600)
    assert _mode(tmp_path / "new") == 0o755 and _mode(tmp_path / "new" / "pki") == 0o755
    assert host.read(PurePosixPath(key)) == SECRET and host.read(PurePosixPath(tmp_path / "none")) is None
    assert sorted(os.listdir(key.parent)) == ["sa.key", "sa.pub"]  # no temporary file left


def test_file_contents_never_reach_a_command_line(rec: Recording, tmp_path: Path) -> None:
    host = SshHost(rec)
    target = PurePosixPath(tmp_path / "ca.key")
    host.write(target, SECRET, 0o600)
    argvs = [argv for argv, _ in rec.calls]
    assert all(SECRET not in a.encode() and b"c2VjcmV0" not in a.encode() for argv in argvs for a in argv)
    assert [stdin for _, stdin in rec.calls if stdin is not None] == [SECRET]
    # every file operation is `sh -c SCRIPT sh ARGS`: the path is an argument, never part of the script's text
    assert all(argv[:2] == ["sh", "-c"] and argv[3] == "sh" and str(tmp_path) not in argv[2] for argv in argvs)


def test_same_content_and_mode_writes_nothing(rec: Recording, tmp_path: Path) -> None:
    host = SshHost(rec)
    target = PurePosixPath(tmp_path / "f")
    host.write(target, b"x", 0o600)
    before = os.stat(tmp_path / "f").st_ino
    rec.calls.clear()
    assert host.write(target, b"x", 0o600) is None
    assert len(rec.calls) == 1  # one command, which found the same bytes and mode and replaced nothing
    assert os.stat(tmp_path / "f").st_ino == before
    assert os.listdir(tmp_path) == ["f"]  # its temporary file is gone, nothing moved aside
    aside = host.write(target, b"x", 0o640)  # the same bytes with another mode: replaced, the old one kept
    assert aside is not None and _mode(Path(aside)) == 0o600 and _mode(tmp_path / "f") == 0o640


@pytest.mark.parametrize(
    "name",
    ["with space", "quote's", 'double"quote', "$(touch pwned)", "`touch pwned`", "-leading-dash", "new\nline", "a\\b"],
)
def test_any_file_name_is_one_argument(rec: Recording, tmp_path: Path, name: str) -> None:
    host = SshHost(rec)
    path = PurePosixPath(tmp_path / name / name)
    host.write(path, b"data", 0o640)
    assert (tmp_path / name / name).read_bytes() == b"data" and host.read(path) == b"data"
    assert host.exists(path) and not host.exists(PurePosixPath(tmp_path / name / "other"))
    link = PurePosixPath(tmp_path / name / f"link {name}")
    host.replace_symlink(link, name)
    assert host.readlink(link) == name == os.readlink(tmp_path / name / f"link {name}")
    assert host.read(link) == b"data"  # read follows the link
    assert sorted(os.listdir(tmp_path)) == [name]  # nothing was run from the name (no 'pwned')


def test_replace_symlink_swaps_the_link_not_its_target(rec: Recording, tmp_path: Path) -> None:
    host = SshHost(rec)
    (tmp_path / "a.pem").write_bytes(b"a")
    (tmp_path / "b.pem").write_bytes(b"b")
    link = PurePosixPath(tmp_path / "current.pem")
    host.replace_symlink(link, "a.pem")
    host.replace_symlink(link, "b.pem")
    assert (host.readlink(link), host.read(link), (tmp_path / "a.pem").read_bytes()) == ("b.pem", b"b", b"a")
    assert host.readlink(PurePosixPath(tmp_path / "a.pem")) is None and host.readlink(link / "x") is None
    assert sorted(os.listdir(tmp_path)) == ["a.pem", "b.pem", "current.pem"]
    host.replace_symlink(PurePosixPath(tmp_path / "made" / "link"), "/nowhere")  # parents are made
    assert os.readlink(tmp_path / "made" / "link") == "/nowhere" and _mode(tmp_path / "made") == 0o755


def _in_thread(fn: object) -> list[object]:
    """Call ``fn`` in a thread, waiting at most 30 s (a FIFO read that blocks never ends by itself)."""
    out: list[object] = []

    def call() -> None:
        try:
            out.append(fn())  # type: ignore[operator]
        except Exception as exc:
            out.append(exc)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(30)
    return out


def test_a_fifo_is_an_error_at_once_never_a_hang(rec: Recording, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    host = SshHost(rec)
    [got] = _in_thread(lambda: host.read(PurePosixPath(tmp_path / "fifo")))
    assert isinstance(got, NodeFsError)
    assert str(got) == f"node-a: {tmp_path}/fifo is not a regular file (a FIFO). Move it away and run again."
    [got] = _in_thread(lambda: host.write(PurePosixPath(tmp_path / "fifo"), b"x", 0o600))
    assert isinstance(got, NodeFsError) and stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)


def test_what_is_not_a_readable_file_is_one_sentence(rec: Recording, tmp_path: Path) -> None:
    host = SshHost(rec)
    (tmp_path / "f").write_bytes(b"0123456789")
    cases = {
        tmp_path: f"node-a: {tmp_path} is a directory, expected a file",
        tmp_path / "f" / "x": f"node-a: a parent of {tmp_path}/f/x is a file, expected a directory",
        Path("/dev/null"): "node-a: /dev/null is not a regular file (a device)",
    }
    for path, message in cases.items():
        with pytest.raises(NodeFsError) as err:
            host.read(PurePosixPath(path))
        assert str(err.value).startswith(message + ". ")
    assert host.read(PurePosixPath(tmp_path / "f"), limit=10) == b"0123456789"
    with pytest.raises(NodeFsError, match=r"f is 10 bytes, larger than any file kuberevive reads \(9\)"):
        host.read(PurePosixPath(tmp_path / "f"), limit=9)


def test_read_many_is_one_command_with_the_checks_of_read(rec: Recording, tmp_path: Path) -> None:
    host = SshHost(rec)
    (tmp_path / "a").write_bytes(b"first\n\n")  # trailing newlines kept
    (tmp_path / "b").write_bytes(bytes(range(256)))  # any byte
    (tmp_path / "empty").write_bytes(b"")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    wanted = [PurePosixPath(tmp_path / n) for n in ("a", "missing", "b", "dangling", "empty")]
    got = host.read_many(wanted)
    assert len(rec.calls) == 1
    assert got == {
        wanted[0]: b"first\n\n",
        wanted[1]: None,
        wanted[2]: bytes(range(256)),
        wanted[3]: None,
        wanted[4]: b"",
    }
    assert got == {p: host.read(p) for p in wanted}
    with pytest.raises(NodeFsError) as err:  # what read refuses, read_many refuses, naming the file
        host.read_many([wanted[0], PurePosixPath(tmp_path)])
    assert str(err.value).startswith(f"node-a: {tmp_path} is a directory, expected a file")
    with pytest.raises(NodeFsError, match=r"b is 256 bytes, larger than any file kuberevive reads \(10\)"):
        host.read_many([wanted[2]], limit=10)
    assert host.read_many([]) == {}


def test_a_failed_write_leaves_no_temporary_file(rec: Recording, tmp_path: Path) -> None:
    host = SshHost(rec)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "file").write_bytes(b"keep")
    with pytest.raises(NodeFsError, match=r"^node-a: cannot write .*/dir/x{250}: sh: .*cannot create"):
        host.write(PurePosixPath(tmp_path / "dir" / ("x" * 250)), b"x", 0o600)  # its temporary name is too long
    with pytest.raises(NodeFsError, match=r"^node-a: cannot write .*/dir/new: chmod: invalid mode: .170000. Try"):
        host.write(PurePosixPath(tmp_path / "dir" / "new"), b"x", 0o170000)  # fails after the temporary file exists
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "sub").mkdir()
    os.symlink(tmp_path / "missing-target", tmp_path / "links" / "dangling")
    with pytest.raises(NodeFsError, match=r"dangling is a symlink to .*missing-target, which does not exist on the"):
        host.write(PurePosixPath(tmp_path / "links" / "dangling" / "f"), b"x", 0o600)
    assert sorted(os.listdir(tmp_path / "dir")) == ["file"] and (tmp_path / "dir" / "file").read_bytes() == b"keep"
    assert sorted(os.listdir(tmp_path / "links")) == ["dangling", "sub"]


def test_crictl_json_is_parsed_and_filtered_by_exact_name() -> None:
    proxy = Container(
        id="755c420fc41311f2169985fa88fb1ced751e507b89edff267e3d32022f69dd10",
        name="kube-proxy",
        state="CONTAINER_RUNNING",
        created_at=1796417341.341266616,
        pod_name="kube-proxy-4z48m",
        pod_namespace="kube-system",
    )
    assert parse_crictl_ps(CRICTL_PS, "kube-proxy") == [proxy]  # not the kube-proxy-sidecar
    assert [c.name for c in parse_crictl_ps(CRICTL_PS)] == ["kube-proxy", "kube-proxy-sidecar"]
    assert parse_crictl_ps(b'{"containers": null}') == [] and parse_crictl_ps("{}", "x") == []
    for bad in (
        b"not json",
        b"[]",
        b'{"containers": [{"id": "x"}]}',
        b'{"containers": [{"id": "x", "metadata": {"name": "n"}, "createdAt": "soon"}]}',
    ):
        with pytest.raises(ValueError, match="not the JSON of 'crictl ps -o json'"):
            parse_crictl_ps(bad)


def test_restart_unit_and_containers_failures_are_one_sentence() -> None:
    host = SshHost(Canned(Result(5, b"", b"Failed to restart kubelet.service: Unit kubelet.service not found.\n")))
    with pytest.raises(TransportError) as err:
        host.restart_unit("kubelet")
    assert str(err.value) == (
        "node-b: 'systemctl restart kubelet' failed: Failed to restart kubelet.service: Unit kubelet.service not "
        "found. Look at 'systemctl status kubelet' and 'journalctl -u kubelet' on the node, then run again."
    )
    with pytest.raises(TransportError, match=r"^node-b: crictl cannot list containers: Failed to restart"):
        host.containers()
    with pytest.raises(TransportError, match=r"^node-b: not the JSON of 'crictl ps -o json'"):
        SshHost(Canned(Result(0, b"<html>", b""))).containers()
    assert SshHost(Canned(Result(0, CRICTL_PS, b""))).containers("kube-proxy")[0].pod_name == "kube-proxy-4z48m"


class Stops:
    """A transport whose ``crictl ps`` lists CRICTL_PS and which records every other command with its time limit."""

    name = "node-b"

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], float]] = []

    def run(self, argv: Sequence[str], input: bytes | None = None, timeout: float = DEFAULT_TIMEOUT) -> Result:
        if list(argv[:2]) == ["crictl", "ps"]:
            return Result(0, CRICTL_PS, b"")
        self.calls.append((list(argv), timeout))
        return Result(0, b"", b"")


def test_containers_are_stopped_gracefully_with_the_pods_grace_period() -> None:
    """``crictl stop`` without --timeout is SIGKILL at once (containerd's StopContainer with timeout 0): a
    kube-apiserver would cut its requests in flight. SIGTERM and 30 s, as the kubelet stops a pod, awaited."""
    t = Stops()
    assert SshHost(t, "node-b").stop_containers("kube-proxy", "unix:///run/containerd/containerd.sock") == 1  # type: ignore[arg-type]
    ((argv, limit),) = t.calls
    assert argv == [
        "crictl",
        "--runtime-endpoint",
        "unix:///run/containerd/containerd.sock",
        "stop",
        "--timeout",
        "30",
        "755c420fc41311f2169985fa88fb1ced751e507b89edff267e3d32022f69dd10",  # kube-proxy's, not the sidecar's
    ]
    assert limit > 30  # the SSH command outlives the grace period


@pytest.fixture
def other_fs() -> Iterator[Path]:
    """A temporary directory on another file system than pytest's tmp_path (the tmpfs at /dev/shm)."""
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm")
    d = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="kuberevive-test-"))
    try:
        yield d
    finally:
        shutil.rmtree(d)


def test_move_aside_keeps_the_file_its_mode_and_owner(rec: Recording, tmp_path: Path) -> None:
    host = SshHost(rec, backup_dir=PurePosixPath(tmp_path / "backup"))
    (tmp_path / "etc").mkdir()
    f = tmp_path / "etc" / "kubelet.conf"
    f.write_bytes(b"old")
    f.chmod(0o604)
    os.chown(f, *OWNER)
    inode = f.stat().st_ino
    when = datetime(2026, 12, 4, 20, 1, 2, 345678, tzinfo=UTC)
    aside = host.move_aside(PurePosixPath(f), when)
    assert aside == PurePosixPath(tmp_path, "backup", "20261204T200102.345678Z", *f.parts[1:])
    moved = Path(aside)
    assert (moved.read_bytes(), _mode(moved), moved.stat().st_ino) == (b"old", 0o604, inode)  # renamed, not copied
    assert (moved.stat().st_uid, moved.stat().st_gid) == OWNER and not f.exists()
    assert host.move_aside(PurePosixPath(f), when) is None  # nothing there
    f.write_bytes(b"again")
    with pytest.raises(NodeFsError, match=r"that exists already; nothing was moved"):
        host.move_aside(PurePosixPath(f), when)  # the same timestamp: the first backup is never overwritten
    assert (f.read_bytes(), moved.read_bytes()) == (b"again", b"old")


def test_move_aside_across_file_systems_copies_then_removes(rec: Recording, tmp_path: Path, other_fs: Path) -> None:
    if os.stat(other_fs).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm and the temporary directory are one file system here")
    host = SshHost(rec, backup_dir=PurePosixPath(tmp_path / "backup"))
    f, link, empty = other_fs / "ca.key", other_fs / "current.pem", other_fs / "placeholder.conf"
    f.write_bytes(SECRET)
    f.chmod(0o600)
    os.chown(f, *OWNER)
    os.symlink("/var/lib/kubelet/pki/kubelet-client-1.pem", link)
    os.chown(link, *OWNER, follow_symlinks=False)
    empty.mkdir()
    moved = {p.name: Path(str(host.move_aside(PurePosixPath(p)))) for p in (f, link, empty)}
    assert (moved["ca.key"].read_bytes(), _mode(moved["ca.key"])) == (SECRET, 0o600)
    assert (moved["ca.key"].stat().st_uid, moved["ca.key"].stat().st_gid) == OWNER
    assert os.readlink(moved["current.pem"]) == "/var/lib/kubelet/pki/kubelet-client-1.pem"
    assert (os.lstat(moved["current.pem"]).st_uid, os.lstat(moved["current.pem"]).st_gid) == OWNER
    assert moved["placeholder.conf"].is_dir() and not moved["placeholder.conf"].is_symlink()
    assert os.listdir(other_fs) == [] and os.stat(moved["ca.key"]).st_dev != os.stat(other_fs).st_dev


def test_write_over_other_content_moves_it_aside_and_a_failed_write_leaves_it(rec: Recording, tmp_path: Path) -> None:
    host = SshHost(rec, backup_dir=PurePosixPath(tmp_path / "backup"))
    f = tmp_path / "admin.conf"
    f.write_bytes(b"old")
    f.chmod(0o600)
    aside = host.write(PurePosixPath(f), b"new", 0o600)
    assert aside is not None and Path(aside).read_bytes() == b"old" and f.read_bytes() == b"new"
    inode = f.stat().st_ino
    with pytest.raises(NodeFsError, match=r"cannot write .*admin.conf: chmod: invalid mode.*; what was there is unch"):
        host.write(PurePosixPath(f), b"newer", 0o170000)
    assert (f.read_bytes(), f.stat().st_ino) == (b"new", inode)
    assert sorted(os.listdir(tmp_path)) == ["admin.conf", "backup"]
    assert [p.read_bytes() for p in (tmp_path / "backup").rglob("admin.conf")] == [b"old"]  # no second backup


def test_a_write_whose_rename_fails_leaves_the_old_file_and_no_backup_name(rec: Recording, tmp_path: Path) -> None:
    host = SshHost(rec, backup_dir=PurePosixPath(tmp_path / "backup"))
    f = tmp_path / "kubelet.conf"
    f.write_bytes(b"old")
    f.chmod(0o600)
    inode = f.stat().st_ino
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/mv").write_text("#!/bin/sh\necho 'mv: cannot move: Read-only file system' >&2\nexit 1\n")
    (tmp_path / "bin/mv").chmod(0o755)
    run = rec.run
    rec.run = lambda argv, input=None, timeout=DEFAULT_TIMEOUT: run(  # type: ignore[method-assign]
        ["env", f"PATH={tmp_path / 'bin'}:{os.environ['PATH']}", *argv], input, timeout
    )
    with pytest.raises(NodeFsError, match=r"cannot write .*kubelet.conf: .*; what was there is unchanged"):
        host.write(PurePosixPath(f), b"new", 0o600)
    assert (f.read_bytes(), f.stat().st_ino) == (b"old", inode)
    assert not list((tmp_path / "backup").rglob("kubelet.conf"))  # the backup name this write made is removed
    assert sorted(os.listdir(tmp_path)) == ["backup", "bin", "kubelet.conf"]  # and its temporary file


def test_read_many_is_one_command_with_read_s_answers(rec: Recording, tmp_path: Path) -> None:
    host = SshHost(rec)
    blob = bytes(range(256)) * 3 + b"\n\n"  # NULs, newlines, every byte
    (tmp_path / "a").write_bytes(blob)
    (tmp_path / "empty").write_bytes(b"")
    os.symlink("/nowhere", tmp_path / "dangling")
    os.symlink(tmp_path / "a", tmp_path / "link")
    names = ["a", "missing", "empty", "dangling", "link", "no/such/dir/f"]
    got = host.read_many([PurePosixPath(tmp_path / n) for n in names])
    assert len(rec.calls) == 1
    assert got == {PurePosixPath(tmp_path / n): host.read(PurePosixPath(tmp_path / n)) for n in names}
    assert list(got.values()) == [blob, None, b"", None, blob, None]
    assert host.read_many([]) == {}
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NodeFsError, match=r"fifo is not a regular file \(a FIFO\)"):
        host.read_many([PurePosixPath(tmp_path / "a"), PurePosixPath(tmp_path / "fifo")])


def test_a_write_is_one_command_and_a_dangling_link_is_moved_aside(rec: Recording, tmp_path: Path) -> None:
    host = SshHost(rec, backup_dir=PurePosixPath(tmp_path / "backup"))
    assert host.write(PurePosixPath(tmp_path / "new"), b"x", 0o600) is None
    assert len(rec.calls) == 1  # one SSH round trip per file written (issue 17: the fleet's bottleneck)
    aside = host.write(PurePosixPath(tmp_path / "new"), b"y", 0o600)
    assert len(rec.calls) == 2 and aside is not None and Path(aside).read_bytes() == b"x"
    with pytest.raises(NodeFsError, match=r"a parent of .*/new/x is a file, expected a directory"):
        host.write(PurePosixPath(tmp_path / "new" / "x"), b"z", 0o600)
    os.mkdir(tmp_path / "dir")
    with pytest.raises(NodeFsError, match=r"/dir is a directory, expected a file"):
        host.write(PurePosixPath(tmp_path / "dir"), b"z", 0o600)
    assert sorted(os.listdir(tmp_path)) == ["backup", "dir", "new"]
    os.symlink("/nowhere/kubelet-client-1.pem", tmp_path / "current.pem")
    assert host.read(PurePosixPath(tmp_path / "current.pem")) is None
    aside = host.write(PurePosixPath(tmp_path / "current.pem"), b"pem", 0o600)
    assert aside is not None and os.readlink(aside) == "/nowhere/kubelet-client-1.pem"  # never destroyed
    assert (tmp_path / "current.pem").read_bytes() == b"pem" and not (tmp_path / "current.pem").is_symlink()


# -- the operations both hosts offer, with one outcome ----------------------------------------------------------


class Side:
    """One host and where a test works on it: ``base`` a fresh node directory, ``file`` its path on this machine."""

    def __init__(self, host: Host, base: PurePosixPath, on_disk: Path) -> None:
        self.host, self.base, self.on_disk = host, base, on_disk

    def file(self, p: PurePosixPath | None) -> Path:
        assert p is not None
        return self.on_disk / p.relative_to("/")


@pytest.fixture(params=["LocalHost", "SshHost"])
def side(request: pytest.FixtureRequest, rec: Recording, tmp_path: Path) -> Side:
    """LocalHost over NodeRoot at a temporary root, or SshHost whose scripts run on this machine (its backup
    directory and lock file moved into the temporary directory)."""
    if request.param == "LocalHost":
        (tmp_path / "root").mkdir()
        return Side(LocalHost(NodeRoot(tmp_path / "root"), live=False), PurePosixPath("/work"), tmp_path / "root")
    ssh = SshHost(
        rec,
        backup_dir=PurePosixPath(tmp_path / "var/lib/kuberevive/backup"),
        lock_file=PurePosixPath(tmp_path / "var/lib/kuberevive/recover/lock"),
    )
    return Side(ssh, PurePosixPath(tmp_path / "work"), Path("/"))


def test_repoint_symlink_moves_aside_what_points_elsewhere_on_both_hosts(side: Side) -> None:
    host, base = side.host, side.base
    current, pem_a, pem_b = base / "kubelet-client-current.pem", base / "client-a.pem", base / "client-b.pem"
    host.write(current, b"a file where the link belongs\n", 0o600)
    when = datetime(2026, 12, 4, 20, 1, 2, tzinfo=UTC)
    first = host.repoint_symlink(current, str(pem_a), when)
    assert first is not None and "20261204T200102.000000Z" in str(first)
    assert side.file(first).read_bytes() == b"a file where the link belongs\n"
    assert host.readlink(current) == str(pem_a)
    assert host.repoint_symlink(current, str(pem_a)) is None  # already that link: nothing moved
    second = host.repoint_symlink(current, str(pem_b))
    assert second is not None and os.readlink(side.file(second)) == str(pem_a)
    assert host.readlink(current) == str(pem_b)
    assert host.repoint_symlink(base / "new-link", "x") is None and host.readlink(base / "new-link") == "x"
    os.mkdir(side.file(base / "was-a-dir"))  # what a container runtime leaves where a file belongs
    third = host.repoint_symlink(base / "was-a-dir", "y", when)
    assert third is not None and side.file(third).is_dir() and host.readlink(base / "was-a-dir") == "y"


def test_repoint_symlink_over_ssh_is_one_command_and_a_failure_changes_nothing(rec: Recording, tmp_path: Path) -> None:
    host = SshHost(rec, backup_dir=PurePosixPath(tmp_path / "backup"))
    link = tmp_path / "current.pem"
    os.symlink("/var/lib/kubelet/pki/old.pem", link)
    assert host.repoint_symlink(PurePosixPath(link), "/var/lib/kubelet/pki/new.pem") is not None
    assert len(rec.calls) == 1 and os.readlink(link) == "/var/lib/kubelet/pki/new.pem"
    assert host.repoint_symlink(PurePosixPath(link), "/var/lib/kubelet/pki/new.pem") is None
    (tmp_path / "bin").mkdir()  # a mv that fails: the old link stays, the backup name made for it is removed
    (tmp_path / "bin/mv").write_text("#!/bin/sh\necho 'mv: cannot move: Read-only file system' >&2\nexit 1\n")
    (tmp_path / "bin/mv").chmod(0o755)
    run = rec.run
    rec.run = lambda argv, input=None, timeout=DEFAULT_TIMEOUT: run(  # type: ignore[method-assign]
        ["env", f"PATH={tmp_path / 'bin'}:{os.environ['PATH']}", *argv], input, timeout
    )
    with pytest.raises(NodeFsError, match=r"cannot point .*current.pem at /other.pem: .*; what was there is unchanged"):
        host.repoint_symlink(PurePosixPath(link), "/other.pem")
    assert os.readlink(link) == "/var/lib/kubelet/pki/new.pem"
    kept = [os.path.join(d, f) for d, _, files in os.walk(tmp_path / "backup") for f in files]  # (rglob skips links)
    assert [os.readlink(p) for p in kept] == ["/var/lib/kubelet/pki/old.pem"]
    assert sorted(os.listdir(tmp_path)) == ["backup", "bin", "current.pem"]


def test_rename_is_a_rename_never_over_something_and_never_a_copy_on_both_hosts(side: Side) -> None:
    host, base = side.host, side.base
    data, kept = base / "etcd", base / "etcd.kuberevive-old"
    host.write(data / "member" / "db", b"DB", 0o600)
    inode = side.file(data).stat().st_ino
    host.rename(data, kept)
    assert not host.exists(data) and host.read(kept / "member" / "db") == b"DB"
    assert side.file(kept).stat().st_ino == inode  # the same directory, renamed
    host.write(data, b"new", 0o600)
    with pytest.raises(NodeFsError, match=r"cannot rename .* that exists already; nothing was moved"):
        host.rename(kept, data)
    with pytest.raises(NodeFsError, match=r"cannot rename .*absent.* does not exist"):
        host.rename(base / "absent", base / "elsewhere")
    assert host.read(data) == b"new" and host.read(kept / "member" / "db") == b"DB"
    host.rename(kept, base / "made" / "here")  # missing parents are made
    assert host.read(base / "made" / "here" / "member" / "db") == b"DB"


def test_the_nodes_lock_keeps_a_second_run_out_until_the_first_leaves_on_both_hosts(side: Side) -> None:
    host = side.host
    with (
        host.lock("recover", PlanError),
        pytest.raises(PlanError, match=r"another 'kuberevive recover' is running on this node \(lock .* by pid"),
        host.lock("certs renew", PlanError),
    ):
        pass
    with host.lock("ca extend", PlanError):  # left: taken at once
        pass


def test_a_killed_holder_of_the_remote_lock_releases_it(tmp_path: Path) -> None:
    """The held ``flock`` ends with the process that holds it (its stdin closes): no stale lock."""
    lock = tmp_path / "lock"
    code = (
        "import sys, time\n"
        "from pathlib import PurePosixPath\n"
        "from kuberevive.io.remotehost import SshHost\n"
        "from kuberevive.io.transport import LocalTransport\n"
        "with SshHost(LocalTransport('n'), lock_file=PurePosixPath(sys.argv[1])).lock('recover'):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(600)\n"
    )
    host = SshHost(LocalTransport("n"), lock_file=PurePosixPath(lock))
    with subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == b"locked\n"
            with (
                pytest.raises(NodeFsError, match=r"another 'kuberevive recover' is running .*by pid"),
                host.lock("recover"),
            ):
                pass
        finally:
            child.kill()
    deadline = time.monotonic() + 60  # a generous limit, polled
    while True:
        try:
            with host.lock("recover"):
                break
        except NodeFsError:
            assert time.monotonic() < deadline, "the lock was never released"
            time.sleep(0.1)
    assert _mode(lock) == 0o600


def test_write_many_writes_every_file_in_one_command_and_moves_other_content_aside(
    rec: Recording, tmp_path: Path, umask: None
) -> None:
    """The all-masters steps write a master's files in one SSH command: final modes, parents with kubeadm's
    modes, the same bytes left alone (same inode), another file or an empty directory moved to the backup path
    first; contents only on stdin, in order, one after another (an empty file too)."""
    backup = tmp_path / "backup"
    host = SshHost(rec, backup_dir=PurePosixPath(backup))
    pki_dir = tmp_path / "etc" / "pki"
    same, other, placeholder = pki_dir / "same.crt", pki_dir / "ca.key", pki_dir / "controller-manager.conf"
    pki_dir.mkdir(parents=True)
    same.write_bytes(b"SAME\n")
    os.chmod(same, 0o644)
    other.write_bytes(b"OLD KEY\n")
    placeholder.mkdir()  # what a container runtime leaves where a file belongs
    inode = os.stat(same).st_ino
    files = [
        (PurePosixPath(same), b"SAME\n", 0o644),
        (PurePosixPath(other), SECRET, 0o600),
        (PurePosixPath(placeholder), b"conf\n", 0o600),
        (PurePosixPath(tmp_path / "etc" / "new" / "empty"), b"", 0o644),
        (PurePosixPath(tmp_path / "etc" / "new" / "sa.pub"), b"PUB\n" * 5000, 0o600),
    ]
    now = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)
    asides = host.write_many(files, now)
    assert len(rec.calls) == 1 and rec.calls[0][1] == b"SAME\n" + SECRET + b"conf\n" + b"" + b"PUB\n" * 5000
    argv = rec.calls[0][0]
    assert argv[:2] == ["sh", "-c"] and all(SECRET not in a.encode() for a in argv)
    stamp = backup / "20261205T040000.000000Z"
    assert asides == [
        None,
        PurePosixPath(stamp / str(other).lstrip("/")),
        PurePosixPath(stamp / str(placeholder).lstrip("/")),
        None,
        None,
    ]
    assert os.stat(same).st_ino == inode
    for path, content, mode in files:
        assert (Path(path).read_bytes(), _mode(Path(path))) == (content, mode), path
    assert (stamp / str(other).lstrip("/")).read_bytes() == b"OLD KEY\n"
    assert (stamp / str(placeholder).lstrip("/")).is_dir()
    assert sorted(os.listdir(pki_dir)) == ["ca.key", "controller-manager.conf", "same.crt"]  # no temporary file
    rec.calls.clear()
    assert host.write_many(files, now) == [None] * 5  # again: nothing to move aside, one command
    assert len(rec.calls) == 1
