"""The re-trust of N simulated nodes: wall time, nodes/s, the tool's peak RSS, API requests, failures.

    python benchmarks/fleet.py --nodes 10,100,1000 [--concurrency 8] [--bad-percent 5] [--profile]

As root. The fleet (:mod:`kuberevive.lab.fleet`): a real etcd + kube-apiserver with a NEW CA and N nodes,
each a real OpenSSH sshd with its own file tree holding kubelet credentials of an OLD CA, its Node object
real in the API server. ``--bad-percent`` of the nodes (at least 2 when N >= 3) are bad: half have no
sshd (unreachable), half take ``--slow-seconds`` in their kubelet restart.

For each N, the tool runs in its own process (so its peak RSS is its own) and does what
``recover --apply`` does for the other nodes (``kuberevive.run.retrust._retrust_in_place``): the
inventory from the Node objects, over SSH in parallel (``--concurrency``, recover's default 8): new CA,
client certificate and kubelet.conf, ``systemctl restart kubelet``, then a wait for the Node to be Ready
with a heartbeat after the restart. API requests are counted from the API server's audit log
(``kubernetes-admin`` = the tool). ``--secrets S --pods P`` (with ``--sa-nodes`` Node objects) measures the
ServiceAccount remediation (recover's ``sa-tokens`` step, :func:`sa_tool`) on its own fleet: S legacy token
Secrets and P pods owned by Deployments, StatefulSets and DaemonSets, the real kube-controller-manager (its
``--kube-api-qps`` is ``--kcm-qps``) re-filling the re-minted tokens; ``--nodes 0`` skips the re-trust. Everything
runs in a private network and mount namespace;
the fleet of size N lives in ``<work>/<N>`` (default ``--work /var/lib/kuberevive-fleet``), removed and
made anew for each run. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kuberevive.lab.fleet import Fleet, in_private_namespaces


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def bad_nodes(n: int, percent: float) -> tuple[frozenset[int], frozenset[int]]:
    """(unreachable, slow) node indexes, spread over the fleet."""
    count = 0 if percent <= 0 or n < 3 else max(2, round(n * percent / 100))
    picked = [round(k * n / count) for k in range(count)] if count else []
    picked = [min(n - 1, i + 1) for i in picked]  # never the first node
    return frozenset(picked[0::2]), frozenset(picked[1::2])


class Breakdown:
    """``--profile``: where the tool's wall time goes, summed over its threads (calls wrapped, not changed)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, owner: Any, attr: str, category: Callable[..., str]) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.monotonic()
            try:
                return original(*a, **kw)
            finally:
                key = category(*a, **kw)
                with self.lock:
                    self.seconds[key] = self.seconds.get(key, 0.0) + time.monotonic() - t0
                    self.calls[key] = self.calls.get(key, 0) + 1

        setattr(owner, attr, timed)

    def table(self) -> str:
        rows = sorted(self.seconds.items(), key=lambda kv: -kv[1])
        return "\n".join(f"{s:9.1f} s {self.calls[k]:>7} calls  {k}" for k, s in rows)


def _command(_self: Any, argv: Any, *a: Any, **kw: Any) -> str:
    words = list(argv)
    if words[:2] == ["sh", "-c"]:
        script = words[2]
        return "ssh run: sh -c " + (
            "read files (read_many)"
            if "read_one" in script
            else "readlink"
            if script.startswith("test -L")
            else "write file (compare, move aside, write)"
            if "cat >" in script
            else "repoint link (move aside, link)"
            if "ln -s" in script
            else "move aside"
            if 'mv -T -- "$s" "$a"' in script
            else "script"
        )
    return "ssh run: " + " ".join(words[:2] if words[0] == "systemctl" else words[:1])


def tool(work: Path, nodes: int, concurrency: int, node_timeout: float, profile: bool) -> dict[str, Any]:
    """The tool's side, in its own process: re-trust every node listed by the API server."""
    from kuberevive.io.kubeapi import KubeApi
    from kuberevive.io.transport import SshTransport
    from kuberevive.model.inventory import from_node_objects
    from kuberevive.model.recover import RetrustOptions
    from kuberevive.run import retrust
    from kuberevive.run.retrust import retrust_in_place

    breakdown = Breakdown()
    if profile:
        breakdown.wrap(SshTransport, "connect", lambda *a, **kw: "ssh connect (also counted in the first ssh run)")
        breakdown.wrap(SshTransport, "run", _command)
        breakdown.wrap(KubeApi, "raw", lambda _s, method, *a, **kw: f"api {method} (new TLS connection each)")
        breakdown.wrap(retrust, "_wait", lambda *a, **kw: "wait for Node Ready (polls every 1 s)")

    fleet = Fleet(work, nodes)
    api = fleet.api()
    cfg = fleet.kubeadm_config()
    pki = fleet.root / "etc/kubernetes/pki"
    ca, key = (pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes()
    opts = RetrustOptions(
        identity_files=(str(fleet.ssh_key),),
        known_hosts=(str(fleet.known_hosts),),
        concurrency=concurrency,
        node_timeout=node_timeout,
    )
    t0 = time.monotonic()
    inventory = from_node_objects(api.get("/api/v1/nodes")["items"], "root", 22)
    results = retrust_in_place(api, cfg, ca, key, opts, list(inventory.nodes))
    wall = time.monotonic() - t0
    out: dict[str, Any] = {
        "wall_s": round(wall, 1),
        "ok": sum(1 for r in results.values() if r.ok),
        "failed": {name: r.error for name, r in results.items() if not r.ok},
        "node_seconds_median": round(statistics.median(r.seconds for r in results.values()), 2) if results else 0,
        "node_seconds_max": round(max(r.seconds for r in results.values()), 2) if results else 0,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
    }
    if profile:
        out["profile"] = breakdown.table()
    return out


def sa_tool(work: Path) -> dict[str, Any]:
    """The tool's side of the ServiceAccount remediation, in its own process: what recover's ``sa-tokens`` step runs
    (``read_restart_plan`` then ``apply_restart_plan``, with ``admin.conf``), every pod and legacy token Secret
    counted as signed by a retired key."""
    from kuberevive.core.satokens import key_ids
    from kuberevive.io import restarts_apply
    from kuberevive.io.kubeapi import KubeApi

    calls: dict[str, int] = {}
    lock = threading.Lock()
    raw = KubeApi.raw

    def counted(self: KubeApi, method: str, path: str, *a: Any, **kw: Any) -> Any:
        key = (
            f"GET {path.split('?')[0]} (a list page)"
            if method == "GET" and "limit=" in path
            else f"{method} one object"
        )
        with lock:
            calls[key] = calls.get(key, 0) + 1
        return raw(self, method, path, *a, **kw)

    KubeApi.raw = counted  # type: ignore[method-assign]
    phases: dict[str, list[float]] = {}  # each phase's [start, end], seconds since the epoch (as the audit log)

    def phase(name: str, edge: int) -> None:  # also said, for a run stopped by --time-limit (see sa_size)
        phases.setdefault(name, [0.0, 0.0])[edge] = now = time.time()
        say(f"sa: phase {name} {('start', 'end')[edge]} {now:.3f}")

    remint_all = restarts_apply.remint_all

    def timed_remint_all(*a: Any, **kw: Any) -> Any:
        phase("re-mints", 0)
        try:
            return remint_all(*a, **kw)
        finally:
            phase("re-mints", 1)
            phase("rollouts", 0)

    restarts_apply.remint_all = timed_remint_all
    fleet = Fleet(work, 0)
    api = fleet.api()
    current = key_ids((fleet.root / "etc/kubernetes/pki/sa.pub").read_bytes())
    cutoff = datetime.now(UTC)
    t0 = time.monotonic()
    phase("plan", 0)
    plan = restarts_apply.read_restart_plan(api, cutoff, current, False)
    t_plan = time.monotonic() - t0
    phase("plan", 1)
    phase("rollouts", 0)  # started again after the re-mints, if any
    kinds: dict[str, int] = {}
    for action in plan.actions:
        kinds[f"{action.action} {action.kind}"] = kinds.get(f"{action.action} {action.kind}", 0) + 1
    say(f"sa: plan in {t_plan:.1f} s: {kinds}")
    lines: list[str] = []

    def progress(text: str) -> None:
        lines.append(text)
        say(f"sa: {text}")

    results = restarts_apply.apply_restart_plan(api, plan, progress)
    wall = time.monotonic() - t0
    phase("rollouts", 1)
    remints = [r for r in results if r.action.action == "remint"]
    rollouts = [r for r in results if r.action.action != "remint"]
    return {
        "wall_s": round(wall, 1),
        "plan_s": round(t_plan, 1),
        "remint_s": round(max((r.seconds for r in remints), default=0.0), 1),
        "rollouts_s": round(sum(r.seconds for r in rollouts), 1),
        "actions": kinds,
        "outcomes": {o: sum(1 for r in results if r.outcome == o) for o in ("ok", "skipped", "failed")},
        "failed": [r.line() for r in results if r.outcome == "failed"][:20],
        "slowest_rollouts": [r.line()[:160] for r in sorted(rollouts, key=lambda r: -r.seconds)[:5]],
        "client_requests": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
        "phases": phases,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
    }


def one_size(args: argparse.Namespace, n: int) -> dict[str, Any]:
    work = Path(args.work) / str(n)
    if work.exists():
        shutil.rmtree(work)
    unreachable, slow = bad_nodes(n, args.bad_percent)
    fleet = Fleet(work, n, unreachable, slow, args.slow_seconds, args.audit_max_mb)
    try:
        fleet.start(progress=say)
        fleet.wait_listening()
        mark = fleet.audit_mark()
        say(f"fleet: re-trusting {n} nodes (concurrency {args.concurrency})")
        argv = [sys.executable, __file__, "--tool", str(work), "--nodes", str(n)]
        argv += ["--concurrency", str(args.concurrency), "--node-timeout", str(args.node_timeout)]
        argv += ["--profile"] if args.profile else []
        sshd_mb = fleet.sshd_pss_mb()
        say(f"fleet: the {n - len(unreachable)} sshd listeners hold {sshd_mb} MB (PSS)")
        limit = min(args.node_timeout * n, args.time_limit or float("inf"))
        t0 = time.monotonic()
        tool_proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out: list[str] = []
        readers = [
            threading.Thread(target=lambda f=f: out.append(f.read()), daemon=True)
            for f in (tool_proc.stdout, tool_proc.stderr)
        ]
        for r in readers:
            r.start()
        progress_at = t0 + 60
        while tool_proc.poll() is None and time.monotonic() - t0 < limit:
            time.sleep(1)
            if time.monotonic() > progress_at:  # the re-trusted nodes' status requests, as the tool goes
                progress_at += 60
                done = fleet.requests_since(mark).get("nodes", 0)
                say(f"fleet: {time.monotonic() - t0:.0f} s: {done} nodes re-trusted, load {os.getloadavg()[0]:.0f}")
        if tool_proc.poll() is None:  # --time-limit: stopped; what it finished is in the audit log
            status = Path(f"/proc/{tool_proc.pid}/status").read_text()
            hwm = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmHWM:"))
            ticks = [int(x) for x in Path(f"/proc/{tool_proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]]
            tool_proc.kill()
            tool_proc.wait()
            time.sleep(1)
            done = fleet.requests_since(mark).get("nodes", 0)
            say(f"fleet: --time-limit {limit:g} s reached with {done} of {n} nodes re-trusted; the tool was stopped")
            result: dict[str, Any] = {"wall_s": round(time.monotonic() - t0, 1), "ok": done, "failed": {}}
            result |= {"partial": True, "peak_rss_mb": round(hwm / 1024, 1), "cpu_s": round(sum(ticks) / 100, 1)}
        else:
            for r in readers:
                r.join()
            if tool_proc.returncode != 0:
                raise RuntimeError(f"the tool failed: {''.join(out)[-2000:]}")
            stdout = next(o for o in out if o.strip().startswith("{"))
            result = json.loads(stdout.strip().splitlines()[-1])
        time.sleep(1)  # the audit log is written asynchronously (batch of 1 s at most)
        requests = fleet.requests_since(mark)
    finally:
        fleet.stop()
    tool_requests = requests.get("kubernetes-admin", 0)
    result |= {
        "sshd_pss_mb": sshd_mb,
        "nodes": n,
        "unreachable": sorted(unreachable),
        "slow": sorted(slow),
        "nodes_per_s": round(result["ok"] / result["wall_s"], 2) if result["wall_s"] else 0,
        "api_requests": tool_requests,
        "api_requests_per_s": round(tool_requests / result["wall_s"], 1) if result["wall_s"] else 0,
        "node_requests": requests.get("nodes", 0),
        "load_average": os.getloadavg(),
    }
    return result


def sa_size(args: argparse.Namespace) -> dict[str, Any]:
    """A fleet with ``--sa-nodes`` Node objects (no sshd), the real kube-controller-manager and the pod simulator;
    ``--secrets`` legacy token Secrets and ``--pods`` pods; then :func:`sa_tool` in its own process."""
    from kuberevive.lab.fleet import PodSimulator, sa_nodes, sa_objects

    work = Path(args.work) / "sa"
    if work.exists():
        shutil.rmtree(work)
    fleet = Fleet(work, 0, audit_max_mb=args.audit_max_mb)
    sim: PodSimulator | None = None
    try:
        fleet.start(progress=say)
        admin = fleet.api("super-admin.conf", timeout=60, keep_alive=True)
        t0 = time.monotonic()
        nodes = sa_nodes(admin, args.sa_nodes)
        fleet.start_controller_manager(
            "serviceaccount,serviceaccount-token,deployment,replicaset,statefulset,daemonset", args.kcm_qps
        )
        sim = PodSimulator(admin, nodes)
        sim.start()
        made = sa_objects(admin, fleet, args.secrets, args.pods, len(nodes), say)
        say(f"sa: {made} in {time.monotonic() - t0:.0f} s; pod simulator: {sim.counts}")
        mark = fleet.audit_mark()
        say("sa: the remediation (recover's sa-tokens step)")
        argv = [sys.executable, __file__, "--sa-tool", str(work)]
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=args.time_limit or 4 * 3600, check=False
            )
            sys.stderr.write(proc.stderr[-4000:])
            if proc.returncode != 0:
                raise RuntimeError(f"the tool failed: {proc.stderr[-2000:]}")
            result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        except subprocess.TimeoutExpired as exc:  # --time-limit: what it said it finished
            said = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
            sys.stderr.write(said[-4000:])
            lines = said.splitlines()
            result = {
                "partial": True,
                "phases": said_phases(lines, time.time()),
                "wall_s": round(time.monotonic() - t0, 1),
                "said": [x for x in lines if x.startswith("sa: plan") or "re-minted in" in x],
                "owners_done": sum(1 for x in lines if x.startswith("sa:   ok: ")),
                "last": lines[-3:],
            }
        end = time.time()
        time.sleep(1)  # an event is written once its response is complete
        events = fleet.audit_events_since(mark)
    finally:
        if sim is not None:
            sim.stop()
            say(f"sa: pod simulator: {sim.counts}; failed requests (each retried): {sim.failures[:3] or 'none'}")
        fleet.stop()
    rates = sa_rates(events, result.get("phases") or {}, mark, end)
    return result | {
        "secrets": args.secrets,
        "pods": args.pods,
        "nodes": args.sa_nodes,
        "objects": made,
        "kcm_qps": args.kcm_qps,
        "api_requests": rates["whole run"]["clients"]["tool"]["requests"],
        "api_requests_per_s": rates["whole run"]["clients"]["tool"]["per_s"],
        "controller_requests": rates["whole run"]["clients"][KCM]["requests"],
        "rates": rates,
        "simulator": sim.counts if sim is not None else {},
        "simulator_failures": sim.failures if sim is not None else [],
        "load_average": os.getloadavg(),
    }


def said_phases(lines: list[str], now: float) -> dict[str, list[float]]:
    """The phases (name -> [start, end]) the tool said it began and ended (``sa: phase NAME start|end TIME``); one
    not ended when the tool was stopped ends ``now``."""
    phases: dict[str, list[float]] = {}
    for line in lines:
        words = line.split()
        if len(words) == 5 and words[:2] == ["sa:", "phase"] and words[3] in ("start", "end"):
            phases.setdefault(words[2], [0.0, now])[int(words[3] == "end")] = float(words[4])
    return phases


KCM = "kube-controller-manager"
MAIN_CLIENTS = ("tool", KCM, "pod simulator")


def sa_rates(events: list[Any], phases: dict[str, list[float]], start: float, end: float) -> dict[str, Any]:
    """The requests of each client (the audit log's, :meth:`AuditEvent.client`) in each phase of the tool's run
    (``phases``: name -> [start, end]; ``whole run`` is ``[start, end]``): count, mean rate, busiest second.
    kube-controller-manager is there as a whole and per controller (each has its own client and QPS limit).
    Each phase: ``{"seconds": its length, "clients": {client: request_rate}}``."""
    from kuberevive.lab.fleet import request_rate

    times: dict[str, list[float]] = {}
    for event in events:
        client = event.client()
        times.setdefault(client, []).append(event.at)
        if client.startswith(KCM + "/"):
            times.setdefault(KCM, []).append(event.at)
    in_order = sorted((a, b, name) for name, (a, b) in phases.items() if b > a)
    windows = {"whole run": (start, end)} | {name: (a, b) for a, b, name in in_order}
    out: dict[str, Any] = {}
    for name, (a, b) in windows.items():
        row = {client: request_rate(times.get(client, []), a, b) for client in sorted(set(times) | set(MAIN_CLIENTS))}
        clients = {client: r for client, r in row.items() if r["requests"] or client in MAIN_CLIENTS}
        out[name] = {"seconds": round(b - a, 1), "clients": clients}
    return out


def sa_rate_table(rates: dict[str, Any], kcm_qps: int) -> list[str]:
    """The lines printing :func:`sa_rates`: per phase, each client's requests, mean rate and busiest second, beside
    its client-side limit."""
    from kuberevive.io.restarts_apply import POLL, REMINT_CONCURRENCY, REMINT_POLL

    limits = {
        "tool": f"none ({REMINT_CONCURRENCY} re-mint patches at a time, then a list every {REMINT_POLL:g} s;"
        f" a rollout: a GET every {POLL:g} s)",
        KCM: f"--kube-api-qps {kcm_qps} --kube-api-burst {2 * kcm_qps} for each controller's own client",
        "pod simulator": "none (8 workers)",
    }
    lines = [
        "  API requests by client and phase (the API server's audit log): requests, mean rate, busiest second",
        f"    {'phase':<10} {'seconds':>8}  {'client':<40} {'requests':>9} {'req/s':>7} {'peak/s':>7}"
        "  client-side limit",
    ]
    for phase, row in rates.items():
        seconds = row["seconds"]
        for client, r in row["clients"].items():
            sub = client.startswith(KCM + "/")
            shown = f"  {client.removeprefix(KCM + '/')}" if sub else client
            lines.append(
                f"    {phase:<10} {seconds:>8}  {shown:<40} {r['requests']:>9} {r['per_s']:>7} {r['peak_per_s']:>7}"
                f"  {'' if sub else limits.get(client, '')}".rstrip()
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="10,100", help="comma-separated fleet sizes")
    parser.add_argument("--secrets", type=int, default=0)
    parser.add_argument("--pods", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=8, help="nodes at a time (recover's default: 8)")
    parser.add_argument("--bad-percent", type=float, default=5.0)
    parser.add_argument("--slow-seconds", type=float, default=15.0)
    parser.add_argument("--node-timeout", type=float, default=300.0)
    parser.add_argument("--work", default="/var/lib/kuberevive-fleet")
    parser.add_argument("--profile", action="store_true", help="print where the tool's time goes (summed over threads)")
    parser.add_argument("--sa-nodes", type=int, default=100, help="Node objects for the pods (--secrets/--pods)")
    parser.add_argument("--kcm-qps", type=int, default=100, help="kube-controller-manager's --kube-api-qps")
    parser.add_argument(
        "--time-limit", type=float, default=0, help="stop the tool after this many seconds and report what it finished"
    )
    parser.add_argument(
        "--audit-max-mb", type=int, default=100, help="the API server's audit log is rotated at this size (MB)"
    )
    parser.add_argument("--tool", help=argparse.SUPPRESS)
    parser.add_argument("--sa-tool", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tool:
        print(json.dumps(tool(Path(args.tool), int(args.nodes), args.concurrency, args.node_timeout, args.profile)))
        return 0
    if args.sa_tool:
        print(json.dumps(sa_tool(Path(args.sa_tool))))
        return 0
    if os.geteuid() != 0:
        parser.error("needs root (network and mount namespaces, sshd)")
    if not in_private_namespaces():
        env = os.environ | {"KUBEREVIVE_FLEET_NS": "1"}
        argv = ["unshare", "--net", "--mount", "--propagation", "private", "--fork", "--", sys.executable, *sys.argv]
        return subprocess.run(argv, env=env, check=False).returncode
    Fleet.enter_namespaces()
    rows = []
    for n in (int(x) for x in args.nodes.split(",") if x.strip() and int(x) > 0):
        r = one_size(args, n)
        say(json.dumps({k: v for k, v in r.items() if k != "profile"}))
        if r.get("profile"):
            say(r["profile"])
        rows.append(r)
    sa = sa_size(args) if args.secrets or args.pods else None
    if rows:
        print(f"re-trust of N simulated nodes, concurrency {args.concurrency}, {args.bad_percent:g} % bad nodes")
        print(
            f"{'N':>6} {'wall s':>8} {'nodes/s':>8} {'ok':>6} {'failed':>7} {'peak RSS MB':>12} {'tool CPU s':>11}"
            f" {'API req':>8} {'req/s':>7}  load average (1, 5, 15 min) at the end"
        )
    for r in rows:
        print(
            f"{r['nodes']:>6} {r['wall_s']:>8} {r['nodes_per_s']:>8} {r['ok']:>6} {len(r['failed']):>7}"
            f" {r['peak_rss_mb']:>12} {r['cpu_s']:>11} {r['api_requests']:>8} {r['api_requests_per_s']:>7}"
            f"  {', '.join(f'{x:.0f}' for x in r['load_average'])}"
        )
        for name, error in sorted(r["failed"].items()):
            print(f"       failed: {name}: {error}")
    if sa is not None:
        print(
            f"ServiceAccount remediation: {sa['secrets']} legacy token Secrets, {sa['pods']} pods"
            f" on {sa['nodes']} nodes ({sa['objects']})"
        )
        if sa.get("partial"):
            print(
                f"  stopped by --time-limit after {sa['wall_s']} s: {'; '.join(sa['said'])};"
                f" {sa['owners_done']} owners rolled out; last said: {' | '.join(sa['last'])}"
            )
        else:
            print(
                f"  wall {sa['wall_s']} s (plan {sa['plan_s']} s, re-mints {sa['remint_s']} s,"
                f" rollouts {sa['rollouts_s']} s);"
                f" peak RSS {sa['peak_rss_mb']} MB, tool CPU {sa['cpu_s']} s"
            )
        print(
            f"  tool API requests {sa['api_requests']} ({sa['api_requests_per_s']}/s; the tool has no client-side QPS"
            f" limit); kube-controller-manager's --kube-api-qps {sa['kcm_qps']}, its requests"
            f" {sa['controller_requests']}; outcomes {sa.get('outcomes', 'not known (stopped)')}"
        )
        if not sa.get("partial"):
            print(f"  actions {sa['actions']}; requests by kind (the tool's own count) {sa['client_requests']}")
        for line in sa_rate_table(sa["rates"], sa["kcm_qps"]):
            print(line)
        for line in sa.get("failed", []):
            print(f"  failed: {line}")
    print(json.dumps({"benchmark": "fleet", "concurrency": args.concurrency, "sizes": rows, "sa": sa}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
