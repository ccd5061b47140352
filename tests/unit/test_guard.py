"""Eviction guard: a pure transform of kubeadm's real kube-controller-manager manifest."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kuberevive.core import guard as g
from kuberevive.core.manifests import manifest_flags, parse_manifest, render_manifest
from kuberevive.errors import ConfigError

GOLDEN = Path(__file__).parent.parent / "golden" / "v1.33" / "defaults" / "manifests" / "kube-controller-manager.yaml"


@pytest.fixture
def kcm() -> dict[str, Any]:
    return parse_manifest(GOLDEN.read_text())


def _command(pod: dict[str, Any]) -> list[str]:
    return list(pod["spec"]["containers"][0]["command"])


def test_guard_changes_only_the_controllers_flag_and_adds_the_annotation(kcm):
    before = copy.deepcopy(kcm)
    guarded = g.guard(kcm)
    assert kcm == before  # input untouched
    assert manifest_flags(guarded)["controllers"] == "*,bootstrapsigner,tokencleaner,-taint-eviction-controller"
    # same position, every other flag identical
    diff = [(a, b) for a, b in zip(_command(kcm), _command(guarded), strict=True) if a != b]
    assert diff == [
        (
            "--controllers=*,bootstrapsigner,tokencleaner",
            "--controllers=*,bootstrapsigner,tokencleaner,-taint-eviction-controller",
        )
    ]
    assert guarded["metadata"]["annotations"] == {g.GUARD_ANNOTATION: "*,bootstrapsigner,tokencleaner"}
    rest = copy.deepcopy(guarded)
    del rest["metadata"]["annotations"]
    rest["spec"]["containers"][0]["command"] = _command(kcm)
    assert rest == kcm


def test_guard_is_idempotent_and_unguard_restores_the_exact_text(kcm):
    guarded = g.guard(kcm)
    assert g.guard(guarded) == guarded
    assert g.is_guarded(guarded) and not g.is_guarded(kcm)
    normal = g.unguard(guarded)
    assert normal == kcm
    assert render_manifest(normal) == GOLDEN.read_text()
    assert g.unguard(normal) == kcm


def test_guard_keeps_every_controller_recovery_needs(kcm):
    assert g.essentials_disabled(kcm) == []
    assert g.essentials_disabled(g.guard(kcm)) == []
    value = g.controllers_value(g.guard(kcm))
    assert not g.controller_enabled(value, "taint-eviction-controller")
    assert g.controller_enabled(value, "node-lifecycle-controller")
    assert g.controller_enabled(value, "bootstrap-signer-controller")


def test_guard_without_a_controllers_flag_adds_one_and_unguard_removes_it(kcm):
    cmd = [c for c in _command(kcm) if not c.startswith("--controllers=")]
    kcm["spec"]["containers"][0]["command"] = cmd
    guarded = g.guard(kcm)
    assert _command(guarded)[-1] == "--controllers=*,-taint-eviction-controller"
    assert guarded["metadata"]["annotations"][g.GUARD_ANNOTATION] == g.ABSENT
    assert g.unguard(guarded) == kcm


def test_explicitly_enabled_taint_eviction_is_replaced(kcm):
    cmd = _command(kcm)
    i = next(i for i, c in enumerate(cmd) if c.startswith("--controllers="))
    cmd[i] = "--controllers=taint-eviction-controller,*"
    kcm["spec"]["containers"][0]["command"] = cmd
    guarded = g.guard(kcm)
    assert g.controllers_value(guarded) == "*,-taint-eviction-controller"
    assert g.is_guarded(guarded)
    assert g.unguard(guarded) == kcm


def test_a_hand_guarded_manifest_is_recognised_and_unguarded(kcm):
    cmd = _command(kcm)
    i = next(i for i, c in enumerate(cmd) if c.startswith("--controllers="))
    cmd[i] = "--controllers=*,-taint-eviction-controller,bootstrapsigner,tokencleaner"
    kcm["spec"]["containers"][0]["command"] = cmd
    assert g.is_guarded(kcm)
    assert g.guard(kcm) == kcm  # nothing to do, no annotation added
    assert g.controllers_value(g.unguard(kcm)) == "*,bootstrapsigner,tokencleaner"


def test_the_last_controllers_flag_counts_as_in_pflag(kcm):
    kcm["spec"]["containers"][0]["command"] = [*_command(kcm), "--controllers=*"]
    guarded = g.guard(kcm)
    assert _command(guarded)[-1] == "--controllers=*,-taint-eviction-controller"
    assert "--controllers=*,bootstrapsigner,tokencleaner" in _command(guarded)
    assert g.unguard(guarded) == kcm


def test_enablement_rules_follow_kube_controller_manager():
    assert g.controller_enabled(None, "taint-eviction-controller")  # default "*"
    assert not g.controller_enabled("*", "bootstrap-signer-controller")  # off by default
    assert g.controller_enabled("*,bootstrapsigner", "bootstrap-signer-controller")  # alias
    assert not g.controller_enabled("*,-csrsigning", "certificatesigningrequest-signing-controller")
    assert not g.controller_enabled("csrsigning", "taint-eviction-controller")  # no "*"
    assert g.controller_enabled("taint-eviction-controller,-taint-eviction-controller", "taint-eviction-controller")


def test_essentials_disabled_reports_a_manifest_that_would_stop_csr_signing(kcm):
    cmd = _command(kcm)
    i = next(i for i, c in enumerate(cmd) if c.startswith("--controllers="))
    cmd[i] = "--controllers=*,-csrsigning"
    kcm["spec"]["containers"][0]["command"] = cmd
    assert g.essentials_disabled(g.guard(kcm)) == [
        "certificatesigningrequest-signing-controller",
        "bootstrap-signer-controller",
        "token-cleaner-controller",
    ]


def test_a_manifest_without_containers_is_a_config_error():
    with pytest.raises(ConfigError, match="no container"):
        g.guard({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {}})


# --------------------------------------------------------------- the stopped guarded instance's leader lease

_LEASE: dict[str, Any] = {
    "apiVersion": "coordination.k8s.io/v1",
    "kind": "Lease",
    "metadata": {"name": "kube-controller-manager", "namespace": "kube-system", "resourceVersion": "812"},
    "spec": {
        "holderIdentity": "cp1_5b3c0e1e-1d7f-4a55-9b1e-0f9a3c2d4e5f",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-12-05T00:00:01.000000Z",
        "renewTime": "2026-12-05T00:03:07.123456Z",
        "leaseTransitions": 4,
    },
}
_HOLDER = "cp1_5b3c0e1e-1d7f-4a55-9b1e-0f9a3c2d4e5f"
_NOW = datetime(2026, 12, 5, 0, 3, 9, 500000, tzinfo=UTC)


def test_the_stopped_guarded_controller_managers_lease_is_released_as_client_go_would() -> None:
    body = g.released_lease(_LEASE, _HOLDER, "CP1", True, _NOW)
    assert body is not None
    assert body["metadata"]["resourceVersion"] == "812"  # the write is conditional on what was read
    assert body["spec"] == {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "acquireTime": "2026-12-05T00:03:09.500000Z",
        "renewTime": "2026-12-05T00:03:09.500000Z",
        "leaseTransitions": 4,
    }
    assert _LEASE["spec"]["holderIdentity"] == _HOLDER  # the input is not changed


@pytest.mark.parametrize(
    ("holder_now", "guarded_holder", "hostname", "stopped"),
    [
        (_HOLDER, _HOLDER, "cp1", False),  # the guarded instance still runs
        ("cp1_0000-new", _HOLDER, "cp1", True),  # a successor leads already
        ("", _HOLDER, "cp1", True),  # released already
        ("cp2_5b3c0e1e", "cp2_5b3c0e1e", "cp1", True),  # another node's controller-manager may be alive
        (_HOLDER, "", "cp1", True),  # the holder before the swap was not known
    ],
)
def test_the_lease_is_left_alone_unless_it_is_safe(
    holder_now: str, guarded_holder: str, hostname: str, stopped: bool
) -> None:
    lease = copy.deepcopy(_LEASE)
    lease["spec"]["holderIdentity"] = holder_now
    assert g.released_lease(lease, guarded_holder, hostname, stopped, _NOW) is None


# ---------------------------------------------- the lease of a controller-manager gone with the disaster

_RUN_STARTED = datetime(2026, 12, 5, 0, 5, 0, tzinfo=UTC)  # after _LEASE's last renewal (00:03:07)


def test_the_lease_of_an_instance_dead_before_the_recovery_is_released() -> None:
    body = g.dead_leader_release(_LEASE, "cp1", _RUN_STARTED, True, _NOW)
    assert body is not None and body["spec"]["holderIdentity"] == "" and body["metadata"]["resourceVersion"] == "812"


@pytest.mark.parametrize(
    ("change", "hostname", "only_new"),
    [
        ({"renewTime": "2026-12-05T00:05:01.000000Z"}, "cp1", True),  # renewed since the recovery started: alive
        ({"renewTime": None}, "cp1", True),  # no time to judge by
        ({"renewTime": "yesterday"}, "cp1", True),
        ({}, "cp1", False),  # a container older than the run runs (or crictl listed nothing)
        ({}, "cp2", True),  # another node's controller-manager may be alive
        ({"holderIdentity": ""}, "cp1", True),  # released already
    ],
)
def test_a_lease_is_left_alone_unless_its_holder_is_shown_dead(
    change: dict[str, Any], hostname: str, only_new: bool
) -> None:
    lease = copy.deepcopy(_LEASE)
    lease["spec"].update(change)
    assert g.dead_leader_release(lease, hostname, _RUN_STARTED, only_new, _NOW) is None
