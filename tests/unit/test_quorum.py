"""quorum-restore's pure planning (core/quorum.py): the verdict, the donor, the steps, the etcdutl arguments and
the re-grown member's manifest."""

from __future__ import annotations

import pytest

from kuberevive.core import quorum as q
from kuberevive.core.manifests import manifest_command, manifest_flags, parse_manifest
from kuberevive.core.replace import EtcdMember, initial_cluster
from kuberevive.errors import PlanError


def _m(node: str, revision: int | None, healthy: bool = False, has_data: bool = True) -> q.MasterEtcd:
    i = node[-1]
    return q.MasterEtcd(
        node=node,
        address=f"10.0.0.1{i}",
        member=node,
        peer_url=f"https://10.0.0.1{i}:2380",
        client_url=f"https://10.0.0.1{i}:2379",
        data_dir="/var/lib/etcd",
        has_data=has_data,
        revision=revision,
        healthy=healthy,
        why="" if healthy else "unreachable",
    )


def test_two_of_three_data_gone_restores_from_the_highest_revision() -> None:
    # cp2's and cp3's etcd restarted on an empty data dir: a fresh db at revision 1, or none at all
    masters = [_m("cp1", 5400), _m("cp2", 1), _m("cp3", None, has_data=False)]
    p = q.plan(masters, local="cp2")
    assert p.donor.node == "cp1"  # the highest revision wins over this node
    assert [s.key for s in p.steps] == [
        "stop-control-plane",
        "keep-data",
        "restore-donor",
        "start-donor",
        "regrow:cp2",
        "regrow:cp3",
        "restart-components",
    ]
    assert [s.node for s in p.steps][2:6] == ["cp1", "cp1", "cp2", "cp3"]
    doc = p.document()
    assert doc["donor"] == {
        "node": "cp1",
        "revision": 5400,
        "data_dir": "/var/lib/etcd",
        "snapshot": None,
        "backup": None,
    }
    assert p.source("S") == ("/var/lib/etcd.kuberevive-S/member/snap/db", True)  # its own db: no hash trailer
    assert doc["notes"][0] == "donor cp1: revision 5400 (the highest; cp2: 1, cp3: no db)"
    assert any("the other members start empty" in n for n in doc["notes"])


def test_ties_prefer_this_node_then_member_order() -> None:
    masters = [_m("cp1", 70), _m("cp2", 70), _m("cp3", 69)]
    assert q.choose_donor(masters, "cp2").node == "cp2"
    assert q.choose_donor(masters, "cp3").node == "cp1"


def test_a_cluster_with_quorum_is_refused() -> None:
    masters = [_m("cp1", 10, healthy=True), _m("cp2", 10, healthy=True), _m("cp3", None)]
    with pytest.raises(PlanError, match=r"etcd has quorum: 2 of 3 members healthy .*cp3: unreachable") as exc:
        q.plan(masters, "cp1")
    assert "replace-control-plane" in exc.value.hint
    # one healthy of three is no quorum: planned
    assert q.plan([_m("cp1", 10, healthy=True), _m("cp2", 3), _m("cp3", 2)], "cp1").donor.node == "cp1"


def test_no_usable_db_and_a_single_member_are_refused() -> None:
    with pytest.raises(PlanError, match=r"no member has an etcd db .*cp1: no member/snap/db; cp2: no data") as exc:
        q.plan([_m("cp1", None), _m("cp2", None, has_data=False)], "cp1")
    assert "restore-etcd" in exc.value.hint
    with pytest.raises(PlanError, match="multi-member"):
        q.plan([_m("cp1", 5)], "cp1")
    with pytest.raises(PlanError, match="multi-member"):
        q.plan([_m("cp1", 5), _m("cp1", 6)], "cp1")


def test_restore_args_bump_the_revision_and_skip_the_hash_check() -> None:
    args = q.restore_args(_m("cp1", 5), "/var/lib/etcd.kuberevive-S/member/snap/db", "/var/lib/etcd.restore")
    assert args[:3] == ["snapshot", "restore", "/var/lib/etcd.kuberevive-S/member/snap/db"]
    assert "--name=cp1" in args and "--initial-cluster=cp1=https://10.0.0.11:2380" in args
    assert "--initial-advertise-peer-urls=https://10.0.0.11:2380" in args
    assert "--data-dir=/var/lib/etcd.restore" in args
    assert "--mark-compacted" in args and "--skip-hash-check" in args
    assert any(a.startswith("--bump-revision=") and int(a.split("=")[1]) > 0 for a in args)
    assert str(q.kept_name("/var/lib/etcd", "S")) == "/var/lib/etcd.kuberevive-S"


MANIFEST = b"""apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
spec:
  containers:
  - command:
    - etcd
    - --data-dir=/var/lib/etcd
    - --initial-advertise-peer-urls=https://10.0.0.12:2380
    - --initial-cluster=cp1=https://10.0.0.11:2380,cp2=https://10.0.0.12:2380
    - --initial-cluster-state=existing
    - --name=cp2
    image: registry.k8s.io/etcd:3.5.24-0
    name: etcd
"""


def test_the_regrown_member_joins_the_members_of_now() -> None:
    members = [EtcdMember("a1", "cp1", ("https://10.0.0.11:2380",)), EtcdMember("b2", "", ("https://10.0.0.12:2380",))]
    cluster = initial_cluster(members, "cp2", "10.0.0.12")
    pod = parse_manifest(q.rejoin_manifest(MANIFEST, cluster))
    flags = manifest_flags(pod)
    assert flags["initial-cluster"] == "cp1=https://10.0.0.11:2380,cp2=https://10.0.0.12:2380"
    assert flags["initial-cluster-state"] == "existing"
    assert flags["name"] == "cp2" and flags["data-dir"] == "/var/lib/etcd"
    command = manifest_command(pod)
    assert command[0] == "etcd" and len(command) == 6  # replaced, not repeated
    # cp1 was an init node (state new, itself only): it joins the restored cluster as existing
    init = MANIFEST.replace(b"--initial-cluster-state=existing\n    - ", b"")
    flags = manifest_flags(parse_manifest(q.rejoin_manifest(init, cluster)))
    assert flags["initial-cluster-state"] == "existing"


def test_a_snapshot_is_restored_on_this_node_which_is_then_the_donor() -> None:
    masters = [_m("cp1", 5400), _m("cp2", 1), _m("cp3", None, has_data=False)]
    p = q.plan(masters, "cp2", snapshot=q.Snapshot("/var/backups/etcd.db", 5000))
    assert p.donor.node == "cp2" and [s.key for s in p.steps][2:6] == [
        "restore-donor", "start-donor", "regrow:cp1", "regrow:cp3",
    ]  # fmt: skip
    assert p.source("S") == ("/var/backups/etcd.db", False)  # etcdctl's snapshot: its hash is checked
    doc = p.document()
    assert doc["donor"] == {
        "node": "cp2",
        "revision": 5000,
        "data_dir": "/var/lib/etcd",
        "snapshot": "/var/backups/etcd.db",
        "backup": None,
    }
    assert doc["notes"][0].startswith(
        "donor cp2 (this node) restores the snapshot /var/backups/etcd.db (revision 5000)"
    )
    assert any("the db of cp1 is newer than the snapshot" in n for n in doc["notes"])
    with pytest.raises(PlanError, match="is not an etcd snapshot"):
        q.plan(masters, "cp2", snapshot=q.Snapshot("/etc/passwd", None))
    with pytest.raises(PlanError, match=r"this node \(cp9\) is not a member"):
        q.plan(masters, "cp9", snapshot=q.Snapshot("/var/backups/etcd.db", 5000))
