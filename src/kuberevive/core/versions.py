"""What kubeadm writes, minor by minor (v1.30 to v1.37): the one table the builders read.

Every entry of :data:`CHANGES` says what changes, from which minor, and the kubeadm source (file in
kubernetes/kubernetes, release branch or tag, and PR where one is known) it was read from. The sources were
read in the module zips of k8s.io/kubernetes v1.30.14, v1.31.14 (binary: v1.31.9), v1.32.13, v1.33.13, v1.34.4,
v1.35.4, v1.36.3 and v1.37.2 from the Go module proxy, and every minor whose kubeadm is built was checked against its
output (tests/golden/README.md). :func:`profile` folds the changes up to a minor into one :class:`KubeadmMinor`;
builders ask it (``profile(cfg.cluster.kubernetes_version).named_probe_port``) instead of comparing versions.

A minor's entry is what its checked patch (:data:`CHECKED_PATCH`) writes; kubeadm changes a little within a minor
too (the etcd image tag of SupportedEtcdVersion, the flag order of PR #135400 back-ported to v1.32.13, v1.33.8 and
v1.34.4), so an earlier patch of the same minor may have written those few fields differently.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from types import MappingProxyType
from typing import Any, Final

from kuberevive.errors import ConfigError

OLDEST_MINOR: Final = 30
NEWEST_MINOR: Final = 37
SUPPORTED_RANGE: Final = f"v1.{OLDEST_MINOR} to v1.{NEWEST_MINOR}"

#: The patch release of each minor whose kubeadm sources (and, where built, binary) the table was checked with.
CHECKED_PATCH: Final[Mapping[int, str]] = MappingProxyType(
    {
        30: "v1.30.14",
        31: "v1.31.9",  # the newest v1.31 whose every module the Go module proxy serves (not kube-proxy v0.31.13/14)
        32: "v1.32.13",
        33: "v1.33.13",
        34: "v1.34.4",
        35: "v1.35.4",
        36: "v1.36.3",
        37: "v1.37.2",
    }
)

_CA_EXTRA_PATHS_1_30: Final = ("/etc/pki", "/usr/share/ca-certificates", "/usr/local/share/ca-certificates",
                               "/etc/ca-certificates")  # fmt: skip
_CA_EXTRA_PATHS_1_31: Final = ("/etc/pki/ca-trust", "/etc/pki/tls/certs", "/etc/ca-certificates",
                               "/usr/share/ca-certificates", "/usr/local/share/ca-certificates")  # fmt: skip


@dataclass(frozen=True)
class Gate:
    """One kubeadm feature gate of a minor: its default and whether it is GA and locked to it."""

    default: bool
    locked: bool = False
    """GA with ``LockToDefault``. Informational: kubeadm's ``features.NewFeatureGate`` does not enforce it (a locked
    gate set to the other value is accepted and, where kubeadm still reads the gate, obeyed)."""


@dataclass(frozen=True)
class Probes:
    """HTTP paths of a static Pod's liveness, readiness (None: no readiness probe) and startup probes."""

    liveness: str
    readiness: str | None
    startup: str


@dataclass(frozen=True)
class KubeadmMinor:
    """What kubeadm v1.<minor> writes for a cluster of that minor. Built by :func:`profile` only."""

    minor: int = OLDEST_MINOR
    etcd_image_tag: str = "3.5.15-0"
    """``constants.SupportedEtcdVersion`` entry of the minor (or the nearest one, as kubeadm does)."""
    etcd_v36_flags: str = "never"
    """When etcd gets ``--feature-gates=InitialCorruptCheck=true`` and ``--watch-progress-notify-interval`` instead
    of the ``--experimental-*`` pair: ``never``, ``by-image-tag`` (the etcd image tag is 3.6.0 or newer) or
    ``always``."""
    etcd_probes: Probes = Probes("/health?exclude=NOSPACE&serializable=true", None, "/health?serializable=false")
    scheduler_probes: Probes = Probes("/healthz", None, "/healthz")
    named_probe_port: bool = False
    """Probes use the container port ``probe-port`` (declared under ``ports``) instead of a number."""
    kcm_flexvolume_volume: bool = True
    """kube-controller-manager mounts ``flexvolume-dir``."""
    ca_cert_extra_paths: tuple[str, ...] = _CA_EXTRA_PATHS_1_30
    """Host CA directories mounted into kube-apiserver and kube-controller-manager when they exist."""
    sort_all_args: bool = True
    """Flags: the whole merged list sorted by name (True), or the defaults sorted and extraArgs appended in the
    user's order (False)."""
    config_api_versions: tuple[str, ...] = ("v1beta3",)
    """``kubeadm.k8s.io`` versions an init configuration may use (an experimental one is not listed)."""
    feature_gates: Mapping[str, Gate] = field(default_factory=dict)
    creation_timestamp_null: bool = True
    """A static Pod's ``metadata.creationTimestamp: null`` (the zero time is omitted from v1.34)."""
    kubeconfig_preferences: bool = True
    """A kubeconfig's ``preferences: {}`` (the empty struct is omitted from v1.34)."""
    apiserver_kubelet_client_org: bool = True
    """apiserver-kubelet-client.crt has O=kubeadm:cluster-admins."""
    external_etcd_http_endpoints: bool = False
    """v1beta4 ``etcd.external.httpEndpoints`` (preflight health checks only) is a known field."""
    kubelet_conf_server: str = "endpoint"
    """kubelet.conf of ``init``: ``endpoint`` (controlPlaneEndpoint), ``gate`` (the local API endpoint when
    ControlPlaneKubeletLocalMode is on) or ``local`` (always the local API endpoint)."""
    instance_config: str = "never"
    """/var/lib/kubelet/instance-config.yaml holds the CRI socket: ``never``, ``gate`` (NodeLocalCRISocket) or
    ``always``."""
    kubeconfig_keys_follow_algorithm: bool = False
    """The kubeconfigs' client keys are of ``encryptionAlgorithm`` (before v1.31 always RSA-2048)."""
    writes_super_admin_conf: bool = True
    """``super-admin.conf`` (system:masters) beside ``admin.conf`` (kubeadm:cluster-admins), since v1.29."""
    pause_image_tag: str = "3.9"
    """``constants.PauseVersion``: the sandbox image kubeadm lists (``kubeadm config images list``) and checks the
    container runtime against."""

    @property
    def version(self) -> str:
        return f"v1.{self.minor}"

    def gate_enabled(self, name: str, configured: Mapping[str, bool]) -> bool:
        """The value of a feature gate: the configuration's, else the minor's default; False if unknown."""
        gate = self.feature_gates.get(name)
        if gate is None:
            return False
        return configured.get(name, gate.default)

    def kubelet_local_mode(self, configured: Mapping[str, bool]) -> bool:
        """kubelet.conf of ``init`` points at the local API server (:attr:`kubelet_conf_server`)."""
        if self.kubelet_conf_server == "gate":
            return self.gate_enabled(CONTROL_PLANE_KUBELET_LOCAL_MODE, configured)
        return self.kubelet_conf_server == "local"

    def writes_instance_config(self, configured: Mapping[str, bool]) -> bool:
        """The CRI socket goes to /var/lib/kubelet/instance-config.yaml, not kubeadm-flags.env or the Node
        annotation (:attr:`instance_config`)."""
        if self.instance_config == "gate":
            return self.gate_enabled(NODE_LOCAL_CRI_SOCKET, configured)
        return self.instance_config == "always"


CONTROL_PLANE_KUBELET_LOCAL_MODE: Final = "ControlPlaneKubeletLocalMode"
NODE_LOCAL_CRI_SOCKET: Final = "NodeLocalCRISocket"
PUBLIC_KEYS_ECDSA: Final = "PublicKeysECDSA"
ROOTLESS_CONTROL_PLANE: Final = "RootlessControlPlane"
WAIT_FOR_ALL_CONTROL_PLANE_COMPONENTS: Final = "WaitForAllControlPlaneComponents"
ETCD_LEARNER_MODE: Final = "EtcdLearnerMode"
UPGRADE_ADDONS_BEFORE_CONTROL_PLANE: Final = "UpgradeAddonsBeforeControlPlane"

_F = "cmd/kubeadm/app/features/features.go"
_C = "cmd/kubeadm/app/constants/constants.go"
_ETCD = "cmd/kubeadm/app/phases/etcd/local.go"
_CP = "cmd/kubeadm/app/phases/controlplane/manifests.go"
_VOL = "cmd/kubeadm/app/phases/controlplane/volumes.go"
_ARGS = "cmd/kubeadm/app/util/arguments.go"
_INIT_KC = "cmd/kubeadm/app/cmd/phases/init/kubeconfig.go"
_INIT_KUBELET = "cmd/kubeadm/app/cmd/phases/init/kubelet.go"
_COMMON = "cmd/kubeadm/app/util/config/common.go (validateSupportedVersion)"


@dataclass(frozen=True)
class Change:
    """From minor ``since`` on, the setting ``setting`` of :class:`KubeadmMinor` is ``value``.

    A feature-gate change has ``setting="gate:<Name>"`` and a :class:`Gate` value, or None (the gate is gone).
    """

    since: int
    setting: str
    value: Any
    what: str
    source: str


#: The v1.30 baseline is :class:`KubeadmMinor`'s defaults plus the gates below; everything after is a change.
CHANGES: Final[tuple[Change, ...]] = (
    # -- v1.30 (the baseline's gates)
    Change(30, f"gate:{PUBLIC_KEYS_ECDSA}", Gate(False), "ECDSA keys through a gate (deprecated)", _F),
    Change(30, f"gate:{ROOTLESS_CONTROL_PLANE}", Gate(False), "alpha", _F),
    Change(30, f"gate:{ETCD_LEARNER_MODE}", Gate(True), "beta, on", _F + " (PR #120228)"),
    Change(30, f"gate:{UPGRADE_ADDONS_BEFORE_CONTROL_PLANE}", Gate(False), "deprecated", _F),
    Change(30, f"gate:{WAIT_FOR_ALL_CONTROL_PLANE_COMPONENTS}", Gate(False), "alpha", _F + " (PR #123341)"),
    # -- v1.31
    Change(31, "etcd_image_tag", "3.5.24-0", "etcd image 3.5.24-0 (v1.31.14's SupportedEtcdVersion)", _C),
    Change(31, "pause_image_tag", "3.10", "pause image 3.10", _C + " (PauseVersion)"),
    Change(31, "config_api_versions", ("v1beta3", "v1beta4"),
           "v1beta4 released (v1beta3 deprecated, still read)", _COMMON + "; PR #125029"),
    Change(31, "etcd_probes", Probes("/livez", "/readyz", "/readyz"),
           "etcd probes /livez, /readyz and a readiness probe", _ETCD),
    Change(31, "ca_cert_extra_paths", _CA_EXTRA_PATHS_1_31,
           "CA directories /etc/pki/ca-trust and /etc/pki/tls/certs instead of /etc/pki", _VOL),
    Change(31, "kubeconfig_keys_follow_algorithm", True,
           "kubeconfig client keys of encryptionAlgorithm (v1.30: RSA-2048 even with PublicKeysECDSA)",
           "cmd/kubeadm/app/phases/kubeconfig/kubeconfig.go (kubeConfigSpec.EncryptionAlgorithm)"),
    Change(31, f"gate:{UPGRADE_ADDONS_BEFORE_CONTROL_PLANE}", None, "gate removed", _F),
    Change(31, f"gate:{CONTROL_PLANE_KUBELET_LOCAL_MODE}", Gate(False), "alpha", _F + " (PR #125582)"),
    Change(31, "kubelet_conf_server", "gate",
           "kubelet.conf: the local API endpoint when ControlPlaneKubeletLocalMode is on", _INIT_KC),
    # -- v1.32
    Change(32, "scheduler_probes", Probes("/livez", "/readyz", "/livez"),
           "kube-scheduler probes /livez, /readyz and a readiness probe", _CP + " (PR #126945)"),
    Change(32, "sort_all_args", False,
           "flags: defaults sorted, extraArgs appended in the user's order (back-ported to v1.32.13)",
           _ARGS + " (PR #135400)"),
    Change(32, f"gate:{ETCD_LEARNER_MODE}", Gate(True, locked=True), "GA", _F + " (PR #126374)"),
    Change(32, f"gate:{NODE_LOCAL_CRI_SOCKET}", Gate(False), "alpha", _F + " (PR #129279)"),
    Change(32, "instance_config", "gate", "instance-config.yaml when NodeLocalCRISocket is on", _INIT_KUBELET),
    # -- v1.33
    Change(33, f"gate:{ETCD_LEARNER_MODE}", None, "gate removed", _F),
    Change(33, f"gate:{WAIT_FOR_ALL_CONTROL_PLANE_COMPONENTS}", Gate(True), "beta, on", _F + " (PR #129620)"),
    Change(33, f"gate:{CONTROL_PLANE_KUBELET_LOCAL_MODE}", Gate(True), "beta, on", _F + " (PR #129956)"),
    Change(33, "apiserver_kubelet_client_org", False, "apiserver-kubelet-client.crt without O=kubeadm:cluster-admins",
           "cmd/kubeadm/app/phases/certs/certlist.go (KubeadmCertKubeletClient)"),
    # -- v1.34
    Change(34, "etcd_image_tag", "3.6.5-0", "etcd 3.6 (image 3.6.5-0): etcdutl restores snapshots", _C),
    Change(34, "etcd_v36_flags", "by-image-tag",
           "etcd flags --feature-gates=InitialCorruptCheck=true and --watch-progress-notify-interval when the etcd "
           "image is 3.6.0 or newer", _ETCD),
    Change(34, "pause_image_tag", "3.10.1", "pause image 3.10.1", _C + " (PauseVersion)"),
    Change(34, "named_probe_port", True,
           "probes use the named container port probe-port, declared in each container's ports", _CP + ", " + _ETCD),
    Change(34, "creation_timestamp_null", False, "static Pods lose 'creationTimestamp: null'",
           "k8s.io/apimachinery v0.34 pkg/apis/meta/v1/types.go (CreationTimestamp omitzero)"),
    Change(34, "kubeconfig_preferences", False, "kubeconfigs lose 'preferences: {}'",
           "k8s.io/client-go v0.34 tools/clientcmd/api/v1/types.go (Preferences omitzero)"),
    Change(34, f"gate:{WAIT_FOR_ALL_CONTROL_PLANE_COMPONENTS}", Gate(True, locked=True), "GA",
           _F + " (PR #132594)"),
    Change(34, f"gate:{NODE_LOCAL_CRI_SOCKET}", Gate(True), "beta, on: instance-config.yaml",
           _F + " (PR #131981)"),
    Change(34, "apiserver_kubelet_client_org", True, "apiserver-kubelet-client.crt with O=kubeadm:cluster-admins again",
           "cmd/kubeadm/app/phases/certs/certlist.go (KubeadmCertKubeletClient)"),
    # -- v1.35
    Change(35, "etcd_image_tag", "3.6.6-0", "etcd image 3.6.6-0", _C),
    Change(35, "external_etcd_http_endpoints", True, "v1beta4 etcd.external.httpEndpoints (used by preflight only)",
           "cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go (ExternalEtcd.HTTPEndpoints)"),
    Change(35, f"gate:{WAIT_FOR_ALL_CONTROL_PLANE_COMPONENTS}", None, "gate removed", _F + " (PR #134781)"),
    Change(35, f"gate:{CONTROL_PLANE_KUBELET_LOCAL_MODE}", Gate(True, locked=True), "GA", _F + " (PR #134106)"),
    Change(35, "kubelet_conf_server", "local",
           "kubelet.conf: always the local API endpoint (the gate is no longer read)", _INIT_KC),
    # -- v1.36
    Change(36, "etcd_image_tag", "3.6.8-0", "etcd image 3.6.8-0", _C),
    Change(36, "pause_image_tag", "3.10.2", "pause image 3.10.2", _C + " (PauseVersion)"),
    Change(36, "etcd_v36_flags", "always", "etcd 3.6 flags whatever the image tag", _ETCD),
    Change(36, "apiserver_kubelet_client_org", False, "apiserver-kubelet-client.crt without O=kubeadm:cluster-admins",
           "cmd/kubeadm/app/phases/certs/certlist.go (KubeadmCertKubeletClient)"),
    Change(36, "kcm_flexvolume_volume", False, "kube-controller-manager loses the flexvolume-dir volume", _VOL),
    Change(36, f"gate:{CONTROL_PLANE_KUBELET_LOCAL_MODE}", None, "gate removed (always on)", _F + " (PR #135773)"),
    Change(36, f"gate:{NODE_LOCAL_CRI_SOCKET}", Gate(True, locked=True), "GA", _F + " (PR #135742)"),
    # -- v1.37
    Change(37, "etcd_image_tag", "3.7.0-0", "etcd image 3.7.0-0 (nearest entry: the table stops at 36)", _C),
    Change(37, "config_api_versions", ("v1beta4",),
           "v1beta3 removed (kubeadm.k8s.io/v1 experimental)", _COMMON + "; PR #136016"),
    Change(37, f"gate:{PUBLIC_KEYS_ECDSA}", None, "gate removed with v1beta3", _F),
    Change(37, f"gate:{NODE_LOCAL_CRI_SOCKET}", None, "gate removed (always on)", _F),
    Change(37, "instance_config", "always", "instance-config.yaml always", _INIT_KUBELET),
)  # fmt: skip


#: Where kubeadm's own SupportedEtcdVersion entry changed within a minor (a back-ported etcd bump): minor -> (the first
#: patch with the entry in :data:`CHANGES`, the tag every earlier patch of that minor writes). Read in constants.go of
#: k8s.io/kubernetes v1.31.0, v1.31.8, v1.31.9, v1.31.12, v1.31.13 (3.5.15-0) and v1.31.14 (3.5.24-0).
ETCD_TAG_BEFORE_PATCH: Final[Mapping[int, tuple[int, str]]] = MappingProxyType({31: (14, "3.5.15-0")})


def etcd_image_tag(kubernetes_version: str) -> str:
    """The etcd image tag kubeadm of ``kubernetes_version`` writes (its SupportedEtcdVersion entry for its own minor),
    patch included where it changed within the minor (:data:`ETCD_TAG_BEFORE_PATCH`)."""
    minor = check_supported(kubernetes_version)
    key = version_key(kubernetes_version)
    first, earlier = ETCD_TAG_BEFORE_PATCH.get(minor, (0, ""))
    if key is not None and key[2] < first:
        return earlier
    return minor_profile(minor).etcd_image_tag


def parse_minor(kubernetes_version: str) -> int | None:
    """The minor of ``v1.<minor>.<patch>`` (a leading ``v`` optional), None if it is not a v1 version."""
    m = re.match(r"^v?1\.(\d+)\.\d+", kubernetes_version)
    return int(m.group(1)) if m else None


def check_supported(kubernetes_version: str, where: str = "kubernetesVersion") -> int:
    """The minor of a supported version; a :class:`ConfigError` naming the range otherwise."""
    minor = parse_minor(kubernetes_version)
    if minor is None or not OLDEST_MINOR <= minor <= NEWEST_MINOR:
        raise ConfigError(
            f"{where} {kubernetes_version} is outside the Kubernetes versions kuberevive supports ({SUPPORTED_RANGE})",
            f"give the cluster's real version; kuberevive writes what kubeadm {SUPPORTED_RANGE} writes",
        )
    return minor


def profile(kubernetes_version: str) -> KubeadmMinor:
    """What kubeadm writes for a cluster of ``kubernetes_version``; ConfigError outside the supported range."""
    return minor_profile(check_supported(kubernetes_version))


@cache
def minor_profile(minor: int) -> KubeadmMinor:
    if not OLDEST_MINOR <= minor <= NEWEST_MINOR:
        raise ConfigError(f"Kubernetes v1.{minor} is outside the supported range {SUPPORTED_RANGE}")
    out = KubeadmMinor(minor=minor)
    gates: dict[str, Gate] = {}
    for change in CHANGES:
        if change.since > minor:
            continue
        if change.setting.startswith("gate:"):
            name = change.setting.removeprefix("gate:")
            if change.value is None:
                gates.pop(name, None)
            else:
                gates[name] = change.value
        else:
            out = replace(out, **{change.setting: change.value})
    return replace(out, feature_gates=MappingProxyType(gates))


def changes_in(minor: int) -> tuple[Change, ...]:
    """The table's entries that take effect in ``minor`` (what differs from the minor before)."""
    return tuple(c for c in CHANGES if c.since == minor)


def etcd_version_at_least(image_tag: str, wanted: tuple[int, int]) -> bool:
    """Whether an etcd image tag (``3.6.5-0``) is at least ``wanted`` (major, minor); False if it does not parse."""
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", image_tag)
    return m is not None and (int(m.group(1)), int(m.group(2))) >= wanted


def validate_feature_gates(minor: int, configured: Mapping[str, bool], where: str) -> None:
    """kubeadm ``features.NewFeatureGate``: a gate the minor does not know is refused (a locked one is not)."""
    known = minor_profile(minor).feature_gates
    for name in configured:
        if name not in known:
            names = ", ".join(sorted(known)) or "none"
            raise ConfigError(
                f"invalid kubeadm configuration: {where}.{name}: kubeadm v1.{minor} has no such feature gate "
                f"(it knows {names})",
                "remove it from featureGates",
            )


def minors_reading(api_version: str) -> tuple[int, ...]:
    """The supported minors whose kubeadm reads a ``kubeadm.k8s.io/<api_version>`` configuration."""
    return tuple(
        m for m in range(OLDEST_MINOR, NEWEST_MINOR + 1) if api_version in minor_profile(m).config_api_versions
    )


def check_config_api_version(api_version: str, minor: int, where: str) -> None:
    """A :class:`ConfigError` when kubeadm v1.<minor> refuses a ``kubeadm.k8s.io/<api_version>`` document; the
    message says which minors read it and which version this minor reads."""
    reads = minor_profile(minor).config_api_versions
    if api_version in reads:
        return
    readers = minors_reading(api_version)
    span = f"kubeadm v1.{readers[0]} to v1.{readers[-1]} read it" if readers else "no supported kubeadm reads it"
    raise ConfigError(
        f"{where}: kubeadm v1.{minor} does not read kubeadm.k8s.io/{api_version} ({span})",
        f"write the configuration as kubeadm.k8s.io/{' or '.join(reads)} for Kubernetes v1.{minor}",
    )


# ------------------------------------------------------------------------------------------- the cluster's version

STORED_CONFIGURATION: Final = "the ClusterConfiguration stored in etcd (kube-system/kubeadm-config)"
KUBELET_BINARY: Final = "kubelet --version"
RUNTIME_IMAGES: Final = "the newest {component} image in the container runtime"
#: Control-plane images whose tag is the cluster's version, most telling first.
VERSIONED_COMPONENTS: Final = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def version_key(version: str) -> tuple[int, int, int] | None:
    """``v1.37.2`` (``v`` optional, a ``-rc.0``/``+build`` suffix ignored) as (1, 37, 2); None if it is none."""
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$", version)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def image_version(ref: str, component: str) -> str | None:
    """The tag of ``<repo>/<component>:<tag>`` when it is a version (``v1.37.2``), else None."""
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag or name.rsplit("/", 1)[-1] != component:
        return None
    return tag if version_key(tag) is not None else None


def surviving_version(
    stored: str | None = None,
    kubelet: str | None = None,
    manifest_images: Mapping[str, str] | None = None,
    runtime_images: tuple[str, ...] = (),
) -> tuple[str, str] | None:
    """The cluster's Kubernetes version from what survives, and where it was read: the stored ClusterConfiguration's
    ``kubernetesVersion``, else the kubelet's version, else the image of a surviving control-plane manifest
    (``manifest_images``: node path -> image), else the newest control-plane image the container runtime holds.
    None when nothing tells it; a :class:`ConfigError` naming the source and the supported range when the version
    found is outside it (nothing may be generated as another minor's kubeadm)."""
    found: tuple[str, str] | None = None
    if stored:
        found = stored, STORED_CONFIGURATION
    elif kubelet and version_key(kubelet) is not None:
        found = kubelet, KUBELET_BINARY
    else:
        images = sorted((manifest_images or {}).items())
        in_manifests = [
            (version, f"the {component} image in {path}")
            for component in VERSIONED_COMPONENTS
            for path, ref in images
            if (version := image_version(ref, component))
        ]
        in_runtime = [
            [v for ref in runtime_images if (v := image_version(ref, component))] for component in VERSIONED_COMPONENTS
        ]
        if in_manifests:
            found = in_manifests[0]
        else:
            for component, tags in zip(VERSIONED_COMPONENTS, in_runtime, strict=True):
                if tags:
                    newest = max(tags, key=lambda v: version_key(v) or (0, 0, 0))
                    found = newest, RUNTIME_IMAGES.format(component=component)
                    break
    if found is not None:
        check_supported(found[0], f"the cluster's Kubernetes version ({found[1]})")
    return found
