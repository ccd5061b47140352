"""What kubeadm would detect on the node: hostname, default address, CA directories, proxy variables.

Under ``--root`` (another node's disk seen from a rescue host) the hostname is the root's ``/etc/hostname``;
without one, and always for the default address, the only source is *this* machine, which is not the node:
:func:`identity_warnings` says so, so that no certificate silently carries the rescue host's identity.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from kuberevive.errors import NodeFsError
from kuberevive.io import process
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.config import NodeFacts
from kuberevive.model.paths import HOSTNAME_FILE

#: Host directories that kubeadm mounts into the apiserver and controller-manager when they exist.
CA_CERT_DIRS = (
    "/etc/ssl/certs",
    "/etc/ca-certificates",
    "/etc/pki/ca-trust",
    "/etc/pki/tls/certs",
    "/usr/share/ca-certificates",
    "/usr/local/share/ca-certificates",
)


def default_address() -> str | None:
    """The first global IPv4 address of the interface that holds the default route (as kubeadm picks)."""
    ip = shutil.which("ip")
    if ip is None:
        return None
    try:
        routes = json.loads(
            process.run([ip, "-j", "-4", "route", "show", "default"], text=True, timeout=5, check=True).stdout or "[]"
        )
        if not routes:
            return None
        dev = routes[0].get("dev")
        addrs = json.loads(
            process.run([ip, "-j", "-4", "addr", "show", "dev", dev], text=True, timeout=5, check=True).stdout or "[]"
        )
    except (process.SubprocessError, OSError, ValueError):
        return None
    for link in addrs:
        for info in link.get("addr_info", []):
            if info.get("scope") == "global" and info.get("local"):
                return str(info["local"])
    return None


MAX_HOSTNAME_FILE_BYTES = 4096


@dataclass(frozen=True)
class Hostname:
    name: str
    """As found (kubeadm lower-cases it for the node name)."""
    source: str
    """Where it came from, for messages."""
    borrowed: bool
    """True when ``root`` is another node's disk but the name is this machine's (the root has no usable
    ``/etc/hostname``): a fallback that must be warned about."""
    unreadable: str | None = None
    """Why the root's ``/etc/hostname`` could not be read (a FIFO, a device, too big), when it could not."""


def hostname(root: NodeRoot, *, live: bool) -> Hostname:
    """The node's hostname: on the node itself (``live``) this machine's; under another root its ``/etc/hostname``
    (a FIFO, device or oversized file there counts as none, never a hang), else this machine's, ``borrowed``."""
    if live:
        return Hostname(socket.gethostname(), "this machine's hostname", borrowed=False)
    why = f"there is no {HOSTNAME_FILE} under {root.prefix}"
    try:
        data = root.read(HOSTNAME_FILE, limit=MAX_HOSTNAME_FILE_BYTES)
    except NodeFsError as exc:
        failed = exc.message.removeprefix(f"cannot read {HOSTNAME_FILE}: ")
        why = f"{root.prefix}{HOSTNAME_FILE} cannot be read ({exc.message})"
        return Hostname(socket.gethostname(), f"this machine's hostname, because {why}", True, failed)
    text = data.decode(errors="replace").strip() if data else ""
    if text:
        return Hostname(text, f"{root.prefix}{HOSTNAME_FILE}", borrowed=False)
    if data is not None:
        why = f"{root.prefix}{HOSTNAME_FILE} is empty"
    return Hostname(socket.gethostname(), f"this machine's hostname, because {why}", borrowed=True)


def identity_warnings(
    root: NodeRoot, facts: NodeFacts, node_name: str, address: str | None, *, live: bool
) -> list[str]:
    """Warnings for a node name or address that fell back to what this machine detected (``facts``): the
    hostname when no name was configured, the default-route address under another root. Each names the
    fallback and how to override it (``nodeRegistration.name``, ``localAPIEndpoint.advertiseAddress``)."""
    out = []
    host = hostname(root, live=live)
    if host.borrowed and node_name == facts.hostname:
        out.append(
            f"the node name {node_name!r} is {host.source}, not necessarily the node's; "
            "set nodeRegistration.name in the configuration"
        )
    if address and address == facts.default_address and not live:
        out.append(
            f"the advertise address {address} is this machine's default-route address, not necessarily the node's "
            f"under {root.prefix}; set localAPIEndpoint.advertiseAddress in the configuration"
        )
    return out


def detect(root: NodeRoot, environ: Mapping[str, str] | None = None, *, live: bool) -> NodeFacts:
    env = os.environ if environ is None else environ
    return NodeFacts(
        hostname=hostname(root, live=live).name.lower(),
        default_address=default_address(),
        existing_paths=frozenset(p for p in CA_CERT_DIRS if root.host_path(p).is_dir()),
        proxy_env=tuple(sorted((k, v) for k, v in env.items() if k.lower().endswith("_proxy"))),
    )
