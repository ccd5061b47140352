"""Read the pods and their owners from the cluster, and apply a :class:`~kuberevive.core.restarts.RestartPlan`.

``read_restart_plan`` lists pods, ReplicaSets, Deployments, StatefulSets, DaemonSets, PDBs and legacy
token Secrets across all namespaces and returns :func:`kuberevive.core.restarts.plan_restarts`;
``read_pods_restart_plan`` does it for the pods one label selector picks in one namespace (``ca extend``'s
kube-proxy restart after a repair).

``apply_restart_plan`` works one owner at a time, in plan order, and never starts the next before
the last one settled (or ran out of time), so at most one owner is rolling at any moment:

* ``remint``: JSON patch removing the stale ``data.token`` (tested against the value seen while
  planning), then wait until the token controller has written a new one and check its key id. A re-mint
  restarts nothing, so all of them go at once (:func:`remint_all`): the patches in parallel
  (:data:`REMINT_CONCURRENCY`), then one paginated list of the token Secrets per poll for all of them, never a
  GET per Secret (10,000 Secrets: 10,000 patches and a few lists, not 10,000 one-second waits in a row);
* ``rollout-restart``: wait (bounded) while a covering PodDisruptionBudget allows no disruption, else
  skip; patch ``restartedAt`` like ``kubectl rollout restart``; wait for ``rollout_done``;
* ``evict``: each pod in turn through the Eviction API (policy/v1, with the pod's uid as a
  precondition), retrying while a PDB refuses (429) until the deadline; wait for the pod to go and
  its owner to have every replica available again before the next.

``token_review_per_namespace`` proves the new key works: a fresh TokenRequest per ServiceAccount,
then a TokenReview of it.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from kuberevive.core import restarts
from kuberevive.core.satokens import LEGACY_TOKEN_SECRET, token_kid
from kuberevive.errors import KubeApiError
from kuberevive.io.kubeapi import KubeApi
from kuberevive.model.document import rfc3339
from kuberevive.waiting import poll_until

Outcome = Literal["ok", "skipped", "failed"]
Progress = Callable[[str], None]

_RESOURCE = {
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
    "StatefulSet": "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}",
    "DaemonSet": "/apis/apps/v1/namespaces/{ns}/daemonsets/{name}",
    "ReplicaSet": "/apis/apps/v1/namespaces/{ns}/replicasets/{name}",
    "ReplicationController": "/api/v1/namespaces/{ns}/replicationcontrollers/{name}",
}


def _noop(_: str) -> None:
    pass


def _path(kind: str, namespace: str, name: str) -> str:
    return _RESOURCE[kind].format(ns=namespace, name=name)


def _list_all(api: KubeApi, path: str, **query: Any) -> Iterator[dict[str, Any]]:
    """Every item of a list, page by page (``limit``/``continue``); items get ``kind`` set."""
    token: str | None = None
    while True:
        page = api.get(path, limit=500, **query, **({"continue": token} if token else {}))
        kind = str(page.get("kind", "")).removesuffix("List")
        for item in page.get("items") or []:
            item.setdefault("kind", kind)
            yield item
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def read_restart_plan(
    api: KubeApi, created_before: datetime, current_key_ids: frozenset[str], restart_bare_pods: bool
) -> restarts.RestartPlan:
    """What must restart so every token in use is signed by one of ``current_key_ids`` (reads only)."""
    secrets = list(_list_all(api, "/api/v1/secrets", fieldSelector=f"type={LEGACY_TOKEN_SECRET}"))
    stale = restarts.stale_secrets(secrets, current_key_ids)
    workloads = [
        *_list_all(api, "/apis/apps/v1/deployments"),
        *_list_all(api, "/apis/apps/v1/statefulsets"),
        *_list_all(api, "/apis/apps/v1/daemonsets"),
    ]
    consumers = restarts.token_consumers(
        _list_all(api, "/api/v1/pods"),
        {s.key for s in stale},
        created_before,
        _list_all(api, "/apis/apps/v1/replicasets"),
        workloads,
    )
    pdbs = list(_list_all(api, "/apis/policy/v1/poddisruptionbudgets"))
    return restarts.plan_restarts(consumers, pdbs, restart_bare_pods, stale, current_key_ids)


def read_pods_restart_plan(
    api: KubeApi, namespace: str, label_selector: str, created_before: datetime, reason: str
) -> restarts.RestartPlan:
    """How to restart the pods of ``namespace`` matching ``label_selector`` created before ``created_before``
    (``reason`` says why), through their owners as :func:`read_restart_plan` does (reads only)."""
    base = f"/api/v1/namespaces/{namespace}"
    apps = f"/apis/apps/v1/namespaces/{namespace}"
    workloads = [
        *(w for kind in ("deployments", "statefulsets", "daemonsets") for w in _list_all(api, f"{apps}/{kind}"))
    ]
    consumers = restarts.started_before(
        _list_all(api, f"{base}/pods", labelSelector=label_selector),
        created_before,
        reason,
        _list_all(api, f"{apps}/replicasets"),
        workloads,
    )
    pdbs = list(_list_all(api, f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets"))
    return restarts.plan_restarts(consumers, pdbs, restart_bare_pods=False)


@dataclass(frozen=True)
class ActionResult:
    action: restarts.Action
    outcome: Outcome
    message: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def line(self) -> str:
        return f"{self.outcome}: {self.action.action} {self.action.ref} ({self.seconds:.1f}s): {self.message}"


class _Skip(Exception):
    pass


class _Fail(Exception):
    pass


def _wait_for(
    what: str,
    check: Callable[[], tuple[bool, str]],
    deadline: float,
    poll: float,
    fail: Callable[[], str | None] | None = None,
) -> tuple[bool, str]:
    """:func:`poll_until` up to the absolute ``deadline`` (``time.monotonic()``) shared by one owner's steps."""
    waited = poll_until(what, deadline - time.monotonic(), check, poll, fail=fail, retry=())
    return waited.ok, waited.last


def _wait_pdbs(api: KubeApi, action: restarts.Action, wait: float, poll: float, progress: Progress) -> None:
    for name in action.pdbs:
        path = f"/apis/policy/v1/namespaces/{action.namespace}/poddisruptionbudgets/{name}"

        def allowed(path: str = path, name: str = name) -> tuple[bool, str]:
            pdb = api.get_or_none(path)
            if pdb is None:
                return True, "gone"
            status = pdb.get("status") or {}
            n = int(status.get("disruptionsAllowed") or 0)
            healthy, want = status.get("currentHealthy", "?"), status.get("desiredHealthy", "?")
            return n > 0, f"PodDisruptionBudget {name} allows no disruption ({healthy} healthy, {want} desired)"

        ok, message = allowed()
        if not ok:
            progress(f"  {message}; waiting up to {wait:.0f}s")
            ok, message = _wait_for(f"PodDisruptionBudget {name}", allowed, time.monotonic() + wait, poll)
        if not ok:
            raise _Skip(f"{message}; restart {action.ref} once it recovers")


#: Seconds between two looks at one owner (its rollout, a PDB, an evicted pod): one small GET each, and one owner at
#: a time, so looking often costs little and ends each wait at most this long after the owner settled (a whole
#: second before, per owner in the plan's order).
POLL = 0.25
#: Seconds between two lists of every legacy token Secret while re-mints are pending (10,000 Secrets: 20 pages a list).
REMINT_POLL = 1.0


#: Re-mint patches sent at once (each is one small PATCH; the API server's own limits apply).
REMINT_CONCURRENCY = 16


def _remint_patch(api: KubeApi, action: restarts.Action) -> str | None:
    """Remove the stale token; None when sent, else why the action is skipped (raises _Fail or KubeApiError)."""
    path = f"/api/v1/namespaces/{action.namespace}/secrets/{action.name}"
    try:
        api.patch(path, restarts.remint_patch(action.token_b64), "json")
    except KubeApiError as exc:
        if exc.status == 404:
            return "the Secret is gone"
        if exc.status == 422:  # the test op failed: the token changed since planning
            return "its token changed since planning (re-minted already?); plan again to check"
        raise
    return None


def _refilled(token_b64: str | None, current: frozenset[str]) -> tuple[Outcome, str] | None:
    """What a re-minted Secret's ``data.token`` says: None while empty, else the outcome and its message.

    Any token present after our removal is a new write. It may be byte-identical to the removed one: legacy
    tokens have no iat/exp and RSA PKCS#1 v1.5 signatures are deterministic, so the same key signs the same
    token again. Hence the check is the key id, not "the token changed"."""
    if not token_b64:
        return None
    try:
        kid = token_kid(base64.b64decode(token_b64).decode(errors="replace"))
    except ValueError:
        return "failed", "the refilled token is not a JWT"
    if current and kid not in current:
        return "failed", (
            f"the token controller signed with key {kid}, not a current one: kube-controller-manager still"
            " runs with the old --service-account-private-key-file"
        )
    return "ok", f"the token controller signed a new token with key {kid}"


def remint_all(
    api: KubeApi,
    actions: list[restarts.Action],
    current: frozenset[str],
    timeout: float = 600.0,
    poll: float = REMINT_POLL,
    progress: Progress = _noop,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[ActionResult]:
    """Re-mint every stale legacy token Secret of ``actions`` at once (see the module docstring); one result each,
    in order. A Secret that is gone counts as done (the token controller deletes one whose ServiceAccount is
    gone).

    ``timeout`` limits the wait without progress, not the batch: the Secrets still empty fail once the token
    controller has refilled none of them for ``timeout`` seconds (it is not running, or signs nothing). A large
    batch that keeps being refilled is waited for as long as it takes (the controller works through 10,000
    Secrets at its own client rate: a fixed limit for all of them failed 3,540 of 10,000 in the fleet benchmark)."""
    start = clock()
    results: dict[int, ActionResult] = {}

    def done(i: int, outcome: Outcome, message: str) -> None:
        results[i] = ActionResult(actions[i], outcome, message, clock() - start)

    def send(i: int) -> None:
        try:
            skipped = _remint_patch(api, actions[i])
        except KubeApiError as exc:
            done(i, "failed", exc.message)
            return
        if skipped is not None:
            done(i, "skipped", skipped)

    with ThreadPoolExecutor(max_workers=REMINT_CONCURRENCY, thread_name_prefix="kuberevive-remint") as pool:
        list(pool.map(send, range(len(actions))))
    pending = {(a.namespace, a.name): i for i, a in enumerate(actions) if i not in results}
    progress(f"  {len(pending)} token(s) removed; waiting for the token controller to sign new ones")

    def refilled() -> tuple[bool, str]:
        tokens = {
            (str(s["metadata"].get("namespace", "")), str(s["metadata"].get("name", ""))): (s.get("data") or {}).get(
                "token"
            )
            for s in _list_all(api, "/api/v1/secrets", fieldSelector=f"type={LEGACY_TOKEN_SECRET}")
        }
        for key, i in list(pending.items()):
            if key not in tokens:
                done(i, "ok", "the Secret was deleted (its ServiceAccount is gone)")
            else:
                seen = _refilled(tokens[key], current)
                if seen is None:
                    continue
                done(i, *seen)
            del pending[key]
        return not pending, f"{len(pending)} Secret(s) not refilled yet"

    last = {"left": len(pending), "at": clock()}

    def stalled() -> str | None:
        """Why to give up: nothing refilled for ``timeout`` seconds (each refill starts the limit again)."""
        now = clock()
        if len(pending) < last["left"]:
            last.update(left=len(pending), at=now)
        if now - last["at"] >= timeout:
            return f"none of {len(pending)} Secret(s) refilled for {timeout:.0f} s"
        return None

    if pending:
        why = "the token controller has not refilled data.token; is kube-controller-manager running?"
        try:
            waited = poll_until(
                "the token controller to refill the re-minted Secrets",
                timeout * (len(pending) + 1),  # never reached first: a stall ends the wait
                refilled,
                poll,
                fail=stalled,
                retry=(),
                clock=clock,
                sleep=sleep,
            )
            if not waited.ok:
                why = f"{waited.last}: {why}"
        except KubeApiError as exc:
            why = f"{exc.message}; its token was removed, so run 'kuberevive recover --apply' again to check it"
        for i in pending.values():
            done(i, "failed", why)
    return [results[i] for i in range(len(actions))]


def _rollout_restart(api: KubeApi, action: restarts.Action, deadline: float, poll: float) -> str:
    path = _path(action.kind, action.namespace, action.name)
    now = datetime.now(UTC).replace(microsecond=0)
    at = rfc3339(now)
    api.patch(path, restarts.restart_patch(now), "strategic")
    last: dict[str, Any] = {}

    def done() -> tuple[bool, str]:
        obj = api.get_or_none(path)
        if obj is None:
            raise _Fail(f"{action.ref} disappeared during the rollout")
        last.clear()
        last.update(obj)
        return restarts.rollout_done(action.kind, obj, at)

    ok, message = _wait_for(
        f"the rollout of {action.ref}", done, deadline, poll, lambda: restarts.rollout_failed(action.kind, last)
    )
    if not ok:
        raise _Fail(f"rollout not done: {message}")
    return message


def _evict_one(api: KubeApi, pod: restarts.PodRef, deadline: float, poll: float, progress: Progress) -> None:
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod.name, "namespace": pod.namespace},
        "deleteOptions": {"preconditions": {"uid": pod.uid}} if pod.uid else {},
    }
    path = f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}"
    refused: list[str] = []

    def evicted() -> tuple[bool, str]:
        try:
            api.create(f"{path}/eviction", body)
        except KubeApiError as exc:
            if exc.status in (404, 409):  # gone, or the name is a newer pod (uid precondition)
                return True, "gone"
            if exc.status != 429:
                raise
            if not refused:
                progress(f"  eviction of {pod.ref} refused by a PodDisruptionBudget; retrying")
            refused.append(exc.message)
            return False, f"refused by a PodDisruptionBudget: {exc.message}"
        return True, "evicted"

    ok, message = _wait_for(f"the eviction of {pod.ref}", evicted, deadline, poll)
    if not ok:
        raise _Fail(f"eviction of {pod.ref} still {message}")
    if message == "gone":
        return

    def gone() -> tuple[bool, str]:
        obj = api.get_or_none(path)
        return obj is None or (obj.get("metadata") or {}).get("uid") != pod.uid, f"{pod.ref} is still terminating"

    ok, message = _wait_for(f"{pod.ref} to terminate", gone, deadline, poll)
    if not ok:
        raise _Fail(message)


def _evict(api: KubeApi, action: restarts.Action, deadline: float, poll: float, progress: Progress) -> str:
    for pod in action.pods:
        progress(f"  evicting {pod.ref}")
        _evict_one(api, pod, deadline, poll, progress)
        if action.kind not in _RESOURCE:
            continue
        path = _path(action.kind, action.namespace, action.name)

        def settled(path: str = path) -> tuple[bool, str]:
            obj = api.get_or_none(path)
            return (True, "owner gone") if obj is None else restarts.owner_settled(action.kind, obj)

        ok, message = _wait_for(f"{action.ref} to recover", settled, deadline, poll)
        if not ok:
            raise _Fail(f"{action.ref} did not recover after evicting {pod.name}: {message}")
    return f"evicted {len(action.pods)} pod(s)"


def apply_restart_plan(
    api: KubeApi,
    plan: restarts.RestartPlan,
    progress: Progress = _noop,
    timeout_per_owner: float = 600.0,
    pdb_wait: float = 120.0,
    poll: float = POLL,
    remint_poll: float = REMINT_POLL,
) -> list[ActionResult]:
    """Apply every action in order: the re-mints together (:func:`remint_all`, a list of the Secrets every
    ``remint_poll`` seconds), then one owner at a time (a look every ``poll`` seconds); a failure never stops the
    rest (each is reported)."""
    out: list[ActionResult] = []
    total = len(plan.actions)
    remints = [a for a in plan.actions if a.action == "remint"]
    if remints:
        progress(f"[1-{len(remints)}/{total}] re-mint {len(remints)} legacy token Secret(s) at once")
        for result in remint_all(api, remints, plan.current_key_ids, timeout_per_owner, remint_poll, progress):
            if not result.ok or len(remints) <= 20:
                progress(f"  {result.line()}")
            out.append(result)
        ok = sum(1 for r in out if r.ok)
        progress(f"  {ok} of {len(remints)} re-minted in {max((r.seconds for r in out), default=0):.1f}s")
    for i, action in enumerate(plan.actions, 1):
        if action.action == "remint":
            continue
        progress(f"[{i}/{total}] {action.summary()}")
        start = time.monotonic()
        deadline = start + timeout_per_owner
        outcome: Outcome = "ok"
        try:
            if action.action == "skip":
                outcome, message = "skipped", "; ".join(action.why[:1])
            elif action.action == "rollout-restart":
                _wait_pdbs(api, action, pdb_wait, poll, progress)
                message = _rollout_restart(api, action, deadline, poll)
            else:
                if action.kind != "Pod":  # a bare pod's eviction itself waits on its PDBs
                    _wait_pdbs(api, action, pdb_wait, poll, progress)
                message = _evict(api, action, deadline, poll, progress)
        except _Skip as exc:
            outcome, message = "skipped", str(exc)
        except _Fail as exc:
            outcome, message = "failed", str(exc)
        except KubeApiError as exc:
            outcome, message = "failed", exc.message
        result = ActionResult(action, outcome, message, time.monotonic() - start)
        progress(f"  {result.line()}")
        out.append(result)
    return out


def token_review_per_namespace(api: KubeApi, namespaces_with_sa: Mapping[str, str]) -> dict[str, tuple[bool, str]]:
    """For each ``namespace -> serviceaccount``: a fresh TokenRequest (600 s), then a TokenReview of it;
    ok when it authenticates as ``system:serviceaccount:<namespace>:<serviceaccount>``. Tokens are
    never logged or returned."""
    out: dict[str, tuple[bool, str]] = {}
    for ns, sa in sorted(namespaces_with_sa.items()):
        want = f"system:serviceaccount:{ns}:{sa}"
        try:
            issued = api.create(
                f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}},
            )
            review = api.create(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                {
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "spec": {"token": issued["status"]["token"]},
                },
            )
        except KubeApiError as exc:
            out[ns] = (False, exc.message)
            continue
        except (KeyError, TypeError):
            out[ns] = (False, f"the TokenRequest for {ns}/{sa} returned no token")
            continue
        status = review.get("status") or {}
        user = str((status.get("user") or {}).get("username", ""))
        if not status.get("authenticated"):
            out[ns] = (False, f"{ns}/{sa}: not authenticated: {status.get('error', 'no reason given')}")
        elif user != want:
            out[ns] = (False, f"{ns}/{sa}: authenticated as {user}, not {want}")
        else:
            out[ns] = (True, f"authenticated as {want}")
    return out
