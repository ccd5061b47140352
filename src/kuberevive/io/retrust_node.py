"""Re-trust one node's kubelet in place, through a :class:`~kuberevive.io.transport.Transport`.

What :func:`retrust_node` does on the node, each part idempotent (a rerun after a kill converges):

1. write the new dated client pem (cert + key, 0600) under ``/var/lib/kubelet/pki``;
2. move aside, to ``/var/lib/kuberevive/backup/<stamp>/<path>``, every file that will be replaced and
   differs from its replacement: the kubelet's client CA file, ``kubelet.conf`` and the
   ``kubelet-client-current.pem`` symlink (nothing is deleted);
3. write the new CA (0644) and ``kubelet.conf`` (0600) atomically, point ``kubelet-client-current.pem``
   at the new pem (symlink replaced with ``mv -T``, atomic);
4. ``systemctl restart kubelet``: the kubelet re-reads its credentials and client CA; containers keep
   running (the kubelet does not stop pods when it restarts).

The node needs ``sh``, ``cat``, ``mv``, ``ln``, ``mkdir``, ``readlink`` and ``systemctl``.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from kuberevive.core.retrust import (
    KUBELET_CLIENT_CURRENT,
    KUBELET_CONF,
    KUBELET_CONFIG_YAML,
    NodeTrustFiles,
    client_ca_file,
)
from kuberevive.errors import TransportError
from kuberevive.io.transport import Result, Transport
from kuberevive.model.paths import BACKUP_DIR

_MOVE_ASIDE = r"""
set -e
b="$1"; shift
for f in "$@"; do
  if [ -e "$f" ] || [ -L "$f" ]; then
    mkdir -p "$b$(dirname "$f")"
    mv -f "$f" "$b$f"
    echo "$f"
  fi
done
"""

_LINK = r"""
set -e
tmp="$(dirname "$2")/.$(basename "$2").kuberevive-tmp"
rm -f "$tmp"
ln -s "$1" "$tmp"
mv -fT "$tmp" "$2"
"""


@dataclass(frozen=True)
class NodeTrustState:
    """What the node holds now (None: missing)."""

    client_ca_path: str
    client_ca: bytes | None
    kubelet_conf: bytes | None
    kubelet_config_yaml: bytes | None
    current_link: str | None
    client_pem: bytes | None = None
    """What ``kubelet-client-current.pem`` holds (the link followed)."""


def _why(r: Result) -> str:
    return (r.stderr or r.stdout).decode(errors="replace").strip()[:300] or f"exit code {r.exit_code}"


def _read(t: Transport, path: str) -> bytes | None:
    r = t.run(["cat", "--", path], timeout=30)
    return r.stdout if r.ok else None


def read_node_state(t: Transport, client_ca_path: str | None = None) -> NodeTrustState:
    """Read the node's kubelet trust files (``client_ca_path`` None: from the kubelet's config.yaml)."""
    config = _read(t, KUBELET_CONFIG_YAML)
    path = client_ca_path or client_ca_file(config)
    link = t.run(["readlink", "--", KUBELET_CLIENT_CURRENT], timeout=30)
    return NodeTrustState(
        client_ca_path=path,
        client_ca=_read(t, path),
        kubelet_conf=_read(t, KUBELET_CONF),
        kubelet_config_yaml=config,
        current_link=link.stdout.decode().strip() if link.ok else None,
        client_pem=_read(t, KUBELET_CLIENT_CURRENT),
    )


def retrust_node(t: Transport, files: NodeTrustFiles, stamp: str, restart: bool = True) -> list[str]:
    """Put ``files`` in place on the node and restart its kubelet; returns what was moved aside."""
    state = read_node_state(t, files.ca_path)
    # a node that lost /etc/kubernetes has no directory to write into: make the ones kubeadm join makes
    dirs = sorted(
        {posixpath.dirname(files.ca_path), posixpath.dirname(KUBELET_CONF), posixpath.dirname(files.pem_path)}
    )
    r = t.run(["mkdir", "-p", "--", *dirs], timeout=30)
    if not r.ok:
        raise TransportError(
            f"{t.name}: cannot create {', '.join(dirs)}: {_why(r)}", "check the node's disk, then run recover again"
        )
    t.write_file(files.pem_path, files.pem, 0o600)
    replace = []
    if state.client_ca is not None and state.client_ca != files.ca_cert:
        replace.append(files.ca_path)
    if state.kubelet_conf is not None and state.kubelet_conf != files.kubeconfig:
        replace.append(KUBELET_CONF)
    if state.current_link is not None and state.current_link != files.pem_path:
        replace.append(KUBELET_CLIENT_CURRENT)
    moved: list[str] = []
    if replace:
        backup = f"{BACKUP_DIR}/{stamp}"
        r = t.run(["sh", "-c", _MOVE_ASIDE, "sh", backup, *replace], timeout=60)
        if not r.ok:
            raise TransportError(
                f"{t.name}: cannot move the old kubelet credentials aside: {_why(r)}",
                "check the node's disk and /var/lib/kuberevive, then run recover --apply again",
            )
        moved = [f"{t.name}:{p} moved aside to {backup}{p}" for p in r.stdout.decode().split()]
    t.write_file(files.ca_path, files.ca_cert, 0o644)
    t.write_file(KUBELET_CONF, files.kubeconfig, 0o600)
    r = t.run(["sh", "-c", _LINK, "sh", files.pem_path, KUBELET_CLIENT_CURRENT], timeout=30)
    if not r.ok:
        raise TransportError(
            f"{t.name}: cannot point {KUBELET_CLIENT_CURRENT} at {files.pem_path}: {_why(r)}",
            "check /var/lib/kubelet/pki on the node, then run recover --apply again",
        )
    if restart:
        r = t.run(["systemctl", "restart", "kubelet"], timeout=60)
        if not r.ok:
            raise TransportError(
                f"{t.name}: 'systemctl restart kubelet' failed: {_why(r)}",
                "look at the kubelet's log on the node ('journalctl -u kubelet'), then run recover --apply again",
            )
    return moved
