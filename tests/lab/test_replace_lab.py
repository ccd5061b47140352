"""Issue 16, a control-plane machine lost for good and a lost etcd quorum: ``kuberevive lab node destroy|add``,
``kuberevive replace-control-plane`` and ``kuberevive quorum-restore`` on the real 3+1 HA lab (cp1..cp3 with
stacked etcd behind haproxy, worker1).

One bring-up for the module (the ``ha_lab`` fixture). In the order written:

1. cp3's machine destroyed (its processes, namespaces and disks; its Node object and etcd member remain), a fresh
   machine with the same name and address added (packages, images, sshd with the lab key, no cluster state), and
   ``replace-control-plane cp3 --apply`` run on cp1: three started voting members with a new cp3 member, all
   nodes Ready, 0 failed requests of a Service probe every 100 ms from cp1, cp2 and worker1 during the
   replacement, no pod on another node restarted or re-created, cp3's trust material byte-identical to cp1's.
2. cp3 destroyed again and replaced by a machine with a new name and address (cp4, the next free address):
   ``--new-name cp4 --address IP``; the first run is SIGKILLed right after adding the learner and the second
   resumes from the journal; while it runs, the lab's pod network is attached to cp4 as soon as its Node has a pod
   CIDR (what the cluster's CNI DaemonSet does on a new node: ``node-ready`` waits for it), and after it the
   haproxy backend is added (as the operator would); then cp1, cp2, cp4, worker1 Ready, Node cp3 deleted, three
   voting members with cp4, 0 failed Service requests, no pod elsewhere restarted.
3. Quorum lost: cp2's and the third master's etcd data deleted while the cluster runs (their etcd crashes), cp1
   alone; ``quorum-restore`` plans cp1 as the donor (highest revision), ``--apply`` is SIGKILLed once every
   master's etcd and API server are stopped and their data kept aside, and resumed; then three voting members,
   the 40 ConfigMaps written before the loss all there, the revision above the one before, every node Ready,
   0 failed Service requests from every node.
4. cp2 and the third master both destroyed: ``replace-control-plane --apply`` refuses (etcd has lost quorum) with
   each member's health, exit 1, and changes nothing.

The lab is broken after the last test (two of three etcd members gone): the fixture takes it down.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from kuberevive.lab import Lab
from kuberevive.lab.config import WORKLOAD_NAMESPACE
from kuberevive.lab.loadbalancer import LoadBalancer
from kuberevive.lab.node import Node
from kuberevive.lab.probe import ServiceProbe
from kuberevive.model import paths
from tests.documents import validate
from tests.lab.test_ha_lab import ETCDCTL, _members, _poll

pytestmark = pytest.mark.lab

OnNode = Callable[..., "subprocess.CompletedProcess[str]"]
NODES = ("cp1", "cp2", "cp3", "worker1")
LOST = "cp3"
NEW = "cp4"
TIMES: dict[str, float] = {}


def _pods_elsewhere(on_node: OnNode) -> dict[str, tuple[str, dict[str, tuple[str, int]]]]:
    """Every pod not on the lost node (namespace/name): its UID and, per container, its ID and restart count."""
    items = json.loads(on_node("cp1", "kubectl", "get", "pods", "-A", "-o", "json").stdout)["items"]
    out = {}
    for p in items:
        if p["spec"].get("nodeName") == LOST:
            continue
        containers = {
            s["name"]: (s.get("containerID", ""), int(s.get("restartCount", 0)))
            for s in p["status"].get("containerStatuses", [])
        }
        out[f"{p['metadata']['namespace']}/{p['metadata']['name']}"] = (p["metadata"]["uid"], containers)
    return out


def _labapp_endpoint_nodes(on_node: OnNode) -> set[str]:
    """The nodes of the labapp Service's ready endpoints."""
    slices = json.loads(
        on_node(
            "cp1",
            "kubectl",
            "get",
            "endpointslices",
            "-n",
            WORKLOAD_NAMESPACE,
            "-l",
            "kubernetes.io/service-name=labapp",
            "-o",
            "json",
        ).stdout
    )["items"]
    return {
        e.get("nodeName", "")
        for s in slices
        for e in s.get("endpoints") or []
        if (e.get("conditions") or {}).get("ready")
    }


def _all_ready(lab: Lab) -> bool:
    return lab.node_conditions() == dict.fromkeys(NODES, "Ready")


def _ssh_args(lab: Lab) -> list[str]:
    ssh = lab.cfg.ssh_dir
    return ["--ssh-key", str(ssh / "id_ed25519"), "--known-hosts", str(ssh / "known_hosts")]


def _trust_sums(on_node: OnNode, node: str) -> str:
    return on_node(node, "sh", "-c", "cd /etc/kubernetes/pki && sha256sum " + " ".join(paths.TRUST_FILES)).stdout


def _add_while_the_endpoint_leaves(lab: Lab, on_node: OnNode, name: str) -> Node:
    """Add the fresh machine ``name`` while waiting for the lost node's labapp endpoint to leave the Service (the
    loss itself fails the requests that land on it until the controllers take it out, after the node-monitor grace
    period: the replacement's impact is measured from then on). The new machine runs no kubelet yet, so adding it
    meanwhile changes nothing in the cluster and saves the time of one of the two waits."""

    def add() -> Node:
        t0 = time.monotonic()
        node = lab.add_node(name)
        TIMES["add_s"] = time.monotonic() - t0
        return node

    with ThreadPoolExecutor(1) as pool:
        added = pool.submit(add)
        left = lambda: LOST not in _labapp_endpoint_nodes(on_node)  # noqa: E731
        _poll(f"{LOST}'s labapp endpoint to leave the Service", left, 300)
        return added.result()


def test_a_destroyed_master_is_replaced_by_a_fresh_machine_of_the_same_name(
    ha_lab: Lab, ha_on_node: OnNode, tmp_path: Path
) -> None:
    on_node = ha_on_node
    _poll("every node Ready", lambda: _all_ready(ha_lab), 300)
    before = _members(on_node)
    (old_id,) = [i for i, m in before.items() if m["name"] == LOST]

    t0 = time.monotonic()
    ha_lab.destroy_node(LOST)
    TIMES["destroy_s"] = time.monotonic() - t0
    # the machine is gone: namespaces, disks, processes, its sshd
    assert not ha_lab.node(LOST).is_up()
    assert not ha_lab.cfg.node_dir(LOST).exists()
    assert not [x for x in ha_lab.leftovers() if f"{ha_lab.cfg.prefix}-{LOST}" in x], ha_lab.leftovers()
    assert on_node("cp1", "ssh", "-F", str(ha_lab.cfg.ssh_dir / "config"), LOST, "true", check=False).returncode != 0
    # what the cluster knows of it remains: its Node object and its etcd member
    assert old_id in _members(on_node)
    on_node("cp1", "kubectl", "get", "node", LOST)

    _add_while_the_endpoint_leaves(ha_lab, on_node, LOST)
    pods_before = _pods_elsewhere(on_node)
    fresh = on_node(
        "cp1",
        "ssh",
        "-F",
        str(ha_lab.cfg.ssh_dir / "config"),
        LOST,
        'test ! -e /etc/kubernetes && test -z "$(ls -A /var/lib/etcd)" && test ! -e /var/lib/kubelet/config.yaml '
        "&& crictl ps -q | wc -l",
    )
    assert fresh.stdout.strip() == "0", fresh.stdout  # no cluster state, no container, reachable with the lab key

    argv = ["kuberevive", "replace-control-plane", LOST, "--json", *_ssh_args(ha_lab)]
    argv += ["--kubelet-arg", f"cgroup-root={ha_lab.cfg.cgroup_root(LOST)}"]
    plan = validate(json.loads(on_node("cp1", *argv, timeout=300).stdout))  # its JSON Schema too
    assert plan["kind"] == "ReplacePlan" and plan["lost_member"]["id"] == old_id  # hex, as etcdctl prints it
    assert _members(on_node).keys() == before.keys()  # the plan changed nothing

    with ServiceProbe(ha_lab, tmp_path / "service", nodes=["cp1", "cp2", "worker1"]) as service:
        service.wait_for_answers(10)
        t0 = time.monotonic()
        run = on_node("cp1", *argv, "--apply", check=False, timeout=1200)
        TIMES["replace_s"] = time.monotonic() - t0
        assert run.returncode == 0, run.stderr[-3000:]
        _poll("every node Ready", lambda: _all_ready(ha_lab), 300)
        _poll(f"a labapp endpoint on {LOST} again", lambda: LOST in _labapp_endpoint_nodes(on_node), 300)
        _poll(f"the labapp Service to answer from {LOST}", lambda: ha_lab.request_service(LOST), 120)
        service.wait_for_answers(20)
    result = validate(json.loads(run.stdout))
    print(f"times: {TIMES}; Service probes:", {n: (r.ok, r.failed) for n, r in service.results.items()})

    assert result["kind"] == "ReplaceResult" and result["applied"][:3] == [
        "remove-member",
        "prepare-node",
        "add-learner",
    ]
    # three started voting members, cp3 a new member at its address
    members = _members(on_node)
    assert sorted(m["name"] for m in members.values()) == ["cp1", "cp2", "cp3"], members
    assert not any(m.get("isLearner", False) for m in members.values()), members
    (new_id,) = [i for i, m in members.items() if m["name"] == LOST]
    assert new_id != old_id and members[new_id]["peerURLs"] == [f"https://{ha_lab.cfg.node(LOST).ip}:2380"]
    health = json.loads(on_node("cp1", *ETCDCTL, "endpoint", "health", "--cluster", "-w", "json").stdout)
    assert len(health) == 3 and all(h["health"] for h in health), health
    # the cluster's trust material, byte for byte
    assert _trust_sums(on_node, LOST) == _trust_sums(on_node, "cp1")
    # no pod on another node restarted or re-created
    pods_after = _pods_elsewhere(on_node)
    assert {k: pods_after.get(k) for k in pods_before} == pods_before
    # no Service request failed during the replacement
    for node, r in service.results.items():
        assert r.ok > 0 and r.failed == 0, f"Service probe on {node}: {r.as_dict()}"


def _pod_cidr(on_node: OnNode, node: str) -> str:
    got = on_node("cp1", "kubectl", "get", "node", node, "-o", "jsonpath={.spec.podCIDR}", check=False)
    return got.stdout.strip() if got.returncode == 0 else ""


def test_a_lost_master_is_replaced_by_a_machine_with_a_new_name_and_address(
    ha_lab: Lab, ha_on_node: OnNode, tmp_path: Path
) -> None:
    on_node = ha_on_node
    _poll("every node Ready", lambda: _all_ready(ha_lab), 300)
    ha_lab.destroy_node(LOST)
    new = _add_while_the_endpoint_leaves(ha_lab, on_node, NEW)
    pods_before = _pods_elsewhere(on_node)
    assert new.spec.ip not in {ha_lab.cfg.node(n).ip for n in NODES}

    argv = ["kuberevive", "replace-control-plane", LOST, "--new-name", NEW, "--address", new.spec.ip, "--json"]
    argv += [*_ssh_args(ha_lab), "--kubelet-arg", f"cgroup-root={ha_lab.cfg.cgroup_root(NEW)}", "--apply"]
    with ServiceProbe(ha_lab, tmp_path / "service", nodes=["cp1", "cp2", "worker1"]) as service:
        service.wait_for_answers(10)
        t0 = time.monotonic()
        # killed (SIGKILL) right after the learner is added: the next run resumes from the journal
        killed = on_node("cp1", "env", "KUBEREVIVE_FAULT_AFTER_STEP=3", *argv, check=False, timeout=1200)
        assert killed.returncode in (-9, 137), killed.stderr[-3000:]  # SIGKILL
        journal = json.loads(on_node("cp1", "cat", str(paths.STATE_DIR / "replace" / "journal.json")).stdout)
        assert journal["status"] == "running" and journal["learner_id"], journal
        assert {s for s, r in journal["steps"].items() if r["state"] == "done"} == {
            "remove-member",
            "prepare-node",
            "add-learner",
        }
        with ThreadPoolExecutor(1) as pool:
            resumed = pool.submit(on_node, "cp1", *argv, check=False, timeout=1200)
            # what the cluster's CNI DaemonSet does once the new Node has its pod CIDR: the command's node-ready
            # step waits for a Ready Node, which needs it
            _poll(f"{NEW}'s pod CIDR (or the command to end)", lambda: _pod_cidr(on_node, NEW) or resumed.done(), 900)
            if not resumed.done():
                ha_lab.attach_pod_network(NEW)
            run = resumed.result()
        TIMES["replace_new_name_s"] = time.monotonic() - t0
        assert run.returncode == 0, run.stderr[-3000:]
        # what the operator does for the new address: the load balancer lists it
        LoadBalancer(ha_lab.cfg).add_server(NEW, new.spec.ip)
        want = {"cp1": "Ready", "cp2": "Ready", NEW: "Ready", "worker1": "Ready"}
        _poll(f"cp1, cp2, {NEW}, worker1 Ready and no {LOST}", lambda: ha_lab.node_conditions() == want, 300)
        _poll(f"haproxy to check {NEW} UP", lambda: LoadBalancer(ha_lab.cfg).server_states().get(NEW) == "UP", 120)
        service.wait_for_answers(20)
    result = validate(json.loads(run.stdout))
    print(f"times: {TIMES}; Service probes:", {n: (r.ok, r.failed) for n, r in service.results.items()})
    assert result["resumed"] is True
    assert result["applied"] == ["start-kubelet", "promote", "api-ready", "node-ready", "old-node"]
    assert any("must list the new one" in n for n in result["plan"]["notes"]), result["plan"]["notes"]
    members = _members(on_node)
    assert sorted(m["name"] for m in members.values()) == ["cp1", "cp2", NEW], members
    assert not any(m.get("isLearner", False) for m in members.values()), members
    assert [m["peerURLs"] for m in members.values() if m["name"] == NEW] == [[f"https://{new.spec.ip}:2380"]]
    health = json.loads(on_node("cp1", *ETCDCTL, "endpoint", "health", "--cluster", "-w", "json").stdout)
    assert len(health) == 3 and all(h["health"] for h in health), health
    assert "NotFound" in on_node("cp1", "kubectl", "get", "node", LOST, check=False).stderr
    assert _trust_sums(on_node, NEW) == _trust_sums(on_node, "cp1")
    pods_after = _pods_elsewhere(on_node)
    assert {k: pods_after.get(k) for k in pods_before} == pods_before
    for node, r in service.results.items():
        assert r.ok > 0 and r.failed == 0, f"Service probe on {node}: {r.as_dict()}"


def _revision(on_node: OnNode) -> int:
    status = json.loads(on_node("cp1", *ETCDCTL, "endpoint", "status", "-w", "json").stdout)
    return int(status[0]["Status"]["header"]["revision"])


def _configmaps(on_node: OnNode) -> set[str]:
    out = on_node("cp1", "kubectl", "get", "configmaps", "-n", QUORUM_NS, "-l", "quorum=before", "-o", "name")
    return set(out.stdout.split())


QUORUM_NS = "quorum-test"


def test_lost_quorum_is_restored_from_the_surviving_member(ha_lab: Lab, ha_on_node: OnNode, tmp_path: Path) -> None:
    on_node = ha_on_node
    third = next(m["name"] for m in _members(on_node).values() if m["name"] not in ("cp1", "cp2"))
    masters = ["cp1", "cp2", third]
    _poll("every node Ready", lambda: set(ha_lab.node_conditions().values()) == {"Ready"}, 300)
    # objects written before the loss, counted after
    items: list[dict[str, object]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": QUORUM_NS}}]
    items += [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm{i:02}", "labels": {"quorum": "before"}},
         "data": {"i": str(i)}}
        for i in range(40)
    ]  # fmt: skip
    listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    on_node("cp1", "kubectl", "apply", "-n", QUORUM_NS, "-f", "-", input=listed)
    created = _configmaps(on_node)
    assert len(created) == 40
    before = _revision(on_node)
    data_dir = "/var/lib/etcd"

    phases: dict[str, float] = {}  # seconds since the probe started, printed to place a failed request
    with ServiceProbe(ha_lab, tmp_path / "service", nodes=[*masters, "worker1"]) as service:
        started = time.monotonic()
        service.wait_for_answers(10)
        phases["loss"] = time.monotonic() - started
        # cp2's and the third master's etcd data deleted while the cluster runs, a file left where member/ was (a
        # restarted etcd on a merely empty data directory can join again as if nothing was lost: etcd cannot tell),
        # and their etcd stopped as a crash would: the kubelet restarts it, it crashes on its data: no quorum
        for node in ("cp2", third):
            on_node(node, "sh", "-c", f"rm -rf {data_dir}/member && echo lost > {data_dir}/member")
            on_node(node, "sh", "-c", "crictl ps -q --name '^etcd$' | xargs -r crictl stop")

        def no_quorum() -> bool:
            return on_node("cp1", *ETCDCTL, "endpoint", "health", check=False, timeout=60).returncode != 0

        _poll("cp1's etcd to lose quorum", no_quorum, 300)
        phases["no_quorum"] = time.monotonic() - started

        argv = ["kuberevive", "quorum-restore", "--json", *_ssh_args(ha_lab)]
        plan = validate(json.loads(on_node("cp1", *argv, timeout=300).stdout))
        print("plan:", json.dumps(plan, indent=1))
        assert plan["kind"] == "QuorumPlan" and plan["donor"]["node"] == "cp1"
        assert plan["donor"]["revision"] >= before
        revisions = {m["node"]: m["revision"] for m in plan["members"]}
        assert all(revisions[n] is None or revisions[n] < before for n in ("cp2", third)), revisions
        assert on_node("cp1", "test", "-d", f"{data_dir}/member", check=False).returncode == 0  # the plan moved nothing

        t0 = time.monotonic()
        phases["apply"] = t0 - started
        # killed (SIGKILL) right after every data directory was kept aside, etcd and the API servers stopped (cp1's
        # etcd manifest too): the next run resumes from the journal
        killed = on_node("cp1", "env", "KUBEREVIVE_FAULT_AFTER_STEP=2", *argv, "--apply", check=False, timeout=1800)
        assert killed.returncode in (-9, 137), killed.stderr[-3000:]
        phases["resumed"] = time.monotonic() - started
        run = on_node("cp1", *argv, "--apply", check=False, timeout=1800)
        phases["done"] = time.monotonic() - started
        TIMES["quorum_restore_s"] = time.monotonic() - t0
        assert run.returncode == 0, run.stderr[-3000:]
        _poll("every node Ready", lambda: set(ha_lab.node_conditions().values()) == {"Ready"}, 600)
        service.wait_for_answers(20)
    result = validate(json.loads(run.stdout))
    print(f"times: {TIMES}; Service probes:", {n: (r.ok, r.failed) for n, r in service.results.items()})
    print(
        "phases:",
        {k: round(v, 1) for k, v in phases.items()},
        "failures (UTC, against the progress below):",
        {n: r.failed_at() for n, r in service.results.items()},
    )
    print(killed.stderr[-4000:], run.stderr[-4000:])
    assert result["resumed"] is True
    assert not [m for m in result["messages"] if "not restarted" in m], result["messages"]  # worker1's kubelet too
    # the rest of the plan after the killed run's two steps (the re-grown members in etcd's member order)
    assert result["applied"] == [s["id"] for s in result["plan"]["steps"]][2:]
    assert set(result["applied"][2:]) == {"regrow:cp2", f"regrow:{third}", "restart-components"}
    # three started voting members, each healthy
    members = _members(on_node)
    assert sorted(m["name"] for m in members.values()) == sorted(masters), members
    assert not any(m.get("isLearner", False) for m in members.values()), members
    health = json.loads(on_node("cp1", *ETCDCTL, "endpoint", "health", "--cluster", "-w", "json").stdout)
    assert len(health) == 3 and all(h["health"] for h in health), health
    # every object written before the loss is there; the revision went forward, not back
    assert _configmaps(on_node) == created
    assert _revision(on_node) > before
    # every data directory kept aside on its node under this run's stamp, none deleted; cp1's db in it
    stamp = json.loads(on_node("cp1", "cat", str(paths.STATE_DIR / "quorum" / "journal.json")).stdout)["stamp"]
    for node in masters:
        on_node(node, "test", "-d", f"{data_dir}.kuberevive-{stamp}")
    on_node("cp1", "test", "-s", f"{data_dir}.kuberevive-{stamp}/member/snap/db")
    QUORUM_SERVICE.update({node: r.as_dict() for node, r in service.results.items()})


QUORUM_SERVICE: dict[str, dict[str, Any]] = {}
"""The Service probe of every node during the quorum test above (loss, restore, resume)."""


def test_no_service_request_failed_during_the_quorum_restore() -> None:
    """Run after the test above: 0 failed Service requests from every node during the loss and the restore."""
    assert QUORUM_SERVICE, "the quorum test did not get as far as its probe"
    for node, r in QUORUM_SERVICE.items():
        assert r["ok"] > 0 and r["failed"] == 0, f"Service probe on {node}: {r}"


def test_with_cp2_and_cp3_gone_it_refuses_and_says_why(ha_lab: Lab, ha_on_node: OnNode) -> None:
    on_node = ha_on_node
    journal = str(paths.STATE_DIR / "replace" / "journal.json")
    journal_before = on_node("cp1", "cat", journal, check=False).stdout
    # the third master: cp4 once the new-name replacement ran
    third = next(m["name"] for m in _members(on_node).values() if m["name"] not in ("cp1", "cp2"))
    ha_lab.destroy_node("cp2")
    ha_lab.destroy_node(third)
    argv = ["kuberevive", "replace-control-plane", third, "--apply", *_ssh_args(ha_lab)]
    run = on_node("cp1", *argv, check=False, timeout=300)
    print(run.stderr)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "kuberevive: error: etcd has lost quorum" in run.stderr and "of 3 voting members healthy" in run.stderr
    assert "cp2: unreachable" in run.stderr and f"{third}: unreachable" in run.stderr
    assert "Traceback" not in run.stderr
    # nothing changed: still three members (the plan asks etcd again), the journal as it was
    again = on_node("cp1", "kuberevive", "replace-control-plane", third, *_ssh_args(ha_lab), check=False, timeout=300)
    assert again.returncode == 1 and "of 3 voting members healthy" in again.stderr, again.stderr
    assert on_node("cp1", "cat", journal, check=False).stdout == journal_before
