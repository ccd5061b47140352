"""Certificates on the HA lab (issue 14): powered off past expiry, ``ca extend`` before and after the CAs expire.

One HA lab for the module (cp1..cp3 with stacked etcd behind haproxy, worker1; on the HA lab's instance:
tests/conftest.py), made with short validities: leaves ``certificateValidityPeriod`` :data:`LEAF_VALIDITY`, the
controller-manager's ``--cluster-signing-duration`` :data:`SIGNING_DURATION` (the kubelet client certificates of
cp2, cp3 and worker1, made at their join) and ``caCertificateValidityPeriod`` :data:`CA_VALIDITY`. The tests run in
the order written, on the same cluster:

1. **Powered off past expiry**: the kubelets of all four nodes and the control-plane containers of the three masters
   are stopped (the workload containers keep running: the Service probe every 100 ms from every node runs through
   the whole test) until every master's leaves and every kubelet's client certificate have expired; then ONE
   ``certs renew --apply --all-nodes`` on cp1, with no inventory (the peers from its etcd's members, the worker from
   the Node objects once the API is back): every node Ready, every leaf, kubeconfig and kubelet client certificate of
   every node renewed and served, etcd's three members healthy, ``kubectl`` with the new admin.conf works on every
   master, the ServiceAccount-using pod calls the API again, 0 failed Service requests, no workload container
   restarted or re-created.
2. **CA extend before the CAs expire**: ``ca extend --apply --all-nodes`` (an API probe through the load balancer
   every 100 ms during it), then the old CAs' NotAfter passes: every node Ready and renewing its Lease after it,
   ``kubectl`` with the new admin.conf works (on every master and through the load balancer), the apicaller keeps
   succeeding, every holder of the CA on every node has the extended one, leaf serials unchanged, 0 failed Service
   and API requests, no workload container or pod restarted but kube-proxy's: the extension restarts it last (it
   read the CA once at start), a new pod on every node, and after the old NotAfter, its connections to the API server
   cut, it connects again with no ``x509`` error (a kube-proxy still holding the old CA fails there). The extension's
   ``--validity`` makes the extended CAs expire :data:`CHECKS_MARGIN` after the old ones, for test 3 (the checks
   above end before that, asserted).
3. **CA extend after the CAs expired** (repair): those extended CAs are left to expire (every etcd member then rejects
   the others: the API refuses everyone), then ONE ``ca extend --apply --all-nodes``: the same checks (the API probe
   aside: nothing answers before the repair), and the apicaller calls the API again within :data:`APICALLER_BOUND`
   of its end (the repair's last step restarts kube-proxy, which held the expired CA it read at start: without it,
   one run saw the apicaller refused for about 3.5 minutes, its node's kube-proxy unable to list and without an
   endpoint for the ``kubernetes`` Service); kube-proxy has a new pod on every node, no other pod restarted.

Every wait polls (1 s) or sleeps until a known instant (a certificate's NotAfter); the CA validity is as short as
test 1 and test 2's extension allow (:data:`CA_VALIDITY`).

The lab is taken down at the module's end (unless ``KUBEREVIVE_LAB_KEEP=1``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kuberevive.lab import Lab
from kuberevive.lab.probe import ApiProbe, ServiceProbe
from tests.lab.conftest import OnNode, module_lab, node_runner
from tests.lab.test_ca_extend_lab import _alive_since, _iso, _kubeconfig_ca, kube_proxy_reconnects
from tests.lab.test_certs_lab import _wait
from tests.lab.test_ha_lab import CPS, ETCDCTL, NODES, STATIC, _members, _pods, _serving_serial, _wait_all_ready

pytestmark = pytest.mark.lab

#: Leaves (kubeadm: from each node's ``kubeadm init``/``join`` start): long enough for the bring-up (every join and
#: the workload need the first master's certificates), the module waits for them to expire.
LEAF_VALIDITY = "4m"
#: The kubelet client certificates the controller-manager signs (cp2, cp3, worker1 at their join).
SIGNING_DURATION = "3m"
#: The CAs: long enough for the power-off, the renewal and the extension (test 1 asserts :data:`EXTEND_ROOM` left after
#: the leaves expire); test 2 waits for them to expire.
CA_VALIDITY = "9m"
#: What test 1 needs after the leaves expired (the renewal and its checks: 60-80 s) and test 2 before the CAs expire
#: (the extension: 64-87 s), with room for a loaded machine.
EXTEND_ROOM = timedelta(minutes=3, seconds=30)
#: Test 2 extends the CAs until this long after the old ones expire: its checks after that NotAfter took 4 s here, 20-40
#: s in earlier runs (before kube-proxy's reconnection was checked); test 3 waits for the extended ones to expire (so it
#: needs no extension of its own to make them short).
CHECKS_MARGIN = timedelta(seconds=80)
#: After the repair, the apicaller (a call every 5 s, reading ca.crt each time) succeeds again within this.
APICALLER_BOUND = 60.0
#: The control-plane containers a power-off stops (with the kubelet, so that nothing starts them again).
CONTROL_PLANE = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler")
TMP_INVENTORY = f"/tmp/krtest-ha-inventory-{os.getpid()}.yaml"

STATE: dict[str, Any] = {}
"""What the first test leaves for the second: the leaf serials after the renewal, the pods."""


@pytest.fixture(scope="module")
def short_ha_lab() -> Iterator[Lab]:
    yield from module_lab(
        control_planes=3,
        workers=1,
        certificate_validity=LEAF_VALIDITY,
        cluster_signing_duration=SIGNING_DURATION,
        ca_certificate_validity=CA_VALIDITY,
    )


@pytest.fixture(scope="module")
def on(short_ha_lab: Lab) -> OnNode:
    return node_runner(short_ha_lab)


def _until(at: datetime) -> None:
    """Sleep until ``at`` (a known instant: nothing to poll before it)."""
    time.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))


def _without_kube_proxy(pods: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in pods.items() if not k.startswith("kube-system/kube-proxy-")}


def _new_kube_proxies(before: dict[str, Any], after: dict[str, Any]) -> None:
    """One kube-proxy pod on every node in each, none of ``before``'s left in ``after``."""
    old = {k for k in before if k.startswith("kube-system/kube-proxy-")}
    new = {k for k in after if k.startswith("kube-system/kube-proxy-")}
    assert len(old) == len(new) == len(NODES) and not old & new, (old, new)


def _ssh(lab: Lab) -> list[str]:
    ssh = lab.cfg.ssh_dir
    return ["--ssh-key", str(ssh / "id_ed25519"), "--known-hosts", str(ssh / "known_hosts")]


def _check(on: OnNode, lab: Lab, *extra: str) -> tuple[int, dict[str, dict[str, dict[str, Any]]]]:
    """``certs check --all-nodes --json`` on cp1: its exit code and node -> item name -> item."""
    proc = on(
        "cp1", "kuberevive", "certs", "check", "--all-nodes", "--json", *_ssh(lab), *extra, check=False, timeout=300
    )
    assert proc.returncode in (0, 3, 4), proc.stderr
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for item in json.loads(proc.stdout)["items"]:
        out.setdefault(item["node"] or "cp1", {})[item["name"]] = item
    return proc.returncode, out


def _serials(items: dict[str, dict[str, dict[str, Any]]]) -> dict[str, str]:
    return {f"{n}/{name}": i["serial"] for n, by in items.items() for name, i in by.items() if i["group"] != "ca"}


def _power_off(on: OnNode, node: str) -> None:
    on(node, "systemctl", "stop", "kubelet")
    if node in CPS:
        pattern = "^(" + "|".join(CONTROL_PLANE) + ")$"
        ids = on(node, "crictl", "ps", "-q", "--name", pattern).stdout.split()
        if ids:
            on(node, "crictl", "stop", "--timeout", "0", *ids, timeout=180)
        assert on(node, "crictl", "ps", "-q", "--name", pattern).stdout.split() == [], node


def _apicaller_ok_since(on: OnNode, since: datetime) -> tuple[bool, str]:
    stamp = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    logs = on("cp1", "kubectl", "logs", "-n", "krlab", "deployment/apicaller", f"--since-time={stamp}", check=False)
    lines = [ln for ln in logs.stdout.splitlines() if " apicaller " in ln]
    return bool(lines) and "apicaller ok" in lines[-1], logs.stdout[-500:] + logs.stderr[-300:]


def _kubectl_everywhere(on: OnNode, lab: Lab) -> None:
    """``kubectl`` with each master's own admin.conf (its server: the load balancer) lists the four nodes."""
    for cp in CPS:
        out = on(cp, "kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "get", "nodes", "-o", "name").stdout
        assert sorted(out.split()) == sorted(f"node/{n}" for n in NODES), (cp, out)


def _holders_agree(on: OnNode) -> None:
    """Every holder of a CA on every node has cp1's: each kubelet.conf and clientCAFile, each master's CA certificates
    and admin.conf."""
    new_ca = on("cp1", "cat", "/etc/kubernetes/pki/ca.crt").stdout
    for n in NODES:
        assert _kubeconfig_ca(on(n, "cat", "/etc/kubernetes/kubelet.conf").stdout) == new_ca, n
        assert on(n, "cat", "/etc/kubernetes/pki/ca.crt").stdout == new_ca, n
    for cp in CPS:
        assert _kubeconfig_ca(on(cp, "cat", "/etc/kubernetes/admin.conf").stdout) == new_ca, cp
        for f in ("etcd/ca.crt", "front-proxy-ca.crt"):
            assert (
                on(cp, "cat", f"/etc/kubernetes/pki/{f}").stdout == on("cp1", "cat", f"/etc/kubernetes/pki/{f}").stdout
            )


def _etcd_healthy(on: OnNode, members_before: dict[str, Any]) -> None:
    assert sorted(_members(on)) == sorted(members_before)
    health = json.loads(on("cp1", *ETCDCTL, "endpoint", "health", "--cluster", "-w", "json").stdout)
    assert len(health) == 3 and all(h["health"] for h in health), health


def test_powered_off_past_expiry_one_renew_brings_every_node_back(short_ha_lab: Lab, on: OnNode, tmp_path: Path):
    lab = short_ha_lab
    t0 = time.monotonic()
    _wait_all_ready(lab)
    pods_before = _pods(on, skip=STATIC)
    members_before = _members(on)
    inventory = "apiVersion: kuberevive.io/v1alpha1\nkind: Inventory\nnodes:\n" + "".join(
        f"- name: {n}\n  address: {lab.cfg.node(n).ip}\n  roles: [{'control-plane' if n in CPS else 'worker'}]\n"
        for n in NODES
        if n != "cp1"
    )
    on("cp1", "sh", "-c", f"cat > {TMP_INVENTORY}", input=inventory)

    with ServiceProbe(lab, tmp_path / "service") as service:
        service.wait_for_answers(10)
        with ThreadPoolExecutor(len(NODES)) as pool:  # the power cut: every node at once
            list(pool.map(lambda n: _power_off(on, n), NODES))
        off_at = time.monotonic()
        # read once everything is off: until then the kubelets rotate their client certificates (each one, signed
        # for SIGNING_DURATION and backdated 5 minutes, is renewed 1-3 minutes after it was issued)
        code, before = _check(on, lab, "--inventory", TMP_INVENTORY)  # the API is down: the nodes from the file
        assert sorted(before) == sorted(NODES)
        ca_expiry = _iso(before["cp1"]["ca"]["not_after"])
        leaves = [
            _iso(by[name]["not_after"])
            for by in before.values()
            for name in ("apiserver", "etcd-server", "etcd-peer", "admin.conf", "kubelet-client")
            if name in by
        ]
        expiry = max(leaves)
        print(
            f"leaves expire {min(leaves):%H:%M:%S}..{expiry:%H:%M:%S}, the CAs {ca_expiry:%H:%M:%S} "
            f"(now {datetime.now(UTC):%H:%M:%S})"
        )
        assert expiry < ca_expiry - EXTEND_ROOM, (expiry, ca_expiry)
        _until(expiry + timedelta(seconds=2))
        waited = time.monotonic() - off_at
        code, expired = _check(on, lab, "--inventory", TMP_INVENTORY)
        assert code == 4, {n: {k: i["status"] for k, i in by.items()} for n, by in expired.items()}
        for n in NODES:
            assert expired[n]["kubelet-client"]["status"] == "expired", (n, expired[n]["kubelet-client"])
        for cp in CPS:
            assert {expired[cp][k]["status"] for k in ("apiserver", "etcd-peer", "etcd-server", "admin.conf")} == {
                "expired"
            }, cp

        started = time.monotonic()
        argv = ["kuberevive", "certs", "renew", "--apply", "--all-nodes", "--json", *_ssh(lab)]
        run = on("cp1", *argv, check=False, timeout=1500)
        took = time.monotonic() - started
        print(f"certs renew --apply --all-nodes took {took:.1f} s\n{run.stderr[-8000:]}")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        renewed_at = datetime.now(UTC)
        _wait_all_ready(lab)
        ready_after = time.monotonic() - started
        service.wait_for_answers(20)
    result = json.loads(run.stdout)
    assert result["applied"][:2] == ["kubelet-client", "kubelet-restart"]
    assert result["applied"][-3:] == ["node-ready", "peer-restarts", "other-kubelets"], result["applied"]
    assert any("no etcd or API server ran there" in m for m in result.get("messages", [])), result.get("messages")

    code, after = _check(on, lab)
    not_ok = {
        (n, k): (i["group"], i["status"])
        for n, by in after.items()
        for k, i in by.items()
        if i["status"] not in ("ok", "missing")  # missing: super-admin.conf, which only kubeadm init writes
    }
    assert code == 3 and set(not_ok.values()) == {("ca", "expiring")}, not_ok  # only the short CAs (for test 2)
    for n in NODES:
        for name, item in before[n].items():
            renewable = item["group"] in ("certificate", "kubeconfig") and item["status"] != "missing"
            if renewable or name == "kubelet-client":
                new = after[n][name]
                assert new["serial"] != item["serial"] and new["signer_verified"], (n, name)
                assert new["days_left"] >= 364, (n, name, new["not_after"])  # the API was down: kubeadm's default
    for cp in CPS:  # the running API servers serve the renewed certificates
        assert _serving_serial(on, lab.cfg.node(cp).ip) == after[cp]["apiserver"]["serial"].lstrip("0"), cp
    _etcd_healthy(on, members_before)
    _kubectl_everywhere(on, lab)
    _wait("the apicaller calling the API again", 180, lambda: _apicaller_ok_since(on, renewed_at), 1)
    assert _pods(on, skip=STATIC) == pods_before  # no workload pod restarted or re-created, same containers
    print("Service probes:", {node: r.as_dict() for node, r in service.results.items()})
    for node, r in service.results.items():
        assert r.ok > 0 and r.failed == 0, f"Service probe on {node}: {r.as_dict()}"
    print(
        f"powered off past expiry: waited {waited:.0f} s powered off, renew {took:.1f} s, all Ready "
        f"{ready_after:.1f} s after its start; test {time.monotonic() - t0:.0f} s"
    )
    STATE.update(serials=_serials(after), pods=pods_before, members=members_before, ca_expiry=ca_expiry)


def test_ca_extend_before_the_cas_expire_on_every_node(short_ha_lab: Lab, on: OnNode, tmp_path: Path):
    lab = short_ha_lab
    assert STATE, "the powered-off test did not get as far as the renewal"
    t0 = time.monotonic()
    ca_expiry: datetime = STATE["ca_expiry"]
    left = ca_expiry - datetime.now(UTC)
    print(f"the CAs expire in {left.total_seconds():.0f} s")
    assert left > timedelta(seconds=60), "too little time left to extend the CAs before they expire"
    token = on("cp1", "kubectl", "create", "token", "apicaller", "-n", "krlab", "--duration", "2h").stdout.strip()
    ca = on("cp1", "cat", "/etc/kubernetes/pki/ca.crt").stdout.encode()
    validity = f"{int((ca_expiry + CHECKS_MARGIN - datetime.now(UTC)).total_seconds())}s"
    argv = ["kuberevive", "ca", "extend", "--apply", "--all-nodes", "--validity", validity, "--json", *_ssh(lab)]
    with ServiceProbe(lab, tmp_path / "service") as service:
        service.wait_for_answers(10)
        # the API probe trusts the old CA certificate: it runs while the extension restarts every master, and stops
        # before that certificate expires
        with ApiProbe(lab, tmp_path / "api", token, ca, nodes=["worker1"]) as api:
            api.wait_for_answers(10)
            started = time.monotonic()
            run = on("cp1", *argv, check=False, timeout=1500)
            took = time.monotonic() - started
            print(f"ca extend --apply --all-nodes took {took:.1f} s\n{run.stderr[-8000:]}")
            assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
            api.wait_for_answers(10)
        assert datetime.now(UTC) < ca_expiry, "the extension finished after the CAs expired"
        result = json.loads(run.stdout)
        assert sorted(c["name"] for c in result["cas"]) == ["ca", "etcd-ca", "front-proxy-ca"]
        new_expiry = min(_iso(c["new_not_after"]) for c in result["cas"])
        assert new_expiry > ca_expiry + CHECKS_MARGIN - timedelta(seconds=30), (new_expiry, ca_expiry)
        _holders_agree(on)

        _until(ca_expiry + timedelta(seconds=2))
        for n in NODES:
            _wait(f"{n} Ready and renewing its Lease", 180, lambda n=n: _alive_since(on, n, ca_expiry), 1)
        _kubectl_everywhere(on, lab)
        _wait(
            "the apicaller calling the API after the old CAs expired",
            180,
            lambda: _apicaller_ok_since(on, ca_expiry + timedelta(seconds=5)),
            1,
        )
        kube_proxy_reconnects(on, NODES)  # with the extended CA: the old one has expired
        code, after = _check(on, lab)
        not_ok = {(n, k): i["status"] for n, by in after.items() for k, i in by.items() if i["status"] != "ok"}
        assert code == 3 and set(not_ok.values()) <= {"expiring", "missing"}, not_ok  # the CAs: minutes (test 3)
        assert {k for (_n, k), status in not_ok.items() if status == "expiring"} == {"ca", "etcd-ca", "front-proxy-ca"}
        _etcd_healthy(on, STATE["members"])
        service.wait_for_answers(10)
        checks = datetime.now(UTC)
        assert checks < new_expiry, "the checks ended after the extended CAs expired: CHECKS_MARGIN"
    assert result["applied"][-1] == "restart-kube-proxy", result["applied"]
    assert any(m.startswith("not restarted by ca extend") for m in result["messages"]), result["messages"]
    assert _serials(after) == STATE["serials"]  # every leaf kept (same serials) on every node
    pods = _pods(on, skip=STATIC)
    assert _without_kube_proxy(pods) == _without_kube_proxy(STATE["pods"])  # no workload container or pod restarted
    _new_kube_proxies(STATE["pods"], pods)
    STATE.update(new_expiry=new_expiry, pods=pods)
    (through_lb,) = api.results.values()
    print(f"API probe through the load balancer: {through_lb.as_dict()}")
    print("Service probes:", {node: r.as_dict() for node, r in service.results.items()})
    assert through_lb.ok > 0 and through_lb.failed == 0, through_lb.as_dict()
    for node, r in service.results.items():
        assert r.ok > 0 and r.failed == 0, f"Service probe on {node}: {r.as_dict()}"
    print(
        f"ca extend before expiry: extend {took:.1f} s, checks ended {(new_expiry - checks).total_seconds():.0f} s "
        f"before the extended CAs expire; test {time.monotonic() - t0:.0f} s"
    )


def test_ca_extend_after_the_cas_expired_repairs_every_node(short_ha_lab: Lab, on: OnNode, tmp_path: Path):
    """The CAs test 2 extended until :data:`CHECKS_MARGIN` after the old ones (on every node, as it checked), left to
    expire (every etcd member then rejects the others: no quorum, the API refuses everyone); ONE ``ca extend --apply
    --all-nodes`` brings the cluster back (repair mode: every other master gets the extended CAs at once, before this
    node's API server is awaited; kube-proxy restarted last)."""
    lab = short_ha_lab
    assert "new_expiry" in STATE, "the CA extension test did not get as far as its checks"
    t0 = time.monotonic()
    expiry: datetime = STATE["new_expiry"]
    with ServiceProbe(lab, tmp_path / "service") as service:
        service.wait_for_answers(10)
        argv = ["kuberevive", "ca", "extend", "--apply", "--all-nodes", "--json", *_ssh(lab)]
        print(f"the CAs expire {expiry:%H:%M:%S} (now {datetime.now(UTC):%H:%M:%S})")
        _until(expiry + timedelta(seconds=1))
        _wait(
            "kubectl to be refused",
            120,
            lambda: (on("cp1", "kubectl", "get", "nodes", check=False, timeout=60).returncode != 0, "API answers"),
            1,
        )

        started = time.monotonic()
        run = on("cp1", *argv, check=False, timeout=1500)
        took = time.monotonic() - started
        print(f"ca extend --apply --all-nodes (repair) took {took:.1f} s\n{run.stderr[-8000:]}")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        ended, now = time.monotonic(), datetime.now(UTC)
        _wait("the apicaller calling the API again", APICALLER_BOUND, lambda: _apicaller_ok_since(on, now), 1)
        apicaller_after = time.monotonic() - ended
        result = json.loads(run.stdout)
        assert {c["status"] for c in result["cas"]} == {"expired"}  # every CA had expired on cp1
        assert result["applied"][:4] == ["files", "restart-control-plane", "peer-repair", "api-ready"], result
        assert result["applied"][-1] == "restart-kube-proxy", result["applied"]
        _holders_agree(on)
        for n in NODES:
            _wait(f"{n} Ready and renewing its Lease", 240, lambda n=n: _alive_since(on, n, now), 1)
        _kubectl_everywhere(on, lab)
        code, after = _check(on, lab)
        assert code == 0, {n: [k for k, i in by.items() if i["status"] != "ok"] for n, by in after.items()}
        _etcd_healthy(on, STATE["members"])
        service.wait_for_answers(10)
    assert _serials(after) == STATE["serials"]  # every leaf kept
    pods = _pods(on, skip=STATIC)
    assert _without_kube_proxy(pods) == _without_kube_proxy(STATE["pods"])  # no workload container or pod restarted
    _new_kube_proxies(STATE["pods"], pods)  # one new on each node
    print("Service probes:", {node: r.as_dict() for node, r in service.results.items()})
    for node, r in service.results.items():
        assert r.ok > 0 and r.failed == 0, f"Service probe on {node}: {r.as_dict()}"
    print(
        f"ca extend after expiry: repair {took:.1f} s, the apicaller ok {apicaller_after:.1f} s after it; "
        f"test {time.monotonic() - t0:.0f} s"
    )
