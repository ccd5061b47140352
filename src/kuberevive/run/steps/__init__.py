"""The recovery's steps: :data:`STEPS` maps every step id of the plan (:data:`kuberevive.core.recover.STEP_IDS`)
to its function of a :class:`~kuberevive.run.context.StepContext`. The table is checked when this module is
imported: a step id without a handler, or a handler for no step, is an import error."""

from __future__ import annotations

from kuberevive.core.recover import STEP_IDS
from kuberevive.run.context import StepFn, check_table
from kuberevive.run.steps import cluster, control_plane, etcd, ha, kubelet, nodes, salvage

STEPS: dict[str, StepFn] = {
    "salvage-trust": salvage.salvage_trust,
    "kubelet-via-peer": salvage.kubelet_via_peer,
    "etcd-certs": etcd.etcd_certs,
    "masters-etcd": ha.masters_etcd,
    "etcd-manifest": etcd.etcd_manifest,
    "kubelet-start": kubelet.kubelet_start,
    "etcd-ready": etcd.etcd_ready,
    "etcd-quorum": ha.etcd_quorum,
    "read-config": etcd.read_config,
    "certs": control_plane.certs,
    "kubeconfigs": control_plane.kubeconfigs,
    "kubelet-client": control_plane.kubelet_client,
    "kubelet-restart": control_plane.kubelet_restart,
    "control-plane-manifests": control_plane.control_plane_manifests,
    "api-ready": control_plane.api_ready,
    "admin-check": control_plane.admin_check,
    "masters-control-plane": ha.masters_control_plane,
    "upload-config": cluster.upload_config,
    "cluster-info": cluster.cluster_info,
    "bootstrap-token": cluster.bootstrap_token,
    "node-ready": cluster.node_ready,
    "retrust-nodes": nodes.retrust_nodes,
    "serving-csrs": nodes.serving_csrs,
    "trust-objects": nodes.trust_objects,
    "sa-tokens": nodes.sa_tokens,
    "remove-guard": nodes.remove_guard,
    "masters-controller-managers": ha.masters_controller_managers,
    "report": nodes.report,
}


check_table(STEPS, STEP_IDS)

__all__ = ["STEPS", "check_table"]
