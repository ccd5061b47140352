"""``kuberevive quorum-restore``: restore a stacked etcd that lost quorum from its best surviving member (see
:mod:`kuberevive.run.quorum`)."""

from __future__ import annotations

import argparse
from typing import Any

from kuberevive.cli.commands import summary
from kuberevive.cli.commands.recover import add_node_access_args, node_access
from kuberevive.cli.env import Environment
from kuberevive.model.document import QUORUM_PLAN, QUORUM_RESULT, stamp
from kuberevive.run import quorum


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "quorum-restore",
        allow_abbrev=False,
        help=summary("quorum-restore"),
        description="Run on a master whose etcd data survived (stacked etcd). Refuses unless etcd lost quorum; "
        "else stops etcd and the API server on every master, keeps every data directory aside, restores the "
        "member with the highest revision from its own db as a one-member etcd (revision bumped, marked "
        "compacted), starts it, re-grows the other members one at a time as learners with empty data "
        "directories, promotes each and restarts the controller-managers, schedulers and every node's kubelet. Without "
        "--apply: the plan, nothing changed. See docs/etcd.md.",
    )
    p.add_argument(
        "--snapshot",
        metavar="FILE",
        help="an etcd snapshot on this node (absolute path; 'etcdctl snapshot save') to restore instead of the best "
        "member's db; this node is then the donor",
    )
    p.add_argument("--apply", action="store_true", help="do it (resumes a restore that stopped)")
    add_node_access_args(p.add_argument_group("reaching the other nodes over SSH"))
    p.add_argument("--root", default="/", metavar="DIR", help="this node's root directory (default /)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run, run_log="quorum-restore")


def run(args: argparse.Namespace, env: Environment) -> int:
    options = node_access(args)
    if not args.apply:
        doc = quorum.plan(args.root, options, args.snapshot)
        if args.json:
            env.json(stamp(QUORUM_PLAN, doc))
            return 0
        _print_plan(env, doc)
        env.out("nothing was changed; run again with --apply to do it")
        return 0
    say = env.progress if args.json else env.out
    result = quorum.apply(args.root, options, say, env.environ, args.snapshot)
    if args.json:
        env.json(stamp(QUORUM_RESULT, result.as_dict()))
        return 0
    for m in result.messages:
        env.out(f"  {m}")
    voting = [m["name"] for m in result.members if not m["is_learner"]]
    donor = result.plan["donor"]["node"]
    env.out(f"etcd restored from {donor} in {result.seconds:.0f} s; voting members: {', '.join(voting)}")
    return 0


def _print_plan(env: Environment, doc: dict[str, Any]) -> None:
    env.out("etcd lost quorum: restore it from the member with the highest revision")
    for m in doc["members"]:
        health = "healthy" if m["healthy"] else m["why"] or "unhealthy"
        revision = m["revision"] if m["revision"] is not None else "no db"
        env.out(f"  {m['node']}: {health}; data: {'yes' if m['data'] else 'none'}; revision {revision}")
    source = f", from the snapshot {doc['donor']['snapshot']}" if doc["donor"]["snapshot"] else ""
    env.out(f"donor: {doc['donor']['node']} (revision {doc['donor']['revision']}{source})")
    env.out("steps:")
    for i, s in enumerate(doc["steps"], start=1):
        env.out(f"  {i}. {s['title']}" + (f" ({s['node']})" if s["node"] else ""))
    for n in doc["notes"]:
        env.out(f"note: {n}")
