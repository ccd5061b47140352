"""``kuberevive etcd-salvage nospace [--apply]``: guided salvage of an etcd that raised NOSPACE."""

from __future__ import annotations

import argparse
from pathlib import Path

from kuberevive.cli.commands import summary
from kuberevive.cli.env import Environment, ExitStatus
from kuberevive.core import etcdsafety
from kuberevive.errors import EtcdError
from kuberevive.io import etcdprobe, etcdsalvage
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model import paths


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "etcd-salvage",
        allow_abbrev=False,
        help=summary("etcd-salvage"),
        description="Guided salvage of this node's etcd. 'nospace': compact the key history, defragment every "
        "member one at a time and disarm the NOSPACE alarm once the database in use is back under its quota "
        "(refused, with the fix, when the keys themselves fill it). Without --apply it only prints the plan.",
    )
    p.add_argument("problem", choices=("nospace",), help="what to salvage")
    p.add_argument("--root", default="/", metavar="DIR", help="the node's root directory (default /)")
    p.add_argument("--apply", action="store_true", help="do it (default: print the plan, change nothing)")
    p.set_defaults(func=run, run_log="etcd-salvage")


def run(args: argparse.Namespace, env: Environment) -> int:
    root = NodeRoot(Path(args.root))
    s = etcdprobe.settings(root)
    if s is None:
        raise EtcdError(
            f"there is no readable {paths.ETCD_MANIFEST} on this node", "run etcd-salvage on a node with local etcd"
        )
    client = etcdprobe.client_for(root, s.client_url)
    if client is None:
        raise EtcdError(
            "there is no etcd client certificate on this node (etcd/healthcheck-client or apiserver-etcd-client)",
            "restore the etcd PKI first (kuberevive recover or backup restore)",
        )
    result = etcdsalvage.salvage_nospace(
        client,
        s.quota_bytes,
        apply=args.apply,
        peer_client=lambda url: etcdprobe.client_for(root, url, timeout=client.timeout) or client,
        progress=env.progress,
    )
    problems = etcdsafety.check_alarms(result.alarms_before)
    for p in problems:
        env.out(f"found [{p.id}]: {p.message}")
    for step in result.steps:
        env.out(f"  {step}")
    if not args.apply and result.steps and not result.steps[0].startswith("nothing"):
        env.out("nothing was changed; run again with --apply to do it")
    return int(ExitStatus.OK)
