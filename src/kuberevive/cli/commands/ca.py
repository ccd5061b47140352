"""``kuberevive ca extend`` (docs/certs.md): the same CA keys, a new validity, put everywhere."""

from __future__ import annotations

import argparse
from datetime import timedelta

from kuberevive.cli.commands import summary
from kuberevive.cli.commands.certs import common_args, render_steps
from kuberevive.cli.commands.recover import add_node_access_args, node_access
from kuberevive.cli.env import Environment, is_live_root
from kuberevive.core import caextend
from kuberevive.errors import KubereviveError
from kuberevive.model.document import CA_EXTEND_PLAN, CA_EXTEND_RESULT, stamp
from kuberevive.model.kubeadm_yaml import parse_duration
from kuberevive.run import caextend as run


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "ca",
        allow_abbrev=False,
        help=summary("ca"),
        description="Manage the CAs of a kubeadm cluster. See docs/certs.md.",
    )
    cmds = p.add_subparsers(dest="ca_command", metavar="ACTION")
    cmds.required = True
    e = cmds.add_parser(
        "extend",
        allow_abbrev=False,
        help="re-issue expiring CAs with the same key and a new validity, put them everywhere (plan unless --apply)",
        description="Re-issue ca.crt, front-proxy-ca.crt and etcd/ca.crt with the same key, subject and key "
        "identifiers and a new validity (the cluster's caCertificateValidityPeriod, 10 years by default), also "
        "when they have expired, and put them everywhere the old ones are held: this node's pki and kubeconfigs, "
        "the kubelets' clientCAFile and kubelet.conf (--all-nodes: every node), cluster-info, kube-root-ca.crt and "
        "extension-apiserver-authentication. Every existing certificate and token stays valid. Without --apply: "
        "the plan, nothing changes.",
    )
    common_args(e)
    e.add_argument(
        "names",
        nargs="*",
        metavar="CA",
        help=f"the CAs to extend ({', '.join(caextend.CA_NAMES)}; default: those expiring or expired)",
    )
    e.add_argument(
        "--validity",
        type=_duration,
        metavar="DURATION",
        help="the new CAs' validity from now, as kubeadm writes it (e.g. 87600h; default: the cluster's "
        "caCertificateValidityPeriod, 10 years when it is not set)",
    )
    e.add_argument("--all", action="store_true", help="extend every CA, also those far from expiry")
    e.add_argument("--apply", action="store_true", help="do it (default: print the plan and change nothing)")
    e.add_argument("--json", action="store_true", help="machine-readable output")
    g = e.add_argument_group("--all-nodes: the kubelets of every other node, over SSH")
    g.add_argument("--all-nodes", action="store_true", help="also put the extended CA on every other node")
    add_node_access_args(g)
    e.set_defaults(func=run_extend, run_log="ca-extend")


def _duration(text: str) -> timedelta:
    try:
        value = parse_duration(text, "--validity")
    except KubereviveError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    if value.total_seconds() <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def render(result: run.ExtendResult, env: Environment, applied: bool) -> None:
    if not result.cas:
        env.out("ca extend: nothing to extend (every CA is valid beyond the warning period; name one or use --all)")
        return
    env.out("ca extend" + (" (resumed)" if result.resumed else "") + f": configuration from {result.config_source}")
    for c in result.cas:
        env.out(
            f"  {c['name']:<15} {c['status'] or '-':<9} NotAfter {c['not_after']} -> {c['new_not_after']}, "
            f"same key, serial {c['serial']} -> {c['new_serial']}"
        )
    env.out("files on this node:")
    for f in result.files:
        env.out(f"  {f['path']:<48} {f['what']}")
    if result.restarts:
        env.out(
            "cluster objects: kube-public/cluster-info, kube-root-ca.crt (every namespace), "
            "kube-system/extension-apiserver-authentication"
        )
        if result.all_nodes:
            env.out("other nodes (SSH): kubelet.conf and the kubelet's clientCAFile, then the kubelet is restarted")
        env.out(f"restarted: {', '.join(result.restarts)} (workload containers are not touched)")
    render_steps(env, result.steps, run.STEP_TITLES, result.messages, applied, "extend")
    if applied:
        env.out(f"extended {len(result.cas)} CA(s) in {result.seconds} s; copy admin.conf again where you use a copy")


def run_extend(args: argparse.Namespace, env: Environment) -> int:
    options = node_access(args) if args.all_nodes else None
    if args.apply:
        result = run.apply(
            args.root,
            args.config,
            args.expiry_warning_days,
            args.names,
            args.all,
            options,
            env.progress,
            validity=args.validity,
            live=is_live_root(args.root),
        )
    else:
        result = run.plan(
            args.root,
            args.config,
            args.expiry_warning_days,
            args.names,
            args.all,
            args.all_nodes,
            args.validity,
            live=is_live_root(args.root),
        )
    if args.json:
        env.json(
            stamp(CA_EXTEND_RESULT if args.apply else CA_EXTEND_PLAN, {"apply": bool(args.apply), **result.as_dict()})
        )
    else:
        render(result, env, bool(args.apply))
    return 0
