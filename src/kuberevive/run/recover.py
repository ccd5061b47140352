"""Execute a recovery plan step by step, each verified before the next, resumable through the journal.

Public entry points (the CLI and ``backup``'s restore use these):

* :func:`plan_recovery` ``(root, kept, config_text=None)``: what would happen, changes nothing;
* :func:`apply_recovery` ``(root, kept, config_text=None, progress=print)``: do it.

``kept`` maps pki-relative paths (``ca.crt``, ``ca.key``, ``front-proxy-ca.*``, ``etcd/ca.*``,
``sa.key``, ``sa.pub``) to bytes: trust material to keep instead of creating it (``--ca-from DIR``,
or a backup). It only matters before the certificates are written; a resumed run reuses what the
first run wrote.

Test hooks (documented in docs/recover.md): ``KUBEREVIVE_FAULT_AFTER_STEP=<n>`` makes the executor
SIGKILL itself right after step n (1-based) is recorded as done; ``KUBEREVIVE_FAULT_MID_STEP=<n>``
kills it in the middle of step n (after part of its files are written, or before its verification).
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import os
import re
import secrets
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from kuberevive.core import recover as core
from kuberevive.core import satokens
from kuberevive.core.k8sproto import decode_configmap, object_meta
from kuberevive.core.kubeconfig import control_plane_url
from kuberevive.core.manifests import manifest_path
from kuberevive.core.retrust import ready_since, unreporting_nodes
from kuberevive.errors import EtcdError, KubeApiError, KubereviveError, NodeFsError, PlanError
from kuberevive.io import node as nodeio
from kuberevive.io import nodefacts
from kuberevive.io.etcd import EtcdClient
from kuberevive.io.host import LocalHost
from kuberevive.io.kubeapi import KubeApi
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.artifacts import Artifact
from kuberevive.model.config import KubeadmConfig, NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config
from kuberevive.model.recover import NodeIdentity, RecoveryPlan, TrustFlags
from kuberevive.run import retrust
from kuberevive.run.journal import JOURNAL, RecoveryJournal, StoredConfig, now_text, recovery_lock
from kuberevive.run.retrust import RetrustOptions
from kuberevive.run.waiting import wait_for as _wait

Progress = Callable[[str], None]

_STALE_TLS = re.compile(
    r"unknown ca|bad certificate|not trusted by the etcd CA|certificate verify failed|alert internal error", re.I
)

ETCD_TIMEOUT = 180.0
API_TIMEOUT = 300.0
NODE_TIMEOUT = 240.0
SIGNER_TIMEOUT = 180.0
PLACEHOLDER_TIMEOUT = 90.0


@dataclass
class RecoveryResult:
    plan: RecoveryPlan
    applied: list[str] = field(default_factory=list)
    join_command: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.as_dict(),
            "applied": self.applied,
            "join_command": self.join_command,
            "timings": self.timings,
            "messages": self.messages,
            "report": self.report,
        }


# ------------------------------------------------------------------------------------- health


def _admin_api(root: NodeRoot, timeout: float = 5.0) -> KubeApi | None:
    data = root.read("/etc/kubernetes/admin.conf")
    if data is None:
        return None
    return KubeApi.from_kubeconfig(data, read_file=lambda p: root.read(p) or b"", timeout=timeout)


HEALTHY = "the control plane is healthy: every kubeadm file is in place and valid and the API server answers /readyz"


@dataclass
class _Health:
    """How the node stands before a new recovery: ``reason`` non-empty when nothing needs rebuilding."""

    reason: str = ""
    api: KubeApi | None = None
    cfg: KubeadmConfig | None = None
    verdicts: list[core.FileVerdict] = field(default_factory=list)


def _api_config(api: KubeApi, identity: NodeIdentity) -> KubeadmConfig:
    """The ClusterConfiguration (and KubeletConfiguration) the running API serves, joined with this node."""
    cm = api.get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
    cluster_yaml = (cm.get("data") or {}).get("ClusterConfiguration")
    if not cluster_yaml:
        raise PlanError("kube-system/kubeadm-config has no ClusterConfiguration", "pass --config")
    try:
        kcm = api.get("/api/v1/namespaces/kube-system/configmaps/kubelet-config")
        kubelet_yaml = (kcm.get("data") or {}).get("kubelet")
    except KubeApiError:
        kubelet_yaml = None
    try:
        pod = api.get(f"/api/v1/namespaces/kube-system/pods/kube-apiserver-{identity.node_name}")
        endpoint = ((pod.get("metadata") or {}).get("annotations") or {}).get(core.APISERVER_ENDPOINT_ANNOTATION)
    except KubeApiError:
        endpoint = None
    return core.final_config(core.refine_identity(identity, endpoint, []), cluster_yaml, kubelet_yaml)


CLUSTER_INFO_KEY = "/registry/configmaps/kube-public/cluster-info"
KUBELET_PODS = "/var/lib/kubelet/pods"


def _token_key_ids(root: NodeRoot, limit: int = 20) -> frozenset[str]:
    """The ``kid`` of ServiceAccount tokens the kubelet wrote into its pods' projected volumes (signed by the
    cluster's current sa.key): at most ``limit`` tokens are read."""
    kids: set[str] = set()
    read = 0
    for p in root.walk(KUBELET_PODS, limit=50_000):
        if p.name != "token" or "kubernetes.io~projected" not in p.parts or read >= limit:
            continue
        try:
            data = root.read(p, limit=64 * 1024)
            read += 1
            kid = satokens.jwt_header(data.decode()).get("kid") if data else None
        except (KubereviveError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(kid, str) and kid:
            kids.add(kid)
    return frozenset(kids)


def _files(root: NodeRoot, cfg: KubeadmConfig) -> dict[PurePosixPath, bytes]:
    return root.read_tree(cfg.cluster.certificates_dir) | root.read_tree("/etc/kubernetes")


def _health(host: LocalHost, facts: NodeFacts) -> _Health:
    """Healthy: the files the seed disaster removes exist, /readyz answers, and every kubeadm file checks out
    against the ClusterConfiguration the API serves (a partial loss, e.g. only sa.key, is not healthy)."""
    root = host.root
    if any(not root.exists(p) for p in core.HEALTHY_FILES):
        return _Health()
    try:
        api = _admin_api(root)
        if api is None or not api.readyz()[0]:
            return _Health()
        cfg = _api_config(api, core.identify(nodeio.gather_evidence(host)))
    except KubereviveError:
        return _Health()
    verdicts = core.survey_node(cfg, facts, _files(root, cfg), {}, datetime.now(UTC))
    # a manifest that differs from what kuberevive renders (another kubeadm version, a local edit) does not make
    # a working control plane "broken": only a missing one does
    bad = [v for v in verdicts if v.action != core.KEEP and (v.path.suffix != ".yaml" or v.why == "missing")]
    return _Health("" if bad else HEALTHY, api, cfg, bad)


def healthy_reason(host: LocalHost) -> str:
    """Non-empty (the reason) when the node's kubeadm files are all in place and valid and /readyz answers."""
    return _health(host, nodefacts.detect(host.root, live=host.live)).reason


def _node_repairs(health: _Health, me: str) -> tuple[tuple[str, str], ...]:
    assert health.api is not None
    try:
        nodes = health.api.get("/api/v1/nodes").get("items") or []
        leases = health.api.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases").get("items") or []
    except KubereviveError:
        return ()
    return tuple(unreporting_nodes(nodes, leases, me, datetime.now(UTC)))


# ------------------------------------------------------------------------------------- planning


@dataclass
class _Context:
    host: LocalHost
    identity: NodeIdentity
    given: KubeadmConfig | None
    kept: Mapping[str, bytes]
    facts: NodeFacts
    journal: RecoveryJournal | None = None

    @property
    def root(self) -> NodeRoot:
        return self.host.root

    def bootstrap_cfg(self) -> KubeadmConfig:
        return self.given if self.given is not None else core.bootstrap_config(self.identity)

    def final_cfg(self) -> KubeadmConfig:
        assert self.journal is not None
        stored = self.journal.config
        if stored is None:
            raise PlanError("the journal has no stored configuration although read-config is done", "run again")
        if self.given is not None:
            return self.given
        return core.final_config(self.identity, stored.cluster, stored.kubelet)


def _identity_from_config(cfg: KubeadmConfig) -> NodeIdentity:
    local = cfg.cluster.etcd_local
    if local is None:
        raise PlanError("recover handles stacked (local) etcd only; the configuration uses external etcd", "")
    from kuberevive.core.manifests import etcd_image

    return NodeIdentity(
        cfg.node_name,
        cfg.advertise_address,
        cfg.bind_port,
        cfg.init.node_registration.cri_socket,
        local.data_dir,
        cfg.cluster.kubernetes_version,
        etcd_image(cfg),
        (("everything", "--config"),),
    )


def _load_given(config_text: str | None, facts: NodeFacts) -> KubeadmConfig | None:
    return load_kubeadm_config(config_text, facts) if config_text is not None else None


def _prepare(
    host: LocalHost, kept: Mapping[str, bytes], config_text: str | None, environ: Mapping[str, str] | None
) -> tuple[_Context | None, RecoveryPlan]:
    root = host.root
    facts = nodefacts.detect(root, environ, live=host.live)
    journal = RecoveryJournal.load(root)
    if journal is not None and journal.status == "running":
        if journal.identity is None:
            raise PlanError(f"the journal {JOURNAL} has an unknown format (no identity)", "move it aside and run again")
        identity = journal.identity
        given = _load_given(config_text, facts) if config_text is not None else None
        recorded = journal.kept_bytes()
        if kept and recorded and dict(kept) != recorded:
            raise PlanError(
                "the kept trust material differs from the one the interrupted recovery started with",
                "run 'kuberevive recover --apply' again with the same --ca-from (or without it)",
            )
        ctx = _Context(host, identity, given, kept or recorded, facts, journal)
        cfg = ctx.final_cfg() if journal.config is not None else ctx.bootstrap_cfg()
        resuming = (f"resuming the recovery started at {journal.started_at} (journal {JOURNAL})",)
        return ctx, core.make_plan(identity, cfg, kept, journal.done_steps(), notes=resuming)
    health = _health(host, facts)
    if health.reason:
        assert health.cfg is not None
        plan = core.make_plan(None, None, kept, healthy_reason=health.reason)
        repairs = _node_repairs(health, health.cfg.node_name)
        if not repairs:
            return None, plan
        note = (
            "other nodes whose kubelet no longer reports: --apply reads their kubelet files over SSH and repairs "
            "in place those whose credentials are lost or stale (the cluster CA, a client certificate, "
            "kubelet.conf; containers kept); the others are left alone"
        )
        return None, dataclasses.replace(plan, node_repairs=repairs, notes=(note,))
    evidence = nodeio.gather_evidence(host)
    given = _load_given(config_text, facts)
    if given is None:
        identity = core.identify(evidence)
    else:  # --config names the node, its address and versions
        core.require_control_plane(evidence)
        identity = _identity_from_config(given)
    ctx = _Context(host, identity, given, kept, facts, None)
    cfg = ctx.bootstrap_cfg()
    core.kept_files(cfg, kept)  # validate kept material before anything is written
    notes = [
        "the ClusterConfiguration is read from etcd (kube-system/kubeadm-config) once etcd runs (step 4); "
        "file lists below use kubeadm's default paths until then",
    ]
    if not evidence.kubelet_active:
        notes.append(
            "the kubelet is not running: without /etc/kubernetes it cannot start, so it cannot start etcd; "
            "--apply refuses (not handled by recover part 1)"
        )
    present = [f for f in evidence.kubernetes_files if f != str(JOURNAL)]
    if present:
        notes.append(
            f"{len(present)} file(s) under /etc/kubernetes survive: each is kept when valid and consistent, "
            "otherwise moved aside and rebuilt; surviving CA keys and sa.key are always kept"
        )
        # judged against the configuration the API still serves, else (files only) the bootstrap one
        survey_cfg = health.cfg or cfg
        files = _files(root, survey_cfg)
        kept_paths = core.kept_files(survey_cfg, kept)
        verdicts = core.survey_node(survey_cfg, facts, files, kept_paths, datetime.now(UTC))
        for v in verdicts:
            if health.cfg is None and given is None and v.path.parent.name == "manifests":
                continue  # judged once the stored configuration is read (step 4)
            if v.path in files or v.action != core.KEEP:
                notes.append(v.line())
    return ctx, core.make_plan(identity, cfg, kept, notes=tuple(notes))


def plan_recovery(
    host: LocalHost,
    kept: Mapping[str, bytes] | None = None,
    config_text: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> RecoveryPlan:
    """The recovery plan for this node. Reads only; writes nothing, starts nothing."""
    _ctx, plan = _prepare(host, kept or {}, config_text, environ)
    return plan


# ------------------------------------------------------------------------------------- executor


def fault(environ: Mapping[str, str], name: str, index: int) -> None:
    if environ.get(name) == str(index):
        os.kill(os.getpid(), signal.SIGKILL)


class Executor:
    def __init__(
        self,
        ctx: _Context,
        plan: RecoveryPlan,
        progress: Progress,
        environ: Mapping[str, str],
        options: RetrustOptions | None = None,
    ) -> None:
        self.options = options or RetrustOptions()
        self.ctx = ctx
        self.plan = plan
        self.progress = progress
        self.environ = environ
        assert ctx.journal is not None
        self.journal: RecoveryJournal = ctx.journal
        self.result = RecoveryResult(plan)
        self.mid_fault = False

    # -- helpers --------------------------------------------------------------------------

    @property
    def root(self) -> NodeRoot:
        return self.ctx.root

    def _on_node(self, cfg: KubeadmConfig) -> dict[PurePosixPath, bytes]:
        return self.root.read_tree(cfg.cluster.certificates_dir) | self.root.read_tree("/etc/kubernetes")

    def _write(self, step_id: str, index: int, compute: Callable[[], list[Artifact]]) -> list[str]:
        """Write the step's files (recorded in the journal first); returns the paths that were already in place."""
        artifacts = self.journal.artifacts(step_id)
        if artifacts is None:
            artifacts = compute()
            self.journal.record_artifacts(step_id, artifacts)
        if self.environ.get("KUBEREVIVE_FAULT_MID_STEP") == str(index) and len(artifacts) > 1:
            self.root.write_all(artifacts[: len(artifacts) // 2], force=True)
            fault(self.environ, "KUBEREVIVE_FAULT_MID_STEP", index)
        # An old static pod the kubelet still runs (it re-lists a re-created manifest directory only every
        # 20 s) makes the container runtime create an empty directory at a missing hostPath file, e.g.
        # controller-manager.conf, again and again until the kubelet drops the pod: move it aside and retry.
        deadline = time.monotonic() + PLACEHOLDER_TIMEOUT
        while True:
            try:
                self._move_aside_replaced(artifacts)
                results = self.root.write_all(artifacts, force=True)
                break
            except (NodeFsError, IsADirectoryError):
                if time.monotonic() > deadline or not any(self.root.is_placeholder_dir(a.path) for a in artifacts):
                    raise
                self.progress("      an empty directory came back where a file belongs (an old static pod): retrying")
                time.sleep(2)
        changed = [r for r in results if r.action.value != "unchanged"]
        for r in changed:
            if r.moved_aside_to:
                self.result.messages.append(f"{r.artifact.path} moved aside to {r.moved_aside_to}")
        if changed:
            written = self.journal.changed_files
            written.extend(str(r.artifact.path) for r in changed if str(r.artifact.path) not in written)
            self.journal.save()
        self.progress(f"      wrote {len(changed)} file(s), {len(results) - len(changed)} already in place")
        return [str(r.artifact.path) for r in results if r.action.value == "unchanged"]

    def _move_aside_replaced(self, artifacts: list[Artifact]) -> None:
        for a in artifacts:  # move replaced files aside first: /etc and /var may be different file systems
            if self.root.is_placeholder_dir(a.path):  # left by the container runtime; holds nothing
                aside = _move_aside_any(self.root, a.path)
                self.result.messages.append(f"{a.path} was an empty directory: moved aside to {aside}")
            current = self.root.read(a.path)
            if current is not None and current != a.content:
                aside = _move_aside_any(self.root, a.path)
                self.result.messages.append(f"{a.path} moved aside to {aside}")

    def _etcd(self, cfg: KubeadmConfig) -> EtcdClient:
        cdir = PurePosixPath(cfg.cluster.certificates_dir)
        files = [
            self.root.read(cdir / n)
            for n in ("etcd/ca.crt", "etcd/healthcheck-client.crt", "etcd/healthcheck-client.key")
        ]
        if any(f is None for f in files):
            raise PlanError("the etcd certificates are missing although their step is done", "run recover again")
        ca, cert, key = (f or b"" for f in files)
        return EtcdClient("https://127.0.0.1:2379", ca, cert, key, timeout=5)

    def _api(self) -> KubeApi:
        api = _admin_api(self.root, timeout=10)
        if api is None:
            raise PlanError("/etc/kubernetes/admin.conf is missing although its step is done", "run recover again")
        return api

    # -- steps ----------------------------------------------------------------------------

    def step_etcd_certs(self, i: int) -> None:
        cfg = self.ctx.bootstrap_cfg()
        kept = core.kept_files(cfg, self.ctx.kept)
        now = datetime.now(UTC)
        self._write("etcd-certs", i, lambda: core.etcd_pki_artifacts(cfg, now, self._on_node(cfg), kept))

    def step_etcd_manifest(self, i: int) -> None:
        cfg = self.ctx.bootstrap_cfg()
        unchanged = self._write("etcd-manifest", i, lambda: core.manifests_for(cfg, self.ctx.facts, ("etcd",)))
        self._restart_stale_components(cfg, unchanged, ("etcd",))
        if self.journal.timing("etcd_manifest_written") is None:
            self.journal.timing("etcd_manifest_written", time.time())

    def step_etcd_ready(self, i: int) -> None:
        client = self._etcd(self.ctx.bootstrap_cfg())
        restarted = False

        def healthy() -> tuple[bool, str]:
            nonlocal restarted
            try:
                return client.health()
            except EtcdError as exc:
                # an etcd that still runs with other certificates (an earlier, abandoned attempt): the kubelet
                # keeps it since its manifest is identical; restarting the container makes it load the new ones
                if not restarted and _STALE_TLS.search(exc.message):
                    restarted = True
                    if self.ctx.host.stop_containers("etcd", self.ctx.identity.cri_socket):
                        self.progress("      etcd ran with other certificates: its container was restarted")
                raise

        _wait("etcd", ETCD_TIMEOUT, healthy)
        t = self.journal.timing("etcd_manifest_written")
        if t is not None and self.journal.timing("etcd_ready") is None:
            self.journal.timing("etcd_ready", time.time())
        self.progress(f"      etcd is healthy: {client.status().get('version', '?')}")

    def step_read_config(self, i: int) -> None:
        client = self._etcd(self.ctx.bootstrap_cfg())
        raw = client.get(core.KUBEADM_CONFIG_KEY)
        if raw is None:
            raise PlanError(
                f"etcd has no {core.KUBEADM_CONFIG_KEY}: this etcd data was not made by kubeadm init",
                "pass the kubeadm configuration with --config",
            )
        cluster_yaml = decode_configmap(raw).data.get("ClusterConfiguration")
        if not cluster_yaml:
            raise PlanError("kube-system/kubeadm-config in etcd has no ClusterConfiguration key", "pass --config")
        kubelet_raw = client.get(core.KUBELET_CONFIG_KEY)
        kubelet_yaml = decode_configmap(kubelet_raw).data.get("kubelet") if kubelet_raw else None
        # identity checks against what etcd remembers
        name = self.ctx.identity.node_name
        pod = client.get(f"/registry/pods/kube-system/kube-apiserver-{name}")
        endpoint = object_meta(pod)[1].annotations.get(core.APISERVER_ENDPOINT_ANNOTATION) if pod else None
        members = client.members()
        if len(members) != 1:
            raise PlanError(
                f"etcd has {len(members)} members; recover part 1 handles a single stacked etcd member",
                "recover with etcdctl member remove/add first",
            )
        identity = core.refine_identity(self.ctx.identity, endpoint, list(members[0].peer_urls))
        stored = core.final_config(identity, cluster_yaml, kubelet_yaml)
        if self.ctx.given is not None:
            diffs = core.config_differences(self.ctx.given, stored)
            if diffs:
                raise _ConfigMismatch(
                    f"--config differs from the ClusterConfiguration stored in etcd: {'; '.join(diffs[:5])}",
                    "fix the file or run without --config to use the stored configuration; "
                    "the files this run wrote were moved aside",
                )
        info = client.get(CLUSTER_INFO_KEY)  # the CA the rest of the cluster trusts
        cluster_ca = core.embedded_ca(decode_configmap(info).data.get("kubeconfig", "").encode()) if info else None
        if cluster_ca:
            self.journal.cluster_ca = base64.b64encode(cluster_ca).decode()
        self.ctx.identity = identity
        self.journal.identity = identity
        self.journal.config = StoredConfig(cluster_yaml, kubelet_yaml)
        self.journal.save()
        c = stored.cluster
        self.progress(
            f"      ClusterConfiguration {c.kubernetes_version}: pod subnet {c.networking.pod_subnet or '-'}, "
            f"service subnet {c.networking.service_subnet}, apiServer certSANs {list(c.api_server.cert_sans)}, "
            f"extraArgs {[f'{a.name}={a.value}' for a in c.api_server.extra_args]}"
        )

    def step_certs(self, i: int) -> None:
        cfg = self.ctx.final_cfg()
        kept = core.kept_files(cfg, self.ctx.kept)
        now = datetime.now(UTC)
        if self.journal.trust is None:  # before anything of this step is written
            usable = core.survey_pki(cfg, self._on_node(cfg) | kept, now).usable  # what survives valid
            cluster_ca = self.journal.cluster_ca_bytes()
            self.journal.trust = TrustFlags(**core.trust_changes(cfg, usable, cluster_ca, _token_key_ids(self.root)))
            self.journal.save()
        self._write("certs", i, lambda: core.pki_artifacts(cfg, now, self._on_node(cfg), kept))

    def step_kubeconfigs(self, i: int) -> None:
        cfg = self.ctx.final_cfg()
        on_node = self._on_node(cfg)
        ca, key = core.ca_pair(cfg, on_node)
        now = datetime.now(UTC)
        self._write("kubeconfigs", i, lambda: core.control_plane_kubeconfigs(cfg, now, ca, key, on_node))

    def step_control_plane_manifests(self, i: int) -> None:
        cfg = self.ctx.final_cfg()
        comps = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
        trust = self.journal.trust
        guarded = trust is not None and trust.new_ca and self.options.eviction_guard

        def compute() -> list[Artifact]:
            arts = core.manifests_for(cfg, self.ctx.facts, comps)
            if not guarded:
                return arts
            return [
                dataclasses.replace(a, content=retrust.guard_manifest(a.content))
                if a.path.name == "kube-controller-manager.yaml"
                else a
                for a in arts
            ]

        if self.journal.guard is None:  # the journal knows the guard is on before the manifest exists
            self.journal.guard = "on" if guarded else "off"
            self.journal.save()
        unchanged = self._write("control-plane-manifests", i, compute)
        self._restart_stale_components(cfg, unchanged, ("kube-apiserver", "kube-controller-manager", "kube-scheduler"))
        if guarded:
            self.progress("      eviction guard on: kube-controller-manager runs without taint-eviction-controller")
        if self.journal.timing("control_plane_manifests_written") is None:
            self.journal.timing("control_plane_manifests_written", time.time())

    def _restart_stale_components(
        self, cfg: KubeadmConfig, unchanged_manifests: list[str], components: tuple[str, ...]
    ) -> None:
        """A control-plane container that survived (a partial loss) keeps the certificates and keys it loaded
        at start; when this run replaced any of them and its manifest stayed the same (so the kubelet does not
        restart it), its container is stopped: the kubelet starts it again from the same manifest at once."""
        written = self.journal.changed_files
        pki_dir = cfg.cluster.certificates_dir.rstrip("/") + "/"
        pki_changed = any(p.startswith(pki_dir) for p in written)
        inputs = {
            "etcd": any(p.startswith(pki_dir + "etcd/") for p in written),
            "kube-apiserver": pki_changed,
            "kube-controller-manager": pki_changed or "/etc/kubernetes/controller-manager.conf" in written,
            "kube-scheduler": "/etc/kubernetes/scheduler.conf" in written,
        }
        for comp in components:
            stale = inputs[comp] and str(manifest_path(comp)) in unchanged_manifests
            if stale and self.ctx.host.stop_containers(comp, self.ctx.identity.cri_socket):
                self.progress(f"      {comp} ran with replaced certificates or keys: its container was restarted")

    def step_api_ready(self, i: int) -> None:
        api = self._api()
        _wait("the API server (/readyz)", API_TIMEOUT, api.readyz)
        if self.journal.timing("api_ready") is None:
            self.journal.timing("api_ready", time.time())
            cri = self.ctx.identity.cri_socket
            for name, key in (("etcd", "etcd_container_created"), ("kube-apiserver", "apiserver_container_created")):
                created = self.ctx.host.container_created_at(name, cri)
                if created is not None:
                    self.journal.timing(key, created)

    def step_admin_check(self, i: int) -> None:
        self._api().get("/api/v1/namespaces/kube-system")

    def step_upload_config(self, i: int) -> None:
        api = self._api()
        stored = self.journal.config
        if stored is None:
            raise PlanError("the journal has no stored configuration although read-config is done", "run again")
        for name, key, value in (
            ("kubeadm-config", "ClusterConfiguration", stored.cluster),
            ("kubelet-config", "kubelet", stored.kubelet),
        ):
            if value is None:
                continue
            path = f"/api/v1/namespaces/kube-system/configmaps/{name}"
            try:
                current = api.get(path)
            except KubeApiError as exc:
                if exc.status != 404:
                    raise
                api.create(
                    "/api/v1/namespaces/kube-system/configmaps",
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {key: value}},
                )
                self.progress(f"      kube-system/{name}: created (was missing)")
                continue
            if (current.get("data") or {}).get(key) == value:
                self.progress(f"      kube-system/{name}: unchanged")
            else:
                current["data"] = (current.get("data") or {}) | {key: value}
                api.replace(path, current)
                self.progress(f"      kube-system/{name}: restored to the stored content")

    def _cluster_info_value(self) -> str:
        cfg = self.ctx.final_cfg()
        ca, _key = core.ca_pair(cfg, self._on_node(cfg))
        return core.cluster_info_kubeconfig(control_plane_url(cfg), ca)

    def step_cluster_info(self, i: int) -> None:
        api = self._api()
        value = self._cluster_info_value()
        path = "/api/v1/namespaces/kube-public/configmaps/cluster-info"
        try:
            current = api.get(path)
        except KubeApiError as exc:
            if exc.status != 404:
                raise
            api.create(
                "/api/v1/namespaces/kube-public/configmaps",
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "cluster-info"},
                    "data": {"kubeconfig": value},
                },
            )
            return
        if (current.get("data") or {}).get("kubeconfig") != value:
            api.patch(path, {"data": {"kubeconfig": value}})
            self.progress("      kube-public/cluster-info: kubeconfig now carries the new CA")

    def step_bootstrap_token(self, i: int) -> None:
        api = self._api()
        token = self.journal.require_token()
        secret = core.bootstrap_token_secret(token, datetime.now(UTC))
        name = secret["metadata"]["name"]
        try:
            api.create("/api/v1/namespaces/kube-system/secrets", secret)
        except KubeApiError as exc:
            if exc.status != 409:
                raise
            api.replace(f"/api/v1/namespaces/kube-system/secrets/{name}", secret)
        token_id = token.partition(".")[0]
        value = self._cluster_info_value()
        fault(self.environ, "KUBEREVIVE_FAULT_MID_STEP", i)

        def signed() -> tuple[bool, str]:
            cm = api.get("/api/v1/namespaces/kube-public/configmaps/cluster-info")
            data = cm.get("data") or {}
            sig = data.get(f"jws-kubeconfig-{token_id}")
            if sig is None:
                return False, "no signature yet"
            return core.jws_signature_ok(sig, data.get("kubeconfig", ""), token) and data.get(
                "kubeconfig"
            ) == value, "signature does not match yet"

        _wait("the controller-manager's signature of cluster-info for the new token", SIGNER_TIMEOUT, signed, 1.0)

    def step_kubelet_client(self, i: int) -> None:
        cfg = self.ctx.final_cfg()
        stamp = self.journal.kubelet_stamp
        arts = self.journal.artifacts("kubelet-client")
        if arts is None:
            ca, key = core.ca_pair(cfg, self._on_node(cfg))
            files = core.kubelet_files(cfg, ca, key, datetime.now(UTC), stamp)
            arts = [files.pem, files.kubeconfig]
            self.journal.record_artifacts("kubelet-client", arts)
        pem, kubeconfig = arts
        self.root.write_all([pem], force=True)
        fault(self.environ, "KUBEREVIVE_FAULT_MID_STEP", i)
        target = str(pem.path)
        if self.root.readlink(core.KUBELET_CLIENT_CURRENT) != target:
            if self.root.lstat(core.KUBELET_CLIENT_CURRENT) is not None:
                aside = _move_aside_any(self.root, core.KUBELET_CLIENT_CURRENT)
                self.result.messages.append(f"{core.KUBELET_CLIENT_CURRENT} (the previous one) moved aside to {aside}")
            self.root.replace_symlink(core.KUBELET_CLIENT_CURRENT, target)
        self.root.write_all([kubeconfig], force=True)

    def step_kubelet_restart(self, i: int) -> None:
        self.journal.timing("kubelet_restarted", time.time())
        self.ctx.host.restart_unit("kubelet")
        _wait("the kubelet service", 30, lambda: (self.ctx.host.unit_active("kubelet"), "not active"))

    def step_node_ready(self, i: int) -> None:
        api = self._api()
        name = self.ctx.identity.node_name
        since = datetime.fromtimestamp((self.journal.timing("kubelet_restarted") or time.time()) - 2, UTC)

        _wait(f"node {name} Ready", NODE_TIMEOUT, lambda: ready_since(api.get(f"/api/v1/nodes/{name}"), since), 1.0)

    # -- run ------------------------------------------------------------------------------

    def run(self) -> RecoveryResult:
        def handler(sid: str) -> Callable[[int], None]:
            name = "step_" + sid.replace("-", "_")
            if hasattr(self, name):
                return getattr(self, name)  # type: ignore[no-any-return]
            step = getattr(retrust, name)  # part 2: the steps after the control plane is back
            return lambda i: step(self, i)

        handlers = {sid: handler(sid) for sid in core.STEP_IDS}
        total = len(self.plan.steps)
        for index, step in enumerate(self.plan.steps, start=1):
            if self.journal.step_done(step.id):
                self.progress(f"[{index}/{total}] {step.title}: done before")
                continue
            self.progress(f"[{index}/{total}] {step.title}")
            started = time.monotonic()
            self.journal.mark(step.id, "started")
            handlers[step.id](index)
            self.journal.mark(step.id, "done", seconds=round(time.monotonic() - started, 3))
            self.result.applied.append(step.id)
            self.progress(f"      ok ({time.monotonic() - started:.1f} s)")
            fault(self.environ, "KUBEREVIVE_FAULT_AFTER_STEP", index)
        return self._finish()

    def join_command(self) -> str:
        """``kubeadm join`` with the new bootstrap token and the CA's discovery hash (after step 5)."""
        cfg = self.ctx.final_cfg()
        ca, _key = core.ca_pair(cfg, self._on_node(cfg))
        return core.join_command(cfg, self.journal.require_token(), ca)

    def _finish(self) -> RecoveryResult:
        self.result.join_command = self.join_command()
        t = self.journal.timings
        start = float(t.get("started", 0))
        timings: dict[str, float] = {}
        if "api_ready" in t:
            timings["start_to_api_ready_s"] = round(t["api_ready"] - start, 1)
        if "etcd_ready" in t and "etcd_manifest_written" in t:
            timings["etcd_start_s"] = round(t["etcd_ready"] - t["etcd_manifest_written"], 1)
        if "api_ready" in t and "control_plane_manifests_written" in t:
            timings["apiserver_start_s"] = round(t["api_ready"] - t["control_plane_manifests_written"], 1)
        if "etcd_start_s" in timings and "apiserver_start_s" in timings:
            timings["components_alone_s"] = round(timings["etcd_start_s"] + timings["apiserver_start_s"], 1)
        # the same, split: the kubelet noticing the manifest vs. the container itself starting
        if "etcd_container_created" in t and "etcd_ready" in t and "etcd_manifest_written" in t:
            timings["etcd_kubelet_pickup_s"] = round(t["etcd_container_created"] - t["etcd_manifest_written"], 1)
            timings["etcd_container_to_healthy_s"] = round(t["etcd_ready"] - t["etcd_container_created"], 1)
        if "apiserver_container_created" in t and "control_plane_manifests_written" in t:
            timings["apiserver_kubelet_pickup_s"] = round(
                t["apiserver_container_created"] - t["control_plane_manifests_written"], 1
            )
            timings["apiserver_container_to_ready_s"] = round(t["api_ready"] - t["apiserver_container_created"], 1)
        timings["start_to_done_s"] = round(time.time() - start, 1)
        self.result.timings = timings
        self.journal.finish_with(timings)
        return self.result


def _move_aside_any(root: NodeRoot, path: PurePosixPath, now: datetime | None = None) -> PurePosixPath:
    """Move a file or symlink to the backup directory (NodeRoot also moves across file systems)."""
    aside = root.move_aside(path, now=now or datetime.now(UTC))
    if aside is None:
        raise FileNotFoundError(errno.ENOENT, "nothing to move aside", str(path))
    return aside


class _ConfigMismatch(PlanError):
    pass


def _roll_back_written(root: NodeRoot, journal: RecoveryJournal) -> list[str]:
    """Move aside every file this recovery wrote (after a refusal), then the journal itself."""
    moved = []
    stamp = datetime.now(UTC)
    for items in journal.artifact_records.values():
        for item in items:
            p = PurePosixPath(item.path)
            data = root.read(p)
            if data is not None and data == item.content_bytes():
                aside = _move_aside_any(root, p, stamp)
                moved.append(f"{p} -> {aside}")
    _move_aside_any(root, JOURNAL, stamp)
    return moved


def _repair_nodes(host: LocalHost, plan: RecoveryPlan, options: RetrustOptions, progress: Progress) -> RecoveryResult:
    """The control plane is healthy; other nodes' kubelets no longer report: probe them and repair in place."""
    root = host.root
    health = _health(host, nodefacts.detect(root, live=host.live))
    if not health.reason or health.api is None or health.cfg is None:
        raise PlanError("the control plane changed while recover was starting", "run 'kuberevive recover' again")
    ca, key = core.ca_pair(health.cfg, _files(root, health.cfg))
    repair = retrust.repair_nodes(health.api, health.cfg, ca, key, list(plan.node_repairs), options, progress)
    if repair.failed:
        raise PlanError(
            f"{len(repair.failed)} node(s) could not be repaired: {'; '.join(repair.failed)[:600]}"
            + (f" (repaired: {', '.join(repair.repaired)})" if repair.repaired else ""),
            "fix the node's SSH access (--ssh-key, --known-hosts, --inventory), then run 'kuberevive recover --apply' "
            "again",
        )
    return RecoveryResult(plan, messages=repair.messages, report={"node_repair": repair.as_dict()})


def apply_recovery(
    host: LocalHost,
    kept: Mapping[str, bytes] | None = None,
    config_text: str | None = None,
    progress: Progress = print,
    environ: Mapping[str, str] | None = None,
    options: RetrustOptions | None = None,
) -> RecoveryResult:
    """Plan and execute (or resume) the recovery under the node's recovery lock."""
    env = dict(os.environ) if environ is None else dict(environ)
    root = host.root
    journal = RecoveryJournal.load(root)
    if journal is None or journal.status != "running":
        # a node that is not a kubeadm node (or healthy) is told so before the lock file is created
        ctx0, plan0 = _prepare(host, kept or {}, config_text, env)
        if ctx0 is None and plan0.node_repairs:
            with recovery_lock(root):
                return _repair_nodes(host, plan0, options or RetrustOptions(), progress)
        if ctx0 is None or not plan0.steps:
            return RecoveryResult(plan0)
    with recovery_lock(root):
        ctx, plan = _prepare(host, kept or {}, config_text, env)
        if ctx is None or not plan.steps:
            return RecoveryResult(plan)
        if ctx.journal is None:
            if host.live and not host.unit_active("kubelet"):
                raise PlanError(
                    "the kubelet is not running; it is what starts etcd and the control plane, and it cannot start "
                    "while /etc/kubernetes is gone, so nothing was changed",
                    "this case is not handled yet: restore /etc/kubernetes/kubelet.conf and pki/ca.crt from a "
                    "backup, start the kubelet, then run recover again",
                )
            old = RecoveryJournal.load(root)
            if old is not None:  # a finished recovery, and the node broke again
                root.move_aside(JOURNAL)
            ctx.journal = RecoveryJournal.new(
                root,
                identity=ctx.identity,
                token=core.new_bootstrap_token(secrets.token_bytes),
                kubelet_stamp=datetime.now(UTC).strftime("%Y-%m-%d-%H-%M-%S"),
                kept={k: base64.b64encode(v).decode() for k, v in ctx.kept.items()},
                timings={"started": time.time()},
            )
        executor = Executor(ctx, plan, progress, env, options)
        try:
            return executor.run()
        except _ConfigMismatch:
            _roll_back_written(root, ctx.journal)
            raise
        except (EtcdError, KubeApiError) as exc:
            raise PlanError(
                f"recovery stopped at a step that talks to the cluster: {exc.message}",
                "fix the cause, then run 'kuberevive recover --apply' again: it resumes where it stopped",
            ) from exc


__all__ = ["RecoveryResult", "apply_recovery", "healthy_reason", "now_text", "plan_recovery"]
