"""Restarting a control-plane container that kept files this run replaced (shared by the manifest steps)."""

from __future__ import annotations

from kuberevive.core.manifests import manifest_path
from kuberevive.model.config import KubeadmConfig
from kuberevive.run.context import StepContext


def restart_stale_components(
    ctx: StepContext, cfg: KubeadmConfig, unchanged_manifests: list[str], components: tuple[str, ...]
) -> None:
    """A control-plane container that survived (a partial loss) keeps the certificates and keys it loaded
    at start; when this run replaced any of them and its manifest stayed the same (so the kubelet does not
    restart it), its container is stopped: the kubelet starts it again from the same manifest at once."""
    written = ctx.journal.changed_files
    pki_dir = cfg.cluster.certificates_dir.rstrip("/") + "/"
    pki_changed = any(p.startswith(pki_dir) for p in written)
    inputs = {
        "etcd": any(p.startswith(pki_dir + "etcd/") for p in written),
        "kube-apiserver": pki_changed,
        "kube-controller-manager": pki_changed or "/etc/kubernetes/controller-manager.conf" in written,
        "kube-scheduler": "/etc/kubernetes/scheduler.conf" in written,
    }
    for comp in components:
        stale = inputs[comp] and str(manifest_path(comp)) in unchanged_manifests
        if stale and ctx.host.stop_containers(comp, ctx.identity.cri_socket):
            ctx.progress(f"      {comp} ran with replaced certificates or keys: its container was restarted")
