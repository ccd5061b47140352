"""Node-side process control and evidence for ``recover``: systemctl, the kubelet, crictl, interfaces.

Commands run on the node itself (this process must run there, as root); files are read through the
:class:`NodeRoot` prefix so evidence gathering is testable on a copied tree.
"""

from __future__ import annotations

import json
import shlex
import stat
from pathlib import PurePosixPath

from cryptography import x509
from cryptography.x509.oid import NameOID

from kuberevive.errors import PlanError
from kuberevive.io import nodefacts
from kuberevive.io.noderoot import NodeRoot
from kuberevive.io.process import try_run
from kuberevive.model.paths import (
    ETCD_DATA_DIR,
    KUBEADM_FLAGS,
    KUBELET_CLIENT_CURRENT,
    KUBELET_CONFIG,
    KUBERNETES_DIR,
    POD_LOGS,
)
from kuberevive.model.recover import NodeEvidence

ETCD_DATA_CANDIDATES = (str(ETCD_DATA_DIR),)


_run = try_run  # None when the program is missing, cannot start or times out


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


def _client_cn(data: bytes | None) -> str | None:
    if not data:
        return None
    try:
        cert = x509.load_pem_x509_certificate(data)
        attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else None
    except ValueError:
        return None


def global_addresses() -> tuple[str, ...]:
    proc = _run(["ip", "-j", "addr", "show"], timeout=5)
    if proc is None or proc.returncode != 0:
        return ()
    try:
        links = json.loads(proc.stdout or "[]")
    except ValueError:
        return ()
    return tuple(
        str(info["local"])
        for link in links
        for info in link.get("addr_info", [])
        if info.get("scope") == "global" and info.get("local")
    )


def runtime_images(cri_socket: str | None) -> tuple[str, ...]:
    argv = ["crictl"] + (["--runtime-endpoint", cri_socket] if cri_socket else []) + ["images", "-o", "json"]
    proc = _run(argv, timeout=20)
    if proc is None or proc.returncode != 0:
        return ()
    try:
        images = json.loads(proc.stdout).get("images") or []
    except ValueError:
        return ()
    return tuple(sorted(t for i in images for t in i.get("repoTags") or []))


def kubelet_version() -> str | None:
    proc = _run(["kubelet", "--version"], timeout=10)
    if proc is None or proc.returncode != 0:
        return None
    words = proc.stdout.split()
    return words[-1] if words and words[-1].startswith("v") else None


def _is_file(root: NodeRoot, node_path: PurePosixPath) -> bool:
    st = root.stat(node_path)
    return st is not None and stat.S_ISREG(st.st_mode)


def gather_evidence(root: NodeRoot) -> NodeEvidence:
    facts = nodefacts.detect(root)
    host = nodefacts.hostname(root)
    flags_text = root.read(KUBEADM_FLAGS)
    flags = parse_kubeadm_flags(flags_text.decode(errors="replace")) if flags_text is not None else ()
    kubelet_cfg = root.read(KUBELET_CONFIG)
    cri = next((v for k, v in flags if k == "container-runtime-endpoint"), None)
    pod_logs = root.host_path(POD_LOGS)
    files = tuple(sorted(str(p) for p in root.walk(KUBERNETES_DIR) if _is_file(root, p)))
    is_root = root.prefix == root.prefix.parent
    return NodeEvidence(
        hostname=facts.hostname,
        hostname_source=host.source,
        hostname_borrowed=host.borrowed,
        kubelet_config_yaml=kubelet_cfg.decode(errors="replace") if kubelet_cfg is not None else None,
        kubeadm_flags=flags,
        kubeadm_flags_present=flags_text is not None,
        kubelet_client_cn=_client_cn(root.read(KUBELET_CLIENT_CURRENT)),
        etcd_data_dirs=tuple(d for d in ETCD_DATA_CANDIDATES if root.host_path(f"{d}/member").is_dir()),
        static_pod_log_dirs=tuple(sorted(p.name for p in pod_logs.iterdir())) if pod_logs.is_dir() else (),
        addresses=global_addresses() if is_root else (),
        default_address=facts.default_address if is_root else None,
        images=runtime_images(cri) if is_root else (),
        kubelet_version=kubelet_version() if is_root else None,
        kubelet_active=systemctl_is_active("kubelet") if is_root else False,
        kubernetes_files=files,
    )


def systemctl_is_active(unit: str) -> bool:
    proc = _run(["systemctl", "is-active", unit], timeout=10)
    return proc is not None and proc.stdout.strip() in ("active", "activating")


def systemctl_restart(unit: str) -> None:
    proc = _run(["systemctl", "restart", unit], timeout=60)
    if proc is None:
        raise PlanError("systemctl is not available on this node", f"restart {unit} by hand, then run recover again")
    if proc.returncode != 0:
        raise PlanError(
            f"'systemctl restart {unit}' failed: {(proc.stderr or proc.stdout).strip()[:200]}",
            f"check 'systemctl status {unit}', then run recover again",
        )


def container_created_at(name: str, cri_socket: str | None = None) -> float | None:
    """When the newest running container called ``name`` was created (UNIX seconds), from crictl."""
    argv = ["crictl"] + (["--runtime-endpoint", cri_socket] if cri_socket else []) + ["ps", "-o", "json"]
    proc = _run([*argv, "--name", f"^{name}$"], timeout=20)
    if proc is None or proc.returncode != 0:
        return None
    try:
        items = json.loads(proc.stdout).get("containers") or []
        stamps = [int(c["createdAt"]) / 1e9 for c in items if c.get("createdAt")]
    except (ValueError, KeyError, TypeError):
        return None
    return max(stamps) if stamps else None


def stop_containers(name: str, cri_socket: str | None = None) -> int:
    """Stop the running containers called ``name`` (the kubelet starts them again from their static
    Pod, reading the certificate files anew); returns how many were stopped."""
    base = ["crictl"] + (["--runtime-endpoint", cri_socket] if cri_socket else [])
    proc = _run([*base, "ps", "-q", "--name", f"^{name}$"], timeout=20)
    if proc is None or proc.returncode != 0:
        return 0
    ids = proc.stdout.split()
    for cid in ids:
        _run([*base, "stop", cid], timeout=60)
    return len(ids)
