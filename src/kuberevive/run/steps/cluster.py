"""Steps 12-15: the cluster's own records of the control plane (kubeadm-config, cluster-info, a bootstrap token)
and this node Ready again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePosixPath

from kuberevive.core import recover as core
from kuberevive.core import uploadcerts
from kuberevive.core.kubeconfig import control_plane_url
from kuberevive.core.retrust import ready_since
from kuberevive.errors import PlanError
from kuberevive.run.context import StepContext
from kuberevive.waiting import QUICK, wait_for

NODE_TIMEOUT = 240.0
SIGNER_TIMEOUT = 180.0
CLUSTER_INFO = "/api/v1/namespaces/kube-public/configmaps/cluster-info"
SECRETS = "/api/v1/namespaces/kube-system/secrets"
RBAC = "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system"


def upload_config(ctx: StepContext, i: int) -> None:
    api = ctx.api()
    stored = ctx.journal.config
    if stored is None:
        raise PlanError("the journal has no stored configuration although read-config is done", "run again")
    for name, key, value in (
        ("kubeadm-config", "ClusterConfiguration", stored.cluster),
        ("kubelet-config", "kubelet", stored.kubelet),
    ):
        if value is None:
            continue
        done = api.ensure_configmap_data("kube-system", name, {key: value})
        said = {"created": "created (was missing)", "updated": "restored to the stored content"}
        ctx.progress(f"      kube-system/{name}: {said.get(done, done)}")


def cluster_info_value(ctx: StepContext) -> str:
    ca, _key = ctx.ca_pair()
    return core.cluster_info_kubeconfig(control_plane_url(ctx.final_cfg()), ca)


def cluster_info(ctx: StepContext, i: int) -> None:
    api = ctx.api()
    value = cluster_info_value(ctx)
    if api.ensure_configmap_data("kube-public", "cluster-info", {"kubeconfig": value}) == "updated":
        ctx.progress("      kube-public/cluster-info: kubeconfig now carries the new CA")


def bootstrap_token(ctx: StepContext, i: int) -> None:
    api = ctx.api()
    token = ctx.journal.require_token()
    api.create_or_replace(SECRETS, core.bootstrap_token_secret(token, ctx.utcnow()))
    token_id = token.partition(".")[0]
    value = cluster_info_value(ctx)
    ctx.faults.mid(i)
    # sign cluster-info here instead of waiting for the controller-manager's bootstrap signer (17-21 s in the
    # lab): the signature is deterministic (core.jws_signature), the signer computes the same string and leaves
    # an equal one alone; the kubeconfig goes in the same patch, so the signature always covers what is stored
    key = f"jws-kubeconfig-{token_id}"
    api.patch(CLUSTER_INFO, {"data": {"kubeconfig": value, key: core.jws_signature(value, token)}})

    def signed() -> tuple[bool, str]:
        data = api.get(CLUSTER_INFO).get("data") or {}
        sig = data.get(key)
        if sig is None:
            return False, "no signature yet"
        ok = core.jws_signature_ok(sig, data.get("kubeconfig", ""), token) and data.get("kubeconfig") == value
        return ok, "signature does not match yet"

    # at once unless the signer, its Secret cache behind, dropped it for a moment (it adds it back)
    wait_for("the signature of cluster-info for the new token", SIGNER_TIMEOUT, signed, 1.0)


def node_ready(ctx: StepContext, i: int) -> None:
    api = ctx.api()
    name = ctx.identity.node_name
    since = datetime.fromtimestamp((ctx.journal.timing("kubelet_restarted") or ctx.clock()) - 2, UTC)
    wait_for(
        f"node {name} Ready",
        NODE_TIMEOUT,
        lambda: ready_since(api.get(f"/api/v1/nodes/{name}"), since),
        QUICK,
        clock=ctx.monotonic,
        sleep=ctx.sleep,
    )


def upload_certs(ctx: StepContext) -> None:
    """With a controlPlaneEndpoint, what ``kubeadm init phase upload-certs --upload-certs`` does, for the
    control-plane join command the recovery prints (:mod:`kuberevive.core.uploadcerts`): a fresh certificate key
    (kept in the journal until the end, so a resumed run uploads under the same key), a TTL token, the
    kubeadm-certs Secret it owns, and the Role and RoleBinding that let joining nodes read it."""
    cfg = ctx.final_cfg()
    if not cfg.cluster.control_plane_endpoint:
        return
    j = ctx.journal
    if not j.certificate_key:
        j.certificate_key = uploadcerts.new_certificate_key(ctx.fx.random_bytes)
        j.save()
    api = ctx.api()
    ttl_token = core.new_bootstrap_token(ctx.fx.random_bytes)
    owner = api.create_or_replace(SECRETS, uploadcerts.ttl_token_secret(ttl_token, ctx.utcnow()))
    pki = PurePosixPath(cfg.cluster.certificates_dir)
    files = {name: ctx.root.read(pki / name) for name in uploadcerts.TRANSFERRED}
    api.create_or_replace(SECRETS, uploadcerts.certs_secret(files, j.certificate_key, ctx.fx.random_bytes, owner))
    api.create_or_replace(f"{RBAC}/roles", uploadcerts.role())
    api.create_or_replace(f"{RBAC}/rolebindings", uploadcerts.role_binding())
    ctx.progress(
        f"      kube-system/{uploadcerts.SECRET_NAME}: the control plane's certificates for 'kubeadm join "
        f"--control-plane', sealed with a fresh certificate key (deleted with its token in {uploadcerts.TTL})"
    )
