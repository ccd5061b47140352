"""The lab workload: objects later tests look at before and after a recovery.

* Deployment ``labapp`` (one replica of ``labapp serve`` per node: 2 in the 1+1 lab, 4 in the 3+1 lab): required pod
  anti-affinity on ``kubernetes.io/hostname``, a toleration for the control-plane taint, and
  NotReady/unreachable tolerations of 30 s (instead of 300 s) so eviction tests run in minutes.
* Service ``labapp`` (ClusterIP, port 80 -> 8080).
* Deployment ``apicaller`` (1 replica, pinned to the first worker so it keeps running while the
  control plane is down): ``labapp apicaller`` lists the pods of its namespace with its
  ServiceAccount token every few seconds and logs ``apicaller ok ...`` or ``apicaller fail ...``;
  GET :8080/status returns the last line. A Role/RoleBinding grants it exactly that.

All in namespace ``krlab``; images are local (``imagePullPolicy: Never``).
"""

from __future__ import annotations

from typing import Any

from kuberevive.lab.config import LABAPP_IMAGE, WORKLOAD_NAMESPACE, LabConfig

NS = WORKLOAD_NAMESPACE
CONTROL_PLANE_TOLERATION = {
    "key": "node-role.kubernetes.io/control-plane",
    "operator": "Exists",
    "effect": "NoSchedule",
}
#: How long the workload stays on a node that is NotReady/unreachable before taint-based eviction (the
#: default is 300 s): short, so a test can let it run out in a minute (recover's eviction guard test).
NOT_READY_TOLERATION_SECONDS = 30
NOT_READY_TOLERATIONS = [
    {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": NOT_READY_TOLERATION_SECONDS}
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
]


def _env() -> list[dict[str, Any]]:
    return [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]


def _container(name: str, args: list[str], cpu: str = "10m") -> dict[str, Any]:
    return {
        "name": name,
        "image": LABAPP_IMAGE,
        "imagePullPolicy": "Never",
        "args": args,
        "env": _env(),
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 2},
        "resources": {"requests": {"cpu": cpu, "memory": "16Mi"}},
    }


def manifests(cfg: LabConfig) -> dict[str, Any]:
    worker = cfg.workers[0].name if cfg.workers else cfg.control_plane.name
    labels = {"app": "labapp"}
    items: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "labapp", "namespace": NS, "labels": labels},
            "spec": {
                "replicas": len(cfg.nodes),
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "tolerations": [CONTROL_PLANE_TOLERATION, *NOT_READY_TOLERATIONS],
                        "affinity": {
                            "podAntiAffinity": {
                                "requiredDuringSchedulingIgnoredDuringExecution": [
                                    {"labelSelector": {"matchLabels": labels}, "topologyKey": "kubernetes.io/hostname"}
                                ]
                            }
                        },
                        "terminationGracePeriodSeconds": 2,
                        "automountServiceAccountToken": False,
                        # the served workload asks for CPU as a real service would: with 10m (cpu.shares 10)
                        # beside control-plane pods of 102-256 shares on a 2-core machine shared by every lab
                        # node, it waited over a second for CPU while a control plane restarted, and the Service
                        # probe timed out (measured: run-queue delays of 150-1,070 ms per 100 ms, issue 16)
                        "containers": [_container("labapp", ["serve", "-addr", ":8080"], cpu="200m")],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "labapp", "namespace": NS, "labels": labels},
            "spec": {
                "type": "ClusterIP",
                "selector": labels,
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "apicaller", "namespace": NS}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "pod-reader", "namespace": NS},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "apicaller-pod-reader", "namespace": NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "apicaller", "namespace": NS}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "apicaller", "namespace": NS, "labels": {"app": "apicaller"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "apicaller"}},
                "template": {
                    "metadata": {"labels": {"app": "apicaller"}},
                    "spec": {
                        "serviceAccountName": "apicaller",
                        "nodeSelector": {"kubernetes.io/hostname": worker},
                        "tolerations": [CONTROL_PLANE_TOLERATION, *NOT_READY_TOLERATIONS],
                        "terminationGracePeriodSeconds": 2,
                        "containers": [_container("apicaller", ["apicaller", "-interval", "5s", "-addr", ":8080"])],
                    },
                },
            },
        },
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}
