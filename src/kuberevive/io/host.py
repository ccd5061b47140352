"""A node the tool acts on: the one it runs on, or another one over SSH. Both offer the same operations with
the same guarantees (those :class:`~kuberevive.io.noderoot.NodeRoot` gives today):

* node paths are absolute POSIX paths on *that* node (under ``--root`` for the local host);
* :meth:`Host.read` opens regular files only, with a size limit, and never blocks on a FIFO;
* :meth:`Host.write` is atomic (temporary file in the same directory, fsync, rename), created with its final
  mode from the start; missing parent directories are made with kubeadm's modes; an existing file with
  other content is first moved aside (:meth:`Host.move_aside`) and its new path returned;
* :meth:`Host.move_aside` moves a file or symlink, with its mode, to
  ``/var/lib/kuberevive/backup/<UTC timestamp>/<original path>`` on the same node, also when that is on
  another file system (copy, fsync, then remove the original);
* :meth:`Host.replace_symlink` swaps a symlink atomically (a new link renamed over the old one);
  :meth:`Host.repoint_symlink` does so after moving aside what pointed elsewhere (the kubelet's
  ``kubelet-client-current.pem``);
* :meth:`Host.rename` renames on the same file system (etcd's data directory), never over something that exists;
* :meth:`Host.lock` holds the node's lock (``flock`` on :data:`~kuberevive.model.paths.NODE_LOCK`) for a run,
  refused at once when another run holds it, and released by the kernel when the run dies;
* commands run without a shell, with a timeout, and a non-zero exit is a result, not an error.

Whether a host is the real, running node (so ``systemctl``, ``crictl`` and ``ip`` act on it) is
:attr:`Host.live`: a property of the host object, never inferred from a path.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Protocol

from kuberevive.errors import KubereviveError, NodeFsError, PlanError
from kuberevive.io import process
from kuberevive.io.kubeapi import local_healthz
from kuberevive.io.noderoot import NodeRoot
from kuberevive.io.transport import DEFAULT_TIMEOUT, Result, run_here
from kuberevive.model.artifacts import Artifact, ArtifactKind


@dataclass(frozen=True)
class Container:
    """One CRI container as ``crictl ps`` shows it."""

    id: str
    name: str
    state: str
    created_at: float  # UNIX seconds
    pod_name: str = ""
    pod_namespace: str = ""


class Host(Protocol):
    """One node. ``name`` is its node name, used in messages."""

    name: str

    @property
    def live(self) -> bool:
        """True when this is a running node: units, containers and addresses are real and may be acted on."""
        ...

    def read(self, node_path: PurePosixPath) -> bytes | None:
        """The bytes of a regular file, ``None`` when nothing is there; a FIFO, a device or a file over the
        size limit is a :class:`~kuberevive.errors.NodeFsError`."""
        ...

    def read_many(self, node_paths: Sequence[PurePosixPath]) -> dict[PurePosixPath, bytes | None]:
        """:meth:`read` of each path (over SSH: in one command, one round trip)."""
        ...

    def exists(self, node_path: PurePosixPath) -> bool: ...

    def readlink(self, node_path: PurePosixPath) -> str | None:
        """The target of a symlink, ``None`` when ``node_path`` is not a symlink."""
        ...

    def write(
        self, node_path: PurePosixPath, content: bytes, mode: int, now: datetime | None = None
    ) -> PurePosixPath | None:
        """Write one file atomically with its final mode; an existing file with other content is moved aside
        first (to the backup directory named after ``now``, default the current time) and its new path returned
        (``None`` when nothing was moved). Same content: nothing is done."""
        ...

    def move_aside(self, node_path: PurePosixPath, now: datetime | None = None) -> PurePosixPath | None:
        """Move a file or symlink to the timestamped backup directory; its new path, or ``None`` if absent."""
        ...

    def replace_symlink(self, node_path: PurePosixPath, target: str) -> None: ...

    def repoint_symlink(
        self, node_path: PurePosixPath, target: str, now: datetime | None = None
    ) -> PurePosixPath | None:
        """Make ``node_path`` a symlink to ``target``: what is there and is not that link (another link, a file)
        is moved aside first and its new path returned (``None``: nothing was there, or it was that link)."""
        ...

    def rename(self, node_path: PurePosixPath, new_path: PurePosixPath) -> None:
        """Rename a file, symlink or directory on the same file system (atomic, never a copy), never over
        something that exists; a :class:`~kuberevive.errors.NodeFsError` otherwise, with nothing moved."""
        ...

    def lock(self, command: str, error: type[KubereviveError] = NodeFsError) -> contextlib.AbstractContextManager[None]:
        """Hold the node's lock for a run of ``command``; ``error`` at once when another run holds it."""
        ...

    def run(self, argv: Sequence[str], input: bytes | None = None, timeout: float = DEFAULT_TIMEOUT) -> Result:
        """Run ``argv`` on the node (no shell); a non-zero exit is a :class:`Result`, not an error."""
        ...

    def restart_unit(self, unit: str) -> None:
        """``systemctl restart unit``; a failure is a :class:`~kuberevive.errors.KubereviveError` naming it."""
        ...

    def stop_unit(self, unit: str) -> None:
        """``systemctl stop unit``; a failure is a :class:`~kuberevive.errors.KubereviveError` naming it."""
        ...

    def containers(self, name: str | None = None) -> list[Container]:
        """The running CRI containers (only those called exactly ``name`` when given)."""
        ...


def parse_crictl_ps(data: bytes | str, name: str | None = None) -> list[Container]:
    """The containers in ``crictl ps -o json`` output (only those called exactly ``name`` when given).
    Raises ``ValueError`` when it is not that JSON."""
    try:
        items = json.loads(data).get("containers") or []
        out = [
            Container(
                id=str(c["id"]),
                name=str(c["metadata"]["name"]),
                state=str(c.get("state", "")),
                created_at=int(c.get("createdAt") or 0) / 1e9,
                pod_name=str((c.get("labels") or {}).get("io.kubernetes.pod.name", "")),
                pod_namespace=str((c.get("labels") or {}).get("io.kubernetes.pod.namespace", "")),
            )
            for c in items
        ]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not the JSON of 'crictl ps -o json': {exc}") from exc
    return [c for c in out if name is None or c.name == name]


def repoint_symlink(host: Host, node_path: PurePosixPath, target: str, now: datetime | None) -> PurePosixPath | None:
    """:meth:`Host.repoint_symlink` with the host's own operations (the same steps on every host)."""
    if host.readlink(node_path) == target:
        return None
    aside = host.move_aside(node_path, now)
    host.replace_symlink(node_path, target)
    return aside


def _crictl(cri_socket: str | None) -> list[str]:
    return ["crictl"] + (["--runtime-endpoint", cri_socket] if cri_socket else [])


#: Seconds a stopped container gets between SIGTERM and SIGKILL unless the caller says otherwise: a Pod's default
#: grace period, which the kubelet gives it when it stops the Pod (a control plane's: manifests.stop_grace_seconds).
#: ``crictl stop`` without ``--timeout`` is 0: containerd sends SIGKILL at once (``StopContainer`` with timeout 0), so
#: a kube-apiserver would cut the requests in flight and never fail ``/readyz`` first for a load balancer.
STOP_GRACE_SECONDS = 30


def crictl_stop(cri_socket: str | None, container_id: str, grace: int = STOP_GRACE_SECONDS) -> list[str]:
    """``crictl stop`` of one container, graceful: SIGTERM, then SIGKILL after ``grace`` seconds; it returns once
    the container has stopped."""
    return [*_crictl(cri_socket), "stop", "--timeout", str(grace), container_id]


class LocalHost:
    """The node the tool runs on: files through :class:`NodeRoot` (``--root``), commands through
    :mod:`kuberevive.io.process`. ``live`` is decided once by the caller (the CLI: ``--root`` is this machine's
    ``/``); a host that is not live never runs systemctl, crictl, kubelet or ip: it reports no units, no
    containers, no addresses, and refuses to restart a unit."""

    def __init__(self, root: NodeRoot, *, live: bool, name: str = "localhost") -> None:
        self.root = root
        self.name = name
        self._live = live

    @property
    def live(self) -> bool:
        return self._live

    # -- files -------------------------------------------------------------------------------

    def read(self, node_path: PurePosixPath) -> bytes | None:
        return self.root.read(node_path)

    def read_many(self, node_paths: Sequence[PurePosixPath]) -> dict[PurePosixPath, bytes | None]:
        return {p: self.root.read(p) for p in node_paths}

    def exists(self, node_path: PurePosixPath) -> bool:
        return self.root.exists(node_path)

    def readlink(self, node_path: PurePosixPath) -> str | None:
        return self.root.readlink(node_path)

    def write(
        self, node_path: PurePosixPath, content: bytes, mode: int, now: datetime | None = None
    ) -> PurePosixPath | None:
        art = Artifact(node_path, mode, ArtifactKind.CONFIG, str(node_path), content)
        (done,) = self.root.write_all([art], force=True, now=now)
        return done.moved_aside_to

    def move_aside(self, node_path: PurePosixPath, now: datetime | None = None) -> PurePosixPath | None:
        return self.root.move_aside(node_path, now=now)

    def replace_symlink(self, node_path: PurePosixPath, target: str) -> None:
        self.root.replace_symlink(node_path, target)

    def repoint_symlink(
        self, node_path: PurePosixPath, target: str, now: datetime | None = None
    ) -> PurePosixPath | None:
        return repoint_symlink(self, node_path, target, now)

    def rename(self, node_path: PurePosixPath, new_path: PurePosixPath) -> None:
        self.root.rename(node_path, new_path)

    @contextlib.contextmanager
    def lock(self, command: str, error: type[KubereviveError] = NodeFsError) -> Iterator[None]:
        with self.root.lock(command, error):
            yield

    # -- commands ----------------------------------------------------------------------------

    def run(self, argv: Sequence[str], input: bytes | None = None, timeout: float = DEFAULT_TIMEOUT) -> Result:
        return run_here(self.name, argv, input, timeout)

    def _try(self, argv: Sequence[str], timeout: float) -> process.Completed[str] | None:
        """On a live host: the finished command, or None when it is missing, cannot start or times out."""
        return process.try_run(argv, timeout=timeout) if self._live else None

    def unit_active(self, unit: str) -> bool:
        proc = self._try(["systemctl", "is-active", unit], 10)
        return proc is not None and proc.stdout.strip() in ("active", "activating")

    def restart_unit(self, unit: str) -> None:
        self._systemctl("restart", unit)

    def stop_unit(self, unit: str) -> None:
        self._systemctl("stop", unit)

    def _systemctl(self, action: str, unit: str) -> None:
        done = {"restart": "restarted", "stop": "stopped"}[action]
        if not self._live:
            raise PlanError(
                f"{unit} cannot be {done}: {self.root.prefix} is not this machine's own root",
                f"{action} {unit} on the node itself",
            )
        proc = self._try(["systemctl", action, unit], 60)
        if proc is None:
            raise PlanError("systemctl is not available on this node", f"{action} {unit} by hand, then run again")
        if proc.returncode != 0:
            raise PlanError(
                f"'systemctl {action} {unit}' failed: {(proc.stderr or proc.stdout).strip()[:200]}",
                f"check 'systemctl status {unit}', then run again",
            )

    def containers(self, name: str | None = None, cri_socket: str | None = None) -> list[Container]:
        argv = [*_crictl(cri_socket), "ps", "-o", "json"] + (["--name", f"^{name}$"] if name else [])
        proc = self._try(argv, 20)
        if proc is None or proc.returncode != 0:
            return []
        try:
            return parse_crictl_ps(proc.stdout, name)
        except ValueError:
            return []

    def stop_containers(self, name: str, cri_socket: str | None = None, grace: int = STOP_GRACE_SECONDS) -> int:
        """Stop the running containers called ``name`` gracefully (:func:`crictl_stop`: SIGTERM, SIGKILL only after
        ``grace`` seconds; each awaited stopped) and the kubelet starts them again from their static Pod, reading the
        certificate files anew; how many were stopped."""
        ids = [c.id for c in self.containers(name, cri_socket)]
        for cid in ids:
            self._try(crictl_stop(cri_socket, cid, grace), grace + 30)
        return len(ids)

    def container_created_at(self, name: str, cri_socket: str | None = None) -> float | None:
        """When the newest running container called ``name`` was created (UNIX seconds)."""
        stamps = [c.created_at for c in self.containers(name, cri_socket) if c.created_at]
        return max(stamps) if stamps else None

    def addresses(self) -> tuple[str, ...]:
        """Global addresses of the node's interfaces."""
        proc = self._try(["ip", "-j", "addr", "show"], 5)
        if proc is None or proc.returncode != 0:
            return ()
        try:
            links = json.loads(proc.stdout or "[]")
        except ValueError:
            return ()
        return tuple(
            str(info["local"])
            for link in links
            for info in link.get("addr_info", [])
            if info.get("scope") == "global" and info.get("local")
        )

    def images(self, cri_socket: str | None = None) -> tuple[str, ...]:
        """Image references the container runtime knows (``repo/name:tag``)."""
        proc = self._try([*_crictl(cri_socket), "images", "-o", "json"], 20)
        if proc is None or proc.returncode != 0:
            return ()
        try:
            images = json.loads(proc.stdout).get("images") or []
        except ValueError:
            return ()
        return tuple(sorted(t for i in images for t in i.get("repoTags") or []))

    def kubelet_healthz(self, address: str, port: int) -> tuple[bool, str]:
        """The running kubelet's own health endpoint (``healthzBindAddress``:``healthzPort`` of its configuration,
        plain HTTP on the node): (True, "ok") once it runs its sync loop; a kubelet that exits at start never
        answers. Not live: (False, why)."""
        if not self._live:
            return False, f"{self.root.prefix} is not this machine's root"
        return local_healthz(address, port)

    def kubelet_version(self) -> str | None:
        proc = self._try(["kubelet", "--version"], 10)
        if proc is None or proc.returncode != 0:
            return None
        words = proc.stdout.split()
        return words[-1] if words and words[-1].startswith("v") else None
