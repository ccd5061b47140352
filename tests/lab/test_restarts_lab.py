"""The restart plan and its apply step against the lab's real cluster.

With a cutoff of "now" every pod that mounts a ServiceAccount token is planned (as after a recovery
with a new sa.key): krlab/apicaller and kube-system's kube-proxy are; krlab/labapp
(``automountServiceAccountToken: false``) and the static control-plane pods are not. Only the
apicaller action is applied: its pod is replaced through a rollout restart, the labapp pods keep
their uids, and fresh tokens pass a TokenReview in each namespace.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kuberevive.core import restarts
from kuberevive.core.satokens import key_ids
from kuberevive.errors import KubeApiError
from kuberevive.io.kubeapi import KubeApi
from kuberevive.io.restarts_apply import apply_restart_plan, read_restart_plan, token_review_per_namespace
from kuberevive.lab import Lab

from .conftest import OnNode

pytestmark = pytest.mark.lab

NS = "krlab"


def _live_pods(api: KubeApi, app: str) -> dict[str, str]:
    """name -> uid of the pods of ``app`` that are not terminating."""
    items: list[dict[str, Any]] = api.get(f"/api/v1/namespaces/{NS}/pods", labelSelector=f"app={app}")["items"]
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in items if not p["metadata"].get("deletionTimestamp")}


def test_plan_then_restart_only_apicaller(lab: Lab, on_node: OnNode):
    api = KubeApi.from_kubeconfig(on_node("cp1", "cat", "/etc/kubernetes/admin.conf").stdout)
    current = key_ids(on_node("cp1", "cat", "/etc/kubernetes/pki/sa.pub").stdout.encode())
    labapp_before = _live_pods(api, "labapp")
    apicaller_before = _live_pods(api, "apicaller")
    assert len(labapp_before) == 2 and len(apicaller_before) == 1

    cutoff = datetime.now(UTC) + timedelta(seconds=1)  # "now": every running pod predates it
    plan = read_restart_plan(api, cutoff, current, restart_bare_pods=False)
    print("\n".join(plan.summary()))
    planned = [(a.action, a.kind, a.namespace, a.name) for a in plan.actions]
    assert ("rollout-restart", "Deployment", NS, "apicaller") in planned
    assert ("rollout-restart", "DaemonSet", "kube-system", "kube-proxy") in planned
    assert plan.find("Deployment", NS, "labapp") is None
    covered = {p.name for a in plan.actions for p in a.pods}
    assert covered.isdisjoint(labapp_before)
    assert set(apicaller_before) <= covered
    assert not [n for n in covered if n.startswith(("kube-apiserver-", "etcd-", "kube-scheduler-"))]  # mirror pods
    assert planned.index(("rollout-restart", "DaemonSet", "kube-system", "kube-proxy")) < planned.index(
        ("rollout-restart", "Deployment", NS, "apicaller")
    )
    assert (NS, "apicaller") in plan.service_accounts
    assert not [a for a in plan.actions if a.action == "remint"]  # the lab's Secrets are current

    only = plan.filter(lambda a: a.ref == f"Deployment {NS}/apicaller")
    assert len(only.actions) == 1
    restarted_from = datetime.now(UTC) - timedelta(seconds=1)
    results = apply_restart_plan(api, only, progress=print, timeout_per_owner=180, poll=0.5)
    assert [r.outcome for r in results] == ["ok"], [r.line() for r in results]
    print(results[0].line())

    apicaller_after = _live_pods(api, "apicaller")
    assert len(apicaller_after) == 1
    assert set(apicaller_after).isdisjoint(apicaller_before)  # a new pod name
    assert set(apicaller_after.values()).isdisjoint(apicaller_before.values())  # and uid
    deploy = api.get(f"/apis/apps/v1/namespaces/{NS}/deployments/apicaller")
    mark = deploy["spec"]["template"]["metadata"]["annotations"][restarts.RESTARTED_AT]
    assert restarts.parse_time(mark) >= restarted_from.replace(microsecond=0)
    assert restarts.rollout_done("Deployment", deploy, mark)[0] is True
    assert _live_pods(api, "labapp") == labapp_before  # untouched: same names, same uids

    # the new pod was created after the cutoff taken before the apply: nothing left to restart there
    again = read_restart_plan(api, restarted_from, current, restart_bare_pods=False)
    assert again.find("Deployment", NS, "apicaller") is None

    reviews = token_review_per_namespace(api, {NS: "apicaller", "kube-system": "kube-proxy", "default": "default"})
    assert reviews == {
        NS: (True, f"authenticated as system:serviceaccount:{NS}:apicaller"),
        "default": (True, "authenticated as system:serviceaccount:default:default"),
        "kube-system": (True, "authenticated as system:serviceaccount:kube-system:kube-proxy"),
    }
    # the replacement pod calls the API with its own new token
    deadline = time.monotonic() + 30
    while "apicaller ok status=200" not in lab.apicaller_logs(tail=1):
        assert time.monotonic() < deadline, lab.apicaller_logs(tail=5)
        time.sleep(1)


TEST_NS = "kr-restarts-test"


def _wait(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {seconds}s"
        time.sleep(0.5)


def test_a_pdb_holds_a_bare_pod_eviction_and_a_stale_legacy_secret_is_reminted(lab: Lab, on_node: OnNode):
    api = KubeApi.from_kubeconfig(on_node("cp1", "cat", "/etc/kubernetes/admin.conf").stdout)
    current = key_ids(on_node("cp1", "cat", "/etc/kubernetes/pki/sa.pub").stdout.encode())
    base = f"/api/v1/namespaces/{TEST_NS}"
    _wait(lambda: not _exists(api, base), 120, "an earlier run's namespace to be gone")
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TEST_NS}})
    try:
        # the token controller deletes a token Secret whose ServiceAccount does not exist (yet)
        _wait(lambda: _exists_sa(api), 30, "the default ServiceAccount")
        api.create(
            f"{base}/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/service-account-token",
                "metadata": {"name": "legacy", "annotations": {"kubernetes.io/service-account.name": "default"}},
            },
        )
        _wait(lambda: (api.get(f"{base}/secrets/legacy").get("data") or {}).get("token"), 30, "token filled")
        filled = api.get(f"{base}/secrets/legacy")
        old_token, old_rv = filled["data"]["token"], filled["metadata"]["resourceVersion"]
        api.create(
            f"{base}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "bare", "labels": {"app": "bare"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "pause", "image": lab.cfg.pause_image, "imagePullPolicy": "Never"}],
                    "volumes": [{"name": "legacy", "secret": {"secretName": "legacy"}}],
                },
            },
        )
        api.create(
            "/apis/policy/v1/namespaces/" + TEST_NS + "/poddisruptionbudgets",
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "bare-pdb"},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "bare"}}},
            },
        )
        _wait(lambda: api.get(f"{base}/pods/bare")["status"].get("phase") == "Running", 60, "the bare pod to run")
        uid = api.get(f"{base}/pods/bare")["metadata"]["uid"]

        # as if sa.key had been replaced: the Secret's token carries a key id that is not current
        plan = read_restart_plan(api, datetime.now(UTC) + timedelta(seconds=1), frozenset({"lost"}), True)
        mine = plan.filter(lambda a: a.namespace == TEST_NS)
        assert [(a.action, a.ref, a.pdbs) for a in mine.actions] == [
            ("remint", f"Secret {TEST_NS}/legacy", ()),
            ("evict", f"Pod {TEST_NS}/bare", ("bare-pdb",)),
        ]
        assert "volume legacy mounts stale token Secret legacy" in mine.actions[1].why
        skipped = read_restart_plan(api, datetime.now(UTC) + timedelta(seconds=1), frozenset({"lost"}), False)
        assert skipped.find("Pod", TEST_NS, "bare").action == "skip"  # type: ignore[union-attr]

        # ... applied against the real key ids: the re-minted token must carry the kid of sa.pub
        mine = dataclasses.replace(mine, current_key_ids=current)
        results = apply_restart_plan(api, mine, progress=print, timeout_per_owner=8, poll=0.5)
        print("\n".join(r.line() for r in results))
        assert [r.outcome for r in results] == ["ok", "failed"]
        (kid,) = current
        assert results[0].message == f"the token controller signed a new token with key {kid}"
        refilled = api.get(f"{base}/secrets/legacy")
        assert int(refilled["metadata"]["resourceVersion"]) > int(old_rv)  # rewritten ...
        assert refilled["data"]["token"] == old_token  # ... and, same key, same claims, RSA: the same bytes
        assert restarts.stale_secrets([refilled], current) == []
        assert "still refused by a PodDisruptionBudget" in results[1].message
        assert api.get(f"{base}/pods/bare")["metadata"]["uid"] == uid  # the PDB held

        api.delete(f"/apis/policy/v1/namespaces/{TEST_NS}/poddisruptionbudgets/bare-pdb")
        evict = mine.filter(lambda a: a.action == "evict")
        (result,) = apply_restart_plan(api, evict, progress=print, timeout_per_owner=60, poll=0.5)
        assert result.outcome == "ok", result.line()
        assert [p["metadata"]["name"] for p in api.get(f"{base}/pods")["items"]] == []
    finally:
        api.delete(f"/api/v1/namespaces/{TEST_NS}")


def _exists(api: KubeApi, path: str) -> bool:
    try:
        api.get(path)
    except KubeApiError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _exists_sa(api: KubeApi) -> bool:
    return bool(api.get(f"/api/v1/namespaces/{TEST_NS}/serviceaccounts").get("items"))
