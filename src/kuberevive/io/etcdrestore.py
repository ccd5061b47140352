"""Restore a lost etcd data directory from a snapshot on a single control-plane node.

Steps (each undone if a later one fails before the new data directory is in place):

1. stop the API server, then etcd: move ``/etc/kubernetes/manifests/kube-apiserver.yaml``, then ``etcd.yaml``, to
   ``/etc/kubernetes/tmp/`` (the kubelet stops each static pod; the API server's container is also stopped with its
   own drain grace, as ``certs renew`` stops it: the kubelet would give it 30 s for its open watches) and wait with
   ``crictl`` until its container no longer runs (the API server first, while etcd still answers). The API server
   is stopped as the Kubernetes documentation's etcd restore says, and for a reason measured on the lab (v1.37):
   an API server without its etcd accepts connections and answers nothing, and the kubelet's housekeeping, which
   deletes the stopped etcd's mirror Pod through it, blocked the kubelet's sync loop 34 s at a time: the etcd
   manifest put back was not started for minutes. With the API server stopped that call is refused at once;
2. keep the old data directory: rename it to ``<data-dir>.kuberevive-<UTC timestamp>`` (never deleted);
3. ``etcdutl snapshot restore`` with the member name, initial cluster and peer URLs of the manifest, into a
   staging directory beside the data directory, then rename it into place (mode 0700). The snapshot is
   handed to etcdutl as an open file descriptor (``/proc/self/fd/N``): a snapshot file is never copied or read
   into memory (it may even be the old data directory's ``member/snap/db``, restored with
   ``skip_hash_check``: the descriptor follows the file when the directory is moved aside);
4. put etcd's manifest back and wait until etcd answers ``/health`` over mTLS, then the API server's (also when
   etcd does not become healthy: the node is left with both manifests in place).

Before step 1 the etcd safety preflight runs (:func:`kuberevive.core.etcdsafety.restore_preflight`): a restore
that would split a multi-member cluster, put 3.5 data under an etcd 3.6 from an older 3.5 than 3.5.26, or restore
a database over its quota is refused with its named reason, and nothing is changed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from kuberevive.core import etcdsafety
from kuberevive.core.backup import SHA256_SIZE, EtcdMember, etcd_member
from kuberevive.core.manifests import manifest_flags, parse_manifest, stop_grace_seconds
from kuberevive.errors import BackupError, EtcdError, KubereviveError
from kuberevive.io import etcdprobe, process
from kuberevive.io.etcd import EtcdClient
from kuberevive.io.host import LocalHost
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.kubeadm_yaml import node_dir_problem
from kuberevive.model.paths import (
    APISERVER_MANIFEST,
    ETCD_CA_CRT,
    ETCD_HEALTHCHECK_CLIENT,
    ETCD_MANIFEST,
    KUBERNETES_TMP_DIR,
)
from kuberevive.waiting import poll_until


@dataclass
class RestoreResult:
    member: EtcdMember
    old_data_dir: PurePosixPath | None
    manifest_on_node: bool
    healthy: bool
    seconds: float
    steps: list[str]


def find_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise EtcdError(
            f"{name} is not on PATH",
            f"install {name} (from the etcd release that matches the node's etcd) and run again",
        )
    return path


#: Seconds after etcd's manifest is back without an etcd container running before the kubelet is restarted once
#: (etcd starts 1-3 s after its manifest on the lab).
KUBELET_KICK_AFTER = 10.0


def member_from_manifest(manifest: bytes, source: str) -> EtcdMember:
    try:
        member = etcd_member(manifest_flags(parse_manifest(manifest)), source)
    except KubereviveError as exc:
        raise BackupError(f"{source}: {exc.message}", exc.hint or "check the etcd manifest") from exc
    reason = node_dir_problem(str(member.data_dir))
    if reason:
        raise BackupError(
            f"{source}: --data-dir={member.data_dir} {reason}; nothing was changed",
            "fix the etcd manifest (kubeadm writes --data-dir=/var/lib/etcd)",
        )
    return member


def _ready_sandboxes(crictl: str, name: str) -> list[str]:
    """The ids of the ready pod sandboxes of the static Pod whose ``component`` label is ``name`` (kubeadm's label):
    the kubelet stops the sandbox after the containers once it has processed the Pod's removal."""
    proc = process.run(
        [crictl, "pods", "-q", "--label", f"component={name}", "--state", "ready"], text=True, timeout=30
    )
    return proc.stdout.split() if proc.returncode == 0 else []


def _running(crictl: str, name: str) -> list[str]:
    """The ids of the running containers named exactly ``name``."""
    proc = process.run([crictl, "ps", "-q", "--name", f"^{name}$", "--state", "Running"], text=True, timeout=30)
    if proc.returncode != 0:
        raise EtcdError(
            f"crictl cannot list containers: {proc.stderr.strip()[:200]}",
            "check that the container runtime runs and /etc/crictl.yaml points at it",
        )
    return proc.stdout.split()


def restore_etcd(
    root: NodeRoot,
    snapshot: bytes | Path,
    *,
    skip_hash_check: bool = False,
    fallback_manifest: bytes | None = None,
    progress: Callable[[str], None] = lambda _s: None,
    stop_timeout: float = 120.0,
    health_timeout: float = 180.0,
    now: datetime | None = None,
) -> RestoreResult:
    """Restore ``snapshot`` (bytes as etcd streamed them, or a snapshot file, streamed) as a new one-member etcd;
    see the module docstring. ``skip_hash_check``: the snapshot is a db copied from a data directory (no sha256
    trailer)."""
    start = time.monotonic()
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    etcdutl = find_tool("etcdutl")
    manifest = root.read(ETCD_MANIFEST)
    manifest_on_node = manifest is not None
    if manifest is None:
        if fallback_manifest is None:
            raise EtcdError(
                f"there is no {ETCD_MANIFEST} on this node and the snapshot is not in a backup that has one",
                "restore the manifests first (backup restore) or pass a kuberevive backup",
            )
        manifest = fallback_manifest
    member = member_from_manifest(manifest, str(ETCD_MANIFEST))
    crictl = find_tool("crictl") if manifest_on_node else ""
    snap_fd = _snapshot_fd(snapshot)
    try:
        return _restore(
            root, snap_fd, member, manifest_on_node, crictl, etcdutl, stamp, start,
            skip_hash_check=skip_hash_check, manifest=manifest, progress=progress, stop_timeout=stop_timeout,
            health_timeout=health_timeout,
        )  # fmt: skip
    finally:
        os.close(snap_fd)


def _snapshot_fd(snapshot: bytes | Path) -> int:
    """A read-only descriptor of the snapshot: the file itself, or an anonymous in-memory file for bytes."""
    if isinstance(snapshot, bytes):
        fd = os.memfd_create("kuberevive-etcd-snapshot")
        with os.fdopen(os.dup(fd), "wb") as fh:
            fh.write(snapshot)
        return fd
    try:
        fd = os.open(snapshot, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise BackupError(f"cannot open the snapshot {snapshot}: {exc.strerror}", "check the path") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BackupError(f"the snapshot {snapshot} is not a regular file", "pass an etcd snapshot file")
    return fd


def _restore(
    root: NodeRoot,
    snap_fd: int,
    member: EtcdMember,
    manifest_on_node: bool,
    crictl: str,
    etcdutl: str,
    stamp: str,
    start: float,
    *,
    skip_hash_check: bool,
    manifest: bytes,
    progress: Callable[[str], None],
    stop_timeout: float,
    health_timeout: float,
) -> RestoreResult:
    size = os.fstat(snap_fd).st_size
    facts = etcdprobe.facts(root, live=manifest_on_node, manifest=manifest, with_data=False)
    problems = etcdsafety.restore_preflight(facts, size if skip_hash_check else size - SHA256_SIZE)
    etcdsafety.refuse(problems, "restore-etcd")
    data_dir = root.node_path_of(root.host_path(member.data_dir))  # a symlinked data directory: its target
    staging_dir = data_dir.with_name(f"{data_dir.name}.kuberevive-restore-{stamp}")
    old = data_dir.with_name(f"{data_dir.name}.kuberevive-{stamp}")
    staging = root.host_path(staging_dir)
    for p in (staging_dir, old):
        if root.lstat(p) is not None:
            raise EtcdError(f"{root.host_path(p)} already exists", "wait a second and run again")
    steps: list[str] = []

    host = LocalHost(root, live=root.prefix == Path("/"))

    def stop(name: str, manifest: PurePosixPath, aside: PurePosixPath) -> bool:
        """Stop the static Pod ``name``: its manifest moved to ``aside`` (the kubelet stops it; its container is
        stopped too, with the grace the tool gives it: the kubelet gives an API server 30 s for its open watches,
        manifests.stop_grace_seconds), then wait until no container of that name runs. Whether one ran."""
        ran = bool(_running(crictl, name))
        pod = root.read(manifest)
        root.rename(manifest, aside)
        steps.append(f"moved {manifest} to {aside} to stop {name}")
        progress(f"stopping {name} (manifest moved to {aside})")
        grace = stop_grace_seconds(name, pod)
        host.stop_containers(name, grace=grace)

        def stopped() -> tuple[bool, str]:
            # a kubelet that had not yet seen the manifest go may start the container again (measured: an API
            # server then ran 36 s more, the kubelet's 30 s grace): stopped again, with its own grace, until it stays
            # stopped. No container running is not enough for one that was crash-looping (none ran before): the
            # kubelet may be about to start it again (and create its data directory); its sandbox no longer ready
            # says it let the Pod go
            if _running(crictl, name):
                host.stop_containers(name, grace=grace)
                return False, "its container runs (stopped again)"
            if name != "etcd":  # only etcd's data directory matters here
                return True, ""
            return not _ready_sandboxes(crictl, name), "its pod sandbox is still ready"

        if not poll_until(f"{name} to stop", stop_timeout, stopped, 1.0, retry=()).ok:
            raise EtcdError(
                f"{name} did not stop within {stop_timeout:.0f} s after its manifest was moved away",
                "check the kubelet (is it running?), then run again",
            )
        steps.append(f"{name} container stopped")
        return ran

    aside: PurePosixPath | None = None
    api_aside: PurePosixPath | None = None
    moved_old = etcd_ran = False
    try:
        if manifest_on_node:
            # same file system as the manifest (a rename), outside the directory the kubelet watches
            root.ensure_dir(KUBERNETES_TMP_DIR)
            if root.exists(APISERVER_MANIFEST):  # first, and stopped before etcd: it drains while etcd answers
                api_aside = KUBERNETES_TMP_DIR / f"kuberevive-kube-apiserver-{stamp}.yaml"
                stop("kube-apiserver", APISERVER_MANIFEST, api_aside)
            aside = KUBERNETES_TMP_DIR / f"kuberevive-etcd-{stamp}.yaml"
            etcd_ran = stop("etcd", ETCD_MANIFEST, aside)
        if root.exists(data_dir):
            root.rename(data_dir, old)
            moved_old = True
            steps.append(f"kept the old data directory as {root.host_path(old)}")
            progress(f"old data directory kept as {root.host_path(old)}")
        progress("etcdutl snapshot restore")
        _etcdutl_restore(etcdutl, member, snap_fd, staging, skip_hash_check)
        os.chmod(staging, 0o700)
        if root.lstat(data_dir) is not None:  # made again meanwhile (a kubelet starting etcd as it let it go): kept
            late = data_dir.with_name(f"{data_dir.name}.kuberevive-{stamp}-late")
            root.rename(data_dir, late)
            steps.append(f"kept a data directory made during the restore as {root.host_path(late)}")
        root.rename(staging_dir, data_dir)
        steps.append(f"restored the snapshot into {member.data_dir} (a new one-member cluster)")
    except BaseException:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)  # only our own partial output
        if moved_old and root.lstat(data_dir) is None:
            root.rename(old, data_dir)
        if aside is not None:
            root.rename(aside, ETCD_MANIFEST)
        if api_aside is not None:
            root.rename(api_aside, APISERVER_MANIFEST)
        raise

    healthy = False
    if aside is not None:
        root.rename(aside, ETCD_MANIFEST)
        steps.append(f"moved {ETCD_MANIFEST} back")
        # An etcd that crash-looped before the restore (no container ran when it was stopped): the kubelet keeps its
        # restart back-off (up to 5 min; 40-80 s seen on the lab) for the Pod put back with the same manifest. A
        # restarted kubelet forgets it and, with no API server to wait on, starts etcd at once (running containers
        # are kept). Done at once then, else once if no etcd container runs KUBELET_KICK_AFTER seconds later.
        kicked = False

        def kick(why: str) -> None:
            nonlocal kicked
            kicked = True
            progress(f"{why}: restarting the kubelet (it forgets etcd's restart back-off; containers keep running)")
            with contextlib.suppress(KubereviveError):
                host.restart_unit("kubelet")
                steps.append(f"restarted the kubelet ({why})")

        if not etcd_ran:
            kick("etcd was not running before the restore")
        progress("waiting for etcd to be healthy")
        started = time.monotonic()

        def etcd_healthy() -> tuple[bool, str]:
            if _healthy(root, member):
                return True, ""
            if kicked or time.monotonic() - started < KUBELET_KICK_AFTER or _running(crictl, "etcd"):
                return False, "not healthy yet"
            kick(f"no etcd container runs {KUBELET_KICK_AFTER:.0f} s after its manifest is back")
            return False, "not healthy yet (the kubelet was restarted)"

        try:
            healthy = poll_until("etcd to be healthy", health_timeout, etcd_healthy, 1.0, retry=()).ok
        finally:
            if api_aside is not None:  # in any case: the node keeps every manifest it had
                root.rename(api_aside, APISERVER_MANIFEST)
                steps.append(f"moved {APISERVER_MANIFEST} back")
                progress("the API server's manifest is back: the kubelet starts it")
        if not healthy:
            kept = f" (old data kept as {root.host_path(old)})" if moved_old else ""
            raise EtcdError(
                f"etcd was restored but is not healthy after {health_timeout:.0f} s{kept}",
                "check the etcd container's log with crictl logs",
            )
        steps.append("etcd is healthy")
    old_node_path = old if moved_old else None
    return RestoreResult(member, old_node_path, manifest_on_node, healthy, time.monotonic() - start, steps)


def _etcdutl_restore(etcdutl: str, member: EtcdMember, fd: int, target: Path, skip_hash_check: bool) -> None:
    args = member.restore_args(f"/proc/self/fd/{fd}", str(target), skip_hash_check=skip_hash_check)
    proc = process.run([etcdutl, *args], text=True, timeout=3600, pass_fds=(fd,))  # inherited by etcdutl
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
        raise EtcdError(f"etcdutl snapshot restore failed: {last}", "check the snapshot with etcdutl snapshot status")


def _healthy(root: NodeRoot, member: EtcdMember) -> bool:
    ca = root.read(ETCD_CA_CRT)
    cert, key = root.read(f"{ETCD_HEALTHCHECK_CLIENT}.crt"), root.read(f"{ETCD_HEALTHCHECK_CLIENT}.key")
    if not (ca and cert and key):
        return False
    with contextlib.suppress(KubereviveError):
        ok, _ = EtcdClient(member.client_url, ca, cert, key, timeout=3.0).health()
        return ok
    return False
