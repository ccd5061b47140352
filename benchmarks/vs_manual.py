"""kuberevive recover --apply against the documented manual procedure, on the lab, side by side.

    KUBEREVIVE_LAB_INSTANCE=6 python benchmarks/vs_manual.py [--runs N] [--without-config] [--wait S] [--logs DIR]

As root. Each trial starts from a freshly built lab (``lab down`` + ``lab up``), starts the Service probe
(a request every 100 ms from every node), runs the seed disaster on cp1, waits ``--wait`` seconds (default:
past the node-monitor grace period and the workload's NotReady toleration) and then recovers either

* ``manual``: the ``kubeadm init phase`` procedure of :mod:`kuberevive.lab.manual`, given the cluster's
  original kubeadm configuration (its best case; ``--without-config``: kubeadm's defaults), run with no
  pause between commands; or
* ``kuberevive``: ``kuberevive recover --apply`` with the lab's SSH key and known_hosts.

Measured the same way for both (:mod:`kuberevive.lab.impact`): seconds from the first command to
``/readyz`` answering, to every node Ready to the new control plane, and to everything done (every pod
ready, the ServiceAccount-using pod calling the API, kubeadm's controller-manager manifest); failed
Service requests; evictions; pods deleted or re-created; workload containers replaced; whether the
ClusterConfiguration (``kubeadm-config`` and the four control-plane manifests) is what it was.
Figures are the median of ``--runs`` trials per method. The last line printed is one JSON object.
The lab is left down at the end unless ``--keep-lab``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from kuberevive.lab import Lab, LabConfig, impact
from kuberevive.lab.demo import NODE_MONITOR_GRACE_SECONDS, SEED_DISASTER
from kuberevive.lab.kubeadm import JoinCommand, ca_cert_hash, dump, join_documents
from kuberevive.lab.manual import JOIN_CONFIG, MINIMAL_CONFIG, manual_plan, minimal_config, token_create
from kuberevive.lab.probe import ServiceProbe
from kuberevive.lab.workload import NOT_READY_TOLERATION_SECONDS

ROWS = (
    ("api_ready_s", "API ready (s)"),
    ("nodes_ready_s", "all nodes Ready (s)"),
    ("done_s", "everything done (s)"),
    ("failed_requests", "failed Service requests"),
    ("requests", "Service requests made"),
    ("evictions", "evictions"),
    ("pods_recreated", "pods deleted or re-created"),
    ("containers_replaced", "workload containers replaced"),
    ("cluster_configuration_kept", "ClusterConfiguration kept"),
)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _wait(what: str, cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"manual procedure: {what} did not happen within {timeout:.0f} s")
        time.sleep(0.5)


def recover_manually(lab: Lab, clock: impact.Clock, with_config: bool) -> dict[str, Any]:
    """Run :func:`kuberevive.lab.manual.manual_plan` as fast as a script can, waiting only where it must."""
    cfg = lab.cfg
    if not with_config:
        lab.cp.write_file(MINIMAL_CONFIG, minimal_config(cfg), 0o600)
    marks: dict[str, float] = {}
    for step in manual_plan(cfg, with_config):
        if step.stage == "bootstrap-token":
            _wait("the API answering", clock.api.is_set, 300)
        if step.stage == "controller-manager":
            _wait("every node Ready", lambda: clock.nodes_ready_s is not None, 300)
        lab.node(step.node).sh(step.script(), step=f"manual {step.stage}", timeout=300)
        if step.stage == "bootstrap-token":
            token = lab.cp.run(list(token_create()), step="kubeadm token create").stdout.strip().splitlines()[-1]
            ca_hash = ca_cert_hash(lab.cp.read_file("/etc/kubernetes/pki/ca.crt").encode())
            join = JoinCommand(cfg.api_endpoint, token, ca_hash)
            for w in cfg.workers:
                lab.node(w.name).write_file(JOIN_CONFIG, dump(join_documents(cfg, w, join)), 0o600)
        marks[f"{step.stage}_{step.node}_done_s"] = clock.elapsed()
    return {"exit": 0, "marks": marks}


def recover_with_kuberevive(lab: Lab) -> dict[str, Any]:
    d = lab.cfg.ssh_dir
    argv = ["kuberevive", "recover", "--apply", "--json"]
    argv += ["--ssh-key", str(d / "id_ed25519"), "--known-hosts", str(d / "known_hosts")]
    proc = lab.cp.run(argv, step="kuberevive recover --apply", check=False, timeout=1500)
    out: dict[str, Any] = {"exit": proc.returncode, "log": proc.stderr}
    if proc.returncode == 0:
        result = json.loads(proc.stdout)
        out["timings"] = result.get("timings", {})
        out["phases_s"] = result.get("report", {}).get("phases_s", {})
    else:
        out["stderr"] = proc.stderr[-3000:]
    return out


def trial(lab: Lab, method: str, with_config: bool, wait: float, work: Path, log: Path | None = None) -> dict[str, Any]:
    """One trial; ``log``: where kuberevive's own log (its stderr, timestamped progress) is kept."""
    say(f"== {method}: a fresh lab")
    lab.down()
    lab.up()
    pods_before = impact.pods(lab, None)
    containers_before = impact.workload_containers(lab)
    config_before = impact.cluster_configuration(lab)
    clock = impact.Clock(lab)
    with ServiceProbe(lab, work / method) as probe:
        probe.wait_for_answers(10)
        say(f"== {method}: the seed disaster on cp1, then {wait:.0f} s")
        lab.cp.sh(SEED_DISASTER, step="the seed disaster", timeout=180)
        time.sleep(wait)
        say(f"== {method}: recovering")
        clock.start()
        try:
            ran = recover_manually(lab, clock, with_config) if method == "manual" else recover_with_kuberevive(lab)
        except Exception as e:  # the trial is reported as failed, with why; the benchmark goes on
            ran = {"exit": 1, "error": str(e)[-2000:]}
        ran["procedure_s"] = clock.elapsed()
        text = ran.pop("log", None)
        if log is not None and text is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(text)
        missing = impact.wait_settled(lab, clock.wall_started, timeout=420)
        done = clock.elapsed()
        probe.wait_for_answers(20)
    clock.stop()
    pods_after = impact.pods(lab, None)
    containers_after = impact.workload_containers(lab)
    config_after = impact.cluster_configuration(lab)
    changed = sorted(k for k in config_before if config_before[k] != config_after.get(k))
    recreated = sorted(f"{p['namespace']}/{p['name']}" for u, p in pods_before.items() if u not in pods_after)
    return {
        "method": method,
        "api_ready_s": clock.api_ready_s,
        "nodes_ready_s": clock.nodes_ready_s,
        "done_s": None if missing else done,
        "not_done": missing,
        "failed_requests": sum(r.failed for r in probe.results.values()),
        "requests": sum(r.ok + r.failed for r in probe.results.values()),
        "evictions": len(impact.evictions(lab)),
        "pods_recreated": recreated,
        "containers_replaced": sorted(k for k, v in containers_before.items() if containers_after.get(k) != v),
        "cluster_configuration_kept": not changed,
        "cluster_configuration_changed": changed,
        "run": ran,
    }


def _median(trials: list[dict[str, Any]], key: str) -> Any:
    values = [t[key] for t in trials]
    if key == "cluster_configuration_kept":
        return all(values)
    if any(isinstance(v, list) for v in values):
        values = [len(v) for v in values]
    if any(v is None for v in values):
        return None  # a trial never got there
    return round(statistics.median(values), 1) if len(values) > 1 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="trials per method (figures are medians)")
    parser.add_argument("--without-config", action="store_true", help="the manual procedure with kubeadm defaults")
    parser.add_argument(
        "--wait",
        type=float,
        default=NODE_MONITOR_GRACE_SECONDS + NOT_READY_TOLERATION_SECONDS + 5,
        help="seconds between the disaster and the recovery (default: past grace period + toleration)",
    )
    parser.add_argument("--methods", default="manual,kuberevive")
    parser.add_argument("--keep-lab", action="store_true")
    parser.add_argument("--logs", type=Path, help="keep each kuberevive trial's log (stderr) here, as kuberevive-N.log")
    args = parser.parse_args()
    lab = Lab(LabConfig.from_env(), progress=say)
    Lab.require_root()
    methods = args.methods.split(",")
    trials: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    try:
        for i in range(args.runs):
            for m in methods:
                log = args.logs / f"{m}-{i}.log" if args.logs is not None else None
                t = trial(lab, m, not args.without_config, args.wait, lab.cfg.state_dir / "bench" / f"{m}-{i}", log)
                say(json.dumps(t))
                trials[m].append(t)
    finally:
        if not args.keep_lab:
            lab.down()
    label = {
        "manual": "manual kubeadm" + (" (defaults)" if args.without_config else " (--config)"),
        "kuberevive": "kuberevive",
    }
    medians = {m: {k: _median(trials[m], k) for k, _ in ROWS} for m in methods}
    print(f"seed disaster on the lab, {args.runs} run(s) each, median; recovery started {args.wait:.0f} s after it")
    print(f"{'':<32}" + "".join(f"{label[m]:>26}" for m in methods))
    for key, title in ROWS:
        print(f"{title:<32}" + "".join(f"{_fmt(medians[m][key]):>26}" for m in methods))
    for m in methods:
        for t in trials[m]:
            if t["not_done"] or t["run"].get("exit"):
                print(f"{m}: not done: {t['not_done']} {t['run'].get('error') or t['run'].get('stderr', '')}")
    print(
        json.dumps(
            {
                "benchmark": "vs_manual",
                "runs": args.runs,
                "with_config": not args.without_config,
                "wait_s": args.wait,
                "median": medians,
                "trials": trials,
            }
        )
    )
    return 0 if all(not t["not_done"] for ts in trials.values() for t in ts) else 1


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return "never" if v is None else str(v)


if __name__ == "__main__":
    sys.exit(main())
