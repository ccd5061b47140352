"""Where things are on a kubeadm node: the one table of node paths (absolute paths on the node, resolved under a
root by :class:`~kuberevive.io.noderoot.NodeRoot`). kubeadm's defaults come from ``cmd/kubeadm/app/constants``;
``certificatesDir`` and ``etcd.local.dataDir`` may differ per cluster and are read from its configuration."""

from __future__ import annotations

from pathlib import PurePosixPath

from kuberevive.model.config import (
    DEFAULT_CERTIFICATES_DIR,
    DEFAULT_ETCD_DATA_DIR,
    DEFAULT_KUBERNETES_DIR,
    DEFAULT_MANIFESTS_DIR,
)

# --- /etc/kubernetes (kubeadm constants.KubernetesDir)
KUBERNETES_DIR = PurePosixPath(DEFAULT_KUBERNETES_DIR)
PKI_DIR = PurePosixPath(DEFAULT_CERTIFICATES_DIR)
MANIFESTS_DIR = PurePosixPath(DEFAULT_MANIFESTS_DIR)
KUBERNETES_TMP_DIR = KUBERNETES_DIR / "tmp"
ADMIN_CONF = KUBERNETES_DIR / "admin.conf"
SUPER_ADMIN_CONF = KUBERNETES_DIR / "super-admin.conf"
KUBELET_CONF = KUBERNETES_DIR / "kubelet.conf"
BOOTSTRAP_KUBELET_CONF = KUBERNETES_DIR / "bootstrap-kubelet.conf"
CONTROLLER_MANAGER_CONF = KUBERNETES_DIR / "controller-manager.conf"
SCHEDULER_CONF = KUBERNETES_DIR / "scheduler.conf"
#: The kubeconfig files kubeadm writes on a control-plane node, by name.
KUBECONFIG_NAMES = tuple(
    p.name for p in (ADMIN_CONF, SUPER_ADMIN_CONF, KUBELET_CONF, CONTROLLER_MANAGER_CONF, SCHEDULER_CONF)
)
CA_CRT = PKI_DIR / "ca.crt"
ETCD_PKI_DIR = PKI_DIR / "etcd"
ETCD_CA_CRT = ETCD_PKI_DIR / "ca.crt"
ETCD_HEALTHCHECK_CLIENT = ETCD_PKI_DIR / "healthcheck-client"  # .crt / .key
APISERVER_ETCD_CLIENT = PKI_DIR / "apiserver-etcd-client"  # .crt / .key
#: The CA certificate and key pairs under certificatesDir (relative to it).
CA_PAIRS = (("ca.crt", "ca.key"), ("front-proxy-ca.crt", "front-proxy-ca.key"), ("etcd/ca.crt", "etcd/ca.key"))
CA_FILES = tuple(name for pair in CA_PAIRS for name in pair)
#: The ServiceAccount signing key pair under certificatesDir.
SA_FILES = ("sa.key", "sa.pub")
#: The trust material a recovery or a restore can keep: every CA pair and the ServiceAccount key pair.
TRUST_FILES = (*CA_FILES, *SA_FILES)
ETCD_MANIFEST = MANIFESTS_DIR / "etcd.yaml"
APISERVER_MANIFEST = MANIFESTS_DIR / "kube-apiserver.yaml"
CONTROLLER_MANAGER_MANIFEST = MANIFESTS_DIR / "kube-controller-manager.yaml"
SCHEDULER_MANIFEST = MANIFESTS_DIR / "kube-scheduler.yaml"

# --- /var/lib/kubelet (kubeadm constants.KubeletRunDirectory)
KUBELET_DIR = PurePosixPath("/var/lib/kubelet")
KUBELET_CONFIG = KUBELET_DIR / "config.yaml"
KUBEADM_FLAGS = KUBELET_DIR / "kubeadm-flags.env"
KUBELET_INSTANCE_CONFIG = KUBELET_DIR / "instance-config.yaml"
KUBELET_PODS = KUBELET_DIR / "pods"
KUBELET_PKI = KUBELET_DIR / "pki"
#: The kubelet's rotated client certificate and key (one PEM file), a symlink kept by the kubelet.
KUBELET_CLIENT_CURRENT = KUBELET_PKI / "kubelet-client-current.pem"
KUBELET_SERVING_CERT = KUBELET_PKI / "kubelet.crt"
KUBELET_SERVING_CURRENT = KUBELET_PKI / "kubelet-server-current.pem"

# --- other node state
ETCD_DATA_DIR = PurePosixPath(DEFAULT_ETCD_DATA_DIR)
POD_LOGS = PurePosixPath("/var/log/pods")
CNI_DIR = PurePosixPath("/etc/cni/net.d")
HOSTNAME_FILE = PurePosixPath("/etc/hostname")

# --- kuberevive's own state on the node
STATE_DIR = PurePosixPath("/var/lib/kuberevive")
#: Files kuberevive replaced, moved aside to ``<BACKUP_DIR>/<UTC timestamp>/<original path>``.
BACKUP_DIR = STATE_DIR / "backup"
#: Where ``backup create`` writes by default (not :data:`BACKUP_DIR`, which holds files moved aside).
BACKUPS_DIR = STATE_DIR / "backups"
RECOVER_DIR = STATE_DIR / "recover"
#: The node's lock: held by every command that writes a set of files (generate, recover, certs renew, ca extend).
NODE_LOCK = RECOVER_DIR / "lock"
GENERATE_PENDING = STATE_DIR / "generate" / "pending.json"
RENEW_DIR = STATE_DIR / "renew"
#: Where the runs that change the node keep their logs (:meth:`NodeRoot.open_log`, :mod:`kuberevive.logs`).
LOG_DIR = STATE_DIR / "log"
CA_EXTEND_DIR = STATE_DIR / "ca-extend"
