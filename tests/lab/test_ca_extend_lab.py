"""``kuberevive ca extend`` on the real lab (instance 4 in development: ``KUBEREVIVE_LAB_INSTANCE=4 python -m pytest
-n0 tests/lab/test_ca_extend_lab.py``).

The CAs are made to expire within minutes without rebuilding the lab: a first ``ca extend --apply --all
--validity 4m --all-nodes`` re-issues all three with their own keys and a 4-minute validity and puts them
everywhere (so this also proves the spreading: every holder of the CA, the kubelets of both nodes and the pods'
``kube-root-ca.crt`` included, trusts the short CA). Then ``ca extend --apply --all-nodes`` (the default
selection: the CAs expiring within 30 days; the default validity, ten years) before they expire, and the test waits
until the short CAs' NotAfter has passed: both nodes Ready with a fresh heartbeat, ``kubectl`` with the new
admin.conf works, the ServiceAccount-using pod (which reads ``ca.crt`` for every call) keeps succeeding (but for
the calls that cannot connect while the API server restarts, never a TLS error), 0 failed
Service requests from both nodes during the whole run, no workload container restarted, every leaf certificate
unchanged (same serials), ``certs check --all-nodes`` clean. Each extension restarts kube-proxy last (it reads the CA
once at start): a new pod on each node after each, no other pod restarted; after the short CAs' NotAfter kube-proxy's
connections to the API server are cut and it connects again without an ``x509`` error (a kube-proxy still holding
the short CA would fail there: :func:`kube_proxy_reconnects`).

The repair case: the CAs are made to expire within 2 minutes the same way and the test waits until they have
expired (the API server refuses the kubelets' and kubectl's client certificates); then one ``ca extend --apply
--all-nodes`` brings the cluster back: both nodes Ready, kubectl works, the apicaller succeeds again, 0 failed
Service requests, no workload container restarted, leaf serials unchanged; kube-proxy (which held the expired CA it
read at start) restarted through its DaemonSet, a new pod on each node, no other pod restarted.
"""

from __future__ import annotations

import base64
import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from kuberevive.lab import Lab
from tests.documents import validate
from tests.lab.conftest import OnNode
from tests.lab.test_certs_lab import _wait, certs_check
from tests.lab.test_recover_lab import ssh_args
from tests.lab.test_zero_impact_lab import _labapp_containers

pytestmark = pytest.mark.lab

# short enough to keep CI cheap (the tests wait for them to expire), long enough for two extensions under CI load
# (each takes 14–26 s here)
SHORT = "4m"
SHORTER = "2m"
CONTROL_PLANE = ("etcd-", "kube-apiserver-", "kube-controller-manager-", "kube-scheduler-")
KUBE_PROXY = ("kube-proxy-",)


def _iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _pods(on: OnNode, skip: tuple[str, ...] = ()) -> dict[str, tuple[str, int]]:
    """Every pod but the control-plane static pods (which ca extend restarts) and those whose name starts with one of
    ``skip``: uid and restart count."""
    items = json.loads(on("cp1", "kubectl", "get", "pods", "-A", "-o", "json").stdout)["items"]
    return {
        f"{p['metadata']['namespace']}/{p['metadata']['name']}": (
            p["metadata"]["uid"],
            sum(s.get("restartCount", 0) for s in p["status"].get("containerStatuses", [])),
        )
        for p in items
        if not p["metadata"]["name"].startswith(CONTROL_PLANE + skip)
    }


def _kube_proxies(on: OnNode) -> dict[str, str]:
    """Node -> the uid of its kube-proxy pod."""
    items = json.loads(
        on("cp1", "kubectl", "get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-proxy", "-o", "json").stdout
    )["items"]
    return {p["spec"]["nodeName"]: p["metadata"]["uid"] for p in items if not p["metadata"].get("deletionTimestamp")}


def _new_kube_proxies(on: OnNode, result: dict[str, Any], before: dict[str, str]) -> dict[str, str]:
    """An extension of the cluster CA (before expiry too) restarts kube-proxy last, which read the CA once at start:
    its rollout ended, one new pod on each node; the new ones."""
    assert result["applied"][-1] == "restart-kube-proxy", result["applied"]
    assert any(m.startswith("not restarted by ca extend") for m in result["messages"]), result["messages"]
    after = _kube_proxies(on)
    assert sorted(after) == sorted(before) == ["cp1", "worker1"], (before, after)
    assert not set(after.values()) & set(before.values()), (before, after)
    return after


def _alive_since(on: OnNode, node: str, since: datetime) -> tuple[bool, str]:
    """``node`` is Ready and its kubelet renewed its Lease after ``since`` (so it reaches the API server now; the
    Ready condition's heartbeat is only posted every few minutes when nothing changes)."""
    obj = json.loads(on("cp1", "kubectl", "get", "node", node, "-o", "json").stdout)
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in obj["status"]["conditions"])
    lease = json.loads(on("cp1", "kubectl", "get", "lease", "-n", "kube-node-lease", node, "-o", "json").stdout)
    renewed = datetime.strptime(lease["spec"]["renewTime"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return ready and renewed > since, f"Ready {ready}, lease renewed {renewed:%H:%M:%S}"


def _kube_proxy_api_ports(on: OnNode, node: str) -> set[str]:
    """The local ports of kube-proxy's established connections to an API server (port 6443) on ``node`` (kube-proxy
    runs in the node's network namespace)."""
    out = on(node, "ss", "-Htnp", "state", "established", "( dport = :6443 )").stdout
    ports = (re.search(r":(\d+)\s", line) for line in out.splitlines() if '"kube-proxy"' in line)
    return {m.group(1) for m in ports if m}


def kube_proxy_reconnects(on: OnNode, nodes: tuple[str, ...] | list[str], timeout: float = 90) -> None:
    """After the old CA's NotAfter: kube-proxy's connections to the API server are cut on every node (``ss -K``, as a
    network blip or an API server restart would) and it must connect again (a connection that stays up 2 s: its TLS
    handshake passed) and its log hold no ``x509`` error. A kube-proxy started before the extension holds the old CA,
    read once at start: its handshake fails (``x509: certificate has expired``: Go checks the root's validity) and its
    Service rules go stale; its watches kept working only as long as their connection was not cut."""
    cut = {}
    for n in nodes:
        ports = _kube_proxy_api_ports(on, n)
        assert ports, f"kube-proxy on {n} has no connection to the API server"
        match = " or ".join(f"sport = :{p}" for p in sorted(ports))
        on(n, "ss", "-K", "-tn", "state", "established", f"( dport = :6443 and ( {match} ) )")
        cut[n] = ports

    def connected(n: str) -> tuple[bool, str]:
        first = _kube_proxy_api_ports(on, n) - cut[n]
        if not first:
            return False, "no new connection"
        time.sleep(2)
        return bool(first & _kube_proxy_api_ports(on, n)), f"connections {sorted(first)} did not stay up"

    for n in nodes:
        _wait(f"kube-proxy on {n} connected to the API server again", timeout, lambda n=n: connected(n), 1)
    logs = on("cp1", "kubectl", "logs", "-n", "kube-system", "-l", "k8s-app=kube-proxy", "--tail=-1", "--prefix").stdout
    assert not [ln for ln in logs.splitlines() if "x509" in ln], logs[-3000:]


def _leaf_serials(data: dict[str, Any]) -> dict[str, str]:
    return {f"{i['node'] or 'cp1'}/{i['name']}": i["serial"] for i in data["items"] if i["group"] != "ca"}


def _workload_and_leaves(
    on: OnNode, check: dict[str, Any] | None = None, skip: tuple[str, ...] = ()
) -> tuple[dict[str, str], dict[str, Any], dict[str, tuple[str, int]]]:
    """Every leaf serial (from ``check``, else a clean ``certs check --all-nodes``), the labapp containers of both
    nodes and every pod but the control plane's (and ``skip``'s: :func:`_pods`): what ca extend must leave as it
    was."""
    if check is None:
        code, check = certs_check(on, "cp1", "--all-nodes", *ssh_args())
        assert code == 0, [i for i in check["items"] if i["status"] != "ok"]
    containers = {n: _labapp_containers(on, n) for n in ("cp1", "worker1")}
    pods = _pods(on, skip)
    assert all(containers.values()) and pods
    return _leaf_serials(check), containers, pods


def _extend(on: OnNode, *args: str) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    proc = on("cp1", "kuberevive", "ca", "extend", "--apply", "--json", *args, check=False, timeout=1200)
    took = time.monotonic() - started
    print(f"ca extend --apply {' '.join(args)}: {took:.0f} s\n{proc.stderr[-3000:]}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = validate(json.loads(proc.stdout))  # its JSON Schema (docs/json.md)
    out["api_down"] = _api_restart_window(proc.stderr)
    return out, took


_PROGRESS_AT = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.\d+Z (.*)$")


def _api_restart_window(stderr: str) -> tuple[datetime, datetime]:
    """From the progress lines of ``ca extend``: when it began restarting this node's control plane (step 2, the API
    server stopped first) and when it saw this node's API server ready again (step 3), to the second."""
    start = ready = None
    for line in stderr.splitlines():
        m = _PROGRESS_AT.match(line)
        if m is None:
            continue
        at = datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC)
        if "restart the control-plane containers" in m.group(2):
            start = at
        elif "this node's API server is ready" in m.group(2):
            ready = at
    assert start is not None and ready is not None and start <= ready, stderr[-2000:]
    return start, ready


def _outside(windows: list[tuple[datetime, datetime]], lines: list[str], slack: float = 6.0) -> list[str]:
    """The apicaller log lines (``2026/12/06 01:16:52 apicaller fail ...``) not within a window (or ``slack`` seconds
    after its end: a line is logged when its call ends, at most the apicaller's 5 s client timeout after it began,
    to the whole second)."""
    out = []
    for line in lines:
        at = datetime.strptime(line[:19], "%Y/%m/%d %H:%M:%S").replace(tzinfo=UTC)
        if not any(a - timedelta(seconds=1) <= at <= b + timedelta(seconds=slack) for a, b in windows):
            out.append(line)
    return out


def _kubeconfig_ca(text: str) -> str:
    doc = yaml.safe_load(text)
    return base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]).decode()


def _holders_agree(on: OnNode) -> None:
    """Every holder of the cluster CA has exactly cp1's pki/ca.crt."""
    ca = on("cp1", "cat", "/etc/kubernetes/pki/ca.crt").stdout
    for node in ("cp1", "worker1"):
        assert _kubeconfig_ca(on(node, "cat", "/etc/kubernetes/kubelet.conf").stdout) == ca, node
    assert on("worker1", "cat", "/etc/kubernetes/pki/ca.crt").stdout == ca  # the worker kubelet's clientCAFile
    assert _kubeconfig_ca(on("cp1", "cat", "/etc/kubernetes/admin.conf").stdout) == ca

    def objects() -> tuple[bool, str]:
        info = json.loads(on("cp1", "kubectl", "get", "cm", "-n", "kube-public", "cluster-info", "-o", "json").stdout)
        root = json.loads(on("cp1", "kubectl", "get", "cm", "-n", "krlab", "kube-root-ca.crt", "-o", "json").stdout)
        auth = json.loads(
            on(
                "cp1", "kubectl", "get", "cm", "-n", "kube-system", "extension-apiserver-authentication", "-o", "json"
            ).stdout
        )
        ok = (
            _kubeconfig_ca(info["data"]["kubeconfig"]) == ca
            and root["data"]["ca.crt"] == ca
            and auth["data"]["client-ca-file"].strip() == ca.strip()
        )
        return ok, "cluster objects still differ from pki/ca.crt"

    _wait("cluster-info, kube-root-ca.crt and extension-apiserver-authentication", 60, objects)


def test_ca_extend_before_the_ca_expires(lab: Lab, on_node: OnNode, tmp_path: Path) -> None:
    from kuberevive.lab.probe import ServiceProbe

    on = on_node
    baseline = _workload_and_leaves(on, skip=KUBE_PROXY)  # each extension restarts kube-proxy (checked below)
    proxies = _kube_proxies(on)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with ServiceProbe(lab, tmp_path / "probe") as probe:
        short, took_short = _extend(on, "--all", "--validity", SHORT, "--all-nodes", *ssh_args())
        assert sorted(c["name"] for c in short["cas"]) == ["ca", "etcd-ca", "front-proxy-ca"]
        expiry = max(_iso(c["new_not_after"]) for c in short["cas"])
        assert expiry - datetime.now(UTC) < timedelta(minutes=4)
        _holders_agree(on)
        proxies = _new_kube_proxies(on, short, proxies)

        long, took_long = _extend(on, "--all-nodes", *ssh_args())  # default: the CAs expiring within 30 days
        assert sorted(c["name"] for c in long["cas"]) == ["ca", "etcd-ca", "front-proxy-ca"]
        assert all(_iso(c["new_not_after"]) > datetime.now(UTC) + timedelta(days=3649) for c in long["cas"])
        assert datetime.now(UTC) < expiry, "the second extension finished after the short CAs expired"
        _holders_agree(on)
        _new_kube_proxies(on, long, proxies)

        _wait("the short CAs to expire", 900, lambda: (datetime.now(UTC) > expiry + timedelta(seconds=30), expiry))
        for node in ("cp1", "worker1"):
            _wait(f"{node} Ready and renewing its Lease", 120, lambda n=node: _alive_since(on, n, expiry))
        on("cp1", "kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "get", "--raw", "/readyz")
        since = (expiry + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")

        def apicaller_ok() -> tuple[bool, str]:
            logs = on("cp1", "kubectl", "logs", "-n", "krlab", "deployment/apicaller", f"--since-time={since}").stdout
            lines = [ln for ln in logs.splitlines() if " apicaller " in ln]
            return bool(lines) and all("apicaller ok" in ln for ln in lines), logs[-500:]

        _wait("the apicaller calling the API after the short CAs expired", 120, apicaller_ok)
        kube_proxy_reconnects(on, ("cp1", "worker1"))  # it holds the ten-year CA, not the short one
        code, after = certs_check(on, "cp1", "--all-nodes", *ssh_args())
        assert code == 0, [i for i in after["items"] if i["status"] != "ok"]
        time.sleep(3)  # a few more probe requests after the checks
    results = {n: r.as_dict() for n, r in probe.results.items()}
    print(f"ca extend: short {took_short:.0f} s, long {took_long:.0f} s; probe {results}")
    for node, p in results.items():
        assert p["failed"] == 0 and p["ok"] > 0, (node, p)
    assert _workload_and_leaves(on, after, KUBE_PROXY) == baseline  # no workload container, no other pod restarted
    # during the whole run the apicaller never failed but while the API server restarted (no TLS error): it could
    # not connect, or it met the 403 a starting API server answers until its RBAC authorizer has synced (CI saw it;
    # the tool's own /readyz wait met the same 403 for kubernetes-admin). A CA the API server does not trust would
    # be a TLS error or a 401, never a 403.
    logs = on("cp1", "kubectl", "logs", "-n", "krlab", "deployment/apicaller", f"--since-time={started}").stdout
    failed = [ln for ln in logs.splitlines() if "apicaller fail" in ln]
    restarting = ("reason=transport", "reason=http status=403")
    assert not [ln for ln in failed if not any(r in ln for r in restarting) or "x509" in ln or "certificate" in ln], (
        failed
    )
    # and only while this node's API server was down: between the start of each extension's restart and the moment
    # the tool saw the API server ready (a count bound was flaky: under CI load a restart takes longer, 7 calls)
    outside = _outside([short["api_down"], long["api_down"]], failed)
    assert not outside, (outside, short["api_down"], long["api_down"])


def test_ca_extend_after_the_ca_expired(lab: Lab, on_node: OnNode, tmp_path: Path) -> None:
    from kuberevive.lab.probe import ServiceProbe

    on = on_node
    baseline = _workload_and_leaves(on, skip=KUBE_PROXY)  # a repair restarts kube-proxy (checked below)
    with ServiceProbe(lab, tmp_path / "probe") as probe:
        short, _took = _extend(on, "--all", "--validity", SHORTER, "--all-nodes", *ssh_args())
        proxies = _kube_proxies(on)  # restarted by this extension too: they hold the short CA
        expiry = max(_iso(c["new_not_after"]) for c in short["cas"])
        _wait("the CAs to expire", 600, lambda: (datetime.now(UTC) > expiry + timedelta(seconds=20), expiry))
        _wait(
            "kubectl to be refused",
            120,
            lambda: (on("cp1", "kubectl", "get", "nodes", check=False, timeout=60).returncode != 0, "API answers"),
        )
        code, data = certs_check(on)
        assert code == 4 and {i["name"] for i in data["items"] if i["status"] == "expired"} >= {"ca", "etcd-ca"}

        repaired, took = _extend(on, "--all-nodes", *ssh_args())
        assert sorted(c["name"] for c in repaired["cas"]) == ["ca", "etcd-ca", "front-proxy-ca"]
        assert {c["status"] for c in repaired["cas"]} == {"expired"}
        assert short["applied"][-1] == repaired["applied"][-1] == "restart-kube-proxy"
        new_proxies = _kube_proxies(on)  # the rollout ended: one new pod on each node
        assert sorted(new_proxies) == sorted(proxies) == ["cp1", "worker1"], (proxies, new_proxies)
        assert not set(new_proxies.values()) & set(proxies.values()), (proxies, new_proxies)
        _holders_agree(on)
        now = datetime.now(UTC)
        for node in ("cp1", "worker1"):
            _wait(f"{node} Ready and renewing its Lease", 240, lambda n=node: _alive_since(on, n, now))
        since = now.strftime("%Y-%m-%dT%H:%M:%SZ")

        def apicaller_ok() -> tuple[bool, str]:
            logs = on("cp1", "kubectl", "logs", "-n", "krlab", "deployment/apicaller", f"--since-time={since}").stdout
            lines = [ln for ln in logs.splitlines() if " apicaller " in ln]
            return bool(lines) and "apicaller ok" in lines[-1], logs[-500:]

        _wait("the apicaller calling the API again", 240, apicaller_ok)
        code, after = certs_check(on, "cp1", "--all-nodes", *ssh_args())
        assert code == 0, [i for i in after["items"] if i["status"] != "ok"]
        time.sleep(3)
    results = {n: r.as_dict() for n, r in probe.results.items()}
    print(f"ca extend after the CAs expired: {took:.0f} s; probe {results}")
    for node, p in results.items():
        assert p["failed"] == 0 and p["ok"] > 0, (node, p)
    assert _workload_and_leaves(on, after, KUBE_PROXY) == baseline  # no workload container, no other pod restarted
