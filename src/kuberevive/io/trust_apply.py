"""Read the CA-derived objects from the cluster and apply a :class:`~kuberevive.core.trust.TrustPlan`.

``read_trust_plan(api, ca_pem, front_proxy_ca_pem)`` = read + :func:`kuberevive.core.trust.plan_trust`.
``apply_trust_plan(api, plan)`` writes each ``update``/``create`` change: a JSON merge patch of the
changed data keys carrying the ``resourceVersion`` that was read (so a concurrent writer makes it
fail with a conflict instead of being overwritten); ``report`` changes are returned untouched for a
human. A failure on one object never stops the others; the outcome lists each object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kuberevive.core import trust
from kuberevive.errors import KubeApiError
from kuberevive.io.kubeapi import KubeApi


def _cm_path(namespace: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    return base if name is None else f"{base}/{name}"


def read_trust_plan(
    api: KubeApi, ca_pem: bytes, front_proxy_ca_pem: bytes | None, expected_server: str | None = None
) -> trust.TrustPlan:
    """What the cluster's CA-derived objects need for these CAs (reads only)."""
    extension_auth = api.get_or_none(_cm_path(*trust.EXTENSION_AUTH))
    cluster_info = api.get_or_none(_cm_path(*trust.CLUSTER_INFO))
    namespaces = api.get("/api/v1/namespaces").get("items") or []
    root_cas = api.get("/api/v1/configmaps", fieldSelector=f"metadata.name={trust.ROOT_CA_NAME}").get("items") or []
    return trust.plan_trust(
        ca_pem=ca_pem,
        front_proxy_ca_pem=front_proxy_ca_pem,
        extension_auth=extension_auth,
        cluster_info=cluster_info,
        namespaces=namespaces,
        root_ca_configmaps=root_cas,
        expected_server=expected_server,
    )


@dataclass(frozen=True)
class Applied:
    ref: str
    action: str
    ok: bool
    message: str


def apply_trust_plan(api: KubeApi, plan: trust.TrustPlan) -> list[Applied]:
    """Apply every ``update``/``create``; ``report`` entries come back with ``ok=False`` and their reasons."""
    out: list[Applied] = []
    for change in plan.changes:
        if change.action == "report":
            out.append(Applied(change.ref, change.action, False, "; ".join(change.reasons)))
            continue
        try:
            if change.action == "create":
                obj = {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": change.name, "namespace": change.namespace},
                    "data": dict(change.data),
                }
                api.create(_cm_path(change.namespace), obj)
            else:
                patch: dict[str, Any] = {"data": dict(change.data)}
                if change.resource_version:
                    patch["metadata"] = {"resourceVersion": change.resource_version}
                api.patch(_cm_path(change.namespace, change.name), patch, "merge")
        except KubeApiError as exc:
            if exc.status == 409:
                message = f"{change.ref} changed or appeared while planning; run the trust step again"
            elif exc.status == 404:
                message = f"{change.ref} disappeared while planning; run the trust step again"
            else:
                message = str(exc)
            out.append(Applied(change.ref, change.action, False, message))
            continue
        out.append(Applied(change.ref, change.action, True, "; ".join(change.reasons)))
    return out
