"""Re-trust one node's kubelet in place, through a :class:`~kuberevive.io.host.Host` (another node: an
:class:`~kuberevive.io.remotehost.SshHost`, whose writes have NodeRoot's guarantees).

What :func:`retrust_node` does on the node, each part idempotent (a rerun after a kill converges):

1. write the new dated client pem (cert + key, 0600) under ``/var/lib/kubelet/pki``;
2. move aside, to ``/var/lib/kuberevive/backup/<stamp>/<path>`` (one stamp for the run), the kubelet's client CA
   file and ``kubelet.conf`` when they differ from their replacements (nothing is deleted), then write the new
   CA (0644) and ``kubelet.conf`` (0600) atomically;
3. point ``kubelet-client-current.pem`` at the new pem (:meth:`Host.repoint_symlink`: what pointed elsewhere
   moved aside, the link replaced atomically);
4. restart the kubelet: it re-reads its credentials and client CA; containers keep running (the kubelet does
   not stop pods when it restarts).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

from kuberevive.core.retrust import NodeTrustFiles, client_ca_file
from kuberevive.io.host import Host
from kuberevive.model import paths


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


def read_node_state(host: Host, client_ca_path: str | None = None) -> NodeTrustState:
    """Read the node's kubelet trust files (``client_ca_path`` None: from the kubelet's config.yaml), in two
    commands over SSH (the files, then the link): kubeadm's client CA path is read with the others, and read
    again only when config.yaml names another one."""
    guess = PurePosixPath(client_ca_path or paths.CA_CRT)
    got = host.read_many([paths.KUBELET_CONFIG, guess, paths.KUBELET_CONF, paths.KUBELET_CLIENT_CURRENT])
    config = got[paths.KUBELET_CONFIG]
    path = client_ca_path or client_ca_file(config)
    return NodeTrustState(
        client_ca_path=path,
        client_ca=got[guess] if PurePosixPath(path) == guess else host.read(PurePosixPath(path)),
        kubelet_conf=got[paths.KUBELET_CONF],
        kubelet_config_yaml=config,
        current_link=host.readlink(paths.KUBELET_CLIENT_CURRENT),
        client_pem=got[paths.KUBELET_CLIENT_CURRENT],
    )


def retrust_node(host: Host, files: NodeTrustFiles, now: datetime, restart: bool = True) -> list[str]:
    """Put ``files`` in place on the node and restart its kubelet; returns what was moved aside (backup
    directories named after ``now``). Each file is one :meth:`Host.write` (over SSH one command: it compares, moves
    aside what differs and writes), the link one :meth:`Host.repoint_symlink`: five SSH round trips in all."""
    moved: list[str] = []

    def aside(path: PurePosixPath, where: PurePosixPath | None) -> None:
        if where is not None:
            moved.append(f"{host.name}:{path} moved aside to {where}")

    aside(PurePosixPath(files.pem_path), host.write(PurePosixPath(files.pem_path), files.pem, 0o600, now))
    for path, content, mode in (
        (PurePosixPath(files.ca_path), files.ca_cert, 0o644),
        (paths.KUBELET_CONF, files.kubeconfig, 0o600),
    ):
        aside(path, host.write(path, content, mode, now))
    aside(paths.KUBELET_CLIENT_CURRENT, host.repoint_symlink(paths.KUBELET_CLIENT_CURRENT, files.pem_path, now))
    if restart:
        host.restart_unit("kubelet")
    return moved
