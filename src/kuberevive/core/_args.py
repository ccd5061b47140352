"""kubeadm's argument-list rules and the few Go stdlib helpers its manifests depend on.

Pure functions; each one names the kubeadm/Go function whose observable behaviour it reproduces.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from kuberevive.model.config import Arg


def arguments_to_command(base: Sequence[Arg], overrides: Sequence[Arg], *, sort_all: bool = False) -> list[str]:
    """kubeadm ``util.ArgumentsToCommand``: ``--name=value`` strings, the binary name not included.

    Every name present in ``overrides`` drops *all* base entries of that name. From v1.32.13, v1.33.8 and
    v1.34.4 on (PR #135400) the remaining base entries are sorted by name (then value) and the overrides follow,
    all of them (duplicates included), in the order the user gave them. Before (``sort_all``, v1.30 and v1.31),
    the whole merged list is sorted by name, then value.
    """
    overridden = {a.name for a in overrides}
    kept = [a for a in base if a.name not in overridden]
    if sort_all:
        merged = sorted([*overrides, *kept], key=lambda a: (a.name, a.value))
    else:
        merged = [*sorted(kept, key=lambda a: (a.name, a.value)), *overrides]
    return [f"--{a.name}={a.value}" for a in merged]


def get_arg_value(args: Iterable[Arg], name: str) -> str | None:
    """kubeadm ``GetArgValue(args, name, -1)``: the value of the *last* entry named ``name``."""
    value: str | None = None
    for a in args:
        if a.name == name:
            value = a.value
    return value


def set_arg_value(args: list[Arg], name: str, value: str) -> None:
    """kubeadm ``SetArgValues(args, name, value, 1)``: update the last entry of that name or append."""
    for i in range(len(args) - 1, -1, -1):
        if args[i].name == name:
            args[i] = Arg(name, value)
            return
    args.append(Arg(name, value))


def split_command(command: Sequence[str]) -> list[Arg]:
    """The ``--name=value`` flags of a command line (element 0, the binary, is skipped).

    A flag without ``=`` gets the value ``""``; elements that are not flags are ignored.
    """
    out: list[Arg] = []
    for item in command[1:]:
        if not item.startswith("-"):
            continue
        body = item.lstrip("-")
        name, _, value = body.partition("=")
        out.append(Arg(name, value))
    return out


# --- Go stdlib behaviour ---------------------------------------------------------------------


def go_clean(path: str) -> str:
    """Go ``path.Clean`` (``filepath.Clean`` on Linux)."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    joined = "/".join(parts)
    if rooted:
        return "/" + joined
    return joined or "."


def go_join(*elems: str) -> str:
    """Go ``filepath.Join``: join the non-empty elements with ``/`` and clean the result."""
    nonempty = [e for e in elems if e != ""]
    if not nonempty:
        return ""
    return go_clean("/".join(nonempty))


def go_dir(path: str) -> str:
    """Go ``filepath.Dir``: everything before the last ``/``, cleaned (``"."`` if there is none)."""
    head = path[: path.rfind("/") + 1]
    return go_clean(head)


def is_ipv6_string(text: str) -> bool:
    """k8s.io/utils/net ``IsIPv6String``: a valid IP that is not IPv4 (nor IPv4-mapped IPv6)."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    return isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None
