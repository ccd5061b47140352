"""The kubelet during a recovery: started early so it runs etcd at once (step kubelet-start), restarted with its new
credentials (kubelet-restart, kubelet-via-peer), and the provisional files that let it start before the cluster CA
exists.

A kubelet restart does not touch running containers: the kubelet finds its pods' containers in the container
runtime when it starts and keeps them (static pods from the manifests directory, the others once the API server
lists them again); it stops a container only when its pod is deleted or its manifest changes. The lab tests check
the workload's container IDs and restart counts across every restart a recovery makes.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from kuberevive.core import recover as core
from kuberevive.core.retrust import client_ca_file, kubelet_healthz
from kuberevive.errors import KubereviveError, PlanError
from kuberevive.model import paths
from kuberevive.run.context import AheadStop, StepContext
from kuberevive.waiting import QUICK, wait_for

STEP_ID = "kubelet-start"
KUBELET_TIMEOUT = 120.0


def ensure_manifests_dir(ctx: StepContext) -> None:
    """Create the static Pod directory if it is missing, noting when: a kubelet that watched the old one (deleted
    with /etc/kubernetes) never watches the new one again (its inotify watch died with the directory; kubernetes
    ``pkg/kubelet/config/file_linux.go``), so it sees manifests there only at its 20 s re-list."""
    if not ctx.root.exists(paths.MANIFESTS_DIR):
        ctx.root.ensure_dir(paths.MANIFESTS_DIR)
        ctx.journal.timing("manifests_dir_created", ctx.clock())


def _healthy(ctx: StepContext) -> tuple[bool, str]:
    endpoint = kubelet_healthz(ctx.root.read(paths.KUBELET_CONFIG))
    if endpoint is None:  # healthz turned off: the unit's state is all there is
        return ctx.host.unit_active("kubelet"), "the kubelet service is not active"
    return ctx.host.kubelet_healthz(*endpoint)


def kubelet_state(ctx: StepContext) -> str:
    """'answers /healthz', or why it does not, for a message."""
    ok, why = _healthy(ctx)
    return "answers /healthz" if ok else f"does not run ({why})"


def stop_orphaned_apiserver(ctx: StepContext) -> None:
    """Stop a kube-apiserver container whose static Pod manifest is gone, before the kubelet is restarted.

    Such a container is left when the kubelet is restarted before it finished stopping the static pods of a deleted
    manifests directory. Without etcd it accepts connections and answers nothing, and a restarted kubelet (measured
    with v1.37 on the lab) then starts no static Pod, etcd included, for about two minutes: it waits for its Node
    object from that API server before it starts pods it finds already stopped. With the container stopped the
    connection is refused, and the kubelet starts etcd within seconds, as during ``kubeadm init``. Safe: the kubelet
    stops this container itself once it has synced (its Pod is no longer desired), and with its manifest gone it is
    not the API server any client should reach; the control-plane-manifests step writes the new one. Called only
    while etcd is not up yet (kubelet-start, etcd-ready): later an orphan may serve again, and the kubelet adopts it
    when the new manifest is the same."""
    if ctx.root.exists(paths.APISERVER_MANIFEST):
        return
    if ctx.host.stop_containers("kube-apiserver", ctx.identity.cri_socket, grace=0):  # it serves nothing: no drain
        ctx.progress(
            f"      a kube-apiserver container still ran without its manifest ({paths.APISERVER_MANIFEST}): stopped, "
            "so the restarted kubelet does not wait on it"
        )


def restart_kubelet(ctx: StepContext) -> None:
    """``systemctl restart kubelet`` (containers keep running, see the module docstring), then wait until the new
    kubelet answers its /healthz: a kubelet that cannot start (a file it needs is missing or wrong) never does."""
    ctx.host.restart_unit("kubelet")
    ctx.journal.timing("kubelet_started", ctx.clock())
    try:
        wait_for(
            "the kubelet (/healthz)",
            KUBELET_TIMEOUT,
            lambda: _healthy(ctx),
            QUICK,
            clock=ctx.monotonic,
            sleep=ctx.sleep,
        )
    except PlanError as exc:
        raise PlanError(
            f"the kubelet did not start: {exc.message}",
            "see why with 'journalctl -u kubelet', fix it, then run 'kuberevive recover --apply' again",
        ) from exc


def kubelet_start(ctx: StepContext, i: int) -> None:
    """Step kubelet-start: make the kubelet run etcd now. Restarted when it does not run (as after a reboot: it
    crash-loops without its client CA file and kubelet.conf, which are then written provisionally) or when it
    watched the manifests directory this run re-created; left alone when it runs and still watches it."""
    if not ctx.host.live:
        ctx.progress(f"      {ctx.root.prefix} is not this machine's root: its kubelet is left alone")
        return
    created = ctx.journal.timing("manifests_dir_created")
    started = ctx.journal.timing("kubelet_started")
    watch_lost = created is not None and (started is None or started < created)
    running, why = _healthy(ctx)
    if ctx.journal.early_config:
        early_kubelet_start(ctx, running, why, started)
        return
    if running and not watch_lost:
        ctx.progress("      the kubelet runs and watches the manifests directory: nothing to do")
        return
    ca_path = PurePosixPath(client_ca_file(ctx.root.read(paths.KUBELET_CONFIG)))
    need_ca = None if ctx.root.exists(ca_path) else ca_path
    need_conf = not ctx.root.exists(paths.KUBELET_CONF)
    if need_ca is not None and ca_path != paths.CA_CRT:
        raise PlanError(
            f"the kubelet's clientCAFile {ca_path} is missing and is not the cluster CA's path {paths.CA_CRT}, so "
            "the kubelet cannot start and recover would not replace a provisional one there",
            f"copy the cluster CA (or {paths.CA_CRT} once written) to {ca_path}, then run 'kuberevive recover "
            "--apply' again",
        )
    if need_ca is not None or need_conf or ctx.journal.artifacts(STEP_ID) is not None:
        ctx.write_step_files(
            STEP_ID, i, lambda: core.provisional_kubelet_files(ctx.bootstrap_cfg(), ctx.utcnow(), need_ca, need_conf)
        )
    said = "does not run (" + why + ")" if not running else "watched the deleted manifests directory"
    ctx.progress(f"      the kubelet {said}: restarting it (running containers are kept)")
    stop_orphaned_apiserver(ctx)
    restart_kubelet(ctx)


def stop_ahead(ctx: StepContext) -> None:
    """At the start of a first run in the early order, begin stopping the kubelet in the background: kubelet-start
    restarts it anyway once every file is written, and its stop (0.2 s on the lab) then overlaps the first steps
    instead of delaying etcd's start, as in the manual procedure (``systemctl stop kubelet`` first). Its containers
    keep running. Not on a resumed run that started the kubelet already, nor when the step is done."""
    journal = ctx.journal
    if not (ctx.host.live and journal.early_config) or journal.step_done(STEP_ID):
        return
    if journal.timing("kubelet_started") is not None:
        return
    stop = ctx.kubelet_stop = AheadStop("kubelet")
    ctx.fx.background(lambda: stop.run(ctx.host.stop_unit))


def start_again_after_failure(ctx: StepContext) -> None:
    """A run that stopped the kubelet ahead and failed before kubelet-start: start it again (with the files now on
    the node), so a failed run does not leave the node without its kubelet. Best effort: the error that ended the run
    is the one the operator reads."""
    if ctx.kubelet_stop is None or ctx.journal.step_done(STEP_ID):
        return
    if ctx.kubelet_stop.settle(KUBELET_TIMEOUT) != "stopped":
        return
    try:
        ctx.host.restart_unit("kubelet")
        ctx.progress("      the kubelet stopped at the run's start was started again")
    except KubereviveError as exc:
        ctx.progress(f"      the kubelet stopped at the run's start could not be started again: {exc}")


def early_kubelet_start(ctx: StepContext, running: bool, why: str, started: float | None) -> None:
    """kubelet-start when every file was written first (the configuration read from etcd's data files): one restart
    makes the kubelet take its new CA and client certificate and start etcd and the control plane from the manifests
    directory at once. Done once: a kubelet started after kubelet-client wrote its credentials already has them. A
    kube-apiserver container left from before this run is stopped first: the restarted kubelet would wait on it (see
    :func:`stop_orphaned_apiserver`), and it runs with the old certificates; the kubelet starts the new one."""
    written = ctx.journal.timing("kubelet_client_written")
    if running and started is not None and written is not None and started >= written:
        ctx.progress("      the kubelet was restarted with its new credentials: nothing to do")
        return
    run_started = ctx.journal.timing("started")
    old = [
        c
        for c in ctx.host.containers("kube-apiserver", ctx.identity.cri_socket)
        if run_started is not None and (c.created_at or 0) < run_started
    ]
    if old and ctx.host.stop_containers("kube-apiserver", ctx.identity.cri_socket, grace=0):  # etcd is not up
        ctx.progress("      a kube-apiserver container from before this recovery was stopped (etcd is not running)")
    ahead = ctx.kubelet_stop.settle(KUBELET_TIMEOUT) if ctx.kubelet_stop is not None else None
    if ahead == "stopped":
        said = "was stopped at the run's start"
    else:
        said = f"does not run ({why})" if not running else "runs with its old credentials"
        if ahead is not None and ahead.startswith("failed"):
            said += f"; its stop at the run's start {ahead}"
    ctx.progress(
        f"      the kubelet {said}: (re)starting it (running containers are kept); it starts etcd and the control "
        "plane at once"
    )
    ctx.journal.timing("kubelet_restarted", ctx.clock())
    restart_kubelet(ctx)


def drop_provisional(ctx: StepContext) -> None:
    """Move aside the provisional files of kubelet-start still on the node as written, before the certs step judges
    the node's files (a CA certificate without its key would read as an external CA). The running kubelet keeps
    what it loaded; kubelet-restart restarts it with the real files."""
    for a in ctx.journal.artifacts(STEP_ID) or []:
        if ctx.root.read(a.path) == a.content:
            aside = ctx.move_aside(a.path)
            ctx.messages.append(f"{a.path} (provisional, from kubelet-start) moved aside to {aside}")
