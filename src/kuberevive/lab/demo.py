"""``kuberevive lab demo``: the whole story on the lab, with the impact numbers.

1. ``lab up`` (reused when it is up and healthy);
2. a client requests the labapp Service every 100 ms from every node (:mod:`kuberevive.lab.probe`);
3. the seed disaster on the control-plane node (the HA lab, ``--control-planes 3``: on every control-plane node
   at once): ``rm -rf /etc/kubernetes``, control-plane containers and their pod sandboxes removed (the API is
   gone; the workloads keep running);
4. a wait past the node-monitor grace period and the workload's NotReady toleration;
5. ``kuberevive recover --apply`` on the (first) control-plane node with no input but the lab's SSH key (HA: and
   ``--peer NAME=ADDRESS`` for each other control-plane node, which it recovers over SSH);
6. the report: failed requests per node, evictions, pods and containers replaced, the
   ServiceAccount-using pod's API calls, recovery time.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kuberevive.lab.cluster import Lab
from kuberevive.lab.config import LabConfig
from kuberevive.lab.impact import evictions, pods, workload_containers
from kuberevive.lab.probe import ServiceProbe
from kuberevive.lab.workload import NOT_READY_TOLERATION_SECONDS

#: The seed disaster, run inside the control-plane node.
SEED_DISASTER = r"""
set -e
rm -rf /etc/kubernetes
# Until the kubelet re-lists its (now missing) manifest directory (every 20 s) it still runs the static
# pods and restarts a removed container; and it may be removing the same containers at the same moment.
# So: remove them, pass after pass, until none has come back for 6 s (at most 120 s).
names='^(etcd|kube-apiserver|kube-controller-manager|kube-scheduler)$'
pods='^(etcd|kube-apiserver|kube-controller-manager|kube-scheduler)-'
retry() { for i in 1 2 3 4 5; do "$@" >/dev/null 2>&1 && return 0; sleep 1; done; return 1; }
remove_pass() {
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler; do
    for id in $(crictl ps -a -q --name "^$c\$"); do
      crictl stop "$id" >/dev/null 2>&1 || true; retry crictl rm -f "$id" || true
    done
    for p in $(crictl pods -q --name "^$c-"); do
      crictl stopp "$p" >/dev/null 2>&1 || true; retry crictl rmp -f "$p" || true
    done
  done
}
deadline=$(( $(date +%s) + 120 ))
quiet=0
while [ "$quiet" -lt 3 ]; do
  if [ -n "$(crictl ps -a -q --name "$names")$(crictl pods -q --name "$pods")" ]; then
    quiet=0; remove_pass
  else
    quiet=$((quiet + 1))
  fi
  [ "$(date +%s)" -lt "$deadline" ] || { echo "control-plane containers keep coming back" >&2; exit 1; }
  sleep 2
done
test -z "$(crictl ps -q --name "$names")"
"""

NODE_MONITOR_GRACE_SECONDS = 50  # kube-controller-manager's default (v1.33)


def recover_argv(cfg: LabConfig, guard: bool = True, retrust_delay: float = 0.0) -> list[str]:
    """``recover --apply`` as the demo runs it on the first control-plane node: the lab's SSH key and, on the HA lab,
    ``--peer`` for every other control-plane node (the all-masters recovery reaches them over SSH)."""
    d = cfg.ssh_dir
    argv = ["env", f"KUBEREVIVE_RETRUST_DELAY={retrust_delay}", "kuberevive", "recover", "--apply", "--json"]
    for peer in cfg.control_planes[1:]:
        argv += ["--peer", f"{peer.name}={peer.ip}"]
    argv += ["--ssh-key", str(d / "id_ed25519"), "--known-hosts", str(d / "known_hosts")]
    if not guard:
        argv.append("--no-eviction-guard")
    return argv


def run_demo(
    lab: Lab,
    say: Callable[[str], None],
    wait: float | None = None,
    guard: bool = True,
    retrust_delay: float = 0.0,
) -> dict[str, Any]:
    """Run the story; returns the impact report (also what ``--json`` prints)."""
    t0 = time.monotonic()
    lab.up()
    say(f"lab: up ({time.monotonic() - t0:.0f} s)")
    pods_before, containers_before = pods(lab), workload_containers(lab)
    wait = NODE_MONITOR_GRACE_SECONDS + NOT_READY_TOLERATION_SECONDS + 5 if wait is None else wait
    masters = [n.name for n in lab.cfg.control_planes]
    cp = masters[0]
    with ServiceProbe(lab, lab.cfg.state_dir / "demo") as probe:
        probe_started = time.time()  # the probes' failure times are relative to their start (within 0.2 s)
        say(f"probe: GET the labapp Service every 100 ms from {', '.join(lab.cfg.node_names)}")
        probe.wait_for_answers(10)
        say(f"disaster on {', '.join(masters)}: rm -rf /etc/kubernetes, control-plane containers removed")
        with ThreadPoolExecutor(len(masters)) as pool:  # on every master at once
            for done in [
                pool.submit(lab.node(m).run, ["sh", "-c", SEED_DISASTER], step="the seed disaster", timeout=180)
                for m in masters
            ]:
                done.result()
        say(f"waiting {wait:.0f} s (past the node-monitor grace period and the workload's NotReady toleration)")
        time.sleep(wait)
        argv = recover_argv(lab.cfg, guard, retrust_delay)
        say(f"on {cp}: {' '.join(argv[argv.index('kuberevive') :])}")
        started, window_start = time.monotonic(), time.time() - probe_started
        proc = subprocess.Popen(lab.node(cp).nsenter(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            say("  " + line.rstrip())
        stdout = proc.stdout.read() if proc.stdout else ""
        code = proc.wait()
        took = time.monotonic() - started
        window = (window_start, window_start + took)
        time.sleep(3)
    result: dict[str, Any] = json.loads(stdout) if code == 0 and stdout.strip() else {}
    pods_after, containers_after = pods(lab), workload_containers(lab)
    replaced = sorted(p["name"] for u, p in pods_before.items() if u not in pods_after)
    labapp_before = {k: v for k, v in containers_before.items() if "/labapp-" in k}
    report = {
        "control_planes": masters,
        "recover_exit_code": code,
        "recover_seconds": round(took, 1),
        "requests": {n: r.as_dict() for n, r in probe.results.items()},
        "failed_requests": sum(r.failed for r in probe.results.values()),
        "failed_during_recovery": {
            n: sum(1 for f in r.failures if window[0] <= f[0] <= window[1]) for n, r in probe.results.items()
        },
        "evictions": evictions(lab),
        "pods_replaced": replaced,
        "labapp_containers_kept": sum(1 for k, v in labapp_before.items() if containers_after.get(k) == v),
        "labapp_containers_before": len(labapp_before),
        "apicaller": lab.apicaller_logs(tail=1).strip(),
        "timings": result.get("timings", {}),
        "report": result.get("report", {}),
    }
    say("")
    say("impact:")
    for n, r in report["requests"].items():
        during = report["failed_during_recovery"][n]
        say(f"  requests from {n}: {r['ok']} answered, {r['failed']} failed ({during} while recover --apply ran)")
    say(f"  evictions: {len(report['evictions'])} {report['evictions'] or ''}")
    say(
        f"  labapp containers kept (same container id): {report['labapp_containers_kept']}/"
        f"{report['labapp_containers_before']}"
    )
    say(
        f"  pods replaced: {replaced or 'none'} "
        "(apicaller is restarted on purpose: its token was signed by the lost sa.key)"
    )
    say(f"  apicaller now: {report['apicaller']}")
    t = report["timings"]
    say(f"  recover --apply: {took:.0f} s (exit {code}); start to API ready {t.get('start_to_api_ready_s', '?')} s")
    return report
