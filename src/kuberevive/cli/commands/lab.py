"""``kuberevive lab up|status|down|exec``: the two-node kubeadm lab (implemented in kuberevive.lab)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("lab", help="a real two-node kubeadm cluster on this machine, for tests and demos")
    p.set_defaults(func=lambda args, env: (env.error("lab is not implemented yet."), 1)[1])
