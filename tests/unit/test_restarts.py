"""Which pods carry a token signed by a lost sa.key, who owns them, in what order they restart, and
when a rollout is done (the conditions of ``kubectl rollout status``)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from kuberevive.core import restarts
from kuberevive.core.restarts import (
    BARE_POD_SKIP,
    RESTARTED_AT,
    plan_restarts,
    remint_patch,
    restart_patch,
    rollout_done,
    stale_secrets,
    token_consumers,
)
from kuberevive.model.document import rfc3339

KEY_CHANGE = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
BEFORE = "2025-05-20T08:00:00Z"
AFTER = "2025-06-01T12:05:00Z"


def kube_api_access(name: str = "kube-api-access-x7k2p") -> dict[str, Any]:
    """The volume the ServiceAccount admission plugin adds to every pod that automounts a token."""
    return {
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ],
        },
    }


def pod(
    ns: str,
    name: str,
    *,
    owner: tuple[str, str] | None = None,
    labels: dict[str, str] | None = None,
    created: str = BEFORE,
    token: bool = True,
    volumes: list[dict[str, Any]] | None = None,
    containers: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    phase: str = "Running",
    deleting: bool = False,
    sa: str = "default",
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": ns,
        "uid": f"uid-{ns}-{name}",
        "creationTimestamp": created,
        "labels": labels or {},
    }
    if owner:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "uid": "x", "controller": True}
        ]
    if annotations:
        meta["annotations"] = annotations
    if deleting:
        meta["deletionTimestamp"] = "2025-06-01T12:01:00Z"
    vols = list(volumes or [])
    if token:
        vols.append(kube_api_access())
    spec: dict[str, Any] = {
        "serviceAccountName": sa,
        "nodeName": "worker1",
        "containers": containers or [{"name": "main", "image": "x"}],
        "volumes": vols,
    }
    if not token:
        spec["automountServiceAccountToken"] = False
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": {"phase": phase}}


def rs(ns: str, name: str, deployment: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if deployment:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment, "controller": True}
        ]
    return {"kind": "ReplicaSet", "metadata": meta}


def workload(kind: str, ns: str, name: str, strategy: str = "RollingUpdate", **spec: Any) -> dict[str, Any]:
    key = "strategy" if kind == "Deployment" else "updateStrategy"
    return {"kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": {key: {"type": strategy}, **spec}}


def pdb(ns: str, name: str, selector: dict[str, Any] | None, allowed: int = 1) -> dict[str, Any]:
    spec: dict[str, Any] = {"minAvailable": 1}
    if selector is not None:
        spec["selector"] = selector
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec, "status": {"disruptionsAllowed": allowed}}


def consumers(
    pods: list[dict[str, Any]],
    stale: frozenset[tuple[str, str]] | set[tuple[str, str]] = frozenset(),
    replicasets: list[dict[str, Any]] | tuple[()] = (),
    workloads: list[dict[str, Any]] | tuple[()] = (),
) -> list[restarts.Consumer]:
    return token_consumers(pods, stale, KEY_CHANGE, replicasets, workloads)


# -- token_consumers ---------------------------------------------------------------------------


def test_projected_token_pods_are_found_and_automount_false_pods_are_not():
    found = consumers(
        [
            pod("krlab", "apicaller-7d9-abcde", owner=("ReplicaSet", "apicaller-7d9"), sa="apicaller"),
            pod("krlab", "labapp-5c4-fghij", owner=("ReplicaSet", "labapp-5c4"), token=False),
        ],
        replicasets=[rs("krlab", "apicaller-7d9", "apicaller"), rs("krlab", "labapp-5c4", "labapp")],
    )
    assert [c.pod.name for c in found] == ["apicaller-7d9-abcde"]
    (c,) = found
    assert c.owner.key == ("Deployment", "krlab", "apicaller")
    assert c.service_account == "apicaller"
    assert c.reasons == ("volume kube-api-access-* projects a ServiceAccount token",)  # one line per owner
    assert c.pod.uid == "uid-krlab-apicaller-7d9-abcde" and c.pod.node == "worker1"


def test_a_projected_token_for_another_audience_counts_too():
    vault = {
        "name": "vault-token",
        "projected": {"sources": [{"serviceAccountToken": {"audience": "vault", "path": "t"}}]},
    }
    (c,) = consumers([pod("apps", "bare", token=False, volumes=[vault])])
    assert c.reasons == ("volume vault-token projects a ServiceAccount token",)


def test_the_cutoff_is_respected():
    found = consumers(
        [
            pod("apps", "old", created=BEFORE),
            pod("apps", "new", created=AFTER),
            pod("apps", "exactly-at-the-change", created="2025-06-01T12:00:00Z"),
        ]
    )
    assert [c.pod.name for c in found] == ["old"]
    with pytest.raises(ValueError, match="timezone-aware"):
        token_consumers([], frozenset(), datetime(2025, 6, 1), [])


def test_mirror_terminating_and_finished_pods_are_skipped():
    mirror = pod(
        "kube-system",
        "kube-apiserver-cp1",
        owner=("Node", "cp1"),
        annotations={"kubernetes.io/config.mirror": "abc", "kubernetes.io/config.source": "file"},
    )
    found = consumers(
        [
            mirror,
            pod("apps", "going", deleting=True),
            pod("apps", "done", phase="Succeeded"),
            pod("apps", "crashed", phase="Failed"),
            pod("apps", "pending", phase="Pending"),
        ]
    )
    assert [c.pod.name for c in found] == ["pending"]


def test_stale_legacy_token_secret_references_count_and_current_ones_do_not():
    stale = {("apps", "old-token")}
    vol = [{"name": "tok", "secret": {"secretName": "old-token"}}]
    other_vol = [{"name": "tok", "secret": {"secretName": "fresh-token"}}]
    env_from = [{"name": "c", "image": "x", "envFrom": [{"secretRef": {"name": "old-token"}}]}]
    env = [
        {
            "name": "c",
            "image": "x",
            "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "old-token", "key": "token"}}}],
        }
    ]
    found = consumers(
        [
            pod("apps", "by-volume", token=False, volumes=vol),
            pod("apps", "by-env-from", token=False, containers=env_from),
            pod("apps", "by-env", token=False, containers=env),
            pod("apps", "current-secret", token=False, volumes=other_vol),
            pod("other", "same-name-other-namespace", token=False, volumes=vol),
        ],
        stale=stale,
    )
    assert {c.pod.name: c.reasons for c in found} == {
        "by-volume": ("volume tok mounts stale token Secret old-token",),
        "by-env-from": ("container c takes env from stale token Secret old-token",),
        "by-env": ("container c env TOKEN reads stale token Secret old-token",),
    }


def test_owners_are_resolved():
    found = consumers(
        [
            pod("apps", "web-1", owner=("ReplicaSet", "web-66b")),
            pod("apps", "lonely-rs-1", owner=("ReplicaSet", "lonely")),
            pod("apps", "db-0", owner=("StatefulSet", "db")),
            pod("apps", "agent-x", owner=("DaemonSet", "agent")),
            pod("apps", "migrate-z", owner=("Job", "migrate")),
            pod("apps", "debug"),
        ],
        replicasets=[rs("apps", "web-66b", "web"), rs("apps", "lonely", None)],
        workloads=[workload("StatefulSet", "apps", "db", "OnDelete")],
    )
    assert {c.pod.name: c.owner.key for c in found} == {
        "web-1": ("Deployment", "apps", "web"),
        "lonely-rs-1": ("ReplicaSet", "apps", "lonely"),
        "db-0": ("StatefulSet", "apps", "db"),
        "agent-x": ("DaemonSet", "apps", "agent"),
        "migrate-z": ("Job", "apps", "migrate"),
        "debug": ("Pod", "apps", "debug"),
    }
    assert next(c for c in found if c.pod.name == "db-0").owner.strategy == "OnDelete"


# -- plan_restarts -----------------------------------------------------------------------------


def cluster_pods() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    cni_paths = [
        {"name": "cni-bin", "hostPath": {"path": "/opt/cni/bin", "type": "DirectoryOrCreate"}},
        {"name": "cni-conf", "hostPath": {"path": "/etc/cni/net.d/"}},
    ]
    pods = [
        pod("zeta", "api-1", owner=("ReplicaSet", "api-1a")),
        pod("alpha", "web-1", owner=("ReplicaSet", "web-2b")),
        pod("alpha", "web-2", owner=("ReplicaSet", "web-2b")),
        pod("kube-system", "metrics-server-1", owner=("ReplicaSet", "metrics-server-9")),
        pod("kube-system", "coredns-1", owner=("ReplicaSet", "coredns-7"), labels={"k8s-app": "kube-dns"}),
        pod("kube-system", "coredns-2", owner=("ReplicaSet", "coredns-7"), labels={"k8s-app": "kube-dns"}),
        pod("kube-system", "kube-proxy-a", owner=("DaemonSet", "kube-proxy"), labels={"k8s-app": "kube-proxy"}),
        pod("kube-system", "kube-proxy-b", owner=("DaemonSet", "kube-proxy"), labels={"k8s-app": "kube-proxy"}),
        pod("kube-system", "calico-node-a", owner=("DaemonSet", "calico-node"), labels={"k8s-app": "calico-node"}),
        pod("kube-system", "netagent-a", owner=("DaemonSet", "netagent"), volumes=cni_paths),
        pod("kube-system", "node-exporter-a", owner=("DaemonSet", "node-exporter")),
        pod("calico-system", "csi-node-a", owner=("DaemonSet", "csi-node-driver")),
        pod("calico-system", "calico-typha-1", owner=("ReplicaSet", "calico-typha-4")),
        pod("calico-system", "calico-node-b", owner=("DaemonSet", "calico-node")),
    ]
    replicasets = [
        rs("zeta", "api-1a", "api"),
        rs("alpha", "web-2b", "web"),
        rs("kube-system", "metrics-server-9", "metrics-server"),
        rs("kube-system", "coredns-7", "coredns"),
        rs("calico-system", "calico-typha-4", "calico-typha"),
    ]
    return pods, replicasets, []


def test_order_cni_then_kube_proxy_then_dns_then_kube_system_then_namespaces():
    pods, replicasets, _ = cluster_pods()
    # the plan must not depend on the order the API lists things in
    plan = plan_restarts(consumers(list(reversed(pods)), replicasets=replicasets), [], restart_bare_pods=False)
    assert [(a.action, a.kind, a.namespace, a.name, a.group) for a in plan.actions] == [
        ("rollout-restart", "DaemonSet", "kube-system", "calico-node", "cni"),
        ("rollout-restart", "DaemonSet", "kube-system", "netagent", "cni"),  # mounts /opt/cni/bin
        ("rollout-restart", "DaemonSet", "calico-system", "calico-node", "cni"),
        ("rollout-restart", "DaemonSet", "kube-system", "kube-proxy", "kube-proxy"),
        ("rollout-restart", "Deployment", "kube-system", "coredns", "dns"),
        ("rollout-restart", "Deployment", "kube-system", "metrics-server", "kube-system"),
        ("rollout-restart", "DaemonSet", "kube-system", "node-exporter", "kube-system"),
        ("rollout-restart", "Deployment", "alpha", "web", "namespace"),
        ("rollout-restart", "Deployment", "calico-system", "calico-typha", "namespace"),  # not a DaemonSet
        ("rollout-restart", "DaemonSet", "calico-system", "csi-node-driver", "namespace"),
        ("rollout-restart", "Deployment", "zeta", "api", "namespace"),
    ]
    # deduplicated: one action per owner, listing every pod it covers
    web = plan.find("Deployment", "alpha", "web")
    assert web is not None and [p.name for p in web.pods] == ["web-1", "web-2"]
    assert len(plan.find("DaemonSet", "kube-system", "kube-proxy").pods) == 2  # type: ignore[union-attr]
    assert plan.service_accounts == (
        ("alpha", "default"),
        ("calico-system", "default"),
        ("kube-system", "default"),
        ("zeta", "default"),
    )


def test_bare_pods_are_skipped_unless_asked_and_jobs_are_only_reported():
    found = consumers([pod("apps", "debug"), pod("apps", "migrate-z", owner=("Job", "migrate"))])
    skipped = plan_restarts(found, [], restart_bare_pods=False)
    evicted = plan_restarts(found, [], restart_bare_pods=True)
    assert [(a.action, a.kind, a.name, a.why[0]) for a in skipped.actions] == [
        ("skip", "Pod", "debug", BARE_POD_SKIP),
        ("skip", "Job", "migrate", "Job pod: reported, not restarted (the Job's next pod gets a fresh token)"),
    ]
    assert [(a.action, a.kind, a.name) for a in evicted.actions] == [
        ("evict", "Pod", "debug"),
        ("skip", "Job", "migrate"),
    ]
    assert [p.uid for p in evicted.actions[0].pods] == ["uid-apps-debug"]


def test_on_delete_strategy_evicts_each_pod_instead_of_a_rollout_restart():
    found = consumers(
        [
            pod("apps", "db-0", owner=("StatefulSet", "db")),
            pod("apps", "db-1", owner=("StatefulSet", "db")),
            pod("apps", "agent-a", owner=("DaemonSet", "agent")),
            pod("apps", "cache-0", owner=("StatefulSet", "cache")),
        ],
        workloads=[
            workload("StatefulSet", "apps", "db", "OnDelete"),
            workload("DaemonSet", "apps", "agent", "OnDelete"),
            workload("StatefulSet", "apps", "cache", "RollingUpdate"),
        ],
    )
    plan = plan_restarts(found, [], restart_bare_pods=False)
    assert [(a.action, a.kind, a.name, [p.name for p in a.pods]) for a in plan.actions] == [
        ("evict", "DaemonSet", "agent", ["agent-a"]),
        ("rollout-restart", "StatefulSet", "cache", ["cache-0"]),
        ("evict", "StatefulSet", "db", ["db-0", "db-1"]),
    ]
    assert plan.actions[0].why[0] == "updateStrategy OnDelete: a rollout restart would not replace the pods"


def test_paused_and_recreate_deployments_and_unknown_controllers():
    found = consumers(
        [
            pod("apps", "paused-1", owner=("ReplicaSet", "paused-1a")),
            pod("apps", "recreate-1", owner=("ReplicaSet", "recreate-1a")),
            pod("apps", "vm-1", owner=("VirtualMachineInstance", "vm")),
        ],
        replicasets=[rs("apps", "paused-1a", "paused"), rs("apps", "recreate-1a", "recreate")],
        workloads=[
            workload("Deployment", "apps", "paused", paused=True),
            workload("Deployment", "apps", "recreate", "Recreate"),
        ],
    )
    plan = plan_restarts(found, [], restart_bare_pods=True)
    assert {a.name: (a.action, a.why[0]) for a in plan.actions} == {
        "paused": ("skip", "paused Deployment: resume it (kubectl rollout resume) and restart it"),
        "recreate": ("evict", "strategy Recreate: a rollout restart would stop every pod at once"),
        "vm": ("skip", "owned by VirtualMachineInstance vm: restart it through that controller"),
    }


def test_pdbs_covering_each_action():
    found = consumers(
        [
            pod("apps", "web-1", owner=("ReplicaSet", "web-1a"), labels={"app": "web", "tier": "front"}),
            pod("apps", "db-0", owner=("StatefulSet", "db"), labels={"app": "db"}),
            pod("other", "web-x", owner=("ReplicaSet", "web-xa"), labels={"app": "web"}),
        ],
        replicasets=[rs("apps", "web-1a", "web"), rs("other", "web-xa", "web")],
    )
    pdbs = [
        pdb("apps", "web-pdb", {"matchLabels": {"app": "web"}}),
        pdb("apps", "front-pdb", {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]}),
        pdb("apps", "not-db", {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]}),
        pdb("apps", "everything", {}),  # policy/v1: an empty selector selects every pod of the namespace
        pdb("apps", "nothing", None),  # no selector selects nothing
        pdb("apps", "no-tier", {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
    ]
    plan = plan_restarts(found, pdbs, restart_bare_pods=False)
    assert {a.ref: a.pdbs for a in plan.actions} == {
        "StatefulSet apps/db": ("everything", "no-tier"),
        "Deployment apps/web": ("everything", "front-pdb", "not-db", "web-pdb"),
        "Deployment other/web": (),  # PDBs only cover pods of their own namespace
    }


# -- legacy token Secrets ----------------------------------------------------------------------


def jwt(kid: str) -> str:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "RS256", "kid": kid}).encode()).rstrip(b"=").decode()
    return f"{header}.eyJzdWIiOiJ4In0.c2ln"


def token_secret(ns: str, name: str, kid: str) -> dict[str, Any]:
    return {
        "type": "kubernetes.io/service-account-token",
        "metadata": {"namespace": ns, "name": name, "annotations": {"kubernetes.io/service-account.name": "ci"}},
        "data": {"token": base64.b64encode(jwt(kid).encode()).decode(), "namespace": "Y2k="},
    }


def test_stale_secrets_are_reminted_first_with_a_guarded_json_patch():
    secrets = [token_secret("ci", "ci-token", "old-kid"), token_secret("ci", "fresh-token", "new-kid")]
    stale = stale_secrets(secrets, frozenset({"new-kid"}))
    assert [s.key for s in stale] == [("ci", "ci-token")]
    assert stale[0].token_b64 == secrets[0]["data"]["token"]
    found = consumers(
        [
            pod(
                "ci",
                "runner-1",
                owner=("ReplicaSet", "runner-1a"),
                volumes=[{"name": "t", "secret": {"secretName": "ci-token"}}],
            )
        ],
        stale={s.key for s in stale},
        replicasets=[rs("ci", "runner-1a", "runner")],
    )
    plan = plan_restarts(found, [], restart_bare_pods=False, stale=stale)
    assert [(a.action, a.ref) for a in plan.actions] == [
        ("remint", "Secret ci/ci-token"),
        ("rollout-restart", "Deployment ci/runner"),
    ]
    assert (
        plan.actions[0]
        .why[0]
        .startswith("legacy token Secret of ServiceAccount ci: its token was signed by key old-kid")
    )
    assert remint_patch(stale[0].token_b64) == [
        {"op": "test", "path": "/data/token", "value": stale[0].token_b64},
        {"op": "remove", "path": "/data/token"},
    ]
    assert "token_b64" not in repr(stale[0]) and "token_b64" not in repr(plan.actions[0])


# -- restart patch and rollout status ----------------------------------------------------------


def test_restart_patch_is_what_kubectl_rollout_restart_sends():
    at = datetime(2025, 6, 1, 14, 30, 5, 123456, tzinfo=UTC)
    assert restart_patch(at) == {
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: "2025-06-01T14:30:05Z"}}}}
    }
    with pytest.raises(ValueError, match="timezone-aware"):
        restart_patch(at.replace(tzinfo=None))
    # another offset is written as the same instant in UTC
    plus2 = timezone(timedelta(hours=2))
    assert rfc3339(datetime(2025, 6, 1, 16, 30, 5, tzinfo=plus2)) == "2025-06-01T14:30:05Z"


MARK = "2025-06-01T14:30:05Z"


def deployment(
    spec_replicas: int = 3,
    generation: int = 2,
    observed: int = 2,
    mark: str = MARK,
    conditions: list[dict[str, str]] | tuple[()] = (),
    **status: Any,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "generation": generation},
        "spec": {"replicas": spec_replicas, "template": {"metadata": {"annotations": {RESTARTED_AT: mark}}}},
        "status": {"observedGeneration": observed, "conditions": list(conditions), **status},
    }


def test_deployment_rollout_done():
    done: dict[str, Any] = {"replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}
    assert rollout_done("Deployment", deployment(**done), MARK) == (True, "deployment web successfully rolled out")
    assert rollout_done("Deployment", deployment(observed=1, **done), MARK) == (
        False,
        "waiting for the deployment spec update to be observed",
    )
    assert rollout_done("Deployment", deployment(replicas=4, updatedReplicas=2, availableReplicas=3), MARK) == (
        False,
        "2 out of 3 new replicas have been updated",
    )
    assert rollout_done("Deployment", deployment(replicas=4, updatedReplicas=3, availableReplicas=3), MARK) == (
        False,
        "1 old replicas are pending termination",
    )
    assert rollout_done("Deployment", deployment(replicas=3, updatedReplicas=3, availableReplicas=2), MARK) == (
        False,
        "2 of 3 updated replicas are available",
    )
    stuck = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]
    assert rollout_done("Deployment", deployment(conditions=stuck, **done), MARK) == (
        False,
        "deployment web exceeded its progress deadline",
    )
    assert restarts.rollout_failed("Deployment", deployment(conditions=stuck)) is not None
    # a status from before our patch never counts
    assert rollout_done("Deployment", deployment(mark="2025-06-01T14:00:00Z", **done), MARK) == (
        False,
        "the pod template carries an older restart (2025-06-01T14:00:00Z)",
    )
    unmarked = deployment(**done)
    unmarked["spec"]["template"]["metadata"] = {}
    assert rollout_done("Deployment", unmarked, MARK)[0] is False
    assert rollout_done("Deployment", unmarked, None)[0] is True
    # a later restart (by someone else) supersedes ours: its rollout replaces the pods as well
    assert rollout_done("Deployment", deployment(mark="2025-06-01T15:00:00Z", **done), MARK)[0] is True


def daemonset(generation: int = 5, observed: int = 5, strategy: str = "RollingUpdate", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "kube-proxy", "generation": generation},
        "spec": {"updateStrategy": {"type": strategy}, "template": {"metadata": {"annotations": {RESTARTED_AT: MARK}}}},
        "status": {"observedGeneration": observed, **status},
    }


def test_daemonset_rollout_done():
    good: dict[str, Any] = {"desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 2}
    assert rollout_done("DaemonSet", daemonset(**good), MARK) == (True, "daemon set kube-proxy successfully rolled out")
    assert rollout_done("DaemonSet", daemonset(observed=4, **good), MARK)[0] is False
    assert rollout_done(
        "DaemonSet", daemonset(desiredNumberScheduled=2, updatedNumberScheduled=1, numberAvailable=2), MARK
    ) == (False, "1 out of 2 new pods have been updated")
    assert rollout_done(
        "DaemonSet", daemonset(desiredNumberScheduled=2, updatedNumberScheduled=2, numberAvailable=1), MARK
    ) == (False, "1 of 2 updated pods are available")
    # kubectl: no rollout status for OnDelete (reported done, with a message); the plan evicts those instead
    assert rollout_done("DaemonSet", daemonset(strategy="OnDelete"), MARK) == (
        True,
        "rollout status is only available for the RollingUpdate strategy",
    )


def statefulset(
    replicas: int = 3, partition: int = 0, generation: int = 3, observed: int = 3, **status: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": "db", "generation": generation},
        "spec": {
            "replicas": replicas,
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}},
            "template": {"metadata": {"annotations": {RESTARTED_AT: MARK}}},
        },
        "status": {"observedGeneration": observed, **status},
    }


def test_statefulset_rollout_done():
    done: dict[str, Any] = {
        "readyReplicas": 3,
        "updatedReplicas": 3,
        "currentRevision": "db-2",
        "updateRevision": "db-2",
    }
    assert rollout_done("StatefulSet", statefulset(**done), MARK) == (
        True,
        "statefulset db rolling update complete (3 pods updated)",
    )
    assert rollout_done("StatefulSet", statefulset(observed=0, **done), MARK)[0] is False
    assert rollout_done("StatefulSet", statefulset(observed=2, **done), MARK)[0] is False
    assert rollout_done("StatefulSet", statefulset(**{**done, "readyReplicas": 2}), MARK) == (
        False,
        "waiting for 1 pods to be ready",
    )
    assert rollout_done("StatefulSet", statefulset(**{**done, "updatedReplicas": 2}), MARK) == (
        False,
        "2 out of 3 new pods have been updated",
    )
    assert rollout_done("StatefulSet", statefulset(**{**done, "currentRevision": "db-1"}), MARK)[0] is False
    # a partition: only the pods at or above it are updated; done once those are (and all are ready)
    partitioned: dict[str, Any] = {
        "readyReplicas": 3,
        "updatedReplicas": 1,
        "currentRevision": "db-1",
        "updateRevision": "db-2",
    }
    assert rollout_done("StatefulSet", statefulset(partition=2, **partitioned), MARK)[0] is True
    assert rollout_done("StatefulSet", statefulset(partition=1, **partitioned), MARK) == (
        False,
        "1 out of 2 new pods have been updated",
    )
    assert rollout_done("ReplicaSet", {}, MARK) == (False, "no rollout status for ReplicaSet")


def test_owner_settled_after_an_eviction():
    assert (
        restarts.owner_settled("DaemonSet", {"status": {"desiredNumberScheduled": 2, "numberAvailable": 1}})[0] is False
    )
    assert (
        restarts.owner_settled("DaemonSet", {"status": {"desiredNumberScheduled": 2, "numberAvailable": 2}})[0] is True
    )
    sts = {"spec": {"replicas": 2}, "status": {"readyReplicas": 1, "availableReplicas": 1}}
    assert restarts.owner_settled("StatefulSet", sts) == (False, "1 of 2 replicas available")
    assert (
        restarts.owner_settled("ReplicaSet", {"spec": {"replicas": 1}, "status": {"availableReplicas": 1}})[0] is True
    )
