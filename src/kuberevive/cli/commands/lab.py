"""``kuberevive lab up|status|down|exec|demo``: the two-node kubeadm lab (implemented in kuberevive.lab)."""

from __future__ import annotations

import argparse
import os
import time

from kuberevive.cli.commands import summary
from kuberevive.cli.env import Environment
from kuberevive.errors import LabError
from kuberevive.lab import Lab, LabConfig
from kuberevive.model.document import LAB_DEMO, LAB_STATUS, stamp


def _lab(
    env: Environment, control_planes: int | None = None, workers: int | None = None, version: str | None = None
) -> Lab:
    """The lab of this instance: for ``up`` the topology and version asked for, else the ones the lab was built
    with."""
    return Lab(LabConfig.from_env(env.environ, control_planes, workers, version), progress=env.progress)


def _up(args: argparse.Namespace, env: Environment) -> int:
    t0 = time.monotonic()
    lab = _lab(env, args.control_planes, args.workers, args.kubernetes_version)
    state = lab.up()
    took = time.monotonic() - t0
    env.out(f"lab up in {took:.1f}s")
    env.out(f"  Kubernetes v{lab.cfg.k8s_version}, etcd {lab.cfg.etcd_version}")
    for n in lab.status():
        env.out(f"  {n.name:<8} {n.role:<13} {n.address:<13} {n.state}")
    if lab.cfg.ha:
        env.out(f"  API endpoint (controlPlaneEndpoint, haproxy): https://{lab.cfg.api_endpoint}")
    env.out(f"  kubeadm config: {state.get('kubeadm_init_config')}")
    env.out(f"  ssh: ssh -F {lab.cfg.ssh_dir / 'config'} {lab.cfg.control_plane.name}")
    return 0


def _down(args: argparse.Namespace, env: Environment) -> int:
    t0 = time.monotonic()
    _lab(env).down()
    env.out(f"lab down in {time.monotonic() - t0:.1f}s")
    return 0


def _status(args: argparse.Namespace, env: Environment) -> int:
    lab = _lab(env)
    nodes = lab.status()
    state = lab.read_state()
    if args.json:
        env.json(
            stamp(
                LAB_STATUS,
                {
                    "status": state.get("status", "absent"),
                    "state_dir": str(lab.cfg.state_dir),
                    "kubeadm_init_config": state.get("kubeadm_init_config"),
                    "nodes": [n.as_dict() for n in nodes],
                },
            )
        )
    else:
        env.out(f"lab: {state.get('status', 'absent')} (state in {lab.cfg.state_dir})")
        env.out(f"{'NODE':<8} {'ROLE':<13} {'ADDRESS':<13} {'STATE':<9} {'K8S':<9} SERVICES")
        for n in nodes:
            services = " ".join(f"{k}={'active' if v else 'inactive'}" for k, v in n.services.items())
            env.out(f"{n.name:<8} {n.role:<13} {n.address:<13} {n.state:<9} {n.kubernetes:<9} {services}")
    return 0 if all(n.state == "up" for n in nodes) else 3


def _control_planes_arg(parser: argparse.ArgumentParser, three: str) -> None:
    """``--control-planes 1|3`` (``three``: what 3 means for that action)."""
    parser.add_argument(
        "--control-planes",
        type=int,
        choices=(1, 3),
        default=None,
        metavar="N",
        help=f"1 (default) or 3: {three} (env KUBEREVIVE_LAB_CONTROL_PLANES)",
    )


def _demo(args: argparse.Namespace, env: Environment) -> int:
    from kuberevive.lab.demo import run_demo

    say = env.progress if args.json else env.out
    lab = _lab(env, args.control_planes)
    report = run_demo(lab, say, wait=args.wait, guard=not args.no_eviction_guard, retrust_delay=args.retrust_delay)
    if args.json:
        env.json(stamp(LAB_DEMO, report))
    if report["recover_exit_code"] != 0:
        raise LabError(
            f"kuberevive recover --apply exited {report['recover_exit_code']}",
            "read its output above; the lab stays as it is for a look ('kuberevive lab down' removes it)",
        )
    return 0


def _exec(args: argparse.Namespace, env: Environment) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise LabError("no command given", "Use: kuberevive lab exec NODE -- COMMAND [ARGS...]")
    cwd = os.getcwd() if args.keep_cwd else None
    return _lab(env).exec(args.node, command, cwd=cwd)


def _node_destroy(args: argparse.Namespace, env: Environment) -> int:
    t0 = time.monotonic()
    _lab(env).destroy_node(args.node)
    env.out(f"lab node {args.node} destroyed in {time.monotonic() - t0:.1f}s (its Node object and etcd member remain)")
    return 0


def _node_add(args: argparse.Namespace, env: Environment) -> int:
    t0 = time.monotonic()
    node = _lab(env).add_node(args.node, args.ip)
    env.out(
        f"lab node {node.name} ({node.spec.ip}) added in {time.monotonic() - t0:.1f}s: a fresh machine, "
        "no cluster state"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "lab",
        allow_abbrev=False,
        help=summary("lab"),
        description="A real kubeadm cluster in namespaces on this machine: cp1 and worker1, or (--control-planes 3) "
        "cp1..cp3 with stacked etcd behind haproxy, and worker1. Needs root. See docs/lab.md.",
    )
    lab_sub = p.add_subparsers(dest="lab_command", metavar="ACTION")
    lab_sub.required = True
    up = lab_sub.add_parser(
        "up", allow_abbrev=False, help="create the lab (kubeadm init + join + workload); safe to repeat"
    )
    _control_planes_arg(up, "cp1..cp3, stacked etcd, haproxy as controlPlaneEndpoint")
    up.add_argument(
        "--workers", type=int, default=None, metavar="N", help="worker nodes, 0-5 (default 1; KUBEREVIVE_LAB_WORKERS)"
    )
    up.add_argument(
        "--kubernetes-version",
        default=None,
        metavar="VERSION",
        help="the Kubernetes version to run, e.g. 1.37.2 (default 1.37.2; KUBEREVIVE_LAB_KUBERNETES_VERSION); its "
        "binaries must be built (the error says how)",
    )
    up.set_defaults(func=_up)
    down = lab_sub.add_parser("down", allow_abbrev=False, help="remove everything the lab created; safe to repeat")
    down.set_defaults(func=_down)
    st = lab_sub.add_parser(
        "status", allow_abbrev=False, help="show each node, its address and state (exit 3 unless all up)"
    )
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=_status)
    demo = lab_sub.add_parser(
        "demo",
        allow_abbrev=False,
        help="the whole story: lab up, the seed disaster with a Service probe running, recover --apply, the impact",
    )
    _control_planes_arg(demo, "the HA story, the disaster on every control-plane node and one recover --apply on cp1")
    demo.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="S",
        help="seconds between the disaster and the recovery (default: node-monitor grace period + NotReady toleration)",
    )
    demo.add_argument(
        "--retrust-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="hold the re-trust of the other nodes back this long (shows what the eviction guard prevents)",
    )
    demo.add_argument("--no-eviction-guard", action="store_true", help="recover without the eviction guard")
    demo.add_argument("--json", action="store_true", help="print the impact report as JSON at the end")
    demo.set_defaults(func=_demo)
    node = lab_sub.add_parser("node", allow_abbrev=False, help="lose or gain a machine: lab node destroy|add NODE")
    node_sub = node.add_subparsers(dest="node_command", metavar="ACTION")
    node_sub.required = True
    destroy = node_sub.add_parser(
        "destroy",
        allow_abbrev=False,
        help="the machine is gone: its processes, namespaces and disks (its Node object and etcd member remain)",
    )
    destroy.add_argument("node", help="node name (not cp1)")
    destroy.set_defaults(func=_node_destroy)
    add = node_sub.add_parser(
        "add",
        allow_abbrev=False,
        help="a fresh machine: packages, binaries, images, sshd with the lab key; no cluster state",
    )
    add.add_argument("node", help="a destroyed node's name (same address), or a new name")
    add.add_argument("--ip", metavar="IP", help="the new machine's address (a new name; default: the next free one)")
    add.set_defaults(func=_node_add)
    ex = lab_sub.add_parser(
        "exec", allow_abbrev=False, help="run a command inside a node (its namespaces, the lab PATH)"
    )
    ex.add_argument("node", help="node name (cp1, worker1; cp2, cp3 in the HA lab)")
    ex.add_argument("--keep-cwd", action="store_true", help="run in the current directory instead of /")
    ex.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    ex.set_defaults(func=_exec)
