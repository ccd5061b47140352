"""The kubeadm configuration parser: defaults, v1beta3/v1beta4, and one clear error per bad field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from kuberevive.errors import ConfigError
from kuberevive.model.config import Arg, EncryptionAlgorithm, NodeFacts, Taint
from kuberevive.model.kubeadm_yaml import format_duration, load_kubeadm_config, parse_duration

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FACTS = NodeFacts(hostname="Node-A", default_address="192.0.2.50")


def load(text: str):
    return load_kubeadm_config(text, FACTS)


def test_defaults_of_kubeadm_v1_33_are_applied():
    cfg = load("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n")
    c = cfg.cluster
    assert c.kubernetes_version == "v1.33.13"
    assert c.networking.service_subnet == "10.96.0.0/12"
    assert c.networking.pod_subnet == ""
    assert c.networking.dns_domain == "cluster.local"
    assert str(c.networking.apiserver_virtual_ip) == "10.96.0.1"
    assert str(c.networking.dns_ip) == "10.96.0.10"
    assert c.certificates_dir == "/etc/kubernetes/pki"
    assert c.image_repository == "registry.k8s.io"
    assert c.cluster_name == "kubernetes"
    assert c.encryption_algorithm is EncryptionAlgorithm.RSA_2048
    assert c.certificate_validity == timedelta(days=365)
    assert c.ca_certificate_validity == timedelta(days=3650)
    assert c.etcd_local is not None and c.etcd_local.data_dir == "/var/lib/etcd"
    assert c.etcd_external is None
    # node facts fill what kubeadm detects on the machine
    assert cfg.node_name == "node-a"
    assert cfg.advertise_address == "192.0.2.50"
    assert cfg.bind_port == 6443
    nr = cfg.init.node_registration
    assert nr.cri_socket == "unix:///var/run/containerd/containerd.sock"
    assert nr.taints == (Taint("node-role.kubernetes.io/control-plane", "NoSchedule"),)
    assert cfg.init.timeouts.control_plane_component_health_check == timedelta(minutes=4)
    (token,) = cfg.init.bootstrap_tokens
    assert token.ttl == timedelta(hours=24)
    assert token.usages == ("signing", "authentication")
    assert token.groups == ("system:bootstrappers:kubeadm:default-node-token",)


def test_reference_configuration_with_endpoint_and_extras():
    cfg = load((CONFIGS / "endpoint-sans.yaml").read_text())
    c = cfg.cluster
    assert c.control_plane_endpoint == "api.prod.example.com:8443"
    assert c.api_server.cert_sans == ("api.prod.example.com", "203.0.113.7", "*.apps.example.com")
    assert c.api_server.extra_args == (Arg("event-ttl", "2h"), Arg("audit-log-maxage", "7"))
    assert c.api_server.extra_volumes[0].mount_path == "/var/log/kubernetes"
    assert c.api_server.extra_envs[0].value == "2"
    assert c.scheduler.arg("bind-address") == "0.0.0.0"
    assert c.etcd_local is not None and c.etcd_local.peer_cert_sans == ("10.20.30.41",)
    assert cfg.init.node_registration.cri_socket == "unix:///run/containerd/containerd.sock"


def test_ecdsa_and_validity_periods():
    cfg = load((CONFIGS / "ecdsa-validity.yaml").read_text())
    assert cfg.cluster.encryption_algorithm is EncryptionAlgorithm.ECDSA_P256
    assert cfg.cluster.certificate_validity == timedelta(hours=720)
    assert cfg.cluster.ca_certificate_validity == timedelta(hours=43800)


def test_v1beta3_maps_are_converted_like_kubeadm_does():
    v3 = """
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
apiServer:
  timeoutForControlPlane: 2m0s
  extraArgs:
    event-ttl: 2h
    audit-log-maxage: "7"
etcd:
  local:
    extraArgs:
      quota-backend-bytes: "1024"
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
nodeRegistration:
  kubeletExtraArgs:
    node-ip: 192.0.2.50
"""
    cfg = load(v3)
    # a v1beta3 map becomes a list sorted by name
    assert cfg.cluster.api_server.extra_args == (Arg("audit-log-maxage", "7"), Arg("event-ttl", "2h"))
    assert cfg.cluster.etcd_local is not None and cfg.cluster.etcd_local.arg("quota-backend-bytes") == "1024"
    assert cfg.init.node_registration.kubelet_extra_args == (Arg("node-ip", "192.0.2.50"),)
    assert cfg.init.timeouts.control_plane_component_health_check == timedelta(minutes=2)


def test_component_configs_and_join_documents_are_accepted():
    cfg = load(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n---\n"
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: cgroupfs\n---\n"
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\n"
    )
    text = cfg.component_config("KubeletConfiguration")
    assert text is not None and "cgroupDriver: cgroupfs" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nnetworking:\n  podSubnet: 10.0.0.0/33\n",
            "ClusterConfiguration.networking.podSubnet: '10.0.0.0/33' is not a valid CIDR",
        ),
        (
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n"
            "networking:\n  serviceSubnet: 10.0.0.0/8\n",
            "ClusterConfiguration.networking.serviceSubnet: '10.0.0.0/8' is too large",
        ),
        (
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\napiServer:\n  certSAN: [a]\n",
            "ClusterConfiguration.apiServer.certSAN: unknown field",
        ),
        (
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nlocalAPIEndpoint:\n"
            "  advertiseAddress: 10.0.0.300\n",
            "InitConfiguration.localAPIEndpoint.advertiseAddress: '10.0.0.300' is not a valid IP address",
        ),
        (
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\napiServer:\n  certSANs: ['bad_name!']\n",
            "ClusterConfiguration.apiServer.certSANs[0]: 'bad_name!' is not a valid IP address, DNS name",
        ),
        (
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nencryptionAlgorithm: DSA-1024\n",
            "ClusterConfiguration.encryptionAlgorithm: 'DSA-1024' is not one of RSA-2048",
        ),
        (
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\ncertificateValidityPeriod: 1year\n",
            "ClusterConfiguration.certificateValidityPeriod: '1year' is not a duration",
        ),
        (
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\napiServer:\n  extraArgs:\n"
            "    event-ttl: 2h\n",
            "ClusterConfiguration.apiServer.extraArgs: expected a list of {name, value} (v1beta4)",
        ),
        (
            "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nencryptionAlgorithm: RSA-2048\n",
            "ClusterConfiguration.encryptionAlgorithm: unknown field",
        ),
        ("apiVersion: kubeadm.k8s.io/v1beta4\nkind: Cluster\n", "unknown kind 'Cluster'"),
        ("apiVersion: v1\nkind: Pod\n", "unknown kind 'Pod' with apiVersion 'v1'"),
        ("apiVersion: kubeadm.k8s.io/v1beta2\nkind: ClusterConfiguration\n", "kubeadm.k8s.io/v1beta2 is not supported"),
        ("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n  bad: [\n", "is not valid YAML"),
        ("", "the kubeadm configuration is empty"),
        (
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nnodeRegistration:\n  name: Bad_Name\n",
            "InitConfiguration.nodeRegistration.name: 'Bad_Name' is not a valid node name",
        ),
        (
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\ncontrolPlaneEndpoint: api:99999\n",
            "ClusterConfiguration.controlPlaneEndpoint: 'api:99999': port must be a number",
        ),
    ],
)
def test_bad_input_is_one_clear_error_naming_the_field(text: str, expected: str):
    with pytest.raises(ConfigError) as exc:
        load(text)
    message = str(exc.value)
    assert expected in message
    assert "\n" not in message


def test_missing_advertise_address_without_default_route_is_explained():
    with pytest.raises(ConfigError, match="advertiseAddress: not set and this machine has no default-route"):
        load_kubeadm_config("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n", NodeFacts("h"))


@pytest.mark.parametrize(
    ("text", "value", "formatted"),
    [
        ("87600h0m0s", timedelta(hours=87600), "87600h0m0s"),
        ("8760h", timedelta(hours=8760), "8760h0m0s"),
        ("4m0s", timedelta(minutes=4), "4m0s"),
        ("1h30m", timedelta(minutes=90), "1h30m0s"),
        ("30s", timedelta(seconds=30), "30s"),
        ("1.5h", timedelta(minutes=90), "1h30m0s"),
        ("0", timedelta(0), "0s"),
    ],
)
def test_go_durations_round_trip(text: str, value: timedelta, formatted: str):
    assert parse_duration(text) == value
    assert format_duration(value) == formatted
