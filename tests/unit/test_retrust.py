"""Pure re-trust planning (recover part 2): node files, trust checks, readiness, guard round trip."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kuberevive.core import pki
from kuberevive.core import recover as rcore
from kuberevive.core import retrust as core
from kuberevive.core.guard import is_guarded
from kuberevive.core.manifests import parse_manifest
from kuberevive.core.retrust import guard_manifest, unguard_manifest
from kuberevive.model.config import KubeadmConfig
from tests.unit.test_recover import STORED, evidence

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _cfg() -> KubeadmConfig:
    return rcore.final_config(rcore.identify(evidence()), STORED, None)


def _ca(cfg: KubeadmConfig) -> tuple[bytes, bytes]:
    arts = rcore.pki_artifacts(cfg, NOW, {}, {})
    by = {a.path.name: a.content for a in arts}
    return by["ca.crt"], by["ca.key"]


def test_node_trust_files_issue_a_node_client_certificate_from_the_new_ca() -> None:
    cfg = _cfg()
    ca_pem, ca_key = _ca(cfg)
    files = core.node_trust_files(
        cfg, ca_pem, ca_key, "worker7", "https://10.0.0.1:6443", "/etc/kubernetes/pki/ca.crt", NOW, "2026-11-25"
    )
    assert files.pem_path == "/var/lib/kubelet/pki/kubelet-client-2026-11-25.pem"
    assert files.ca_cert == ca_pem and files.ca_path == "/etc/kubernetes/pki/ca.crt"
    cert = x509.load_pem_x509_certificate(files.pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:worker7"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ca = pki.load_certificate(ca_pem, "ca")
    assert pki.verify_signed_by(cert, ca)
    assert cert.not_valid_after_utc == NOW + cfg.cluster.certificate_validity
    key = pki.load_private_key(files.pem, "pem")  # the same pem holds the matching key
    assert pki.key_matches_certificate(key, cert)
    doc = yaml.safe_load(files.kubeconfig)
    assert doc["clusters"][0]["cluster"]["server"] == "https://10.0.0.1:6443"
    assert base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]) == ca_pem
    assert doc["users"][0]["user"] == {
        "client-certificate": core.KUBELET_CLIENT_CURRENT,
        "client-key": core.KUBELET_CLIENT_CURRENT,
    }
    assert doc["users"][0]["name"] == "system:node:worker7"


def test_server_and_client_ca_file_from_the_node_or_defaults() -> None:
    cfg = _cfg()
    ca_pem, ca_key = _ca(cfg)
    files = core.node_trust_files(cfg, ca_pem, ca_key, "w", "https://lb.example:8443", "/x", NOW, "s")
    assert core.kubelet_conf_server(files.kubeconfig, "https://d:6443") == "https://lb.example:8443"
    assert core.kubelet_conf_server(None, "https://d:6443") == "https://d:6443"
    assert core.kubelet_conf_server(b"not: [yaml", "https://d:6443") == "https://d:6443"
    assert core.client_ca_file(None) == "/etc/kubernetes/pki/ca.crt"
    assert core.client_ca_file(b"authentication:\n  x509:\n    clientCAFile: /srv/ca.pem\n") == "/srv/ca.pem"
    assert core.client_ca_file(b"authentication:\n  x509: {}\n") == "/etc/kubernetes/pki/ca.crt"
    assert core.client_ca_file(b"- a list\n") == "/etc/kubernetes/pki/ca.crt"


def _node(status: str, beat: datetime) -> dict[str, Any]:
    return {
        "metadata": {"name": "w"},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": status, "lastHeartbeatTime": beat.strftime("%Y-%m-%dT%H:%M:%SZ")},
            ]
        },
    }


def test_ready_since_needs_a_fresh_heartbeat() -> None:
    since = NOW
    assert core.ready_since(_node("True", NOW + timedelta(seconds=3)), since)[0]
    assert core.ready_since(_node("True", NOW), since)[0]
    ok, why = core.ready_since(_node("True", NOW - timedelta(minutes=10)), since)
    assert not ok and "last heartbeat" in why  # Ready from before the disaster does not count
    assert not core.ready_since(_node("Unknown", NOW + timedelta(seconds=3)), since)[0]
    assert core.ready_since({"status": {}}, since) == (False, "no Ready condition")
    assert core.is_ready(_node("True", NOW)) and not core.is_ready(_node("False", NOW))


def test_guarded_manifest_round_trips_to_kubeadms_bytes() -> None:
    normal = (GOLDEN / "v1.33" / "defaults" / "manifests" / "kube-controller-manager.yaml").read_bytes()
    guarded = guard_manifest(normal)
    assert guarded != normal and is_guarded(parse_manifest(guarded.decode()))
    assert "-taint-eviction-controller" in guarded.decode()
    assert unguard_manifest(guarded) == normal
    assert guard_manifest(guarded) == guarded  # idempotent


def test_eviction_taints_are_only_not_ready_and_unreachable_no_execute() -> None:
    from kuberevive.core.retrust import eviction_taints

    def node(name: str, *taints: tuple[str, str]) -> dict[str, Any]:
        return {"metadata": {"name": name}, "spec": {"taints": [{"key": k, "effect": e} for k, e in taints]}}

    nodes = [
        node("a", ("node.kubernetes.io/unreachable", "NoExecute"), ("node.kubernetes.io/unreachable", "NoSchedule")),
        node("b", ("node.kubernetes.io/not-ready", "NoSchedule")),  # NoSchedule alone evicts nothing
        node("c", ("node-role.kubernetes.io/control-plane", "NoSchedule"), ("example.com/x", "NoExecute")),
        node("d", ("node.kubernetes.io/not-ready", "NoExecute")),
        {"metadata": {"name": "e"}, "spec": {}},
    ]
    assert eviction_taints(nodes) == ["a (node.kubernetes.io/unreachable)", "d (node.kubernetes.io/not-ready)"]


def test_eviction_events_are_taint_evictions_without_their_cancellations() -> None:
    from kuberevive.lab.impact import eviction_events

    def ev(reason: str, message: str, name: str = "labapp-1") -> dict[str, Any]:
        return {"reason": reason, "message": message, "involvedObject": {"namespace": "krlab", "name": name}}

    events = [
        ev("TaintManagerEviction", "Marking for deletion Pod krlab/labapp-1"),
        ev("TaintManagerEviction", "Cancelling deletion of Pod krlab/labapp-2", "labapp-2"),
        ev("Killing", "Stopping container labapp"),
    ]
    assert eviction_events(events) == ["krlab/labapp-1: Marking for deletion Pod krlab/labapp-1"]


def test_a_kubelet_configuration_nested_too_deep_is_read_as_absent_not_a_recursion_error() -> None:
    from kuberevive.core.retrust import DEFAULT_CLIENT_CA_FILE, client_ca_file

    assert client_ca_file(b"[" * 100_000) == DEFAULT_CLIENT_CA_FILE
