"""The static Pod manifests that ``kubeadm init`` (v1.30 to v1.37) writes to /etc/kubernetes/manifests.

Pure: a resolved :class:`~kuberevive.model.config.KubeadmConfig` plus :class:`NodeFacts` in,
Pod dicts / YAML bytes out. The rules follow shared/spec/kubeadm-artifacts.md §4 (kubeadm sources:
phases/controlplane/manifests.go + volumes.go, phases/etcd/local.go, util/staticpod/utils.go,
util/arguments.go).

kubeadm vs. kuberevive
======================
=================================  =======================================  ===========================
topic                              kubeadm v1.33                            kuberevive
=================================  =======================================  ===========================
optional CA-certificate volumes    ``os.Stat`` of five host paths           ``NodeFacts.existing_paths``
external-CA mode (kcm signing)     pki/ca.crt is a valid CA and pki/ca.key  ca.crt listed and ca.key not
                                   does not exist                           listed in ``existing_paths``
                                                                            (or ``external_ca=``)
proxy variables in the pods        kubeadm's own ``*_proxy`` environment    ``NodeFacts.proxy_env``
``--patches`` directory            strategic-merge patches applied          not supported (refused)
RootlessControlPlane feature gate  creates users, adds runAsUser etc.       not supported (refused)
what changes between minors         its own release                          core/versions.py, one table
=================================  =======================================  ===========================

Everything that differs between minors (etcd image tag and flags, probe paths and the named probe port, the
flexvolume and CA volumes, flag order, ``creationTimestamp: null``) comes from :func:`versions.profile` of the
configuration's ``kubernetesVersion``. Facts the spec (§4) gets wrong or leaves out for v1.33.13, all confirmed on
the real binary:

* flag order: defaults sorted, then the extraArgs in the user's order (PR #135400, in 1.33.8+);
* kube-scheduler probes are /livez (liveness, startup) and /readyz (readiness) since v1.32
  (PR #126945); kube-controller-manager keeps /healthz and has no readiness probe;
* etcd gets no proxy variables (only ``etcd.local.extraEnvs``);
* a user ``authorization-mode`` extraArg replaces the default verbatim (no filtering shows);
* an extraVolume without ``pathType`` is written with ``type: ""``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any, Final

import yaml

from kuberevive.core import versions, yamlfmt
from kuberevive.core._args import (
    arguments_to_command,
    get_arg_value,
    go_dir,
    go_join,
    is_ipv6_string,
    set_arg_value,
    split_command,
)
from kuberevive.core.netaddr import join_host_port, split_url
from kuberevive.errors import ConfigError
from kuberevive.model import yamlload
from kuberevive.model.artifacts import Artifact, ArtifactKind
from kuberevive.model.config import (
    DEFAULT_KUBERNETES_DIR,
    DEFAULT_MANIFESTS_DIR,
    Arg,
    EnvVar,
    HostPathMount,
    KubeadmConfig,
    NodeFacts,
)
from kuberevive.model.kubeadm_yaml import parse_duration

ETCD: Final = "etcd"
KUBE_APISERVER: Final = "kube-apiserver"
KUBE_CONTROLLER_MANAGER: Final = "kube-controller-manager"
KUBE_SCHEDULER: Final = "kube-scheduler"
CONTROL_PLANE_COMPONENTS: Final = (KUBE_APISERVER, KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER)
ALL_COMPONENTS: Final = (ETCD, *CONTROL_PLANE_COMPONENTS)

MANIFEST_MODE: Final = 0o600
MANIFESTS_DIR_MODE: Final = 0o700

ETCD_LISTEN_CLIENT_PORT: Final = 2379
ETCD_LISTEN_PEER_PORT: Final = 2380
ETCD_METRICS_PORT: Final = 2381
KUBE_CONTROLLER_MANAGER_PORT: Final = 10257
KUBE_SCHEDULER_PORT: Final = 10259

APISERVER_ADVERTISE_ANNOTATION: Final = "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"
ETCD_ADVERTISE_ANNOTATION: Final = "kubeadm.kubernetes.io/etcd.advertise-client-urls"

SYSTEM_NODE_CRITICAL_PRIORITY: Final = 2000001000

PROBE_PORT_NAME: Final = "probe-port"

_CA_CERTS_VOLUME = ("ca-certs", "/etc/ssl/certs")
_DEFAULT_FLEXVOLUME_DIR: Final = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec"
_VALID_AUTHZ_MODES: Final = ("Node", "RBAC", "Webhook", "ABAC", "AlwaysAllow", "AlwaysDeny")

Pod = dict[str, Any]


# --- public API -----------------------------------------------------------------------------


def manifest_path(component: str, manifests_dir: str = DEFAULT_MANIFESTS_DIR) -> PurePosixPath:
    """``<dir>/<component>.yaml`` (kubeadm ``GetStaticPodFilepath``)."""
    return PurePosixPath(manifests_dir) / f"{component}.yaml"


def components(cfg: KubeadmConfig) -> tuple[str, ...]:
    """The components kubeadm writes a manifest for: etcd only with local etcd."""
    if cfg.cluster.etcd_local is not None and cfg.cluster.etcd_external is None:
        return ALL_COMPONENTS
    return CONTROL_PLANE_COMPONENTS


def build_manifests(cfg: KubeadmConfig, facts: NodeFacts, *, external_ca: bool | None = None) -> list[Artifact]:
    """Every static Pod manifest of ``kubeadm init``: etcd (local etcd only), apiserver, kcm, scheduler.

    ``external_ca`` overrides the external-CA detection (see :func:`build_pod`).
    """
    return [
        Artifact(
            path=manifest_path(name),
            mode=MANIFEST_MODE,
            kind=ArtifactKind.MANIFEST,
            description=f"static Pod manifest for {name}",
            content=render_manifest(pod).encode(),
        )
        for name, pod in build_pods(cfg, facts, external_ca=external_ca).items()
    ]


def build_pods(cfg: KubeadmConfig, facts: NodeFacts, *, external_ca: bool | None = None) -> dict[str, Pod]:
    """Component name -> Pod (as the plain dict that the manifest YAML parses to)."""
    return {c: build_pod(c, cfg, facts, external_ca=external_ca) for c in components(cfg)}


def build_pod(component: str, cfg: KubeadmConfig, facts: NodeFacts, *, external_ca: bool | None = None) -> Pod:
    """The Pod of one component, equal to ``parse_manifest`` of the file kubeadm writes.

    ``external_ca``: kubeadm gives kube-controller-manager empty ``--cluster-signing-*-file`` flags when
    ``<certificatesDir>/ca.crt`` exists but ``ca.key`` does not. ``None`` derives that from
    ``facts.existing_paths``; True/False force it.
    """
    _refuse_unsupported(cfg)
    if component == ETCD:
        if component not in components(cfg):
            raise ConfigError("no etcd static Pod with external etcd", "use etcd.local in the configuration")
        return _etcd_pod(cfg)
    if component not in CONTROL_PLANE_COMPONENTS:
        raise ConfigError(f"unknown control-plane component {component!r}")
    if external_ca is None:
        external_ca = using_external_ca(cfg, facts)
    builders = {
        KUBE_APISERVER: lambda: _apiserver_pod(cfg, facts),
        KUBE_CONTROLLER_MANAGER: lambda: _controller_manager_pod(cfg, facts, external_ca),
        KUBE_SCHEDULER: lambda: _scheduler_pod(cfg, facts),
    }
    return builders[component]()


def render_manifest(pod: Pod) -> str:
    """The YAML text kubeadm writes for ``pod`` (Go key order, Go quoting)."""
    return yamlfmt.dump(pod)


def parse_manifest(yaml_text: str | bytes) -> Pod:
    """Parse a static Pod manifest; raises :class:`ConfigError` unless it is a single v1 Pod mapping."""
    try:
        doc = yamlfmt.load(yaml_text)
    except Exception as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"static Pod manifest is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("kind") != "Pod":
        raise ConfigError("static Pod manifest is not a Pod object")
    return doc


def manifest_command(pod: Mapping[str, Any]) -> list[str]:
    """``command`` of the Pod's first container (empty if there is none)."""
    try:
        command = pod["spec"]["containers"][0].get("command") or []
    except (KeyError, IndexError, TypeError, AttributeError):
        return []
    return [str(c) for c in command]


def manifest_args(pod: Mapping[str, Any]) -> list[Arg]:
    """All ``--name=value`` flags of the Pod's command, in order, duplicates kept."""
    return split_command(manifest_command(pod))


def manifest_flags(pod: Mapping[str, Any]) -> dict[str, str]:
    """Flag name -> value of the Pod's command; for a repeated flag the last value (as pflag does)."""
    return {a.name: a.value for a in manifest_args(pod)}


#: Seconds between SIGTERM and SIGKILL the kubelet gives a static Pod's containers when it stops the Pod: its
#: ``terminationGracePeriodSeconds``, which kubeadm leaves at the default.
POD_GRACE_SECONDS: Final = 30
#: Seconds a kube-apiserver gets after its ``--shutdown-delay-duration`` to stop listening and drain the requests in
#: flight before it is SIGKILLed (:func:`stop_grace_seconds`).
APISERVER_DRAIN_SECONDS: Final = 5


def stop_grace_seconds(component: str, manifest: bytes | None) -> int:
    """Seconds between SIGTERM and SIGKILL when the container of ``component``'s static Pod (``manifest``: the Pod's
    YAML on that node) is stopped: the Pod's ``terminationGracePeriodSeconds`` (default :data:`POD_GRACE_SECONDS`),
    and for kube-apiserver at most its ``--shutdown-delay-duration`` plus :data:`APISERVER_DRAIN_SECONDS`.

    At SIGTERM a kube-apiserver fails ``/readyz`` at once, serves for the delay (a load balancer takes it out), stops
    listening and drains the requests in flight, and then waits for its open watch streams to end, up to its request
    timeout (60 s; measured on the v1.37 HA lab: still running when SIGKILLed 30 s after SIGTERM). The watches'
    clients open them again on another API server: they are cut rather than waited for. An unreadable manifest or
    flag gives the Pod's default."""
    try:
        pod = yamlload.load(manifest) if manifest else None
    except yaml.YAMLError:
        pod = None
    if not isinstance(pod, Mapping):
        return POD_GRACE_SECONDS
    spec = pod.get("spec")
    given = spec.get("terminationGracePeriodSeconds") if isinstance(spec, Mapping) else None
    grace = given if isinstance(given, int) and not isinstance(given, bool) and given >= 0 else POD_GRACE_SECONDS
    if component != KUBE_APISERVER:
        return grace
    try:
        delay = parse_duration(manifest_flags(pod).get("shutdown-delay-duration", "0s")).total_seconds()
    except ConfigError:
        return grace
    return min(grace, math.ceil(max(delay, 0.0)) + APISERVER_DRAIN_SECONDS)


def component_command(component: str, cfg: KubeadmConfig, facts: NodeFacts | None = None) -> list[str]:
    """The full command (binary first) of a component, as in its manifest."""
    if component == ETCD:
        return etcd_command(cfg)
    external = using_external_ca(cfg, facts) if facts is not None else False
    commands = {
        KUBE_APISERVER: lambda: _apiserver_command(cfg),
        KUBE_CONTROLLER_MANAGER: lambda: _controller_manager_command(cfg, external),
        KUBE_SCHEDULER: lambda: _scheduler_command(cfg),
    }
    if component not in commands:
        raise ConfigError(f"unknown control-plane component {component!r}")
    return commands[component]()


def etcd_command(cfg: KubeadmConfig, initial_cluster: Sequence[tuple[str, str]] = ()) -> list[str]:
    """``["etcd", "--flag=value", ...]`` exactly as in etcd.yaml (init: a one-member initial cluster; a member
    that joined an existing cluster: ``initial_cluster``, see :func:`etcd_flags`)."""
    return ["etcd", *etcd_flags(cfg, initial_cluster)]


def etcd_flags(cfg: KubeadmConfig, initial_cluster: Sequence[tuple[str, str]] = ()) -> list[str]:
    """The etcd flags of etcd.yaml in manifest order, without the binary name.

    Defaults (minus those named in ``etcd.local.extraArgs``) sorted, then the extraArgs as given.
    ``initial_cluster``: (member name, peer URL) of every member, in etcd's order, for a member of an existing
    cluster: kubeadm ``getEtcdCommand`` for ``join --control-plane`` then writes ``--initial-cluster`` with all of
    them and ``--initial-cluster-state=existing``.
    """
    local = cfg.cluster.etcd_local
    if local is None:
        raise ConfigError("no etcd flags with external etcd", "use etcd.local in the configuration")
    cd = cfg.cluster.certificates_dir
    adv = cfg.advertise_address
    lh = _localhost(adv)
    client_url = _url("https", adv, ETCD_LISTEN_CLIENT_PORT)
    peer_url = _url("https", adv, ETCD_LISTEN_PEER_PORT)
    defaults = [
        Arg("name", cfg.node_name),
        Arg("listen-client-urls", f"{_url('https', lh, ETCD_LISTEN_CLIENT_PORT)},{client_url}"),
        Arg("advertise-client-urls", client_url),
        Arg("listen-peer-urls", peer_url),
        Arg("initial-advertise-peer-urls", peer_url),
        Arg("data-dir", local.data_dir),
        Arg("cert-file", go_join(cd, "etcd/server.crt")),
        Arg("key-file", go_join(cd, "etcd/server.key")),
        Arg("trusted-ca-file", go_join(cd, "etcd/ca.crt")),
        Arg("client-cert-auth", "true"),
        Arg("peer-cert-file", go_join(cd, "etcd/peer.crt")),
        Arg("peer-key-file", go_join(cd, "etcd/peer.key")),
        Arg("peer-trusted-ca-file", go_join(cd, "etcd/ca.crt")),
        Arg("peer-client-cert-auth", "true"),
        Arg("snapshot-count", "10000"),
        Arg("listen-metrics-urls", _url("http", lh, ETCD_METRICS_PORT)),
    ]
    if _etcd_v36_flags(cfg):
        defaults += [Arg("feature-gates", "InitialCorruptCheck=true"), Arg("watch-progress-notify-interval", "5s")]
    else:
        defaults += [
            Arg("experimental-initial-corrupt-check", "true"),
            Arg("experimental-watch-progress-notify-interval", "5s"),
        ]
    defaults.append(Arg("initial-cluster", f"{cfg.node_name}={peer_url}"))
    if initial_cluster:
        set_arg_value(defaults, "initial-cluster", ",".join(f"{name}={url}" for name, url in initial_cluster))
        set_arg_value(defaults, "initial-cluster-state", "existing")
    return _to_command(cfg, defaults, local.extra_args)


def _etcd_v36_flags(cfg: KubeadmConfig) -> bool:
    """Whether etcd gets the etcd 3.6 flags (versions.KubeadmMinor.etcd_v36_flags)."""
    rule = _minor(cfg).etcd_v36_flags
    if rule == "by-image-tag":
        return versions.etcd_version_at_least(etcd_image_tag(cfg), (3, 6))
    return rule == "always"


def _minor(cfg: KubeadmConfig) -> versions.KubeadmMinor:
    return versions.profile(cfg.cluster.kubernetes_version)


def _to_command(cfg: KubeadmConfig, defaults: Sequence[Arg], extra: Sequence[Arg]) -> list[str]:
    return arguments_to_command(defaults, extra, sort_all=_minor(cfg).sort_all_args)


def etcd_image(cfg: KubeadmConfig) -> str:
    """``<etcd.local.imageRepository or imageRepository>/etcd:<etcd.local.imageTag or the minor's tag>``."""
    local = cfg.cluster.etcd_local
    repo = (local.image_repository if local else "") or cfg.cluster.image_repository
    return f"{repo}/etcd:{etcd_image_tag(cfg)}"


def etcd_image_tag(cfg: KubeadmConfig) -> str:
    """kubeadm ``GetEtcdImageTag``: ``etcd.local.imageTag``, else the minor's SupportedEtcdVersion entry."""
    local = cfg.cluster.etcd_local
    return (local.image_tag if local else "") or versions.etcd_image_tag(cfg.cluster.kubernetes_version)


def kubernetes_image(component: str, cfg: KubeadmConfig) -> str:
    """``<imageRepository>/<component>:<kubernetesVersion>`` (``+`` in the version becomes ``_``)."""
    tag = cfg.cluster.kubernetes_version.replace("+", "_")
    return f"{cfg.cluster.image_repository}/{component}:{tag}"


def using_external_ca(cfg: KubeadmConfig, facts: NodeFacts) -> bool:
    """kubeadm ``UsingExternalCA`` reduced to file existence: ca.crt present and ca.key absent."""
    cd = cfg.cluster.certificates_dir
    paths = facts.existing_paths
    return go_join(cd, "ca.crt") in paths and go_join(cd, "ca.key") not in paths


# --- per-component commands -------------------------------------------------------------------


def _apiserver_command(cfg: KubeadmConfig) -> list[str]:
    c = cfg.cluster
    cd = c.certificates_dir
    adv = cfg.advertise_address
    defaults = [
        Arg("advertise-address", adv),
        Arg("enable-admission-plugins", "NodeRestriction"),
        Arg("service-cluster-ip-range", c.networking.service_subnet),
        Arg("service-account-key-file", go_join(cd, "sa.pub")),
        Arg("service-account-signing-key-file", go_join(cd, "sa.key")),
        Arg("service-account-issuer", f"https://kubernetes.default.svc.{c.networking.dns_domain}"),
        Arg("client-ca-file", go_join(cd, "ca.crt")),
        Arg("tls-cert-file", go_join(cd, "apiserver.crt")),
        Arg("tls-private-key-file", go_join(cd, "apiserver.key")),
        Arg("kubelet-client-certificate", go_join(cd, "apiserver-kubelet-client.crt")),
        Arg("kubelet-client-key", go_join(cd, "apiserver-kubelet-client.key")),
        Arg("enable-bootstrap-token-auth", "true"),
        Arg("secure-port", str(cfg.bind_port)),
        Arg("allow-privileged", "true"),
        Arg("kubelet-preferred-address-types", "InternalIP,ExternalIP,Hostname"),
        Arg("requestheader-username-headers", "X-Remote-User"),
        Arg("requestheader-group-headers", "X-Remote-Group"),
        Arg("requestheader-extra-headers-prefix", "X-Remote-Extra-"),
        Arg("requestheader-client-ca-file", go_join(cd, "front-proxy-ca.crt")),
        Arg("requestheader-allowed-names", "front-proxy-client"),
        Arg("proxy-client-cert-file", go_join(cd, "front-proxy-client.crt")),
        Arg("proxy-client-key-file", go_join(cd, "front-proxy-client.key")),
    ]
    ext = c.etcd_external
    if ext is not None:
        set_arg_value(defaults, "etcd-servers", ",".join(ext.endpoints))
        if ext.ca_file:
            set_arg_value(defaults, "etcd-cafile", ext.ca_file)
        if ext.cert_file and ext.key_file:
            set_arg_value(defaults, "etcd-certfile", ext.cert_file)
            set_arg_value(defaults, "etcd-keyfile", ext.key_file)
    else:
        set_arg_value(defaults, "etcd-servers", _url("https", _localhost(adv), ETCD_LISTEN_CLIENT_PORT))
        set_arg_value(defaults, "etcd-cafile", go_join(cd, "etcd/ca.crt"))
        set_arg_value(defaults, "etcd-certfile", go_join(cd, "apiserver-etcd-client.crt"))
        set_arg_value(defaults, "etcd-keyfile", go_join(cd, "apiserver-etcd-client.key"))
        if c.etcd_local is not None:
            advertised = get_arg_value(c.etcd_local.extra_args, "advertise-client-urls")
            if advertised is not None:
                set_arg_value(defaults, "etcd-servers", advertised)
    extra = c.api_server.extra_args
    if get_arg_value(extra, "authorization-config") is None:
        set_arg_value(defaults, "authorization-mode", authorization_modes(get_arg_value(extra, "authorization-mode")))
    return [KUBE_APISERVER, *_to_command(cfg, defaults, extra)]


def authorization_modes(requested: str | None) -> str:
    """kubeadm ``getAuthzModes``: the valid modes of a user value in order, else ``Node,RBAC``.

    Note that a user-given ``authorization-mode`` extraArg still replaces this default verbatim in the
    final command (ArgumentsToCommand), so the filtering never shows in a manifest.
    """
    if requested:
        modes = [m for m in requested.split(",") if m in _VALID_AUTHZ_MODES]
        if modes:
            return ",".join(modes)
    return "Node,RBAC"


def _controller_manager_command(cfg: KubeadmConfig, external_ca: bool) -> list[str]:
    c = cfg.cluster
    cd = c.certificates_dir
    kubeconfig = go_join(DEFAULT_KUBERNETES_DIR, "controller-manager.conf")
    ca_file = go_join(cd, "ca.crt")
    defaults = [
        Arg("bind-address", "127.0.0.1"),
        Arg("leader-elect", "true"),
        Arg("kubeconfig", kubeconfig),
        Arg("authentication-kubeconfig", kubeconfig),
        Arg("authorization-kubeconfig", kubeconfig),
        Arg("client-ca-file", ca_file),
        Arg("requestheader-client-ca-file", go_join(cd, "front-proxy-ca.crt")),
        Arg("root-ca-file", ca_file),
        Arg("service-account-private-key-file", go_join(cd, "sa.key")),
        Arg("cluster-signing-cert-file", ca_file),
        Arg("cluster-signing-key-file", go_join(cd, "ca.key")),
        Arg("use-service-account-credentials", "true"),
        Arg("controllers", "*,bootstrapsigner,tokencleaner"),
    ]
    if external_ca:
        set_arg_value(defaults, "cluster-signing-key-file", "")
        set_arg_value(defaults, "cluster-signing-cert-file", "")
    net = c.networking
    if net.pod_subnet:
        set_arg_value(defaults, "allocate-node-cidrs", "true")
        set_arg_value(defaults, "cluster-cidr", net.pod_subnet)
        if net.service_subnet:
            set_arg_value(defaults, "service-cluster-ip-range", net.service_subnet)
    if c.cluster_name:
        set_arg_value(defaults, "cluster-name", c.cluster_name)
    return [KUBE_CONTROLLER_MANAGER, *_to_command(cfg, defaults, c.controller_manager.extra_args)]


def _scheduler_command(cfg: KubeadmConfig) -> list[str]:
    kubeconfig = go_join(DEFAULT_KUBERNETES_DIR, "scheduler.conf")
    defaults = [
        Arg("bind-address", "127.0.0.1"),
        Arg("leader-elect", "true"),
        Arg("kubeconfig", kubeconfig),
        Arg("authentication-kubeconfig", kubeconfig),
        Arg("authorization-kubeconfig", kubeconfig),
    ]
    return [KUBE_SCHEDULER, *_to_command(cfg, defaults, cfg.cluster.scheduler.extra_args)]


# --- pods -------------------------------------------------------------------------------------


def _apiserver_pod(cfg: KubeadmConfig, facts: NodeFacts) -> Pod:
    c = cfg.cluster
    adv = cfg.advertise_address
    host = _probe_address(adv) if adv else "127.0.0.1"
    port = cfg.bind_port
    volumes = _control_plane_volumes(cfg, facts)[KUBE_APISERVER]
    container = _container(
        KUBE_APISERVER,
        image=kubernetes_image(KUBE_APISERVER, cfg),
        command=_apiserver_command(cfg),
        mounts=volumes,
        probes=_probes(cfg, host, port, "HTTPS", _APISERVER_PROBES),
        requests={"cpu": "250m"},
        env=_merge_env(_proxy_env(facts), c.api_server.extra_envs),
    )
    annotations = {APISERVER_ADVERTISE_ANNOTATION: join_host_port(adv, port)}
    return _component_pod(cfg, KUBE_APISERVER, container, volumes, annotations)


def _controller_manager_pod(cfg: KubeadmConfig, facts: NodeFacts, external_ca: bool) -> Pod:
    c = cfg.cluster
    host = _bind_probe_address(c.controller_manager.extra_args)
    volumes = _control_plane_volumes(cfg, facts)[KUBE_CONTROLLER_MANAGER]
    container = _container(
        KUBE_CONTROLLER_MANAGER,
        image=kubernetes_image(KUBE_CONTROLLER_MANAGER, cfg),
        command=_controller_manager_command(cfg, external_ca),
        mounts=volumes,
        probes=_probes(cfg, host, KUBE_CONTROLLER_MANAGER_PORT, "HTTPS", _CONTROLLER_MANAGER_PROBES),
        requests={"cpu": "200m"},
        env=_merge_env(_proxy_env(facts), c.controller_manager.extra_envs),
    )
    return _component_pod(cfg, KUBE_CONTROLLER_MANAGER, container, volumes, None)


def _scheduler_pod(cfg: KubeadmConfig, facts: NodeFacts) -> Pod:
    c = cfg.cluster
    host = _bind_probe_address(c.scheduler.extra_args)
    volumes = _control_plane_volumes(cfg, facts)[KUBE_SCHEDULER]
    container = _container(
        KUBE_SCHEDULER,
        image=kubernetes_image(KUBE_SCHEDULER, cfg),
        command=_scheduler_command(cfg),
        mounts=volumes,
        probes=_probes(cfg, host, KUBE_SCHEDULER_PORT, "HTTPS", _minor(cfg).scheduler_probes),
        requests={"cpu": "100m"},
        env=_merge_env(_proxy_env(facts), c.scheduler.extra_envs),
    )
    return _component_pod(cfg, KUBE_SCHEDULER, container, volumes, None)


def joined_etcd_pod(cfg: KubeadmConfig, initial_cluster: Sequence[tuple[str, str]]) -> Pod:
    """etcd's Pod for a member of an existing cluster (what ``kubeadm join --control-plane`` writes)."""
    _refuse_unsupported(cfg)
    return _etcd_pod(cfg, initial_cluster)


def _etcd_pod(cfg: KubeadmConfig, initial_cluster: Sequence[tuple[str, str]] = ()) -> Pod:
    local = cfg.cluster.etcd_local
    assert local is not None  # checked by the caller
    certs_dir = cfg.cluster.certificates_dir + "/etcd"  # kubeadm concatenates here (no filepath.Join)
    volumes = {
        "etcd-data": _Volume("etcd-data", local.data_dir, local.data_dir, False, "DirectoryOrCreate"),
        "etcd-certs": _Volume("etcd-certs", certs_dir, certs_dir, False, "DirectoryOrCreate"),
    }
    host, port, scheme = etcd_probe_endpoint(cfg)
    container = _container(
        ETCD,
        image=etcd_image(cfg),
        command=etcd_command(cfg, initial_cluster),
        mounts=volumes,
        probes=_probes(cfg, host, port, scheme, _minor(cfg).etcd_probes),
        requests={"cpu": "100m", "memory": "100Mi"},
        env=_merge_env(local.extra_envs),  # etcd gets no proxy variables
        mount_order=("etcd-data", "etcd-certs"),
    )
    annotations = {ETCD_ADVERTISE_ANNOTATION: _url("https", cfg.advertise_address, ETCD_LISTEN_CLIENT_PORT)}
    return _component_pod(cfg, ETCD, container, volumes, annotations)


def etcd_probe_endpoint(cfg: KubeadmConfig) -> tuple[str, int, str]:
    """kubeadm ``GetEtcdProbeEndpoint``: (host, port, scheme) of the etcd probes.

    Local-host address of the advertise address's family, port 2381, HTTP; or taken from the first URL
    of the last ``listen-metrics-urls`` extraArg.
    """
    localhost = _localhost(cfg.advertise_address)
    default = (localhost, ETCD_METRICS_PORT, "HTTP")
    local = cfg.cluster.etcd_local
    if local is None:
        return default
    value = get_arg_value(local.extra_args, "listen-metrics-urls")
    if value is None:
        return default
    parsed = split_url(value.split(",")[0])
    if parsed is None:
        return default
    scheme, hostname, port_text = parsed
    port = ETCD_METRICS_PORT
    if port_text and 0 < int(port_text) <= 65535:
        port = int(port_text)
    return (hostname or localhost, port, "HTTPS" if scheme == "https" else "HTTP")


# --- building blocks --------------------------------------------------------------------------


class _Volume:
    __slots__ = ("host_path", "mount_path", "name", "path_type", "read_only")

    def __init__(self, name: str, host_path: str, mount_path: str, read_only: bool, path_type: str) -> None:
        self.name = name
        self.host_path = host_path
        self.mount_path = mount_path
        self.read_only = read_only
        self.path_type = path_type

    def volume(self) -> dict[str, Any]:
        # HostPathVolumeSource.type is a pointer: an empty path type is still written (`type: ""`).
        return {"name": self.name, "hostPath": {"path": self.host_path, "type": self.path_type}}

    def mount(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "mountPath": self.mount_path}
        if self.read_only:
            out["readOnly"] = True
        return out


def _control_plane_volumes(cfg: KubeadmConfig, facts: NodeFacts) -> dict[str, dict[str, _Volume]]:
    """kubeadm ``getHostPathVolumesForTheControlPlane``: component -> volume name -> volume."""
    c = cfg.cluster
    cd = c.certificates_dir
    dir_or_create = "DirectoryOrCreate"
    file_or_create = "FileOrCreate"
    out: dict[str, dict[str, _Volume]] = {n: {} for n in CONTROL_PLANE_COMPONENTS}

    def add(component: str, name: str, host: str, mount: str, read_only: bool, path_type: str) -> None:
        out[component][name] = _Volume(name, host, mount, read_only, path_type)

    ca_name, ca_path = _CA_CERTS_VOLUME
    add(KUBE_APISERVER, "k8s-certs", cd, cd, True, dir_or_create)
    add(KUBE_APISERVER, ca_name, ca_path, ca_path, True, dir_or_create)
    if c.etcd_external is not None:
        for i, d in enumerate(
            _etcd_cert_dirs(
                c.etcd_external.ca_file,
                c.etcd_external.cert_file,
                c.etcd_external.key_file,
                cd,
                _minor(cfg).ca_cert_extra_paths,
            )
        ):
            add(KUBE_APISERVER, f"etcd-certs-{i}", d, d, True, dir_or_create)

    add(KUBE_CONTROLLER_MANAGER, "k8s-certs", cd, cd, True, dir_or_create)
    add(KUBE_CONTROLLER_MANAGER, ca_name, ca_path, ca_path, True, dir_or_create)
    kcm_conf = go_join(DEFAULT_KUBERNETES_DIR, "controller-manager.conf")
    add(KUBE_CONTROLLER_MANAGER, "kubeconfig", kcm_conf, kcm_conf, True, file_or_create)
    minor = _minor(cfg)
    if minor.kcm_flexvolume_volume:
        flex = get_arg_value(c.controller_manager.extra_args, "flex-volume-plugin-dir")
        flex_dir = _DEFAULT_FLEXVOLUME_DIR if flex is None else flex
        add(KUBE_CONTROLLER_MANAGER, "flexvolume-dir", flex_dir, flex_dir, False, dir_or_create)

    sched_conf = go_join(DEFAULT_KUBERNETES_DIR, "scheduler.conf")
    add(KUBE_SCHEDULER, "kubeconfig", sched_conf, sched_conf, True, file_or_create)

    for path in minor.ca_cert_extra_paths:
        if path in facts.existing_paths:
            name = path.replace("/", "-")[1:]
            add(KUBE_APISERVER, name, path, path, True, dir_or_create)
            add(KUBE_CONTROLLER_MANAGER, name, path, path, True, dir_or_create)

    extras: tuple[tuple[str, Sequence[HostPathMount]], ...] = (
        (KUBE_APISERVER, c.api_server.extra_volumes),
        (KUBE_CONTROLLER_MANAGER, c.controller_manager.extra_volumes),
        (KUBE_SCHEDULER, c.scheduler.extra_volumes),
    )
    for component, extra_volumes in extras:
        for v in extra_volumes:
            add(component, v.name, v.host_path, v.mount_path, v.read_only, v.path_type)
    return out


def _etcd_cert_dirs(
    ca_file: str, cert_file: str, key_file: str, certificates_dir: str, ca_extra_paths: Sequence[str]
) -> list[str]:
    """kubeadm ``getEtcdCertVolumes``: host directories to mount for external etcd files, sorted."""
    dirs: set[str] = set()
    for path in (ca_file, cert_file, key_file):
        d = go_dir(path)
        covered = any(d.startswith(p) for p in ca_extra_paths)
        if d == "." or covered or d.startswith(_CA_CERTS_VOLUME[1]) or d.startswith(certificates_dir):
            continue
        already = False
        for existing in sorted(dirs):
            if existing.startswith(d):
                dirs.discard(existing)
            elif d.startswith(existing):
                already = True
        if already:
            continue
        dirs.add(d)
    return sorted(dirs)


def _component_pod(
    cfg: KubeadmConfig,
    name: str,
    container: dict[str, Any],
    volumes: Mapping[str, _Volume],
    annotations: dict[str, str] | None,
) -> Pod:
    """kubeadm ``staticpod.ComponentPod`` after a JSON round trip (empty fields dropped)."""
    metadata: dict[str, Any] = {
        "labels": {"component": name, "tier": "control-plane"},
        "name": name,
        "namespace": "kube-system",
    }
    if _minor(cfg).creation_timestamp_null:
        metadata["creationTimestamp"] = None
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "containers": [container],
            "hostNetwork": True,
            "priority": SYSTEM_NODE_CRITICAL_PRIORITY,
            "priorityClassName": "system-node-critical",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [volumes[n].volume() for n in sorted(volumes)],
        },
        "status": {},
    }


def _container(
    name: str,
    *,
    image: str,
    command: list[str],
    mounts: Mapping[str, _Volume],
    probes: Mapping[str, Any],
    requests: dict[str, str],
    env: list[dict[str, str]],
    mount_order: Sequence[str] | None = None,
) -> dict[str, Any]:
    order = list(mount_order) if mount_order is not None else sorted(mounts)
    out: dict[str, Any] = {
        "command": command,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "name": name,
        "resources": {"requests": requests},
        "volumeMounts": [mounts[n].mount() for n in order],
        **probes,
    }
    if env:
        out["env"] = env
    return out


_APISERVER_PROBES: Final = versions.Probes("/livez", "/readyz", "/livez")
_CONTROLLER_MANAGER_PROBES: Final = versions.Probes("/healthz", None, "/healthz")


def _probes(cfg: KubeadmConfig, host: str, port: int, scheme: str, paths: versions.Probes) -> dict[str, Any]:
    """A container's liveness, readiness (when the minor has one) and startup probes; from v1.34 they name the
    port ``probe-port``, declared in the container's ``ports`` (versions.KubeadmMinor.named_probe_port)."""
    named = _minor(cfg).named_probe_port
    target: int | str = PROBE_PORT_NAME if named else port
    out: dict[str, Any] = {
        "livenessProbe": _probe(host, paths.liveness, target, scheme, 10, 15, 8, 10),
        "startupProbe": _startup(host, paths.startup, target, scheme, _health_check_seconds(cfg)),
    }
    if paths.readiness is not None:
        out["readinessProbe"] = _probe(host, paths.readiness, target, scheme, 0, 15, 3, 1)
    if named:
        out["ports"] = [{"containerPort": port, "name": PROBE_PORT_NAME, "protocol": "TCP"}]
    return out


def _probe(
    host: str, path: str, port: int | str, scheme: str, initial_delay: int, timeout: int, failure: int, period: int
) -> dict[str, Any]:
    """kubeadm ``createHTTPProbe`` after JSON (zero ints and an empty host are omitted)."""
    http_get: dict[str, Any] = {"path": path, "port": port, "scheme": scheme}
    if host:
        http_get["host"] = host
    out: dict[str, Any] = {"httpGet": http_get, "timeoutSeconds": timeout}
    for key, value in (
        ("initialDelaySeconds", initial_delay),
        ("failureThreshold", failure),
        ("periodSeconds", period),
    ):
        if value:
            out[key] = value
    return out


def _startup(host: str, path: str, port: int | str, scheme: str, timeout_seconds: float) -> dict[str, Any]:
    period = 10
    return _probe(host, path, port, scheme, period, 15, math.ceil(timeout_seconds / period), period)


def _health_check_seconds(cfg: KubeadmConfig) -> float:
    return cfg.init.timeouts.control_plane_component_health_check.total_seconds()


def _probe_address(addr: str) -> str:
    """kubeadm ``getProbeAddress``: an unspecified bind address means "the Pod IP" (empty host)."""
    return "" if addr in ("0.0.0.0", "::") else addr


def _bind_probe_address(extra_args: Iterable[Arg]) -> str:
    addr = get_arg_value(extra_args, "bind-address")
    return "127.0.0.1" if addr is None else _probe_address(addr)


def _localhost(advertise_address: str) -> str:
    return "::1" if is_ipv6_string(advertise_address) else "127.0.0.1"


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{join_host_port(host, port)}"


def _proxy_env(facts: NodeFacts) -> list[EnvVar]:
    """kubeadm ``GetProxyEnvVars``: variables whose name ends in ``_proxy`` (any case), non-empty."""
    return [EnvVar(n, v) for n, v in facts.proxy_env if n.lower().endswith("_proxy") and v]


def _merge_env(*lists: Iterable[EnvVar]) -> list[dict[str, str]]:
    """kubeadm ``MergeKubeadmEnvVars``: later lists win per name; sorted by name."""
    merged: dict[str, str] = {}
    for envs in lists:
        for e in envs:
            merged[e.name] = e.value
    out: list[dict[str, str]] = []
    for name in sorted(merged):
        item = {"name": name}
        if merged[name]:
            item["value"] = merged[name]
        out.append(item)
    return out


def _refuse_unsupported(cfg: KubeadmConfig) -> None:
    if dict(cfg.cluster.feature_gates).get(versions.ROOTLESS_CONTROL_PLANE):
        raise ConfigError(
            "the RootlessControlPlane feature gate is not supported",
            "remove it from featureGates; kubeadm would also create system users for it",
        )
    if cfg.init.patches_directory:
        raise ConfigError(
            "kubeadm --patches / patches.directory is not supported for static Pod manifests",
            "regenerate without patches and apply them by hand",
        )
