"""``kuberevive quorum-restore``: restore a stacked etcd that lost quorum from its best surviving member (see
:mod:`kuberevive.run.quorum`)."""

from __future__ import annotations

import argparse
from typing import Any

from kuberevive.cli.commands import summary
from kuberevive.cli.commands.backup import add_authenticity_args, pinned_ca
from kuberevive.cli.commands.recover import add_node_access_args, node_access
from kuberevive.cli.env import Environment
from kuberevive.io import backupfile
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
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--snapshot",
        metavar="FILE",
        help="an etcd snapshot on this node (absolute path; 'etcdctl snapshot save') to restore instead of the best "
        "member's db; this node is then the donor",
    )
    source.add_argument(
        "--backup",
        metavar="FILE",
        help="a kuberevive backup made with 'backup create --etcd-snapshot': its snapshot is decrypted (streamed) to "
        "a 0600 temporary file beside the etcd data directory, restored as --snapshot is, and the file removed; "
        "this node is then the donor. Give it (and its key) again to resume a stopped restore",
    )
    keys = p.add_argument_group("opening a --backup (as restore-etcd)")
    keys.add_argument("--passphrase-file", metavar="FILE", help=f"else ${backupfile.PASSPHRASE_ENV}")
    keys.add_argument("--identity", metavar="FILE", help="for a backup encrypted to an age recipient")
    keys.add_argument(
        "--allow-foreign-backup", action="store_true", help="use it even if this node's kubelet trusts another CA"
    )
    add_authenticity_args(p, prefix="for a --backup: ")
    p.add_argument("--apply", action="store_true", help="do it (resumes a restore that stopped)")
    add_node_access_args(p.add_argument_group("reaching the other nodes over SSH"))
    p.add_argument("--root", default="/", metavar="DIR", help="this node's root directory (default /)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run, run_log="quorum-restore")


def run(args: argparse.Namespace, env: Environment) -> int:
    options = node_access(args)
    backup = _backup_source(args, env)
    if not args.apply:
        doc = quorum.plan(args.root, options, args.snapshot, backup, warn=env.warning)
        if args.json:
            env.json(stamp(QUORUM_PLAN, doc))
            return 0
        _print_plan(env, doc)
        env.out("nothing was changed; run again with --apply to do it")
        return 0
    say = env.progress if args.json else env.out
    result = quorum.apply(args.root, options, say, env.environ, args.snapshot, backup, warn=env.warning)
    if args.json:
        env.json(stamp(QUORUM_RESULT, result.as_dict()))
        return 0
    for m in result.messages:
        env.out(f"  {m}")
    voting = [m["name"] for m in result.members if not m["is_learner"]]
    donor = result.plan["donor"]["node"]
    env.out(f"etcd restored from {donor} in {result.seconds:.0f} s; voting members: {', '.join(voting)}")
    return 0


def _backup_source(args: argparse.Namespace, env: Environment) -> quorum.BackupSource | None:
    """``--backup`` and its key (read before anything else), or None."""
    if args.backup is None:
        return None
    return quorum.BackupSource(
        args.backup,
        backupfile.read_secret(env.environ, args.passphrase_file, (), args.identity),
        allow_foreign=args.allow_foreign_backup,
        ca_cert_hash=pinned_ca(args),
        allow_unauthenticated=args.allow_unauthenticated,
    )


def _print_plan(env: Environment, doc: dict[str, Any]) -> None:
    env.out("etcd lost quorum: restore it from the member with the highest revision")
    for m in doc["members"]:
        health = "healthy" if m["healthy"] else m["why"] or "unhealthy"
        revision = m["revision"] if m["revision"] is not None else "no db"
        env.out(f"  {m['node']}: {health}; data: {'yes' if m['data'] else 'none'}; revision {revision}")
    donor = doc["donor"]
    if donor["backup"]:
        source = f", from the etcd snapshot of the backup {donor['backup']}"
    elif donor["snapshot"]:
        source = f", from the snapshot {donor['snapshot']}"
    else:
        source = ""
    env.out(f"donor: {doc['donor']['node']} (revision {doc['donor']['revision']}{source})")
    env.out("steps:")
    for i, s in enumerate(doc["steps"], start=1):
        env.out(f"  {i}. {s['title']}" + (f" ({s['node']})" if s["node"] else ""))
    for n in doc["notes"]:
        env.out(f"note: {n}")
