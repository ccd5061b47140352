"""``kuberevive replace-control-plane NODE``: replace a lost control-plane node by a fresh machine (see
:mod:`kuberevive.run.replace`)."""

from __future__ import annotations

import argparse
from typing import Any

from kuberevive.cli.commands import summary
from kuberevive.cli.commands.recover import add_node_access_args, node_access
from kuberevive.cli.env import Environment
from kuberevive.errors import ConfigError
from kuberevive.model.document import REPLACE_PLAN, REPLACE_RESULT, stamp
from kuberevive.run import replace


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "replace-control-plane",
        allow_abbrev=False,
        help=summary("replace-control-plane"),
        description="Run on a healthy control-plane node (stacked etcd). Refuses when removing the lost node's etcd "
        "member would lose quorum; else removes it, prepares the fresh machine over SSH with the cluster's CAs, "
        "sa.key and configuration and its own certificates, kubeconfigs and manifests, adds it as an etcd learner, "
        "starts its kubelet, promotes the learner once it has caught up and waits for its API server and Node. "
        "Without --apply: the plan, nothing changed. See docs/replace.md.",
    )
    p.add_argument("node", help="the lost control-plane node (its Node object and etcd member name)")
    p.add_argument(
        "--address",
        metavar="IP",
        help="the new machine's address (default: the lost node's InternalIP); a load balancer must list it",
    )
    p.add_argument("--new-name", metavar="NAME", help="the new machine's node name (default: NODE)")
    p.add_argument(
        "--kubelet-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a flag of the new kubelet's kubeadm-flags.env, like kubeadm's kubeletExtraArgs (repeatable); the "
        "others are this node's, with the new node-ip",
    )
    p.add_argument("--apply", action="store_true", help="do it (resumes a replacement that stopped)")
    add_node_access_args(p.add_argument_group("reaching the new machine over SSH"))
    p.add_argument("--root", default="/", metavar="DIR", help="this node's root directory (default /)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run, run_log="replace-control-plane")


def _kubelet_args(values: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for v in values:
        name, sep, value = v.removeprefix("--").partition("=")
        if not sep or not name:
            raise ConfigError(f"--kubelet-arg {v!r} is not NAME=VALUE", "e.g. --kubelet-arg cgroup-root=/kubelet")
        out.append((name, value))
    return tuple(out)


def run(args: argparse.Namespace, env: Environment) -> int:
    request = replace.Request(
        node=args.node,
        new_name=args.new_name,
        address=args.address,
        kubelet_args=_kubelet_args(args.kubelet_arg),
        options=node_access(args),
    )
    if not args.apply:
        doc = replace.plan(args.root, request)
        if args.json:
            env.json(stamp(REPLACE_PLAN, doc))
            return 0
        _print_plan(env, doc)
        env.out("nothing was changed; run again with --apply to do it")
        return 0
    say = env.progress if args.json else env.out
    result = replace.apply(args.root, request, say, env.environ)
    if args.json:
        env.json(stamp(REPLACE_RESULT, result.as_dict()))
        return 0
    for m in result.messages:
        env.out(f"  {m}")
    voting = [m["name"] for m in result.members if not m["is_learner"]]
    env.out(
        f"{args.node} replaced by {result.plan['new_name']} in {result.seconds:.0f} s; etcd voting members: "
        f"{', '.join(voting)}"
    )
    return 0


def _print_plan(env: Environment, doc: dict[str, Any]) -> None:
    lost = doc["lost_member"]
    env.out(f"replace control-plane node {doc['node']} by a fresh machine {doc['new_name']} ({doc['address']})")
    env.out(f"  etcd: {doc['voting_members']} voting members, healthy: {', '.join(doc['healthy_members'])}")
    if isinstance(lost, dict):
        env.out(f"  lost member to remove: {lost['name']} {lost['id']} {', '.join(lost['peer_urls'])}")
    env.out("steps:")
    for i, s in enumerate(doc["steps"], start=1):
        env.out(f"  {i}. {s['title']}")
    env.out("files on the new machine:")
    for f in doc["files"]:
        env.out(f"  {f}")
    for n in doc["notes"]:
        env.out(f"note: {n}")
