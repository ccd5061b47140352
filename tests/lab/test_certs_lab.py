"""``kuberevive certs check`` and ``certs renew`` on the real lab.

Run with your own lab instance: ``KUBEREVIVE_LAB_INSTANCE=4 python -m pytest -n0 tests/lab/test_certs_lab.py``.

1. ``certs check --json`` on cp1 gives the same expiry dates as the real ``kubeadm certs check-expiration`` for
   every row kubeadm prints, and the kubelet's client certificate date ``openssl`` reads; with ``--all-nodes`` the
   worker's kubelet certificates are read over SSH (and an unreachable node fails the check).
2. The one-year cliff, worse variant, powered off past expiry: the lab is rebuilt with
   ``certificateValidityPeriod: 5m`` (v1beta4) and the controller-manager's ``--cluster-signing-duration: 5m`` (the
   workers' kubelet client certificates), both kubelets are set to ``rotateCertificates: false`` (so they keep the
   client certificates they have), left running until the API server, etcd, controller-manager and both kubelets'
   certificates have expired and the API refuses every request; one ``certs renew --apply --all-nodes`` (cp1's kubelet
   first, worker1's over SSH after the API is back) brings the cluster back: both nodes Ready, worker1's client
   certificate new (serial changed, signed by the CA, valid), 0 failed Service requests (every 100 ms from both nodes
   during the whole run), the same workload containers (same IDs and restart counts), and ``kubeadm certs
   check-expiration`` is clean afterwards; then ``certs renew --apply --all`` on the live cluster, whose validity
   now comes from the stored ClusterConfiguration (5m). The normal lab is rebuilt at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kuberevive.lab import Lab, LabConfig
from tests.documents import validate
from tests.lab.conftest import OnNode
from tests.lab.test_diagnose_lab import as_kubeadm_date, check_expiration
from tests.lab.test_recover_lab import ssh_args
from tests.lab.test_zero_impact_lab import _labapp_containers

pytestmark = pytest.mark.lab

#: Files the test writes on a node, whose /tmp is the host's: named by this pytest process, so that labs of other
#: workers (or other runs) running beside it never read them.
TMP_INVENTORY = f"/tmp/krtest-inventory-{os.getpid()}.yaml"

SHORT_VALIDITY = "5m"
#: The controller-manager signs the workers' kubelet client certificates for this long: worker1 joins just after
#: cp1's leaves are made, so its certificate expires just *after* them, when the API server is already refusing
#: everyone, as in a cluster powered off past expiry. (Had it expired first, the still running controller-manager
#: would taint worker1 unreachable, and the restarted one would evict its pods at once: 300 s had passed.)
SIGNING_DURATION = "5m"


def certs_check(on_node: OnNode, node: str = "cp1", *extra: str) -> tuple[int, dict[str, Any]]:
    proc = on_node(node, "kuberevive", "certs", "check", "--json", *extra, check=False, timeout=180)
    assert proc.returncode in (0, 3, 4), proc.stderr
    return proc.returncode, validate(json.loads(proc.stdout))  # its JSON Schema (docs/json.md)


def test_check_matches_kubeadm_check_expiration(on_node: OnNode):
    code, data = certs_check(on_node)
    assert (code, data["status"]) == (0, "ok"), [i for i in data["items"] if i["status"] != "ok"]
    items = {i["name"]: i for i in data["items"]}
    kubeadm = check_expiration(on_node)
    ours = {name: as_kubeadm_date(items[name]["not_after"]) for name in kubeadm}
    assert ours == kubeadm
    assert {items[n]["signer_verified"] for n in kubeadm} == {True}
    client = items["kubelet-client"]
    assert (client["subject"], client["path"]) == ("system:node:cp1", "/var/lib/kubelet/pki/kubelet-client-current.pem")
    end = on_node("cp1", "openssl", "x509", "-noout", "-enddate", "-in", client["path"]).stdout
    expected = datetime.strptime(end.strip().removeprefix("notAfter="), "%b %d %H:%M:%S %Y GMT")
    assert client["not_after"] == expected.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert items["kubelet-serving"]["status"] == "ok" and items["kubelet-serving"]["authority"] == "self"
    # the human table carries the same dates as kubeadm's
    table = on_node("cp1", "kuberevive", "certs", "check").stdout
    for name, date in kubeadm.items():
        assert any(line.split()[:1] == [name] and date in line for line in table.splitlines()), (name, table)


def test_check_all_nodes_reads_the_workers_kubelet_over_ssh(on_node: OnNode):
    code, data = certs_check(on_node, "cp1", "--all-nodes", *ssh_args())
    assert code == 0, [i for i in data["items"] if i["status"] != "ok"]
    worker = {i["name"]: i for i in data["items"] if i["node"] == "worker1"}
    assert set(worker) == {"kubelet-client", "kubelet-serving"}
    client = worker["kubelet-client"]
    assert (client["subject"], client["issuer"], client["signer_verified"]) == (
        "system:node:worker1",
        "kubernetes",
        True,
    )
    end = on_node("worker1", "openssl", "x509", "-noout", "-enddate", "-in", client["path"]).stdout
    expected = datetime.strptime(end.strip().removeprefix("notAfter="), "%b %d %H:%M:%S %Y GMT")
    assert client["not_after"] == expected.strftime("%Y-%m-%dT%H:%M:%SZ")
    # a node that cannot be reached makes the check fail (exit 4), with the reason
    inventory = "apiVersion: kuberevive.io/v1alpha1\nkind: Inventory\nnodes:\n- name: worker1\n  address: 192.0.2.1\n"
    on_node("cp1", "sh", "-c", f"cat > {TMP_INVENTORY}", input=inventory)
    code, data = certs_check(on_node, "cp1", "--all-nodes", "--inventory", TMP_INVENTORY, *ssh_args())
    bad = [i for i in data["items"] if i["node"] == "worker1"]
    assert code == 4 and len(bad) == 1 and bad[0]["status"] == "invalid", bad


def read_with_worker(on: Any, argv: list[str], nodes: Any) -> dict[str, Any]:
    """``kuberevive ARGV --json`` on cp1 (read-only: check, or renew's plan), again while worker1 could not be read
    over SSH (on this loaded machine an SSH login can exceed its 10 s limit); ``nodes(data)``: worker1's entries."""
    for attempt in range(1, 4):
        proc = on("cp1", "kuberevive", *argv, "--json", check=False, timeout=180)
        assert proc.returncode in (0, 3, 4), proc.stderr
        data: dict[str, Any] = json.loads(proc.stdout)
        data["exit_code"] = proc.returncode
        unread = [n for n in nodes(data) if n.get("path") == "-" or n.get("reached") is False]
        if not unread:
            return data
        print(f"attempt {attempt}: worker1 not read over SSH: {unread}")
    raise AssertionError(f"worker1 could not be read over SSH in 3 attempts: {unread}")


def _worker_items(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in data["items"] if i["node"] == "worker1"]


def served_not_after(on: Any, port: int) -> str:
    """NotAfter of the certificate the server on cp1's ``port`` presents (what the running process loaded)."""
    script = f"echo | openssl s_client -connect 127.0.0.1:{port} 2>/dev/null | openssl x509 -noout -enddate"
    end = on("cp1", "sh", "-c", script).stdout.strip().removeprefix("notAfter=")
    return datetime.strptime(end, "%b %d %H:%M:%S %Y GMT").strftime("%Y-%m-%dT%H:%M:%SZ")


def _wait(what: str, timeout: float, probe: Any, interval: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        ok, last = probe()
        if ok:
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {last}")


@pytest.fixture
def short_lab(lab: Lab) -> Iterator[Lab]:
    """This instance rebuilt with leaf certificates valid for minutes; the normal lab is rebuilt afterwards."""
    lab.down()
    cfg = dataclasses.replace(
        LabConfig.from_env(), certificate_validity=SHORT_VALIDITY, cluster_signing_duration=SIGNING_DURATION
    )
    short = Lab(cfg, progress=print)
    try:
        short.up()
        yield short
    finally:
        short.down()
        lab.up()


def _run(
    lab: Lab, node: str, *argv: str, timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        lab.node(node).nsenter(list(argv)), capture_output=True, text=True, timeout=timeout, input=input
    )


def test_one_year_cliff(short_lab: Lab, tmp_path: Path):
    from kuberevive.lab.probe import ServiceProbe

    def on(
        node: str, *argv: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = _run(short_lab, node, *argv, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"{node}: {' '.join(argv)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    test_started = time.monotonic()
    init_yaml = short_lab.cfg.init_config_file.read_text()
    assert f"certificateValidityPeriod: {SHORT_VALIDITY}" in init_yaml
    assert f"value: {SIGNING_DURATION}" in init_yaml  # controllerManager.extraArgs cluster-signing-duration
    # both kubelets stop rotating their client certificates (kubeadm forces rotateCertificates: true in the cluster's
    # KubeletConfiguration, so it is turned off on each node), so they keep the ones they have and those expire
    # with the others: cp1's (from kubeadm init) is the worse variant, where the kubelet cannot start the API server
    # by itself; worker1's (from the controller-manager, 5 minutes) is the powered-off one nobody renews
    for node in ("cp1", "worker1"):
        sed = "s/^rotateCertificates: true$/rotateCertificates: false/"
        on(node, "sed", "-i", sed, "/var/lib/kubelet/config.yaml")
        on(node, "systemctl", "restart", "kubelet")
    # the other node is read over SSH at its address (the API will not answer to list the nodes)
    inventory = (
        "apiVersion: kuberevive.io/v1alpha1\nkind: Inventory\nnodes:\n"
        f"- name: worker1\n  address: {short_lab.cfg.node('worker1').ip}\n"
    )
    on("cp1", "sh", "-c", f"cat > {TMP_INVENTORY}", input=inventory)
    all_nodes = ["--all-nodes", "--inventory", TMP_INVENTORY, *ssh_args()]
    containers_before = {n: _labapp_containers(on, n) for n in ("cp1", "worker1")}
    assert all(containers_before.values()), containers_before
    with ServiceProbe(short_lab, tmp_path / "probe") as probe:
        # the leaves kubeadm made expire, and both kubelets' client certificates; the API refuses every request
        data = read_with_worker(on, ["certs", "check", *all_nodes], _worker_items)
        items = {i["name"]: i for i in data["items"] if not i["node"]}
        worker = {i["name"]: i for i in data["items"] if i["node"] == "worker1"}
        old_worker_serial = worker["kubelet-client"]["serial"]
        expiry = max(
            datetime.strptime(i["not_after"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            for i in [
                items[n] for n in ("apiserver", "etcd-server", "apiserver-etcd-client", "controller-manager.conf")
            ]
            + [items["kubelet-client"], worker["kubelet-client"]]
        )
        assert expiry - datetime.now(UTC) < timedelta(minutes=10), items["apiserver"]
        _wait("the certificates to expire", 900, lambda: (datetime.now(UTC) > expiry + timedelta(seconds=20), expiry))
        _wait(
            "the API to become unusable",
            300,
            lambda: (on("cp1", "kubectl", "get", "nodes", check=False, timeout=60).returncode != 0, "API answers"),
        )
        data = read_with_worker(on, ["certs", "check", *all_nodes], _worker_items)
        code = data["exit_code"]
        expired = {i["name"] for i in data["items"] if i["status"] == "expired" and not i["node"]}
        assert code == 4 and {"apiserver", "etcd-server", "controller-manager.conf", "admin.conf"} <= expired
        assert "kubelet-client" in expired  # the worse variant: the control-plane kubelet's own certificate too
        worker = {i["name"]: i for i in data["items"] if i["node"] == "worker1"}
        assert worker["kubelet-client"]["status"] == "expired", worker  # powered off past expiry: the worker's too

        plan = read_with_worker(on, ["certs", "renew", *all_nodes], lambda d: d["nodes"] or [])
        planned = {t["name"] for t in plan["targets"]}
        assert expired - {"kubelet-serving"} <= planned
        (node_plan,) = plan["nodes"]
        assert (node_plan["node"], node_plan["renew_client"], node_plan["client"]["status"]) == (
            "worker1",
            True,
            "expired",
        )
        assert plan["validity"].startswith("8760h0m0s, from kubeadm's default"), plan["validity"]  # the API is down
        assert plan["steps"][-1]["id"] == "other-kubelets"
        assert certs_check(on)[0] == 4  # the plan changed nothing

        # one command, with the node list from the API once it is back (no --inventory)
        started = time.monotonic()
        run = on(
            "cp1",
            "kuberevive",
            "certs",
            "renew",
            "--apply",
            "--json",
            "--all-nodes",
            *ssh_args(),
            check=False,
            timeout=1200,
        )
        took = time.monotonic() - started
        print(f"certs renew --apply took {took:.0f} s\n{run.stderr[-3000:]}")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

        def both_ready() -> tuple[bool, str]:
            proc = on("cp1", "kubectl", "get", "nodes", "-o", "json", check=False, timeout=60)
            if proc.returncode != 0:
                return False, proc.stderr
            ready = {
                n["metadata"]["name"]: any(
                    c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]
                )
                for n in json.loads(proc.stdout)["items"]
            }
            return ready == {"cp1": True, "worker1": True}, str(ready)

        _wait("both nodes Ready", 300, both_ready)
        applied = json.loads(run.stdout)["applied"]
        assert applied[:2] == ["kubelet-client", "kubelet-restart"]
        assert applied[-3:] == ["node-ready", "peer-restarts", "other-kubelets"]  # one master: no peer to restart
        data = read_with_worker(on, ["certs", "check", *all_nodes], _worker_items)
        code = data["exit_code"]
        assert code == 0, [i for i in data["items"] if i["status"] != "ok"]
        items = {i["name"]: i for i in data["items"] if not i["node"]}
        worker = {i["name"]: i for i in data["items"] if i["node"] == "worker1"}["kubelet-client"]
        assert worker["serial"] != old_worker_serial and worker["signer_verified"] is True
        assert worker["subject"] == "system:node:worker1" and worker["days_left"] >= 364, worker
        # the running API server and etcd serve the renewed certificates (not only the files are new)
        assert served_not_after(on, 6443) == items["apiserver"]["not_after"]
        assert served_not_after(on, 2379) == items["etcd-server"]["not_after"]
        out = on("cp1", "kubeadm", "certs", "check-expiration").stdout
        assert "<invalid>" not in out, out
        assert set(check_expiration(on)) >= {"apiserver", "admin.conf", "etcd-server"}
        # a second run has nothing to do
        again = json.loads(on("cp1", "kuberevive", "certs", "renew", "--json", timeout=180).stdout)
        assert again["targets"] == []

        # --all on the live cluster: the kubelet's client certificate first (kubelet restarted, node Ready again),
        # then everything else, with the API up the whole time but for the restarts
        old_client = items["kubelet-client"]["serial"]
        started = time.monotonic()
        run_all = on("cp1", "kuberevive", "certs", "renew", "--apply", "--all", "--json", check=False, timeout=1200)
        took_all = time.monotonic() - started
        print(f"certs renew --apply --all took {took_all:.0f} s\n{run_all.stderr[-3000:]}")
        assert run_all.returncode == 0, run_all.stdout[-3000:] + run_all.stderr[-3000:]
        all_applied = json.loads(run_all.stdout)["applied"]
        assert all_applied[:2] == ["kubelet-client", "kubelet-restart"] and all_applied[-1] == "node-ready"
        _wait("both nodes Ready", 300, both_ready)
        code, data = certs_check(on)
        client = next(i for i in data["items"] if i["name"] == "kubelet-client")
        assert client["serial"] != old_client and client["subject"] == "system:node:cp1"
        # with the API up, the validity is the stored ClusterConfiguration's (5m): everything renewed is "expiring"
        assert (
            json.loads(run_all.stdout)["validity"]
            == "5m0s, from the stored ClusterConfiguration (kube-system/kubeadm-config)"
        )
        renewed = [i for i in data["items"] if i["group"] in ("certificate", "kubeconfig") and i["status"] != "missing"]
        left = [
            datetime.strptime(i["not_after"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) - datetime.now(UTC)
            for i in [*renewed, client]
        ]
        assert code == 3 and all(timedelta(minutes=2) < t <= timedelta(minutes=5) for t in left), (code, left)
        time.sleep(3)
    results = {n: r.as_dict() for n, r in probe.results.items()}
    print(
        f"one-year cliff: renew --apply --all-nodes {took:.0f} s (steps {applied}), renew --apply --all "
        f"{took_all:.0f} s; the test body {time.monotonic() - test_started:.0f} s; probe {results}"
    )
    for node, p in results.items():
        assert p["failed"] == 0, (node, p)
        assert p["ok"] > 0, (node, p)
    assert {n: _labapp_containers(on, n) for n in ("cp1", "worker1")} == containers_before
