"""The re-mint of stale legacy token Secrets (``io/restarts_apply.remint_all``) against a fake API server with a fake
token controller (pure logic: the real controller is exercised in tests/lab/test_restarts_lab.py and
benchmarks/fleet.py --secrets). What matters at 10,000 Secrets: the patches go out together and the wait is a few
paginated lists, never a GET per Secret."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

from kuberevive.core import restarts
from kuberevive.core.satokens import LEGACY_TOKEN_SECRET
from kuberevive.errors import KubeApiError
from kuberevive.io import restarts_apply
from kuberevive.io.restarts_apply import apply_restart_plan, remint_all


def _jwt(kid: str, sub: str) -> str:
    def b64(obj: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'RS256', 'kid': kid})}.{b64({'sub': sub})}.c2ln"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class TokenApi:
    """Secrets in a dict; the token controller refills an emptied token (with ``key``) at the ``delay``-th list
    after the removal; a Secret named ``orphan-*`` is deleted instead (its ServiceAccount is gone)."""

    def __init__(self, n: int, key: str = "new", delay: int = 2, page: int = 7) -> None:
        self.key, self.delay, self.page = key, delay, page
        self.lock = threading.Lock()
        self.requests: list[str] = []
        self.lists = 0
        self.emptied: dict[tuple[str, str], int] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        for i in range(n):
            ns, name = f"ns{i % 3}", f"tok-{i:03d}"
            self.secrets[(ns, name)] = {
                "metadata": {"namespace": ns, "name": name},
                "type": LEGACY_TOKEN_SECRET,
                "data": {"token": _b64(_jwt("old", name))},
            }

    def patch(self, path: str, obj: Any, patch_type: str = "merge") -> Any:
        *_, ns, _secrets, name = path.split("/")
        with self.lock:
            self.requests.append(f"PATCH {path}")
            secret = self.secrets.get((ns, name))
            if secret is None:
                raise KubeApiError(f"PATCH {path} failed: 404 not found", status=404, reason="NotFound")
            test, remove = obj
            assert (patch_type, test["op"], remove) == ("json", "test", {"op": "remove", "path": "/data/token"})
            if secret["data"].get("token") != test["value"]:
                raise KubeApiError(f"PATCH {path} failed: 422 test failed", status=422, reason="Invalid")
            del secret["data"]["token"]
            self.emptied[(ns, name)] = self.lists

    def get(self, path: str, **query: Any) -> Any:
        with self.lock:
            self.requests.append(f"GET {path}")
            assert path == "/api/v1/secrets" and query["fieldSelector"] == f"type={LEGACY_TOKEN_SECRET}", path
            start = int(query.get("continue") or 0)
            if start == 0:
                self.lists += 1
                self._controller()
            keys = sorted(self.secrets)[start : start + self.page]
            more = start + self.page < len(self.secrets)
            return {
                "kind": "SecretList",
                "metadata": {"continue": str(start + self.page)} if more else {},
                "items": [json.loads(json.dumps(self.secrets[k])) for k in keys],
            }

    def _controller(self) -> None:
        for key, at in list(self.emptied.items()):
            if self.lists - at >= self.delay:
                del self.emptied[key]
                if key[1].startswith("orphan-"):
                    del self.secrets[key]
                else:
                    self.secrets[key]["data"]["token"] = _b64(_jwt(self.key, key[1]))


def _action(ns: str, name: str, token_b64: str) -> restarts.Action:
    return restarts.Action("remint", "Secret", ns, name, why=("stale",), group="remint", token_b64=token_b64)


def test_every_stale_secret_is_reminted_at_once_with_lists_not_a_get_each() -> None:
    api = TokenApi(60)
    actions = [_action(ns, name, s["data"]["token"]) for (ns, name), s in sorted(api.secrets.items())]
    results = remint_all(api, actions, frozenset({"new"}), timeout=30, poll=0.001)  # type: ignore[arg-type]
    assert [r.action for r in results] == actions
    assert all(r.outcome == "ok" and "signed a new token with key new" in r.message for r in results), results[:2]
    assert all(api.secrets[a.namespace, a.name]["data"]["token"] == _b64(_jwt("new", a.name)) for a in actions)
    patches = [r for r in api.requests if r.startswith("PATCH")]
    gets = [r for r in api.requests if r.startswith("GET")]
    assert len(patches) == 60
    assert api.lists == 2 and len(gets) == 2 * 9  # two lists of nine pages for 60 Secrets, no GET per Secret


def test_gone_changed_orphaned_and_wrongly_signed_secrets_are_each_reported() -> None:
    api = TokenApi(4)
    keys = sorted(api.secrets)
    gone, changed, wrong, fine = keys
    api.secrets[("ns0", "orphan-1")] = {
        "metadata": {"namespace": "ns0", "name": "orphan-1"},
        "type": LEGACY_TOKEN_SECRET,
        "data": {"token": _b64(_jwt("old", "orphan-1"))},
    }
    tokens = {k: s["data"]["token"] for k, s in api.secrets.items()}
    del api.secrets[gone]
    api.secrets[changed]["data"]["token"] = _b64(_jwt("new", "someone re-minted it"))
    actions = [_action(*k, tokens[k]) for k in (gone, changed, wrong, fine, ("ns0", "orphan-1"))]
    original = api._controller

    def controller() -> None:  # this Secret is refilled by a controller that still signs with the old key
        if wrong in api.emptied and api.lists - api.emptied[wrong] >= api.delay:
            del api.emptied[wrong]
            api.secrets[wrong]["data"]["token"] = _b64(_jwt("old", "again"))
        original()

    api._controller = controller  # type: ignore[method-assign]
    results = remint_all(api, actions, frozenset({"new"}), timeout=30, poll=0.001)  # type: ignore[arg-type]
    got = [(r.outcome, r.message.split(";")[0].split(":")[0]) for r in results]
    assert got == [
        ("skipped", "the Secret is gone"),
        ("skipped", "its token changed since planning (re-minted already?)"),
        ("failed", "the token controller signed with key old, not a current one"),
        ("ok", "the token controller signed a new token with key new"),
        ("ok", "the Secret was deleted (its ServiceAccount is gone)"),
    ]


def test_no_token_controller_fails_each_after_the_timeout_and_the_rest_of_the_plan_still_runs() -> None:
    api = TokenApi(3, delay=10**9)
    actions = [_action(ns, name, s["data"]["token"]) for (ns, name), s in sorted(api.secrets.items())]
    skip = restarts.Action("skip", "Pod", "ns0", "bare", why=("bare pod",))
    plan = restarts.RestartPlan((*actions, skip), (), frozenset({"new"}))
    said: list[str] = []
    results = apply_restart_plan(
        api,  # type: ignore[arg-type]
        plan,
        said.append,
        timeout_per_owner=0.05,
        poll=0.001,
        remint_poll=0.001,
    )
    assert [r.outcome for r in results] == ["failed", "failed", "failed", "skipped"]
    assert "is kube-controller-manager running?" in results[0].message
    assert said[0] == "[1-3/4] re-mint 3 legacy token Secret(s) at once" and "[4/4] skip Pod ns0/bare" in said[-2]


def test_a_list_that_fails_leaves_the_pending_ones_failed_with_what_to_do(monkeypatch: Any) -> None:
    api = TokenApi(2)
    actions = [_action(ns, name, s["data"]["token"]) for (ns, name), s in sorted(api.secrets.items())]

    def broken(*_a: Any, **_kw: Any) -> Any:
        raise KubeApiError("GET /api/v1/secrets failed: 503 unavailable", status=503)

    monkeypatch.setattr(restarts_apply, "_list_all", broken)
    results = remint_all(api, actions, frozenset({"new"}), timeout=30, poll=0.001)  # type: ignore[arg-type]
    assert [r.outcome for r in results] == ["failed", "failed"]
    assert "503 unavailable; its token was removed, so run 'kuberevive recover --apply' again" in results[0].message


class FakeTime:
    """A clock that only moves when the code under test sleeps (no real waiting)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class SlowController(TokenApi):
    """A token controller that refills at most ``per_list`` emptied Secrets between two lists, and none once
    ``stop_after`` Secrets were refilled (None: never stops)."""

    def __init__(self, n: int, per_list: int, stop_after: int | None = None) -> None:
        super().__init__(n, delay=1, page=500)
        self.per_list, self.stop_after, self.refilled = per_list, stop_after, 0

    def _controller(self) -> None:
        for key in sorted(self.emptied)[: self.per_list]:
            if self.stop_after is not None and self.refilled >= self.stop_after:
                return
            del self.emptied[key]
            self.secrets[key]["data"]["token"] = _b64(_jwt(self.key, key[1]))
            self.refilled += 1


def _remint_slowly(api: SlowController, t: FakeTime) -> list[restarts_apply.ActionResult]:
    """Every Secret of ``api`` re-minted with a 30 s limit, polling every 10 s of ``t``."""
    actions = [_action(ns, name, s["data"]["token"]) for (ns, name), s in sorted(api.secrets.items())]
    return remint_all(
        api,  # type: ignore[arg-type]
        actions,
        frozenset({"new"}),
        timeout=30,
        poll=10,
        clock=t.clock,
        sleep=t.sleep,
    )


def test_a_batch_that_keeps_being_refilled_is_waited_for_beyond_the_limit() -> None:
    """The fleet benchmark: 3,540 of 10,000 re-mints failed at the fixed 600 s limit while the token controller was
    still refilling them. The limit is on the wait without progress: 40 Secrets refilled one per 10 s poll take
    ~400 s, far past a 30 s limit, and all succeed."""
    t = FakeTime()
    results = _remint_slowly(SlowController(40, per_list=1), t)
    assert [r.outcome for r in results] == ["ok"] * 40
    assert t.now - 1000.0 >= 390 and max(r.seconds for r in results) >= 390  # far beyond the 30 s limit


def test_a_token_controller_that_stops_fails_the_rest_once_nothing_was_refilled_for_the_limit() -> None:
    results = _remint_slowly(SlowController(12, per_list=2, stop_after=5), FakeTime())
    assert [r.outcome for r in results].count("ok") == 5
    failed = [r for r in results if r.outcome == "failed"]
    assert len(failed) == 7
    assert all(r.message.startswith("none of 7 Secret(s) refilled for 30 s") for r in failed), failed[0].message
    assert "is kube-controller-manager running?" in failed[0].message
    # the fifth refill came at the third list (t = 20 s); the rest failed 30 s later, not at a limit from the start
    assert max(r.seconds for r in results if r.ok) == 20
    assert all(r.seconds == 50 for r in failed)


class RolloutApi:
    """One Deployment whose rollout completes ``after`` seconds after the restart patch (the kubelet and the
    controllers at work), as the real API reports it."""

    def __init__(self, after: float) -> None:
        self.after = after
        self.patched_at: float | None = None
        self.gets = 0

    def patch(self, path: str, obj: Any, patch_type: str = "merge") -> Any:
        self.patched_at = time.monotonic()
        self.mark = obj["spec"]["template"]["metadata"]["annotations"][restarts.RESTARTED_AT]
        return {}

    def get_or_none(self, path: str) -> Any:
        self.gets += 1
        assert self.patched_at is not None
        done = time.monotonic() >= self.patched_at + self.after
        return {
            "metadata": {"name": "app", "generation": 2},
            "spec": {"replicas": 1, "template": {"metadata": {"annotations": {restarts.RESTARTED_AT: self.mark}}}},
            "status": {
                "observedGeneration": 2,
                "replicas": 1 if done else 2,
                "updatedReplicas": 1,
                "availableReplicas": 1,
            },
        }


def test_a_rollout_is_seen_done_within_a_quarter_second_of_completing() -> None:
    """Each owner is awaited in turn, so a second between looks costs up to a second per owner of the plan."""
    api = RolloutApi(after=0.3)
    plan = restarts.RestartPlan((restarts.Action("rollout-restart", "Deployment", "ns", "app", why=("token",)),))
    (result,) = apply_restart_plan(api, plan)  # type: ignore[arg-type]
    assert result.outcome == "ok", result.message
    assert 0.3 <= result.seconds <= 0.3 + restarts_apply.POLL + 0.15 and api.gets >= 2
