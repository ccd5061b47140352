"""``kuberevive diagnose`` on the real lab: healthy, on the worker, and after ``rm -rf /etc/kubernetes`` on cp1.

Run with your own lab instance, e.g. ``KUBEREVIVE_LAB_INSTANCE=1 python -m pytest tests/lab/test_diagnose_lab.py``.
The destructive test is last and leaves a fresh healthy lab behind (``lab.down(); lab.up()``).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import pytest

from kuberevive.lab import Lab
from tests.lab.conftest import OnNode

pytestmark = pytest.mark.lab


def diagnose(on_node: OnNode, node: str, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = on_node(node, "kuberevive", "diagnose", "--json", *extra, check=False, timeout=180)
    assert proc.returncode in (0, 1, 2, 3), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def check_expiration(on_node: OnNode) -> dict[str, str]:
    """``kubeadm certs check-expiration``: name -> "Nov 25, 2027 17:42 UTC" (both tables)."""
    out = on_node("cp1", "kubeadm", "certs", "check-expiration").stdout
    rows: dict[str, str] = {}
    for line in out.splitlines():
        m = re.match(r"^(\S+)\s+([A-Z][a-z]{2} \d{2}, \d{4} \d{2}:\d{2} UTC)\s", line)
        if m:
            rows[m.group(1)] = m.group(2)
    assert len(rows) == 14, out  # 11 certificates + 3 CAs
    return rows


def as_kubeadm_date(iso: str) -> str:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").strftime("%b %d, %Y %H:%M UTC")


def test_healthy_control_plane(lab: Lab, on_node: OnNode):
    code, data = diagnose(on_node, "cp1")
    bad = [f for f in data["findings"] if f["severity"] in ("warning", "error")]
    assert (code, data["status"], bad) == (0, "healthy", [])
    assert data["node"]["role"] == "control-plane"
    assert data["ca_verdict"]["keep"] is True
    assert data["config"]["kind"] == "node"
    assert (data["config"]["node_name"], data["config"]["advertise_address"]) == (
        "cp1",
        data["node"]["addresses"][0].split()[0],
    )

    ours: dict[str, str] = {}
    for f in data["findings"]:
        if f["id"] == "cert.ok":
            ours[f["details"]["name"]] = as_kubeadm_date(f["details"]["not_after"])
        if f["id"] == "kubeconfig.ok" and f["details"]["name"] != "kubelet.conf":
            ours[f["details"]["name"]] = as_kubeadm_date(f["details"]["not_after"])
    assert ours == check_expiration(on_node)

    by_id = {f["id"]: f for f in data["findings"]}
    assert by_id["recovery.etcd-data"]["details"]["member_names"] == ["cp1"]
    assert f"registry.k8s.io/kube-apiserver:v{lab.cfg.k8s_version}" in by_id["recovery.images"]["details"]["images"]
    assert by_id["cluster.cluster-info-ca"]["severity"] == "ok"


def test_worker_finds_its_ca_copy(on_node: OnNode):
    code, data = diagnose(on_node, "worker1")
    assert data["node"]["role"] == "worker"
    copies = {f["subject"]: f for f in data["findings"] if f["id"] == "recovery.ca-copy"}
    assert "/etc/kubernetes/pki/ca.crt" in copies
    cp_ca = on_node("cp1", "cat", "/etc/kubernetes/pki/ca.crt").stdout
    worker_ca = on_node("worker1", "cat", "/etc/kubernetes/pki/ca.crt").stdout
    assert cp_ca == worker_ca
    assert code == 0, [f for f in data["findings"] if f["severity"] in ("warning", "error")]


def test_after_losing_etc_kubernetes(lab: Lab, on_node: OnNode):
    """Destructive: the lab is rebuilt afterwards so that later tests get a healthy one."""
    try:
        on_node("cp1", "rm", "-rf", "/etc/kubernetes")
        code, data = diagnose(on_node, "cp1")
        assert code == 2 and data["status"] == "errors"
        assert data["node"]["role"] == "control-plane"
        subjects = {(f["id"], f["subject"]) for f in data["findings"]}
        for path in ("/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key", "/etc/kubernetes/admin.conf"):
            assert ("file.missing", path) in subjects
        assert ("file.missing", "/etc/kubernetes/manifests/kube-apiserver.yaml") in subjects
        by_id = {f["id"]: f for f in data["findings"]}
        etcd = by_id["recovery.etcd-data"]
        assert (etcd["subject"], etcd["details"]["member_names"]) == ("/var/lib/etcd", ["cp1"])
        assert etcd["details"]["size_bytes"] > 0
        client = by_id["recovery.kubelet-client-cert"]
        assert (client["details"]["cert_subject"], client["details"]["issuer"]) == ("system:node:cp1", "kubernetes")
        assert by_id["recovery.kubelet-serving-cert"]["details"]["issuer"].startswith("cp1-ca@")
        assert "recovery.ca-new" in by_id and data["ca_verdict"]["keep"] is False
        assert by_id["recovery.kubelet-file"]["severity"] == "ok"
    finally:
        lab.down()
        lab.up()
