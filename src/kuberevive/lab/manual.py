"""The documented manual recovery of the lab's seed disaster with ``kubeadm init phase``, as data.

What an operator does today after ``rm -rf /etc/kubernetes`` on the control-plane node, in its best case
(given the cluster's original kubeadm configuration file) or with kubeadm's defaults (a configuration
holding only what the node cannot do without: its name, address, CRI socket and Kubernetes version).
``benchmarks/vs_manual.py`` runs it on the lab; ``tests/integration/test_bench_smoke.py`` checks every
``kubeadm`` command and flag here against the real kubeadm's ``--help``: the plan cannot drift from kubeadm.

The stages, in order (the runner waits between them; see :func:`manual_plan`):

1. ``control-plane`` on the control-plane node: the kubelet stopped (its containers keep running), new
   PKI, kubeconfigs, etcd and control-plane manifests; the controller-manager's manifest with the
   node-lifecycle controller off (no taint-based eviction while the kubelets are not trusted yet; CSR
   signing and the bootstrap signer stay on, ``kubeadm join`` needs them); the kubelet's client
   certificate from the old CA moved aside, the kubelet started (it uses the new ``kubelet.conf``).
2. ``bootstrap-token`` once the API answers: RBAC and ``cluster-info`` for the new CA, a new token, and
   each worker's stale ``Ready=True`` set to ``Unknown`` (``kubeadm join phase kubelet-start`` refuses to
   bootstrap a node whose Node object is Ready, and no controller marks it while node-lifecycle is off).
3. ``rejoin`` on each worker: its kubelet files of the old CA moved aside, ``kubeadm join phase
   kubelet-start`` with a JoinConfiguration holding the new token and CA hash (TLS bootstrap: new client
   certificate, new CA file; containers keep running).
4. ``controller-manager`` once every node is Ready: kubeadm's own manifest back.
5. ``service-accounts``: every ``kubernetes.io/service-account-token`` Secret's token removed (the token
   controller signs a new one with the new ``sa.key``), every pod with a non-default ServiceAccount deleted.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from kuberevive.lab.config import LabConfig
from kuberevive.lab.kubeadm import CRI_SOCKET, dump

ASIDE = "/root/manual-recovery-aside"
JOIN_CONFIG = "/root/manual-join.yaml"
MINIMAL_CONFIG = "/root/manual-minimal-kubeadm.yaml"
KCM_MANIFEST = "/etc/kubernetes/manifests/kube-controller-manager.yaml"
#: kubeadm's controller list, and the same with the node-lifecycle (taint-based eviction) controller off.
KCM_CONTROLLERS = "--controllers=*,bootstrapsigner,tokencleaner"
KCM_WITHOUT_EVICTION = KCM_CONTROLLERS + ",-node-lifecycle-controller"

_PATCH_TOKEN_SECRETS = r"""
kubectl get secrets -A --field-selector type=kubernetes.io/service-account-token \
  -o jsonpath='{range .items[*]}{.metadata.namespace} {.metadata.name}{"\n"}{end}' |
while read -r ns name; do
  [ -n "$name" ] && kubectl patch secret -n "$ns" "$name" --type=json -p '[{"op":"remove","path":"/data/token"}]'
done
true
"""

_DELETE_SA_PODS = r"""
f='{range .items[*]}{.metadata.namespace} {.metadata.name} {.spec.serviceAccountName}{"\n"}{end}'
kubectl get pods -A -o jsonpath="$f" |
while read -r ns name sa; do
  case "$sa" in ""|default) ;; *) kubectl delete pod -n "$ns" "$name" --wait=false ;; esac
done
"""


@dataclass(frozen=True)
class Step:
    """Commands (argv each) run one after another on one node."""

    stage: str
    node: str
    commands: tuple[tuple[str, ...], ...]

    def script(self) -> str:
        return "set -e\n" + "\n".join(shlex.join(c) for c in self.commands) + "\n"


def minimal_config(cfg: LabConfig) -> str:
    """Without the cluster's configuration: kubeadm's defaults plus what the node cannot do without (its
    name, address, CRI socket, and the version, as the node is offline)."""
    cp = cfg.control_plane
    return dump(
        [
            {
                "apiVersion": "kubeadm.k8s.io/v1beta4",
                "kind": "InitConfiguration",
                "localAPIEndpoint": {"advertiseAddress": cp.ip},
                "nodeRegistration": {"name": cp.name, "criSocket": CRI_SOCKET},
            },
            {
                "apiVersion": "kubeadm.k8s.io/v1beta4",
                "kind": "ClusterConfiguration",
                "kubernetesVersion": f"v{cfg.k8s_version}",
            },
        ]
    )


def config_path(cfg: LabConfig, with_config: bool) -> str:
    """The cluster's original configuration file, or :func:`minimal_config` written to :data:`MINIMAL_CONFIG`."""
    return str(cfg.init_config_file) if with_config else MINIMAL_CONFIG


def manual_plan(cfg: LabConfig, with_config: bool = True) -> list[Step]:
    """Every command of the manual procedure, by stage (see the module docstring)."""
    cp = cfg.control_plane.name
    conf = config_path(cfg, with_config)

    def init(*phase: str) -> tuple[str, ...]:
        return ("kubeadm", "init", "phase", *phase, "--config", conf)

    plan = [
        Step(
            "control-plane",
            cp,
            (
                ("systemctl", "stop", "kubelet"),
                init("certs", "all"),
                init("kubeconfig", "all"),
                init("etcd", "local"),
                init("control-plane", "all"),
                ("sed", "-i", f"s/{KCM_CONTROLLERS.replace('*', '[*]')}$/{KCM_WITHOUT_EVICTION}/", KCM_MANIFEST),
                ("grep", "-qF", "--", KCM_WITHOUT_EVICTION, KCM_MANIFEST),
                ("mkdir", "-p", ASIDE),
                ("mv", "/var/lib/kubelet/pki/kubelet-client-current.pem", ASIDE + "/"),
                ("systemctl", "start", "kubelet"),
            ),
        ),
        Step(
            "bootstrap-token",
            cp,
            (
                init("bootstrap-token"),
                *(
                    (
                        "kubectl",
                        "patch",
                        "node",
                        w.name,
                        "--subresource=status",
                        "-p",
                        '{"status":{"conditions":[{"type":"Ready","status":"Unknown","reason":"ManualRecovery"}]}}',
                    )
                    for w in cfg.workers
                ),
            ),
        ),
    ]
    for w in cfg.workers:
        plan.append(
            Step(
                "rejoin",
                w.name,
                (
                    ("mkdir", "-p", ASIDE + "/pki"),
                    ("mv", "/etc/kubernetes/kubelet.conf", ASIDE + "/"),
                    ("mv", "/etc/kubernetes/pki/ca.crt", ASIDE + "/pki/"),
                    ("mv", "/var/lib/kubelet/pki/kubelet-client-current.pem", ASIDE + "/"),
                    ("kubeadm", "join", "phase", "kubelet-start", "--config", JOIN_CONFIG),
                ),
            )
        )
    plan.append(Step("controller-manager", cp, (init("control-plane", "controller-manager"),)))
    plan.append(Step("service-accounts", cp, (("sh", "-c", _PATCH_TOKEN_SECRETS), ("sh", "-c", _DELETE_SA_PODS))))
    return plan


def token_create() -> tuple[str, ...]:
    """The command that makes the new bootstrap token (prints it), run on the control-plane node."""
    return ("kubeadm", "token", "create", "--ttl", "1h0m0s")


def kubeadm_commands(plan: list[Step]) -> list[tuple[str, ...]]:
    """Every ``kubeadm`` argv of the plan (plus the token command), for checking against kubeadm's ``--help``."""
    return [c for s in plan for c in s.commands if c[0] == "kubeadm"] + [token_create()]
