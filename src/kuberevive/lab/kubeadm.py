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

The HA lab (three control planes): ``controlPlaneEndpoint`` is the load balancer (``<lb>:6443``, haproxy,
see loadbalancer.py), ``kubeadm init --upload-certs`` with a ``certificateKey`` chosen here (so the lab can
write the control-plane JoinConfigurations at once), and cp2, cp3 join with ``controlPlane.localAPIEndpoint``
(their own advertise address) and that ``certificateKey``: stacked etcd, one member per control plane.
Every join discovers the cluster through the load balancer. The API servers get ``shutdown-delay-duration: 5s``
(what an operator sets behind a load balancer): on SIGTERM a kube-apiserver fails ``/readyz`` at once and keeps
serving that long, so haproxy's check (every second, out after 2 failures: loadbalancer.py) takes it out before it
stops listening; kubeadm's default (0) stops listening at once, and a restarted API server's port could open before
haproxy has seen the old one fail. The 1+1 lab's documents do not change.

Preflight checks: the lab on v1.30-v1.34 ignores none. Each check kubeadm runs passes inside a lab node because
the node provides what a real machine would (ip_forward=1 and bridge-nf-call-iptables=1 in its network
namespace, a free port 10250 and empty /var/lib/etcd of its own, a kubelet unit the ``systemctl``
shim reports as enabled, a hostname that resolves, images present in its containerd).
:func:`ignored_preflight_checks` stays the single place to add one, with its reason and the first minor.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from dataclasses import dataclass
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kuberevive.lab.config import LabConfig, NodeSpec

#: check name -> (first minor, reason). See the module docstring.
IGNORED_PREFLIGHT_CHECKS: dict[str, tuple[int, str]] = {
    "SystemVerification": (
        35,
        "the lab host is cgroup v1: kubeadm v1.35+ (k8s.io/system-validators v1.12 CgroupsValidator) fails it for a "
        "kubelet >= 1.35 and says to skip it once the kubelet sets failCgroupV1: false, as the lab's does",
    ),
}


def ignored_preflight_checks(cfg: LabConfig) -> list[str]:
    """The preflight checks the lab's kubeadm of ``cfg.k8s_version`` is told to ignore (sorted)."""
    minor = int(cfg.k8s_version.split(".")[1])
    return sorted(name for name, (since, _why) in IGNORED_PREFLIGHT_CHECKS.items() if minor >= since)


CRI_SOCKET = "unix:///run/containerd/containerd.sock"
#: JoinConfiguration ``timeouts.etcdAPICall`` of a joining control plane (see join_documents).
ETCD_JOIN_TIMEOUT = "10m0s"
#: The HA lab's kube-apiserver ``--shutdown-delay-duration`` (the module docstring): longer than haproxy needs to
#: take a server out (2 failed checks a second apart, each up to 2 s), shorter than the pod's grace period (30 s).
SHUTDOWN_DELAY = "5s"


def new_bootstrap_token() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return (
        "".join(secrets.choice(alphabet) for _ in range(6)) + "." + "".join(secrets.choice(alphabet) for _ in range(16))
    )


def new_certificate_key() -> str:
    """A key for ``kubeadm init --upload-certs`` (AES-256: 32 random bytes, hex), as kubeadm makes one."""
    return secrets.token_hex(32)


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
    ignored = ignored_preflight_checks(cfg)
    if ignored:
        reg["ignorePreflightErrors"] = ignored
    return reg


def init_documents(cfg: LabConfig, token: str, certificate_key: str | None = None) -> list[dict[str, Any]]:
    """``certificate_key``: the HA lab's key for ``--upload-certs`` (None for the 1+1 lab)."""
    cp = cfg.control_plane
    ha_init = {"certificateKey": certificate_key} if cfg.ha and certificate_key else {}
    ha_cluster = {"controlPlaneEndpoint": cfg.api_endpoint} if cfg.ha else {}
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
        }
        | ha_init,
        {
            "apiVersion": "kubeadm.k8s.io/v1beta4",
            "kind": "ClusterConfiguration",
            "kubernetesVersion": f"v{cfg.k8s_version}",
            "clusterName": "kubernetes",
        }
        | ha_cluster
        | {
            "networking": {
                "podSubnet": cfg.pod_subnet,
                "serviceSubnet": cfg.service_subnet,
                "dnsDomain": "cluster.local",
            },
            "apiServer": {
                "certSANs": [cfg.cert_san],
                "extraArgs": [{"name": "event-ttl", "value": "2h0m0s"}]
                + ([{"name": "shutdown-delay-duration", "value": SHUTDOWN_DELAY}] if cfg.ha else []),
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


@dataclass(frozen=True)
class JoinCommand:
    """What a ``kubeadm join`` command line carries: where to discover the cluster and with which token and CA
    hash, and for a new control plane the key of the certificates ``upload-certs`` stored."""

    endpoint: str
    token: str
    ca_hash: str
    certificate_key: str | None = None


def parse_join_command(text: str) -> JoinCommand:
    """A ``kubeadm join ENDPOINT --token T --discovery-token-ca-cert-hash H [--control-plane --certificate-key K]``
    line (kubeadm init's or kuberevive recover's) as a :class:`JoinCommand`; anything else is refused."""
    words = text.split()
    if words[:2] != ["kubeadm", "join"] or len(words) < 3 or words[2].startswith("-"):
        raise ValueError(f"not a 'kubeadm join ENDPOINT ...' command: {text!r}")
    flags: dict[str, str] = {}
    rest = iter(words[3:])
    for word in rest:
        if word == "--control-plane":
            flags[word] = ""
        elif word in ("--token", "--discovery-token-ca-cert-hash", "--certificate-key"):
            flags[word] = next(rest, "")
        else:
            raise ValueError(f"unexpected {word!r} in the join command {text!r}")
    token, ca_hash = flags.get("--token", ""), flags.get("--discovery-token-ca-cert-hash", "")
    if not re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", token) or not re.fullmatch(r"sha256:[0-9a-f]{64}", ca_hash):
        raise ValueError(f"the join command needs --token and --discovery-token-ca-cert-hash: {text!r}")
    if ("--control-plane" in flags) != bool(flags.get("--certificate-key")):
        raise ValueError(f"--control-plane and --certificate-key go together: {text!r}")
    return JoinCommand(words[2], token, ca_hash, flags.get("--certificate-key"))


def join_documents(cfg: LabConfig, node: NodeSpec, join: JoinCommand) -> list[dict[str, Any]]:
    """A worker's JoinConfiguration, or (a control-plane node of the HA lab) one with ``controlPlane``: its own
    advertise address and the ``certificateKey`` that decrypts the certificates ``--upload-certs`` stored."""
    certificate_key = join.certificate_key
    control_plane: dict[str, Any] = {}
    if node.is_control_plane:
        if not certificate_key:
            raise ValueError(f"{node.name} joins as a control plane: it needs the certificate key")
        control_plane = {
            "controlPlane": {
                "localAPIEndpoint": {"advertiseAddress": node.ip, "bindPort": 6443},
                "certificateKey": certificate_key,
            },
            # kubeadm adds the etcd member as a learner and promotes it once it is started and in sync, for at
            # most etcdAPICall (default 2m). On a loaded 2-core machine (other labs, load ~20) the new kubelet
            # had not even created the etcd container within 2 minutes: "the etcd member ... is not started".
            "timeouts": {"etcdAPICall": ETCD_JOIN_TIMEOUT},
        }
    return [
        {
            "apiVersion": "kubeadm.k8s.io/v1beta4",
            "kind": "JoinConfiguration",
            "discovery": {
                "bootstrapToken": {
                    "apiServerEndpoint": join.endpoint,
                    "token": join.token,
                    "caCertHashes": [join.ca_hash],
                }
            },
            "nodeRegistration": _node_registration(cfg, node),
        }
        | control_plane
    ]


def dump(documents: list[dict[str, Any]]) -> str:
    return "".join("---\n" + yaml.safe_dump(d, sort_keys=False) for d in documents)
