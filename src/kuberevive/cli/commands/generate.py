"""``kuberevive generate {certs,kubeconfigs,manifests,all} --config FILE [--root DIR] [--dry-run] [--json]``."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from kuberevive.cli.commands import summary
from kuberevive.cli.env import Environment, ExitStatus, is_live_root
from kuberevive.core.generate import Target, generate, kubeconfig_paths
from kuberevive.errors import ConfigError, ExistingFileError
from kuberevive.io import nodefacts
from kuberevive.io.host import LocalHost
from kuberevive.io.noderoot import NodeRoot, WriteAction, WriteResult
from kuberevive.model.config import KubeadmConfig
from kuberevive.model.document import GENERATE, Document, stamp
from kuberevive.model.kubeadm_yaml import load_kubeadm_config
from kuberevive.run.generate import apply_generate


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "generate",
        allow_abbrev=False,
        help=summary("generate"),
        description="Generate the kubeadm PKI, kubeconfigs and static Pod manifests for a configuration. "
        "Existing valid CAs and certificates are reused, as kubeadm does.",
    )
    p.add_argument("what", choices=[t.value for t in Target], help="which artifacts")
    p.add_argument("--config", required=True, metavar="FILE", help="kubeadm InitConfiguration/ClusterConfiguration")
    p.add_argument("--root", default="/", metavar="DIR", help="the node's root directory (default /)")
    p.add_argument("--dry-run", action="store_true", help="list every file that would be written; write nothing")
    p.add_argument("--force", action="store_true", help="replace existing files (moved aside with a timestamp)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run, run_log="generate")


def read_config_file(path: str) -> str:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"the configuration file {path} does not exist", "pass the kubeadm config with --config"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the configuration file {path}: {exc}", "check the path and permissions"
        ) from None


def node_root(root_arg: str, environ: dict[str, str]) -> NodeRoot:
    """The ``--root`` of a command that writes, checked: an empty value (``--root "$UNSET"``) is refused, never
    taken as the current directory (G-R1)."""
    if not root_arg.strip():
        raise ConfigError("--root is empty", "pass the node's root directory (/ on the node itself)")
    root = NodeRoot.with_test_hooks(Path(root_arg), environ)
    if not root.prefix.is_dir():
        raise ConfigError(f"the root directory {root_arg} does not exist", "create it or pass another --root")
    return root


def run(args: argparse.Namespace, env: Environment) -> int:
    root = node_root(args.root, env.environ)
    text = read_config_file(args.config)
    live = is_live_root(args.root)
    facts = nodefacts.detect(root, env.environ, live=live)
    try:
        cfg = load_kubeadm_config(text, facts)
    except ConfigError as exc:
        raise ConfigError(f"{args.config}: {exc.message}", exc.hint) from None
    for warning in nodefacts.identity_warnings(root, facts, cfg.node_name, cfg.advertise_address, live=live):
        env.warning(warning)

    target = Target(args.what)
    if not args.json:
        env.progress(f"generating {target.value} for node {cfg.node_name} ({cfg.cluster.encryption_algorithm.value})")
    if args.dry_run:
        result = generate(target, cfg, facts, datetime.now(UTC), _existing(root, cfg), renew_expired=args.force)
        try:
            written: list[WriteResult] = root.plan(result.artifacts, force=args.force)
        except ExistingFileError:
            written = root.plan(result.artifacts, force=True)  # show them; --dry-run never fails on conflicts
        notes: list[str] = []
    else:
        # one run per node at a time (shared with recover), and a killed run's leftovers finished first (F5, F6)
        result, written, notes = apply_generate(
            LocalHost(root, live=live),
            cfg.cluster.certificates_dir,
            lambda: generate(target, cfg, facts, datetime.now(UTC), _existing(root, cfg), renew_expired=args.force),
            force=args.force,
        )
    result.warnings[:0] = notes

    if args.json:
        env.json(_as_json(args, target, written, result.reused, result.warnings, result.expired))
    else:
        _print_human(env, args, written, result.reused, result.warnings, result.expired)
    return int(ExitStatus.OK)


def _existing(root: NodeRoot, cfg: KubeadmConfig) -> dict[PurePosixPath, bytes]:
    return root.read_tree(cfg.cluster.certificates_dir) | root.read_many(kubeconfig_paths())


def _action(r: WriteResult, dry_run: bool, force: bool) -> str:
    if r.action is WriteAction.REPLACE and dry_run and not force:
        return "replace (needs --force)"
    return r.action.value


def _as_json(
    args: argparse.Namespace,
    target: Target,
    written: list[WriteResult],
    reused: list[Any],
    warnings: list[str],
    expired: list[Any],
) -> Document:
    return stamp(
        GENERATE,
        {
            "target": target.value,
            "root": str(Path(args.root).resolve()),
            "dry_run": bool(args.dry_run),
            "files": [
                {
                    "path": str(r.artifact.path),
                    "mode": f"{r.artifact.mode:04o}",
                    "kind": r.artifact.kind.value,
                    "description": r.artifact.description,
                    "action": _action(r, args.dry_run, args.force),
                    "moved_aside_to": str(r.moved_aside_to) if r.moved_aside_to else None,
                }
                for r in written
            ],
            "reused": [str(p) for p in reused],
            "expired": [str(p) for p in expired],
            "warnings": warnings,
        },
    )


def _print_human(
    env: Environment,
    args: argparse.Namespace,
    written: list[WriteResult],
    reused: list[Any],
    warnings: list[str],
    expired: list[Any],
) -> None:
    verb = "would write" if args.dry_run else "wrote"
    changed = [r for r in written if r.action is not WriteAction.UNCHANGED]
    env.out(
        f"{verb} {len(changed)} file(s) under root {args.root}"
        + (" (dry run: nothing written)" if args.dry_run else "")
    )
    width = max((len(str(r.artifact.path)) for r in written), default=0)
    for r in written:
        a = r.artifact
        line = f"  {_action(r, args.dry_run, args.force):<24} {a.mode:04o}  {a.path!s:<{width}}  {a.description}"
        if r.moved_aside_to:
            line += f"  (old file moved to {r.moved_aside_to})"
        env.out(line)
    for p in reused:
        env.out(f"  {'kept (expired)' if p in expired else 'kept (valid)':<24}       {p}")
    for w in warnings:
        env.out(f"warning: {w}")
