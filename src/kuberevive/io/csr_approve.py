"""Review and approve kubelet serving-certificate CSRs through the API (decisions: ``kuberevive.core.csr``).

``review_serving_csrs(api)`` lists CSRs and Nodes and returns one decision per pending or decided
``kubernetes.io/kubelet-serving`` CSR. ``approve_csrs(api, decisions)`` approves only the decisions
with ``approve=True`` (``PUT .../certificatesigningrequests/<name>/approval``, with the
resourceVersion that was read, so a CSR changed meanwhile is not approved blindly); refused CSRs are
never touched, never denied: they stay pending for a human, with the reasons in the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kuberevive.core.csr import CsrDecision, approval_condition, decide_all
from kuberevive.errors import KubeApiError
from kuberevive.io.kubeapi import KubeApi
from kuberevive.model.document import rfc3339

CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


@dataclass(frozen=True)
class Approval:
    name: str
    ok: bool
    message: str


def review_serving_csrs(api: KubeApi) -> tuple[list[CsrDecision], dict[str, dict[str, Any]]]:
    """(decisions, the CSR objects by name) for every kubelet-serving CSR in the cluster."""
    csrs = api.get(CSR_PATH).get("items") or []
    nodes = api.get("/api/v1/nodes").get("items") or []
    return decide_all(csrs, nodes), {str(c["metadata"]["name"]): c for c in csrs}


def approve_csrs(
    api: KubeApi, decisions: list[CsrDecision], objects: dict[str, dict[str, Any]], now: datetime | None = None
) -> list[Approval]:
    stamp = rfc3339(now or datetime.now(UTC))
    out: list[Approval] = []
    for d in decisions:
        if not d.approve:
            continue
        obj = dict(objects[d.name])
        status = dict(obj.get("status") or {})
        status["conditions"] = [*(status.get("conditions") or []), approval_condition(d, stamp)]
        obj["status"] = status
        try:
            api.replace(f"{CSR_PATH}/{d.name}/approval", obj)
        except KubeApiError as exc:
            if exc.status == 409:
                out.append(Approval(d.name, False, f"CSR {d.name} changed while reviewing it; review again"))
            else:
                out.append(Approval(d.name, False, str(exc)))
            continue
        out.append(Approval(d.name, True, d.summary()))
    return out
