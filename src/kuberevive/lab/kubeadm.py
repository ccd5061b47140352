"""The kubeadm configuration of the lab (v1beta4), the join configuration, and the discovery hash.

Deliberate non-defaults, so that recovery must read the real configuration instead of assuming
kubeadm's defaults: ``podSubnet 10.123.0.0/16``, an extra kube-apiserver flag (``event-ttl: 2h0m0s``),
an extra apiServer certSAN (``kuberevive-lab.invalid``), explicit ``kubernetesVersion``.

Lab-specific settings and why:

* ``dns.disabled: true``: the lab builds no CoreDNS image (the workload needs no DNS: pods reach the
  API through ``KUBERNETES_SERVICE_HOST``, tests use ClusterIPs). kube-proxy stays kubeadm's DaemonSet.
* ``nodeRegistration.imagePullPolicy: Never``: every image is imported locally; kubeadm must not pull.
* ``kubeletExtraArgs``: ``cgroup-root=/krlab-<node>`` (two kubelets share one cgroup v1 hierarchy;
  each gets its own root, and `lab down` removes exactly those) and ``node-ip`` (the node address).
* KubeletConfiguration: ``cgroupDriver: cgroupfs`` (no systemd), ``failCgroupV1: false`` (the host is
  cgroup v1), ``failSwapOn: false``, low ``evictionHard`` thresholds (two kubelets and a build cache
  share one disk; default thresholds could evict the lab's pods).
* KubeProxyConfiguration: ``mode: iptables``; ``conntrack.maxPerCore: 0`` so kube-proxy does not
  set the host-global ``nf_conntrack_max`` (read-only outside the initial network namespace), as kind does.

Preflight checks: the lab ignores none. Each check kubeadm runs passes inside a lab node because the
node provides what a real machine would (ip_forward=1 and bridge-nf-call-iptables=1 in its network
namespace, a free port 10250 and empty /var/lib/etcd of its own, a kubelet unit the ``systemctl``
shim reports as enabled, a hostname that resolves, images present in its containerd).
``IGNORED_PREFLIGHT_CHECKS`` stays the single place to add one, with its reason.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kuberevive.lab.config import LabConfig, NodeSpec

#: check name -> reason. Empty: see the module docstring.
IGNORED_PREFLIGHT_CHECKS: dict[str, str] = {}

CRI_SOCKET = "unix:///run/containerd/containerd.sock"


def new_bootstrap_token() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return (
        "".join(secrets.choice(alphabet) for _ in range(6)) + "." + "".join(secrets.choice(alphabet) for _ in range(16))
    )


def ca_cert_hash(ca_pem: bytes) -> str:
    """kubeadm's discovery hash: ``sha256:`` + hex SHA-256 of the CA's DER SubjectPublicKeyInfo."""
    cert = x509.load_pem_x509_certificate(ca_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def _node_registration(cfg: LabConfig, node: NodeSpec) -> dict[str, Any]:
    reg: dict[str, Any] = {
        "name": node.name,
        "criSocket": CRI_SOCKET,
        "imagePullPolicy": "Never",
        "kubeletExtraArgs": [
            {"name": "cgroup-root", "value": cfg.cgroup_root(node.name)},
            {"name": "node-ip", "value": node.ip},
        ],
    }
    if IGNORED_PREFLIGHT_CHECKS:
        reg["ignorePreflightErrors"] = sorted(IGNORED_PREFLIGHT_CHECKS)
    return reg


def init_documents(cfg: LabConfig, token: str) -> list[dict[str, Any]]:
    cp = cfg.control_plane
    return [
        {
            "apiVersion": "kubeadm.k8s.io/v1beta4",
            "kind": "InitConfiguration",
            "bootstrapTokens": [
                {
                    "token": token,
                    "ttl": "24h0m0s",
                    "groups": ["system:bootstrappers:kubeadm:default-node-token"],
                    "usages": ["signing", "authentication"],
                }
            ],
            "localAPIEndpoint": {"advertiseAddress": cp.ip, "bindPort": 6443},
            "nodeRegistration": _node_registration(cfg, cp),
        },
        {
            "apiVersion": "kubeadm.k8s.io/v1beta4",
            "kind": "ClusterConfiguration",
            "kubernetesVersion": f"v{cfg.k8s_version}",
            "clusterName": "kubernetes",
            "networking": {
                "podSubnet": cfg.pod_subnet,
                "serviceSubnet": cfg.service_subnet,
                "dnsDomain": "cluster.local",
            },
            "apiServer": {
                "certSANs": [cfg.cert_san],
                "extraArgs": [{"name": "event-ttl", "value": "2h0m0s"}],
            },
            "etcd": {"local": {"dataDir": "/var/lib/etcd"}},
            "dns": {"disabled": True},
        }
        | (
            {
                "controllerManager": {
                    "extraArgs": [{"name": "cluster-signing-duration", "value": cfg.cluster_signing_duration}]
                }
            }
            if cfg.cluster_signing_duration
            else {}
        )
        | ({"certificateValidityPeriod": cfg.certificate_validity} if cfg.certificate_validity else {})
        | ({"caCertificateValidityPeriod": cfg.ca_certificate_validity} if cfg.ca_certificate_validity else {}),
        {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
        },
        {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "conntrack": {"maxPerCore": 0},
        },
    ]


def join_documents(cfg: LabConfig, node: NodeSpec, token: str, ca_hash: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "kubeadm.k8s.io/v1beta4",
            "kind": "JoinConfiguration",
            "discovery": {
                "bootstrapToken": {
                    "apiServerEndpoint": f"{cfg.control_plane.ip}:6443",
                    "token": token,
                    "caCertHashes": [ca_hash],
                }
            },
            "nodeRegistration": _node_registration(cfg, node),
        }
    ]


def dump(documents: list[dict[str, Any]]) -> str:
    return "".join("---\n" + yaml.safe_dump(d, sort_keys=False) for d in documents)
