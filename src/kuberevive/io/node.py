"""Evidence for ``recover``: what survives on the node (kubelet files, etcd data, static pod logs) and, on a live
host, its units, images and addresses (through :class:`~kuberevive.io.host.LocalHost`). Files are read through the
:class:`NodeRoot` prefix so evidence gathering is testable on a copied tree.
"""

from __future__ import annotations

import contextlib
import shlex
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from kuberevive.core.manifests import parse_manifest
from kuberevive.errors import KubereviveError
from kuberevive.io import nodefacts
from kuberevive.io.host import LocalHost
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.paths import (
    ETCD_DATA_DIR,
    KUBEADM_FLAGS,
    KUBELET_CLIENT_CURRENT,
    KUBELET_CONFIG,
    KUBELET_INSTANCE_CONFIG,
    KUBERNETES_DIR,
    MANIFESTS_DIR,
    POD_LOGS,
)
from kuberevive.model.recover import NodeEvidence

ETCD_DATA_CANDIDATES = (str(ETCD_DATA_DIR),)


def parse_kubeadm_flags(text: str) -> tuple[tuple[str, str], ...]:
    """``KUBELET_KUBEADM_ARGS="--a=b --c=d"`` -> (("a", "b"), ("c", "d"))."""
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name.strip() != "KUBELET_KUBEADM_ARGS":
            continue
        try:
            words = shlex.split(value)
        except ValueError:
            continue
        for word in (w for v in words for w in v.split()):
            if word.startswith("--"):
                k, _, v = word[2:].partition("=")
                out.append((k, v))
    return tuple(out)


def client_cn(data: bytes | None) -> str | None:
    if not data:
        return None
    try:
        cert = x509.load_pem_x509_certificate(data)
        attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else None
    except ValueError:
        return None


def _manifest_images(root: NodeRoot) -> tuple[tuple[str, str], ...]:
    """(node path, first container's image) of each surviving, readable static Pod manifest."""
    out: list[tuple[str, str]] = []
    for path in root.walk(MANIFESTS_DIR):
        data = root.read(path) if path.suffix == ".yaml" and _is_file(root, path) else None
        if data is None:
            continue
        with contextlib.suppress(KubereviveError, KeyError, IndexError, TypeError):
            out.append((str(path), str(parse_manifest(data)["spec"]["containers"][0]["image"])))
    return tuple(sorted(out))


def _is_file(root: NodeRoot, node_path: PurePosixPath) -> bool:
    st = root.stat(node_path)
    return st is not None and stat.S_ISREG(st.st_mode)


def gather_evidence(node: LocalHost, memo: dict[str, Any] | None = None) -> NodeEvidence:
    """What survives on the node; units, images and addresses only when ``node`` is live.

    ``memo``: what the node's programs said about its addresses, images and kubelet version (``ip``, ``crictl
    images``, ``kubelet --version``: 0.1-0.3 s each on a loaded node, asked side by side), kept there and taken from
    there on the next call with the same dict. ``recover --apply`` plans again under the node's lock when another
    run changed the journal meanwhile and passes one dict for both: nothing that can take the lock in between
    (generate, certs renew, ca extend, another recover) changes those. Files and the kubelet's state are always read
    anew."""
    memo = {} if memo is None else memo
    root, live = node.root, node.live
    flags_text = root.read(KUBEADM_FLAGS)
    flags = parse_kubeadm_flags(flags_text.decode(errors="replace")) if flags_text is not None else ()
    cri = next((v for k, v in flags if k == "container-runtime-endpoint"), None)
    # the programs answer side by side (each is mostly a process starting), while the files are read here
    asks: dict[str, Callable[[], Any]] = {
        "addresses": node.addresses,
        f"images {cri}": lambda: node.images(cri),
        "kubelet_version": node.kubelet_version,
    }
    with ThreadPoolExecutor(max_workers=len(asks) + 1) as pool:
        pending = {key: pool.submit(ask) for key, ask in asks.items() if key not in memo}
        kubelet_active = pool.submit(node.unit_active, "kubelet")
        facts = nodefacts.detect(root, live=live)
        host = nodefacts.hostname(root, live=live)
        kubelet_cfg = root.read(KUBELET_CONFIG)
        instance_cfg = root.read(KUBELET_INSTANCE_CONFIG)
        memo.update({key: future.result() for key, future in pending.items()})
        active = kubelet_active.result()
    pod_logs = root.host_path(POD_LOGS)
    files = tuple(sorted(str(p) for p in root.walk(KUBERNETES_DIR) if _is_file(root, p)))
    return NodeEvidence(
        hostname=facts.hostname,
        hostname_source=host.source,
        hostname_borrowed=host.borrowed,
        kubelet_config_yaml=kubelet_cfg.decode(errors="replace") if kubelet_cfg is not None else None,
        kubelet_instance_config_yaml=instance_cfg.decode(errors="replace") if instance_cfg is not None else None,
        kubeadm_flags=flags,
        kubeadm_flags_present=flags_text is not None,
        kubelet_client_cn=client_cn(root.read(KUBELET_CLIENT_CURRENT)),
        etcd_data_dirs=tuple(d for d in ETCD_DATA_CANDIDATES if root.host_path(f"{d}/member").is_dir()),
        static_pod_log_dirs=tuple(sorted(p.name for p in pod_logs.iterdir())) if pod_logs.is_dir() else (),
        addresses=memo["addresses"],
        default_address=facts.default_address if live else None,
        images=memo[f"images {cri}"],
        kubelet_version=memo["kubelet_version"],
        manifest_images=_manifest_images(root),
        kubelet_active=active,
        kubernetes_files=files,
    )
