"""What kubeadm would detect on the node: hostname, default address, CA directories, proxy variables."""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Mapping

from kuberevive.io import process
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.config import NodeFacts

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


def detect(root: NodeRoot, environ: Mapping[str, str] | None = None) -> NodeFacts:
    env = os.environ if environ is None else environ
    hostname_file = root.read("/etc/hostname") if root.prefix != root.prefix.parent else None
    hostname = (hostname_file.decode().strip() if hostname_file else "") or socket.gethostname()
    return NodeFacts(
        hostname=hostname.lower(),
        default_address=default_address(),
        existing_paths=frozenset(p for p in CA_CERT_DIRS if root.host_path(p).is_dir()),
        proxy_env=tuple(sorted((k, v) for k, v in env.items() if k.lower().endswith("_proxy"))),
    )
