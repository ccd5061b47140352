"""The all-masters steps (:mod:`kuberevive.core.allmasters`): the other control-plane nodes, over SSH.

Each master's files are computed once and recorded in the journal (``<step>:<node>``) before anything is written
there, so a run killed in the middle of a remote write writes exactly the same bytes when resumed; a write of the
same bytes is a no-op, a different existing file is moved aside on that node. A master whose control plane is done
is recorded in the journal's per-node states (``retrust``) and skipped by a resumed run and by ``retrust-nodes``.
A master that cannot be reached is named with what to do; the run resumes at that step once it is reachable.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import PurePosixPath

from kuberevive.core import allmasters as core
from kuberevive.core import recover as rcore
from kuberevive.core.retrust import ready_since
from kuberevive.errors import EtcdError, KubereviveError, PlanError, TransportError
from kuberevive.io.etcd import EtcdClient
from kuberevive.io.host import Host
from kuberevive.io.kubeapi import KubeApi
from kuberevive.io.nodefacts import CA_CERT_DIRS
from kuberevive.io.remotehost import SshHost
from kuberevive.model import paths
from kuberevive.model.artifacts import Artifact
from kuberevive.model.config import NodeFacts
from kuberevive.model.inventory import InventoryNode
from kuberevive.model.recover import NodeIdentity
from kuberevive.run.context import StepContext, etcd_client_files
from kuberevive.run.journal import NodeRetrust
from kuberevive.run.steps.salvage import etcd_members
from kuberevive.waiting import wait_for

QUORUM_TIMEOUT = 240.0
MASTER_API_TIMEOUT = 300.0
MASTER_READY_TIMEOUT = 180.0


def masters(ctx: StepContext) -> list[NodeIdentity]:
    """The other control-plane nodes of the all-masters case (the journal's)."""
    return list(ctx.journal.masters or [])


def _reach(ctx: StepContext, master: NodeIdentity) -> InventoryNode:
    """How the options reach a master (``--peer``, else the inventory)."""
    for node in (*ctx.options.peers, *(ctx.options.inventory.nodes if ctx.options.inventory is not None else ())):
        if node.name == master.node_name:
            return node
    raise PlanError(
        f"the recovery acts on control-plane node {master.node_name} ({master.advertise_address}), but this run was "
        "not told how to reach it",
        "run 'kuberevive recover --apply' again with the same --peer (or --inventory) options",
    )


def _facts(ctx: StepContext, master: NodeIdentity, host: Host | None) -> NodeFacts:
    """What kubeadm would detect on that master (the optional CA-certificate volumes exist there or not)."""
    existing = ctx.facts.existing_paths
    if host is not None:  # one command: each one is an SSH round trip
        r = host.run(["sh", "-c", 'for d; do [ -d "$d" ] && echo "$d"; done; exit 0', "sh", *CA_CERT_DIRS])
        if not r.ok:
            raise TransportError(f"{master.node_name}: cannot list its CA-certificate directories", "check SSH")
        existing = frozenset(line for line in r.stdout.decode(errors="replace").splitlines() if line in CA_CERT_DIRS)
    return NodeFacts(master.node_name, master.advertise_address, existing, ctx.facts.proxy_env)


def _local_trust(ctx: StepContext, names: tuple[str, ...]) -> dict[str, bytes]:
    cdir = PurePosixPath(ctx.bootstrap_cfg().cluster.certificates_dir)
    out = {}
    for name in names:
        data = ctx.root.read(cdir / name)
        if data is None:
            raise PlanError(f"{cdir / name} is missing here although its step is done", "run recover --apply again")
        out[name] = data
    return out


def _write(ctx: StepContext, host: Host, master: str, arts: list[Artifact], index: int) -> int:
    """Write ``arts`` on a master (the same bytes and mode already there: left as they are; a different file:
    moved aside there first); the number of files moved aside. Over SSH in one command (each command is a
    login on the node); a test's kill point in the middle writes the first half first."""
    batches = [arts[: len(arts) // 2], arts[len(arts) // 2 :]] if ctx.faults.armed_mid(index) else [arts]
    replaced = 0
    for n, batch in enumerate(batches):
        if n == 1:
            ctx.faults.mid(index)
        if isinstance(host, SshHost):
            asides = host.write_many([(a.path, a.content, a.mode) for a in batch], ctx.utcnow())
        else:
            asides = [host.write(a.path, a.content, a.mode) for a in batch]
        for a, aside in zip(batch, asides, strict=True):
            if aside is not None:
                replaced += 1
                ctx.messages.append(f"{master}:{a.path} moved aside to {aside}")
    return replaced


def _unreachable(ctx: StepContext, master: NodeIdentity, exc: KubereviveError) -> str:
    why = f"{master.node_name} ({master.advertise_address}): {exc.message}"
    ctx.progress(f"      {why}")
    return why


def masters_etcd(ctx: StepContext, i: int) -> None:
    members = etcd_members(ctx)
    etcd_ca = _local_trust(ctx, core.ETCD_TRUST)
    now = ctx.utcnow()
    here = ctx.identity.node_name
    failed = []
    for m in masters(ctx):
        key = f"{core.MASTERS_ETCD}:{m.node_name}"
        try:
            with ctx.fx.master_host(_reach(ctx, m), ctx.options) as host:
                data = PurePosixPath(m.etcd_data_dir) / "member"
                if not host.exists(data):
                    raise PlanError(
                        f"{m.node_name} has no etcd data at {data}; its member cannot restart",
                        "remove it from the recovery (it is not an etcd member) or restore its data, then run again",
                    )
                arts = ctx.journal.artifacts(key)
                if arts is None:
                    arts = core.etcd_artifacts(
                        rcore.bootstrap_config(m), _facts(ctx, m, host), now, etcd_ca, members, here
                    )
                    ctx.journal.record_artifacts(key, arts)
                replaced = _write(ctx, host, m.node_name, arts, i)
        except PlanError:
            raise
        except KubereviveError as exc:
            failed.append(_unreachable(ctx, m, exc))
            continue
        ctx.progress(f"      {m.node_name}: {len(arts)} etcd file(s) in place ({replaced} moved aside)")
    total = 1 + len(masters(ctx))
    if 2 * (total - len(failed)) <= total:
        raise PlanError(
            f"etcd needs a majority of its {total} members, but {len(failed)} control-plane node(s) cannot be "
            f"reached: {'; '.join(failed)[:600]}",
            "fix their SSH access (--ssh-key, --known-hosts, --peer/--inventory) or bring them up, then run "
            "'kuberevive recover --apply' again: it resumes at this step",
        )
    for why in failed:
        ctx.messages.append(f"not reached for etcd, done with its control plane later: {why}")


def etcd_quorum(ctx: StepContext, i: int) -> None:
    ca, cert, key = etcd_client_files(ctx.root, ctx.bootstrap_cfg())
    healthy, failed = [ctx.identity.node_name], []
    for m in masters(ctx):
        client = ctx.fx.peer_etcd_client(core.client_url(m), ca, cert, key)

        def probe(client: EtcdClient = client) -> tuple[bool, str]:
            try:
                return client.health()
            except EtcdError as exc:
                return False, exc.message

        try:
            wait_for(f"etcd member {m.node_name} ({core.client_url(m)})", QUORUM_TIMEOUT, probe, 1.0)
            healthy.append(m.node_name)
        except PlanError as exc:
            failed.append(exc.message)
    total = 1 + len(masters(ctx))
    if 2 * len(healthy) <= total:
        raise PlanError(
            f"etcd has no quorum: healthy {', '.join(healthy)}; {'; '.join(failed)[:600]}",
            "look at the etcd container on those nodes (crictl ps -a; crictl logs), then run "
            "'kuberevive recover --apply' again: it resumes here; if their etcd data is lost or corrupt, restore "
            "quorum from the surviving data with 'kuberevive quorum-restore' (docs/etcd.md)",
        )
    for why in failed:
        ctx.messages.append(f"etcd member not healthy (quorum without it): {why}")
    ctx.progress(f"      healthy members: {', '.join(healthy)} (of {total})")


def masters_control_plane(ctx: StepContext, i: int) -> None:
    j = ctx.journal
    stored = j.config
    if stored is None:
        raise PlanError("the journal has no stored configuration although read-config is done", "run again")
    trust = _local_trust(ctx, paths.TRUST_FILES)
    members = etcd_members(ctx)
    here = ctx.identity.node_name
    api = ctx.api()
    with_kcm = j.guard != "on"
    failed = []
    for m in masters(ctx):
        state = j.retrust.get(m.node_name)
        if state is not None and state.state == "done":
            continue
        m = _refined(ctx, m)
        cfg = rcore.final_config(m, stored.cluster, stored.kubelet)
        key = f"{core.MASTERS_CONTROL_PLANE}:{m.node_name}"
        started = ctx.monotonic()
        try:
            with ctx.fx.master_host(_reach(ctx, m), ctx.options) as host:
                arts = j.artifacts(key)
                if arts is None:
                    etcd_files = j.artifacts(f"{core.MASTERS_ETCD}:{m.node_name}") or []
                    files, kubelet = core.control_plane_artifacts(
                        cfg,
                        _facts(ctx, m, host),
                        ctx.utcnow(),
                        trust,
                        etcd_files,
                        members,
                        j.kubelet_stamp,
                        with_kcm,
                        here,
                    )
                    arts = [*files, kubelet.pem, kubelet.kubeconfig]
                    j.record_artifacts(key, arts)
                *files, pem, kubeconfig = arts
                replaced = _write(ctx, host, m.node_name, [*files, pem], i)
                aside = host.repoint_symlink(paths.KUBELET_CLIENT_CURRENT, str(pem.path), ctx.utcnow())
                if aside is not None:
                    ctx.messages.append(f"{m.node_name}:{paths.KUBELET_CLIENT_CURRENT} moved aside to {aside}")
                replaced += _write(ctx, host, m.node_name, [kubeconfig], i)
                since = ctx.utcnow().replace(microsecond=0) - timedelta(seconds=1)
                host.restart_unit("kubelet")
                ctx.progress(
                    f"      {m.node_name}: {len(arts)} file(s) in place ({replaced} moved aside), kubelet restarted"
                )
            conf = next(a.content for a in files if a.path == paths.CONTROLLER_MANAGER_CONF)
            own = ctx.fx.kubeconfig_api(ctx.root, conf)  # its own API server, with embedded credentials
            wait_for(f"{m.node_name}'s API server ({own.shown}/readyz)", MASTER_API_TIMEOUT, own.readyz)
            _wait_ready(api, m.node_name, since)
        except PlanError:
            raise
        except KubereviveError as exc:
            failed.append(_unreachable(ctx, m, exc))
            continue
        seconds = round(ctx.monotonic() - started, 1)
        j.retrust[m.node_name] = NodeRetrust("done", "control plane recovered (all-masters)", seconds)
        j.save()
        ctx.progress(f"      {m.node_name}: its API server serves and the node is Ready ({seconds:.1f} s)")
    if failed:
        raise PlanError(
            f"{len(failed)} control-plane node(s) could not be recovered: {'; '.join(failed)[:600]}",
            "fix their SSH access (--ssh-key, --known-hosts, --peer/--inventory) or bring them up, then run "
            "'kuberevive recover --apply' again on this node: it resumes at this step (etcd has quorum without them)",
        )


def _wait_ready(api: KubeApi, name: str, since: datetime) -> None:
    node = f"/api/v1/nodes/{name}"
    wait_for(f"node {name} Ready", MASTER_READY_TIMEOUT, lambda: ready_since(api.get(node), since))


def _refined(ctx: StepContext, m: NodeIdentity) -> NodeIdentity:
    """The master with this node's API port (read-config may have refined it from etcd)."""
    if m.bind_port == ctx.identity.bind_port:
        return m
    return NodeIdentity(
        m.node_name,
        m.advertise_address,
        ctx.identity.bind_port,
        m.cri_socket,
        m.etcd_data_dir,
        m.kubernetes_version,
        m.etcd_image,
        m.sources,
    )


def masters_controller_managers(ctx: StepContext, i: int) -> None:
    stored = ctx.journal.config
    if stored is None:
        raise PlanError("the journal has no stored configuration although read-config is done", "run again")
    failed = []
    for m in masters(ctx):
        m = _refined(ctx, m)
        cfg = rcore.final_config(m, stored.cluster, stored.kubelet)
        try:
            with ctx.fx.master_host(_reach(ctx, m), ctx.options) as host:
                changed = _write(
                    ctx, host, m.node_name, [core.controller_manager_artifact(cfg, _facts(ctx, m, host))], i
                )
        except KubereviveError as exc:
            failed.append(_unreachable(ctx, m, exc))
            continue
        ctx.progress(f"      {m.node_name}: kube-controller-manager manifest {'written' if changed else 'in place'}")
    if failed:
        raise PlanError(
            f"{len(failed)} control-plane node(s) did not get their kube-controller-manager: {'; '.join(failed)[:600]}",
            "fix their SSH access, then run 'kuberevive recover --apply' again: it resumes at this step",
        )
