"""``kuberevive restore-etcd --snapshot FILE``: rebuild a lost etcd data directory from a snapshot."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path, PurePosixPath

from kuberevive.cli.commands import summary
from kuberevive.cli.commands.backup import add_authenticity_args, pinned_ca
from kuberevive.cli.env import Environment, ExitStatus
from kuberevive.core import backup as core
from kuberevive.errors import BackupError
from kuberevive.io import backupfile, etcdprobe, etcdrestore
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model import paths
from kuberevive.model.document import RESTORE_ETCD, stamp


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "restore-etcd",
        allow_abbrev=False,
        help=summary("restore-etcd"),
        description="Stop etcd (its manifest is moved away), keep the old data directory aside, run "
        "'etcdutl snapshot restore' with the member settings of the etcd manifest, put the manifest back and "
        "wait until etcd is healthy. etcdutl and crictl must be on PATH.",
    )
    p.add_argument(
        "--snapshot", required=True, metavar="FILE", help="an etcd snapshot, or a kuberevive backup with one"
    )
    p.add_argument("--root", default="/", metavar="DIR", help="the node's root directory (default /)")
    p.add_argument("--passphrase-file", metavar="FILE", help=f"for a backup; else ${backupfile.PASSPHRASE_ENV}")
    p.add_argument("--identity", metavar="FILE", help="for a backup encrypted to an age recipient")
    p.add_argument(
        "--allow-foreign-backup",
        action="store_true",
        help="for a backup: use it even if this node's kubelet trusts another CA",
    )
    p.add_argument(
        "--skip-hash-check",
        action="store_true",
        help="the snapshot is a db copied from a data directory (e.g. /var/lib/etcd/member/snap/db of an etcd that "
        "will not start): it has no sha256 trailer to check",
    )
    add_authenticity_args(p, prefix="for a backup: ")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run, run_log="restore-etcd")


def run(args: argparse.Namespace, env: Environment) -> int:
    root = NodeRoot(Path(args.root))
    if not root.prefix.is_dir():
        raise BackupError(f"the root directory {args.root} does not exist", "create it or pass another --root")
    pin = pinned_ca(args)
    snapshot_path = Path(args.snapshot)
    head = backupfile.read_head(snapshot_path)
    warnings: list[str] = []
    with contextlib.ExitStack() as stack:
        fallback_manifest = None
        snapshot: Path
        if core.is_age_file(head):
            secret = backupfile.read_secret(env.environ, args.passphrase_file, (), args.identity)
            settings = etcdprobe.settings(root)
            data_dir = settings.data_dir if settings else PurePosixPath(paths.ETCD_DATA_DIR)
            extracted = stack.enter_context(
                backupfile.backup_snapshot(
                    root,
                    snapshot_path,
                    secret,
                    data_dir,
                    allow_foreign=args.allow_foreign_backup,
                    ca_cert_hash=pin,
                    allow_unauthenticated=args.allow_unauthenticated,
                )
            )
            warnings = extracted.warnings
            for warning in warnings:  # on stderr, and in the --json document
                env.warning(warning)
            snapshot = extracted.path
            manifest = extracted.contents.files.get(paths.ETCD_MANIFEST)
            fallback_manifest = manifest.content if manifest else None
        else:
            if not args.skip_hash_check:
                backupfile.check_snapshot_file(snapshot_path)  # a truncated or corrupt snapshot: before stopping
            snapshot = snapshot_path  # streamed to etcdutl, never read into memory
        result = etcdrestore.restore_etcd(
            root,
            snapshot,
            skip_hash_check=args.skip_hash_check,
            fallback_manifest=fallback_manifest,
            progress=env.progress,  # stderr: --json stays clean
        )
    if args.json:
        env.json(
            stamp(
                RESTORE_ETCD,
                {
                    "member": result.member.name,
                    "data_dir": str(result.member.data_dir),
                    "old_data_dir": str(result.old_data_dir) if result.old_data_dir else None,
                    "healthy": result.healthy,
                    "seconds": round(result.seconds, 2),
                    "steps": result.steps,
                    "warnings": warnings,
                },
            )
        )
        return int(ExitStatus.OK)
    env.out(f"restored etcd member {result.member.name} into {result.member.data_dir} in {result.seconds:.1f} s")
    for s in result.steps:
        env.out(f"  {s}")
    if not result.manifest_on_node:
        env.out(f"note: {paths.ETCD_MANIFEST} is not on the node; etcd starts once it is (backup restore)")
    return int(ExitStatus.OK)
