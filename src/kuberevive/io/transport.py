"""Reaching nodes: run a command, hold one running, read a file — locally or over SSH. Files are written through
:class:`~kuberevive.io.remotehost.SshHost` (its atomic write), never here.

The recover executor talks to every node through one small synchronous protocol, :class:`Transport`:

* :class:`LocalTransport` for the node the tool runs on (:mod:`kuberevive.io.process`, files under an optional
  root);
* :class:`SshTransport` for the others, on **asyncssh** (one private event loop in a daemon thread,
  so callers stay synchronous while many SSH sessions progress concurrently). asyncssh is imported only when
  a connection is made: its import runs ``ldconfig``, ``gcc`` and ``ld`` (``ctypes.util.find_library``).

Trust is explicit. By default the server's host key must be in a known_hosts file
(``known_hosts=None`` means the user's ``~/.ssh/known_hosts``); the only other way is to pin one
exact key fingerprint (``pin_fingerprint="SHA256:..."``; no command-line flag sets it yet), which
is checked *before* authentication. There is no "accept anything" mode.

On SSH, a command's time limit is also enforced on the node with coreutils ``timeout`` (OpenSSH's
sshd would otherwise leave a timed-out command running), so nodes need coreutils, ``sh``, ``cat``,
``chmod`` and ``mv`` — present on every distribution kubeadm supports.

:func:`run_on_nodes` fans a function out to many nodes with bounded concurrency and a per-node
deadline and returns one :class:`NodeResult` per node (never raises for one node's failure).

Every failure is a :class:`TransportError` whose ``str()`` is one sentence plus what to do next;
:class:`TransportTimeout` and :class:`HostKeyError` are the two kinds callers may want to tell apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shlex
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from kuberevive.errors import HostKeyError, KubereviveError, TransportError, TransportTimeout
from kuberevive.io import process

if TYPE_CHECKING:
    from kuberevive.io.sshlib import asyncssh

T = TypeVar("T")

DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Result:
    """What a command did: exit code (-1 when it was killed by a signal or never reported one)."""

    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")


class Transport(Protocol):
    """One node. ``name`` is the node name used in messages."""

    name: str

    def run(self, argv: Sequence[str], input: bytes | None = None, timeout: float = DEFAULT_TIMEOUT) -> Result:
        """Run ``argv`` (no shell); a non-zero exit is a :class:`Result`, not an error."""
        ...

    def read_file(self, path: str) -> bytes:
        """The bytes of ``path``; :class:`TransportError` if it does not exist or cannot be read."""
        ...

    def hold(
        self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT
    ) -> contextlib.AbstractContextManager[Result | None]:
        """Start ``argv`` and wait (at most ``timeout``) for its first line of output. When that line is
        :data:`HELD`, the context is entered with ``None`` while the command keeps running with its stdin open;
        leaving the context closes its stdin and waits for it to end. When it says anything else or ends, the
        context is entered with its :class:`Result`. The command also ends when this process dies (its stdin
        closes with the pipe or the SSH connection): what it holds is never left held by a dead run."""
        ...

    def close(self) -> None: ...


#: The first line of a held command (:meth:`Transport.hold`) that holds what it was started for.
HELD = b"held\n"


# -- deadlines ---------------------------------------------------------------------------------


@dataclass
class Deadline:
    """An absolute time limit (``time.monotonic()``) shared by every operation on one node."""

    at: float | None = None

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        return cls(None if seconds is None else time.monotonic() + seconds)

    def limit(self, timeout: float | None) -> float | None:
        """The smaller of ``timeout`` and the time left; raises when nothing is left."""
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise TransportTimeout("the node's time limit is used up", "raise the per-node timeout or check the node")
        return left if timeout is None else min(timeout, left)


def run_here(name: str, argv: Sequence[str], input: bytes | None, limit: float | None) -> Result:
    """Run ``argv`` on this machine (no shell) within ``limit`` seconds; a non-zero exit is a :class:`Result`."""
    try:
        proc = process.run(argv, input=input, timeout=limit)
    except process.TimeoutExpired as exc:
        raise TransportTimeout(
            f"{name}: {shlex.join(argv)} did not finish within {_secs(limit)}s", "check the node or raise the timeout"
        ) from exc
    except OSError as exc:
        raise TransportError(f"{name}: cannot run {argv[0]}: {exc.strerror}", "check that it is installed") from exc
    return Result(proc.returncode if proc.returncode >= 0 else -1, proc.stdout, proc.stderr)


def _secs(seconds: float | None) -> str:
    return "no limit" if seconds is None else f"{round(seconds, 1):g}"


# -- local ------------------------------------------------------------------------------------


class LocalTransport:
    """The node the tool runs on. ``root`` prefixes every file path (tests use a temporary root)."""

    def __init__(self, name: str = "localhost", root: str | Path = "/", deadline: Deadline | None = None) -> None:
        self.name = name
        self.root = Path(root)
        self.deadline = deadline or Deadline()

    def _path(self, path: str) -> Path:
        if not path.startswith("/"):
            raise TransportError(f"{path!r} is not an absolute path", "pass node paths as absolute paths")
        return self.root / path.lstrip("/")

    def run(self, argv: Sequence[str], input: bytes | None = None, timeout: float = DEFAULT_TIMEOUT) -> Result:
        return run_here(self.name, argv, input, self.deadline.limit(timeout))

    def read_file(self, path: str) -> bytes:
        try:
            return self._path(path).read_bytes()
        except OSError as exc:
            raise TransportError(f"{self.name}: cannot read {path}: {exc.strerror}", "check the path") from exc

    @contextlib.contextmanager
    def hold(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> Iterator[Result | None]:
        try:
            proc = process.start(argv)
        except OSError as exc:
            raise TransportError(f"{self.name}: cannot start {shlex.join(argv)}: {exc}", "check the program") from exc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            first = _first_line(proc.stdout.fileno(), self.deadline.limit(timeout))
            if first is None:
                proc.kill()
                raise TransportTimeout(
                    f"{self.name}: {shlex.join(argv)} said nothing within {_secs(timeout)}s", "check the node"
                )
            if first == HELD:
                yield None
                return
            out, err = proc.communicate(timeout=self.deadline.limit(timeout))
            yield Result(proc.returncode, first + out, err)
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except process.TimeoutExpired:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()

    def close(self) -> None:
        pass


def _first_line(fd: int, timeout: float | None) -> bytes | None:
    """The first line read from ``fd`` (what came before the end, when it ends first), or None after ``timeout``."""
    limit = None if timeout is None else time.monotonic() + timeout
    got = b""
    while not got.endswith(b"\n"):
        wait = None if limit is None else max(0.0, limit - time.monotonic())
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            return None
        chunk = os.read(fd, 1)  # one byte at a time: what follows the line stays in the pipe
        if not chunk:
            break
        got += chunk
    return got


# -- SSH --------------------------------------------------------------------------------------


class _Loop:
    """One asyncio loop in a daemon thread, shared by every SshTransport of the process."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="kuberevive-ssh", daemon=True).start()
                cls._loop = loop
            return cls._loop

    @classmethod
    def call(cls, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        """Run ``coro`` on the loop; cancel it (and raise TimeoutError) after ``timeout`` seconds."""

        async def bounded() -> T:
            return await asyncio.wait_for(coro, timeout)

        return asyncio.run_coroutine_threadsafe(bounded(), cls.get()).result()


@dataclass(frozen=True)
class SshTarget:
    """How to reach one node over SSH."""

    name: str
    host: str
    port: int = 22
    user: str = "root"
    #: Private key files; empty means the agent (``SSH_AUTH_SOCK``) and asyncssh's default keys.
    identity_files: tuple[str, ...] = ()
    #: known_hosts files to check the host key against; empty means ``~/.ssh/known_hosts``.
    known_hosts: tuple[str, ...] = ()
    #: Pin exactly this host key (``SHA256:...`` as ``ssh-keygen -lf`` prints it) instead of known_hosts.
    pin_fingerprint: str | None = None
    #: Use the SSH agent (``SSH_AUTH_SOCK``) for authentication.
    use_agent: bool = True
    connect_timeout: float = 10.0


def _pinning_client(fingerprint: str, seen: list[str]) -> asyncssh.SSHClient:
    """An SSH client that accepts exactly the host key ``fingerprint`` (every key offered is added to ``seen``)."""
    from kuberevive.io.sshlib import asyncssh

    class _PinningClient(asyncssh.SSHClient):
        def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
            got = key.get_fingerprint("sha256")
            seen.append(got)
            return got == fingerprint

    return _PinningClient()


_KNOWN_HOSTS: dict[tuple[tuple[str, int, int], ...], Any] = {}
_KNOWN_HOSTS_LOCK = threading.Lock()


def _known_hosts(files: tuple[str, ...]) -> Any:
    """The known_hosts ``files`` parsed once for the process while they are unchanged (keyed by path, size and
    mtime): asyncssh would parse them again at every connection, N lines for each of N nodes (15 ms CPU a connection
    at 1,000 nodes, on the one event loop every connection shares)."""
    from kuberevive.io.sshlib import asyncssh

    key = tuple((f, st.st_size, st.st_mtime_ns) for f in files for st in [os.stat(f)])
    with _KNOWN_HOSTS_LOCK:
        if key not in _KNOWN_HOSTS:
            _KNOWN_HOSTS.clear()
            _KNOWN_HOSTS[key] = asyncssh.read_known_hosts(list(files))
        return _KNOWN_HOSTS[key]


class SshTransport:
    """One SSH connection to one node (opened on first use, reused for every operation)."""

    def __init__(self, target: SshTarget, deadline: Deadline | None = None) -> None:
        self.target = target
        self.name = target.name
        self.deadline = deadline or Deadline()
        self._conn: asyncssh.SSHClientConnection | None = None

    # connection

    async def _connect(self) -> asyncssh.SSHClientConnection:
        from kuberevive.io.sshlib import asyncssh

        t = self.target
        options: dict[str, Any] = {
            "port": t.port,
            "username": t.user,
            "config": None,  # never read ~/.ssh/config: every setting is explicit
            "connect_timeout": t.connect_timeout,
        }
        if not t.use_agent:
            options["agent_path"] = None  # otherwise asyncssh asks the agent at SSH_AUTH_SOCK, if any
        if t.identity_files:
            options["client_keys"] = list(t.identity_files)
        seen: list[str] = []
        if t.pin_fingerprint:
            options["known_hosts"] = lambda _h, _a, _p: ([], [], [])
            options["client_factory"] = lambda: _pinning_client(t.pin_fingerprint or "", seen)
        else:
            files = list(t.known_hosts) or [str(Path("~/.ssh/known_hosts").expanduser())]
            missing = [f for f in files if not Path(f).is_file()]
            if missing:
                raise HostKeyError(
                    f"{t.name}: the known_hosts file {missing[0]} does not exist, "
                    f"so {t.host}'s host key cannot be checked",
                    "add the node's host key to that file (ssh-keyscan, its fingerprint checked out of band) "
                    "or name the file that holds it with --known-hosts FILE",
                )
            options["known_hosts"] = _known_hosts(tuple(files))
        try:
            return await asyncssh.connect(t.host, **options)
        except asyncssh.HostKeyNotVerifiable as exc:
            got = f" (it presented {seen[-1]})" if seen else ""
            what = f"the pinned fingerprint {t.pin_fingerprint}" if t.pin_fingerprint else "known_hosts"
            raise HostKeyError(
                f"{t.name}: the SSH host key of {t.host}:{t.port} does not match {what}{got}: {exc.reason}",
                "verify the node's host key out of band; if it legitimately changed, update known_hosts or the pin",
            ) from exc
        except asyncssh.PermissionDenied as exc:
            raise TransportError(
                f"{t.name}: {t.user}@{t.host}:{t.port} refused every offered key",
                "check the identity file or the SSH agent and the node's authorized_keys",
            ) from exc
        except (asyncssh.Error, OSError) as exc:
            raise TransportError(
                f"{t.name}: cannot connect to {t.host}:{t.port} over SSH: {exc}",
                "check that the node is up and sshd listens there",
            ) from exc

    def _call(self, what: str, coro_fn: Callable[[], Coroutine[Any, Any, T]], timeout: float | None) -> T:
        limit = self.deadline.limit(timeout)
        try:
            return _Loop.call(coro_fn(), limit)
        except TimeoutError as exc:
            raise TransportTimeout(
                f"{self.name}: {what} did not finish within {_secs(limit)}s", "check the node or raise the timeout"
            ) from exc

    def connect(self) -> None:
        if self._conn is None:
            from kuberevive.io.sshlib import asyncssh  # noqa: F401  here, not in the timed coroutine: the first import takes a while

            self._conn = self._call("connecting over SSH", self._connect, self.target.connect_timeout + 5)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            from kuberevive.io.sshlib import asyncssh

            async def _close() -> None:
                conn.close()
                await conn.wait_closed()

            with contextlib.suppress(TimeoutError, OSError, asyncssh.Error):
                _Loop.call(_close(), 5)

    def __enter__(self) -> SshTransport:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # operations

    def run(self, argv: Sequence[str], input: bytes | None = None, timeout: float = DEFAULT_TIMEOUT) -> Result:
        self.connect()
        conn = self._conn
        assert conn is not None
        from kuberevive.io.sshlib import asyncssh

        command = shlex.join(argv)
        limit = self.deadline.limit(timeout)
        # OpenSSH's sshd neither delivers signal requests nor kills a command when its channel closes,
        # so the time limit is enforced on the node too: coreutils `timeout` (exit 124, SIGKILL 5 s
        # after SIGTERM). The local limit is a backstop for a node that stops answering.
        remote = command if limit is None else f"timeout -k 5 {limit:.3f} {command}"
        started = time.monotonic()

        async def _run() -> Result:
            proc = await conn.create_process(remote, encoding=None)
            try:
                out, err = await proc.communicate(input)
            finally:
                if proc.exit_status is None:
                    proc.close()
            code = proc.exit_status
            return Result(code if code is not None and code >= 0 else -1, out or b"", err or b"")

        try:
            result = self._call(command, _run, None if limit is None else limit + 10)
        except (asyncssh.Error, OSError) as exc:
            raise TransportError(f"{self.name}: running {command} failed: {exc}", "check the SSH connection") from exc
        if limit is not None and result.exit_code in (124, 137) and time.monotonic() - started >= limit:
            raise TransportTimeout(
                f"{self.name}: {command} did not finish within {_secs(limit)}s", "check the node or raise the timeout"
            )
        return result

    def read_file(self, path: str) -> bytes:
        result = self.run(["cat", "--", path])
        if not result.ok:
            raise TransportError(
                f"{self.name}: cannot read {path}: {result.stderr.decode(errors='replace').strip()}", "check the path"
            )
        return result.stdout

    @contextlib.contextmanager
    def hold(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> Iterator[Result | None]:
        self.connect()
        conn = self._conn
        assert conn is not None
        from kuberevive.io.sshlib import asyncssh

        command = shlex.join(argv)  # no `timeout` wrapper: it runs until its stdin closes

        async def _start() -> asyncssh.SSHClientProcess[bytes]:
            return await conn.create_process(command, encoding=None)

        try:
            proc: asyncssh.SSHClientProcess[bytes] = self._call(command, _start, timeout)
        except (asyncssh.Error, OSError) as exc:
            raise TransportError(f"{self.name}: running {command} failed: {exc}", "check the SSH connection") from exc

        async def _rest() -> Result:
            out, err = await proc.communicate()
            code = proc.exit_status
            return Result(code if code is not None and code >= 0 else -1, out or b"", err or b"")

        async def _end() -> None:
            proc.stdin.write_eof()
            await proc.wait_closed()

        held = False
        try:
            first: bytes = self._call(command, proc.stdout.readline, timeout)
            if first == HELD:
                held = True
                yield None
                return
            rest = self._call(command, _rest, timeout)
            yield Result(rest.exit_code, first + rest.stdout, rest.stderr)
        finally:
            if held:  # let it end by itself (what it holds is released before the channel closes)
                with contextlib.suppress(KubereviveError, asyncssh.Error, OSError):
                    self._call(command, _end, 30)
            proc.close()


# -- many nodes -------------------------------------------------------------------------------

N = TypeVar("N")


@dataclass(frozen=True)
class NodeResult(Generic[T]):
    """One node's outcome: ``value`` when ``ok``, else ``error`` (one sentence) and ``timed_out``."""

    node: str
    ok: bool
    value: T | None = None
    error: str = ""
    timed_out: bool = False
    seconds: float = 0.0


@dataclass
class _Job(Generic[N]):
    node: N
    name: str
    deadline: Deadline = field(default_factory=Deadline)


def run_on_nodes(
    nodes: Sequence[N],
    fn: Callable[[N, Transport], T],
    connect: Callable[[N, Deadline], Transport],
    *,
    name: Callable[[N], str] = str,
    concurrency: int = 8,
    timeout: float = 120.0,
) -> dict[str, NodeResult[T]]:
    """Call ``fn(node, transport)`` for every node, at most ``concurrency`` at a time.

    ``connect(node, deadline)`` makes the node's transport (e.g. ``SshTransport(target, deadline)``);
    every operation on it respects the node's deadline (``timeout`` seconds from when its turn
    starts). The transport is closed afterwards. A failure or timeout on one node is recorded in its
    :class:`NodeResult` and never stops the others. Results are keyed by ``name(node)``, in input order.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")

    def one(job: _Job[N]) -> NodeResult[T]:
        start = time.monotonic()
        job.deadline = Deadline.after(timeout)
        transport: Transport | None = None
        try:
            transport = connect(job.node, job.deadline)
            value = fn(job.node, transport)
            return NodeResult(job.name, True, value, seconds=time.monotonic() - start)
        except TransportTimeout as exc:
            return NodeResult(job.name, False, error=str(exc), timed_out=True, seconds=time.monotonic() - start)
        except KubereviveError as exc:
            return NodeResult(job.name, False, error=str(exc), seconds=time.monotonic() - start)
        finally:
            if transport is not None:
                transport.close()

    jobs = [_Job(n, name(n)) for n in nodes]
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError("node names must be unique")
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="kuberevive-node") as pool:
        results = list(pool.map(one, jobs))
    return {r.node: r for r in results}
