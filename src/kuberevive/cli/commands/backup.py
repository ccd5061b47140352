"""``kuberevive backup {create,verify,list,prune,restore}``: encrypted backups of a control-plane node."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from kuberevive import __version__
from kuberevive.cli.commands import summary
from kuberevive.cli.env import Environment, ExitStatus, is_live_root
from kuberevive.core import backup as core
from kuberevive.core.agestream import AgeWriter
from kuberevive.core.backup import BackupContents
from kuberevive.errors import BackupError
from kuberevive.io import backupfile
from kuberevive.io.noderoot import NodeRoot, WriteAction
from kuberevive.model import paths
from kuberevive.model.document import (
    BACKUP_CREATE,
    BACKUP_LIST,
    BACKUP_PRUNE,
    BACKUP_RESTORE,
    BACKUP_VERIFY,
    rfc3339,
    rfc3339_or_none,
    stamp,
)


def _secret_args(p: argparse.ArgumentParser, decrypt: bool) -> None:
    p.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help=f"read the passphrase from FILE (first line); else ${backupfile.PASSPHRASE_ENV} is used",
    )
    if decrypt:
        p.add_argument("--identity", metavar="FILE", help="age identity file (AGE-SECRET-KEY-1...) to decrypt with")
    else:
        p.add_argument(
            "--recipient",
            action="append",
            default=[],
            metavar="AGE1...",
            help="encrypt to this age public key instead of a passphrase (repeatable); the node never needs the key",
        )


def add_authenticity_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--ca-cert-hash`` and ``--allow-unauthenticated``: for every command that reads a backup."""
    p.add_argument(
        "--ca-cert-hash",
        metavar="sha256:HEX",
        help=f"{prefix}refuse the backup unless its cluster CA has this hash (kubeadm join's "
        "--discovery-token-ca-cert-hash); needed for a recipient-mode backup on a node with no kubelet "
        "certificate, kubelet.conf or pki/ca.crt left",
    )
    p.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help=f"{prefix}accept a recipient-mode backup that is not signed by its cluster CA, or that nothing on "
        "the node ties to this cluster (anyone with the public age key can make one)",
    )


def pinned_ca(args: argparse.Namespace) -> str | None:
    """``--ca-cert-hash`` checked and normalised (before anything is decrypted), or None."""
    text = getattr(args, "ca_cert_hash", None)
    return core.parse_ca_cert_hash(text) if text is not None else None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "backup",
        allow_abbrev=False,
        help=summary("backup"),
        description="Make, check, list and restore encrypted backups (age format) of a control-plane node.",
    )
    bsub = p.add_subparsers(dest="backup_command", metavar="ACTION")
    bsub.required = True

    c = bsub.add_parser("create", allow_abbrev=False, help="write an encrypted backup of this node")
    c.add_argument("--root", default="/", metavar="DIR", help="the node's root directory (default /)")
    c.add_argument(
        "--out",
        required=True,
        metavar="FILE|DIR",
        help=f"a directory (ends in / or exists; created 0700; a name with node and time is chosen), e.g. "
        f"{backupfile.DEFAULT_BACKUP_DIR}/, or a file ending in .age; an existing file is never replaced",
    )
    c.add_argument(
        "--force", action="store_true", help="with a file --out that exists: move it aside (<name>.replaced-<time>)"
    )
    c.add_argument(
        "--node-name",
        metavar="NAME",
        help="the node's name, when it cannot be found on the node (kubelet certificate, etcd member name)",
    )
    c.add_argument("--etcd-snapshot", action="store_true", help="include a consistent snapshot of the local etcd")
    c.add_argument(
        "--keep",
        type=int,
        metavar="N",
        help="with a directory --out: then keep only this node's newest N backups there (other nodes' are untouched)",
    )
    c.add_argument("--json", action="store_true", help="machine-readable output")
    _secret_args(c, decrypt=False)
    c.set_defaults(func=run_create, run_log="backup-create")

    v = bsub.add_parser("verify", allow_abbrev=False, help="decrypt in memory and check hashes, key pairs and expiry")
    v.add_argument("file", metavar="FILE")
    v.add_argument("--json", action="store_true", help="machine-readable output")
    _secret_args(v, decrypt=True)
    add_authenticity_args(v)
    v.set_defaults(func=run_verify)

    ls = bsub.add_parser("list", allow_abbrev=False, help="list the backups in a directory (nothing is decrypted)")
    ls.add_argument("dir", metavar="DIR")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=run_list)

    pr = bsub.add_parser(
        "prune",
        allow_abbrev=False,
        help="delete all but the newest N backups of each node in a directory",
        description="Delete all but the newest N kuberevive backups of each node (by the node name in each file's "
        "name) in DIR. Other files are never touched.",
    )
    pr.add_argument("dir", metavar="DIR", help="the backup directory")
    pr.add_argument("--keep", type=int, required=True, metavar="N", help="how many backups of each node to keep (>= 1)")
    pr.add_argument("--node", metavar="NAME", help="prune only this node's backups")
    pr.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    pr.add_argument("--json", action="store_true", help="machine-readable output")
    pr.set_defaults(func=run_prune)

    r = bsub.add_parser(
        "restore",
        allow_abbrev=False,
        help="put the backup's CAs, sa keys, kubeconfigs and manifests back where they are missing",
        description="Restore the files of a backup that are missing on the node (the kept CAs and sa keys, so "
        "nodes need no re-trust and tokens stay valid). Refuses a backup of another cluster.",
    )
    r.add_argument("file", metavar="FILE")
    r.add_argument("--root", default="/", metavar="DIR", help="the node's root directory (default /)")
    r.add_argument(
        "--all",
        dest="only_missing",
        action="store_false",
        help="replace existing files too (the old ones are moved aside); default: only missing files",
    )
    r.add_argument("--only-missing", dest="only_missing", action="store_true", help="the default")
    r.add_argument("--allow-foreign-backup", action="store_true", help="restore even if the node trusts another CA")
    r.add_argument("--dry-run", action="store_true", help="list what would be written; write nothing")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    _secret_args(r, decrypt=True)
    add_authenticity_args(r)
    r.set_defaults(func=run_restore, only_missing=True, run_log="backup-restore")


# --------------------------------------------------------------------------------- create


def _root(arg: str) -> NodeRoot:
    root = NodeRoot(Path(arg))
    if not root.prefix.is_dir():
        raise BackupError(f"the root directory {arg} does not exist", "create it or pass another --root")
    return root


_NODE_NAME_RE = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
"""A node name: a DNS-1123 subdomain, as the API server requires."""


def run_create(args: argparse.Namespace, env: Environment) -> int:
    start = time.monotonic()
    root = _root(args.root)
    secret = backupfile.read_secret(env.environ, args.passphrase_file, tuple(args.recipient))
    if not secret.recipients and not secret.passphrase:
        raise BackupError(
            "no passphrase and no recipient to encrypt the backup to",
            f"pass --passphrase-file FILE, set {backupfile.PASSPHRASE_ENV}, or pass --recipient age1...",
        )
    if args.node_name is not None and not _NODE_NAME_RE.fullmatch(args.node_name):
        raise BackupError(
            f"--node-name {args.node_name!r} is not a Kubernetes node name",
            "pass lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
        )
    out, into_dir = backupfile.out_target(args.out)
    if args.keep is not None and not into_dir:
        raise BackupError("--keep needs --out to be a directory", "pass --out DIR/ or drop --keep")
    if args.keep is not None and args.keep < 1:
        raise BackupError("--keep must be at least 1", "pass --keep N with N >= 1")
    if not into_dir and os.path.lexists(out) and not args.force:
        raise BackupError(
            f"{out} already exists; nothing was written",
            "pass another --out, or --force to move the old file aside (to <name>.replaced-<time>)",
        )
    created = datetime.now(UTC)
    files = backupfile.collect_node_files(root)
    node, warnings = backupfile.node_identity(root, files, args.node_name, live=is_live_root(args.root))
    gaps = core.completeness((f.path for f in files), {f.path: f.content for f in files}.get, paths.PKI_DIR)
    if not gaps.complete:
        warnings.append(f"this backup is incomplete: {gaps.summary()}")
    kubeadm_config, source = backupfile.fetch_kubeadm_config(root)
    target = backupfile.free_backup_name(out, node.node_name, created) if into_dir else out
    snapshot: core.StreamedSnapshot | None = None

    def produce(fh: BinaryIO) -> None:
        # tar -> gzip -> age, chunk by chunk into the file: the archive is never whole in memory
        with AgeWriter(fh, passphrase=secret.passphrase, recipients=secret.recipients) as w:
            core.write_archive(
                w,  # type: ignore[arg-type]
                files,
                created=created,
                node=node,
                tool_version=__version__,
                kubeadm_config=kubeadm_config,
                kubeadm_config_source=source,
                etcd_snapshot=snapshot,
            )

    signer = core.signing_key(files)
    with contextlib.ExitStack() as stack:
        if args.etcd_snapshot:
            if not args.json:
                env.progress("taking an etcd snapshot (streamed)")
            snapshot = stack.enter_context(backupfile.spooled_etcd_snapshot(root, target.absolute().parent))
        if args.etcd_snapshot and not args.json:
            env.progress("writing the encrypted backup")
        moved_aside = backupfile.write_backup_stream(target, produce, force=args.force and not into_dir, now=created)
    size = target.stat().st_size
    pruned = (
        backupfile.prune_backups(target.parent, args.keep, node=backupfile.name_node(target.name)).removed
        if args.keep is not None
        else []
    )
    seconds = time.monotonic() - start
    if signer is None and secret.recipients:
        warnings.append(
            "the backup is not signed (no pki/ca.key that matches pki/ca.crt on this node), so reading it will need "
            "--allow-unauthenticated"
        )
    result = stamp(
        BACKUP_CREATE,
        {
            "file": str(target),
            "created": rfc3339(created),
            "bytes": size,
            "seconds": round(seconds, 2),
            "node": node.as_json(),
            "role": gaps.role,
            "files": len(files),
            "missing": [str(p) for p in gaps.missing],
            "kubeadm_config": source,
            "etcd_snapshot_bytes": snapshot.size if snapshot is not None else None,
            "encryption": "age recipient (X25519)" if secret.recipients else "age passphrase (scrypt)",
            "signed": signer is not None,
            "moved_aside_to": str(moved_aside) if moved_aside else None,
            "pruned": [str(b.path) for b in pruned],
            "warnings": warnings,
        },
    )
    for text in warnings:
        env.warning(text)
    if args.json:
        env.json(result)
        return int(ExitStatus.OK)
    env.out(f"wrote {target} ({size} bytes, {result['encryption']}) in {seconds:.1f} s")
    if moved_aside:
        env.out(f"  the old {target.name} was moved aside to {moved_aside}")
    env.out(f"  node {node.node_name} ({node.hostname}; {', '.join(node.addresses) or 'no address found'})")
    env.out(f"  {len(files)} file(s) from /etc/kubernetes and /var/lib/kubelet ({gaps.role})")
    env.out(f"  kubeadm configuration: {source}")
    env.out("  manifest signed with pki/ca.key" if signer is not None else "  manifest not signed (no usable ca.key)")
    if snapshot is not None:
        env.out(f"  etcd snapshot: {snapshot.size} bytes, sha256 checked")
    for b in pruned:
        env.out(f"  pruned {b.path}")
    return int(ExitStatus.OK)


# --------------------------------------------------------------------------------- verify


def _open(args: argparse.Namespace, env: Environment) -> BackupContents:
    secret = backupfile.read_secret(env.environ, args.passphrase_file, (), getattr(args, "identity", None))
    return backupfile.open_backup(args.file, secret=secret, allow_unauthenticated=args.allow_unauthenticated)


def run_verify(args: argparse.Namespace, env: Environment) -> int:
    pin = pinned_ca(args)
    contents = _open(args, env)
    if pin is not None:
        core.check_ca_pin(contents, pin)
    report = core.verify(contents, datetime.now(UTC))
    if pin is not None:
        report.checks.append(f"the backup's CA is the pinned --ca-cert-hash {pin}")
    if args.json:
        env.json(stamp(BACKUP_VERIFY, {"file": args.file, **report.as_json()}))
        return int(ExitStatus.OK if report.ok and report.complete else ExitStatus.ERROR)
    node = report.node.get("node_name", "?")
    env.out(
        f"{args.file}: made {report.created:%Y-%m-%d %H:%M:%S} UTC ({_age(report.age_days)} ago) on node {node}; "
        f"{report.files} file(s)"
        + (f", etcd snapshot {report.etcd_snapshot_bytes} bytes" if report.etcd_snapshot_bytes is not None else "")
    )
    env.out(f"  {_signature_line(contents)}")
    for c in report.checks:
        env.out(f"  ok    {c}")
    for pb in report.problems:
        env.out(f"  FAIL  {pb}")
    gaps = report.completeness
    if gaps is not None:
        for note in gaps.notes:
            env.out(f"  note  {note}")
        for missing in gaps.missing:
            env.out(f"  MISSING  {missing} (a {gaps.role} node has it)")
    if contents.kubeadm_config is None:
        env.out("  note  no kubeadm ClusterConfiguration (the API did not answer when it was made)")
    for cert in report.certificates:
        state = "EXPIRED" if cert.days_left < 0 else f"{cert.days_left:.0f} days left"
        env.out(f"  {'ca  ' if cert.is_ca else 'cert'}  {cert.path:<36} expires {cert.not_after:%Y-%m-%d} ({state})")
    if not report.ok:
        raise BackupError(
            f"{args.file} decrypts and matches its hashes but fails {len(report.problems)} check(s)",
            "use another backup",
        )
    if gaps is not None and not gaps.complete:
        raise BackupError(
            f"{args.file} is consistent but incomplete: {gaps.summary()}",
            "make a new backup on a healthy node (kuberevive diagnose shows what is missing there); this one can "
            "still restore the files it holds",
        )
    env.out(f"backup is complete (for a {gaps.role if gaps else 'kubeadm'} node) and consistent")
    return int(ExitStatus.OK)


def _signature_line(contents: BackupContents) -> str:
    """Which CA signed the backup (and how to tie it to a cluster), or why an unsigned one was read."""
    subject = str(contents.metadata.get("cluster", {}).get("ca_subject", "?"))
    if contents.signed_by is not None:
        return (
            f"signed by the cluster CA {subject} {contents.signed_by} (its kubeadm join "
            "--discovery-token-ca-cert-hash; compare it with your cluster's or pass --ca-cert-hash)"
        )
    if contents.encryption == core.RECIPIENT:
        return "NOT signed: accepted only because of --allow-unauthenticated"
    return "not signed (made before kuberevive signed backups); the passphrase authenticates it"


def _age(days: float) -> str:
    if days < 1 / 24:
        return f"{days * 1440:.0f} min"
    if days < 2:
        return f"{days * 24:.1f} h"
    return f"{days:.0f} days"


# ----------------------------------------------------------------------------- list/prune


def run_list(args: argparse.Namespace, env: Environment) -> int:
    backups = backupfile.list_backups(Path(args.dir))
    now = datetime.now(UTC)
    if args.json:
        env.json(
            stamp(
                BACKUP_LIST,
                {
                    "dir": args.dir,
                    "items": [
                        {
                            "file": str(b.path),
                            "node": b.node,
                            "created": rfc3339_or_none(b.created),
                            "bytes": b.size,
                            "encryption": b.encryption,
                        }
                        for b in backups
                    ],
                },
            )
        )
        return int(ExitStatus.OK)
    if not backups:
        env.out(f"no kuberevive backups in {args.dir}")
        return int(ExitStatus.OK)
    for b in backups:
        when = b.created or b.modified
        age = _age((now - when).total_seconds() / 86400)
        env.out(f"{when:%Y-%m-%d %H:%M:%S}Z  {age:>9} ago  {b.size:>10} B  {b.node:<16} {b.encryption:<20} {b.path}")
    return int(ExitStatus.OK)


def run_prune(args: argparse.Namespace, env: Environment) -> int:
    result = backupfile.prune_backups(Path(args.dir), args.keep, node=args.node, dry_run=args.dry_run)
    if args.json:
        env.json(
            stamp(
                BACKUP_PRUNE,
                {
                    "dir": args.dir,
                    "keep": args.keep,
                    "dry_run": bool(args.dry_run),
                    "removed": [{"file": str(b.path), "node": b.node} for b in result.removed],
                    "kept": [{"file": str(b.path), "node": b.node} for b in result.kept],
                },
            )
        )
        return int(ExitStatus.OK)
    nodes = len({b.node for b in result.kept})
    verb = "would remove" if args.dry_run else "removed"
    env.out(f"{verb} {len(result.removed)} backup(s), kept the newest {args.keep} of each of {nodes} node(s)")
    for b in result.removed:
        env.out(f"  {verb} {b.path}")
    return int(ExitStatus.OK)


# -------------------------------------------------------------------------------- restore


def run_restore(args: argparse.Namespace, env: Environment) -> int:
    start = time.monotonic()
    root = _root(args.root)
    pin = pinned_ca(args)
    contents = _open(args, env)
    report = core.verify(contents, datetime.now(UTC))
    if not report.ok:
        raise BackupError(
            f"{args.file} fails its checks: {report.problems[0]}; nothing was written", "use another backup"
        )
    warnings = backupfile.check_same_cluster(
        contents,
        root,
        args.allow_foreign_backup,
        ca_cert_hash=pin,
        allow_unauthenticated=args.allow_unauthenticated,
    )
    if args.dry_run:
        existing = {p: None if root.host_path(p).is_dir() else root.read(p) for p in contents.files}
        written = root.plan(core.restore_artifacts(contents, existing, args.only_missing), force=True)
    else:
        written = backupfile.restore_files(contents, root, only_missing=args.only_missing)
    changed = [w for w in written if w.action is not WriteAction.UNCHANGED]
    seconds = time.monotonic() - start
    if args.json:
        out = stamp(
            BACKUP_RESTORE,
            {
                "file": args.file,
                "dry_run": bool(args.dry_run),
                "signed_by": contents.signed_by,
                "seconds": round(seconds, 2),
                "files": [
                    {
                        "path": str(w.artifact.path),
                        "mode": f"{w.artifact.mode:04o}",
                        "action": w.action.value,
                        "moved_aside_to": str(w.moved_aside_to) if w.moved_aside_to else None,
                    }
                    for w in written
                ],
                "warnings": warnings,
            },
        )
        env.json(out)
        return int(ExitStatus.OK)
    verb = "would restore" if args.dry_run else "restored"
    env.out(f"{verb} {len(changed)} file(s) from {args.file} under root {args.root} in {seconds:.1f} s")
    for w in written:
        line = f"  {w.action.value:<9} {w.artifact.mode:04o}  {w.artifact.path}"
        if w.moved_aside_to:
            line += f"  (old file moved to {w.moved_aside_to})"
        env.out(line)
    kept = len(contents.files) - len(written)
    if kept:
        env.out(f"  {kept} file(s) already on the node were left as they are (use --all to replace them)")
    for text in warnings:
        env.out(f"warning: {text}")
    return int(ExitStatus.OK)


# ------------------------------------------------------------------- recover --from-backup


def add_from_backup_args(p: argparse.ArgumentParser) -> None:
    """``--from-backup FILE`` and its decryption options, for ``kuberevive recover``."""
    p.add_argument(
        "--from-backup",
        metavar="FILE",
        help="keep the CAs and service-account keys of this kuberevive backup (see 'backup create')",
    )
    p.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help=f"with --from-backup: the backup's passphrase (first line); else ${backupfile.PASSPHRASE_ENV}",
    )
    p.add_argument("--identity", metavar="FILE", help="with --from-backup: age identity file to decrypt with")
    p.add_argument(
        "--allow-foreign-backup",
        action="store_true",
        help="with --from-backup: use it even if this node's kubelet trusts another CA",
    )
    add_authenticity_args(p, prefix="with --from-backup: ")


def kept_from_backup(args: argparse.Namespace, env: Environment, root: NodeRoot) -> dict[str, bytes]:
    """PKI-relative path -> bytes of the backup's CAs and sa keys ({} without ``--from-backup``).

    The backup is decrypted in memory, verified (hashes, key pairs, signature) and refused when this node's
    survivors (kubelet client certificate, kubelet.conf) trust another CA, unless ``--allow-foreign-backup``;
    an unsigned or untied recipient-mode backup needs ``--ca-cert-hash`` or ``--allow-unauthenticated``.
    """
    if not getattr(args, "from_backup", None):
        return {}
    pin = pinned_ca(args)
    secret = backupfile.read_secret(env.environ, args.passphrase_file, (), args.identity)
    contents = backupfile.open_backup(args.from_backup, secret=secret, allow_unauthenticated=args.allow_unauthenticated)
    report = core.verify(contents, datetime.now(UTC))
    if not report.ok:
        raise BackupError(f"{args.from_backup} fails its checks: {report.problems[0]}", "use another backup")
    if report.completeness is not None and report.completeness.role != core.CONTROL_PLANE:
        raise BackupError(
            f"{args.from_backup} is a backup of a {report.completeness.role} node: it holds no CA keys to keep",
            "use a backup of a control-plane node of this cluster",
        )
    warnings = backupfile.check_same_cluster(
        contents,
        root,
        args.allow_foreign_backup,
        ca_cert_hash=pin,
        allow_unauthenticated=args.allow_unauthenticated,
    )
    for warning in warnings:
        env.warning(warning)
    return {name: data for name, data in contents.pki.items() if name in paths.TRUST_FILES}
