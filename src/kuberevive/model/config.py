"""The kubeadm cluster configuration, resolved: every default applied, every field validated.

Pure data (frozen dataclasses). Parsing lives in :mod:`kuberevive.model.kubeadm_yaml`; the values
that kubeadm detects on the node itself (hostname, default address) come in as :class:`NodeFacts`
so that nothing here touches the machine.

kubeadm vs. kuberevive
======================
============================  ===========================================  ==========================
topic                         kubeadm v1.30 to v1.37                       kuberevive
============================  ===========================================  ==========================
input versions                v1beta3 up to v1.36, v1beta4 from v1.31      same (core/versions.py)
stored/normalised shape       internal type; stored as v1beta4             v1beta4 shape (this module)
kubernetesVersion missing     fetches ``stable-1`` online, falls back to   the emulated kubeadm
                              its own version                              version (offline)
advertiseAddress missing      IP of the default-route interface            ``NodeFacts.default_address``
nodeRegistration.name         lower-cased hostname                         ``NodeFacts.hostname``
============================  ===========================================  ==========================
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

DEFAULT_CERTIFICATES_DIR = "/etc/kubernetes/pki"
DEFAULT_KUBERNETES_DIR = "/etc/kubernetes"
DEFAULT_MANIFESTS_DIR = "/etc/kubernetes/manifests"
DEFAULT_IMAGE_REPOSITORY = "registry.k8s.io"
DEFAULT_SERVICE_SUBNET = "10.96.0.0/12"
DEFAULT_DNS_DOMAIN = "cluster.local"
DEFAULT_CLUSTER_NAME = "kubernetes"
DEFAULT_ETCD_DATA_DIR = "/var/lib/etcd"
DEFAULT_BIND_PORT = 6443
DEFAULT_CRI_SOCKET = "unix:///var/run/containerd/containerd.sock"
DEFAULT_CERT_VALIDITY = timedelta(hours=8760)
DEFAULT_CA_CERT_VALIDITY = timedelta(hours=87600)
CONTROL_PLANE_TAINT_KEY = "node-role.kubernetes.io/control-plane"
DEFAULT_BOOTSTRAP_GROUP = "system:bootstrappers:kubeadm:default-node-token"


class EncryptionAlgorithm(StrEnum):
    RSA_2048 = "RSA-2048"
    RSA_3072 = "RSA-3072"
    RSA_4096 = "RSA-4096"
    ECDSA_P256 = "ECDSA-P256"

    @property
    def rsa_bits(self) -> int | None:
        return {"RSA-2048": 2048, "RSA-3072": 3072, "RSA-4096": 4096}.get(self.value)


@dataclass(frozen=True)
class NodeFacts:
    """What kubeadm detects on the machine it runs on."""

    hostname: str
    default_address: str | None = None
    existing_paths: frozenset[str] = frozenset()
    """Absolute host paths that exist (for the optional CA-certificate volumes of the manifests)."""
    proxy_env: tuple[tuple[str, str], ...] = ()
    """``*_proxy`` variables of kubeadm's own environment, copied into the control-plane pods."""


@dataclass(frozen=True)
class Arg:
    name: str
    value: str


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str


@dataclass(frozen=True)
class HostPathMount:
    name: str
    host_path: str
    mount_path: str
    read_only: bool = False
    path_type: str = ""


@dataclass(frozen=True)
class ControlPlaneComponent:
    extra_args: tuple[Arg, ...] = ()
    extra_volumes: tuple[HostPathMount, ...] = ()
    extra_envs: tuple[EnvVar, ...] = ()

    def arg(self, name: str) -> str | None:
        """The last value given for ``name`` in extraArgs, if any."""
        values = [a.value for a in self.extra_args if a.name == name]
        return values[-1] if values else None


@dataclass(frozen=True)
class APIServer(ControlPlaneComponent):
    cert_sans: tuple[str, ...] = ()


@dataclass(frozen=True)
class LocalEtcd:
    image_repository: str = ""
    image_tag: str = ""
    data_dir: str = DEFAULT_ETCD_DATA_DIR
    extra_args: tuple[Arg, ...] = ()
    extra_envs: tuple[EnvVar, ...] = ()
    server_cert_sans: tuple[str, ...] = ()
    peer_cert_sans: tuple[str, ...] = ()

    def arg(self, name: str) -> str | None:
        values = [a.value for a in self.extra_args if a.name == name]
        return values[-1] if values else None


@dataclass(frozen=True)
class ExternalEtcd:
    endpoints: tuple[str, ...]
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""


@dataclass(frozen=True)
class Networking:
    service_subnet: str = DEFAULT_SERVICE_SUBNET
    pod_subnet: str = ""
    dns_domain: str = DEFAULT_DNS_DOMAIN

    @property
    def service_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in self.service_subnet.split(","))

    @property
    def apiserver_virtual_ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """First usable address of the (first) service subnet: the ``kubernetes`` Service IP."""
        return self.service_networks[0].network_address + 1

    @property
    def dns_ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """Tenth address of the (first) service subnet: the ``kube-dns`` Service IP."""
        return self.service_networks[0].network_address + 10


@dataclass(frozen=True)
class ImageMeta:
    image_repository: str = ""
    image_tag: str = ""


@dataclass(frozen=True)
class DNS(ImageMeta):
    disabled: bool = False


@dataclass(frozen=True)
class ClusterConfiguration:
    kubernetes_version: str
    networking: Networking = field(default_factory=Networking)
    control_plane_endpoint: str = ""
    api_server: APIServer = field(default_factory=APIServer)
    controller_manager: ControlPlaneComponent = field(default_factory=ControlPlaneComponent)
    scheduler: ControlPlaneComponent = field(default_factory=ControlPlaneComponent)
    etcd_local: LocalEtcd | None = field(default_factory=LocalEtcd)
    etcd_external: ExternalEtcd | None = None
    dns: DNS = field(default_factory=DNS)
    proxy_disabled: bool = False
    certificates_dir: str = DEFAULT_CERTIFICATES_DIR
    image_repository: str = DEFAULT_IMAGE_REPOSITORY
    feature_gates: tuple[tuple[str, bool], ...] = ()
    cluster_name: str = DEFAULT_CLUSTER_NAME
    encryption_algorithm: EncryptionAlgorithm = EncryptionAlgorithm.RSA_2048
    certificate_validity: timedelta = DEFAULT_CERT_VALIDITY
    ca_certificate_validity: timedelta = DEFAULT_CA_CERT_VALIDITY

    @property
    def is_external_etcd(self) -> bool:
        return self.etcd_external is not None


@dataclass(frozen=True)
class APIEndpoint:
    advertise_address: str
    bind_port: int = DEFAULT_BIND_PORT


@dataclass(frozen=True)
class Taint:
    key: str
    effect: str
    value: str = ""


@dataclass(frozen=True)
class NodeRegistration:
    name: str
    cri_socket: str = DEFAULT_CRI_SOCKET
    taints: tuple[Taint, ...] = (Taint(CONTROL_PLANE_TAINT_KEY, "NoSchedule"),)
    kubelet_extra_args: tuple[Arg, ...] = ()
    ignore_preflight_errors: tuple[str, ...] = ()
    image_pull_policy: str = "IfNotPresent"
    image_pull_serial: bool = True


@dataclass(frozen=True)
class BootstrapToken:
    token: str = ""
    """``<id>.<secret>``; empty means "generate one"."""
    description: str = ""
    ttl: timedelta | None = timedelta(hours=24)
    expires: str = ""
    usages: tuple[str, ...] = ("signing", "authentication")
    groups: tuple[str, ...] = (DEFAULT_BOOTSTRAP_GROUP,)


@dataclass(frozen=True)
class Timeouts:
    control_plane_component_health_check: timedelta = timedelta(minutes=4)
    kubelet_health_check: timedelta = timedelta(minutes=4)
    kubernetes_api_call: timedelta = timedelta(minutes=1)
    etcd_api_call: timedelta = timedelta(minutes=2)
    tls_bootstrap: timedelta = timedelta(minutes=5)
    discovery: timedelta = timedelta(minutes=5)
    upgrade_manifests: timedelta = timedelta(minutes=5)


@dataclass(frozen=True)
class InitConfiguration:
    local_api_endpoint: APIEndpoint
    node_registration: NodeRegistration
    bootstrap_tokens: tuple[BootstrapToken, ...] = (BootstrapToken(),)
    certificate_key: str = ""
    skip_phases: tuple[str, ...] = ()
    patches_directory: str = ""
    timeouts: Timeouts = field(default_factory=Timeouts)


@dataclass(frozen=True)
class KubeadmConfig:
    """Everything one ``kubeadm init --config`` file says, resolved."""

    cluster: ClusterConfiguration
    init: InitConfiguration
    component_configs: tuple[tuple[str, str], ...] = ()
    """Other documents kubeadm accepts (KubeletConfiguration, KubeProxyConfiguration): (kind, YAML)."""

    @property
    def node_name(self) -> str:
        return self.init.node_registration.name

    @property
    def advertise_address(self) -> str:
        return self.init.local_api_endpoint.advertise_address

    @property
    def bind_port(self) -> int:
        return self.init.local_api_endpoint.bind_port

    def component_config(self, kind: str) -> str | None:
        for k, text in self.component_configs:
            if k == kind:
                return text
        return None
