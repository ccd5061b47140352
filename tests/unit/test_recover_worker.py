"""Finding a node whose kubelet can no longer authenticate, and telling lost credentials from other trouble."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kuberevive.core import recover as rcore
from kuberevive.core import retrust as core
from kuberevive.errors import PlanError
from kuberevive.model import paths
from kuberevive.model.config import KubeadmConfig
from tests.unit.test_recover import STORED, evidence

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _cfg() -> KubeadmConfig:
    return rcore.final_config(rcore.identify(evidence()), STORED, None)


def _node(name: str, status: str | None, beat: datetime, control_plane: bool = False) -> dict[str, Any]:
    labels = {"node-role.kubernetes.io/control-plane": ""} if control_plane else {}
    conds = [{"type": "MemoryPressure", "status": "False"}]
    if status is not None:
        conds.append({"type": "Ready", "status": status, "lastHeartbeatTime": beat.strftime("%Y-%m-%dT%H:%M:%SZ")})
    return {"metadata": {"name": name, "labels": labels}, "status": {"conditions": conds}}


def _lease(name: str, renewed: datetime) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "leaseDurationSeconds": 40},
    }


def test_unreporting_nodes_need_an_expired_lease_or_not_ready_with_an_old_heartbeat() -> None:
    old, fresh = NOW - timedelta(minutes=5), NOW - timedelta(seconds=10)
    nodes = [
        _node("cp1", "Unknown", old, control_plane=True),  # this node (and control planes) never
        _node("cp2", "Unknown", old, control_plane=True),
        _node("w-ready", "True", old),  # Ready, lease renewed: fine (status is posted rarely when nothing changes)
        _node("w-flap", "False", fresh),  # NotReady for seconds: a kubelet restart, not lost credentials
        _node("w-lost", "Unknown", old),
        _node("w-false", "False", NOW - timedelta(seconds=41)),
        _node("w-none", None, old),
        _node("w-lease", "True", fresh),  # still Ready, but its kubelet stopped renewing its Lease 45 s ago
    ]
    leases = [
        _lease("w-ready", fresh),
        _lease("w-flap", fresh),
        _lease("w-lease", NOW - timedelta(seconds=45)),
        _lease("w-recent", NOW - timedelta(seconds=39)),
    ]
    found = dict(core.unreporting_nodes(nodes, leases, "cp1", NOW))
    assert sorted(found) == ["w-false", "w-lease", "w-lost", "w-none"]
    assert found["w-lost"] == "Ready=Unknown, last heartbeat 2026-11-25T11:55:00Z (300 s ago)"
    assert found["w-none"] == "no Ready condition"
    assert found["w-lease"] == "its Lease was last renewed 45 s ago"


def _worker_files(ca: bytes, key: bytes, name: str = "worker1", now: datetime = NOW) -> tuple[bytes, bytes]:
    files = core.node_trust_files(_cfg(), ca, key, name, "https://172.30.2.11:6443", str(paths.CA_CRT), now, "s")
    return files.kubeconfig, files.pem


def _pair() -> tuple[bytes, bytes]:
    arts = {a.path.name: a.content for a in rcore.pki_artifacts(_cfg(), NOW, {}, {})}
    return arts["ca.crt"], arts["ca.key"]


def test_trust_problems_name_what_is_lost_or_stale() -> None:
    ca, key = _pair()
    other_ca, other_key = _pair()
    conf, pem = _worker_files(ca, key)
    assert core.trust_problems("worker1", ca, ca, conf, pem, NOW) == []
    # the worker lost /etc/kubernetes: kubelet.conf and the client CA file are gone, the pem survives
    assert core.trust_problems("worker1", ca, None, None, pem, NOW) == [
        "the kubelet's client CA file is missing",
        f"{paths.KUBELET_CONF} is missing",
    ]
    # a stale client certificate: from another CA, expired, or for another node
    old_conf, old_pem = _worker_files(other_ca, other_key)
    assert core.trust_problems("worker1", ca, ca, conf, old_pem, NOW) == [
        "the kubelet's client certificate is not signed by the cluster CA"
    ]
    assert "the kubelet's client CA file is not the cluster CA" in core.trust_problems(
        "worker1", ca, other_ca, old_conf, old_pem, NOW
    )
    assert core.trust_problems("worker1", ca, ca, conf, pem, NOW + timedelta(days=400)) == [
        "the kubelet's client certificate has expired"
    ]
    _c, pem2 = _worker_files(ca, key, name="worker2")
    assert core.trust_problems("worker1", ca, ca, conf, pem2, NOW) == [
        "the kubelet's client certificate is for ['system:node:worker2'], not system:node:worker1"
    ]
    assert core.trust_problems("worker1", ca, ca, conf, None, NOW) == ["the kubelet's client certificate is missing"]
    assert core.trust_problems("worker1", ca, ca, b"::", pem, NOW) == [f"{paths.KUBELET_CONF} is unreadable"]


def test_a_worker_running_recover_is_told_where_to_run_it() -> None:
    with pytest.raises(PlanError) as err:
        rcore.identify(evidence(etcd_data_dirs=()))
    assert "repairs a worker whose kubelet lost its files in place over SSH" in err.value.hint
