"""Kubelet serving CSRs on the lab's real API: made by worker1 with its own kubelet client
certificate, as a kubelet with ``serverTLSBootstrap: true`` does; kuberevive approves the honest one
(and kube-controller-manager's signer then issues it) and leaves a spoofed one pending."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import re
import time
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kuberevive.errors import KubeApiError
from kuberevive.io.csr_approve import CSR_PATH, approve_csrs, review_serving_csrs
from kuberevive.io.kubeapi import KubeApi
from kuberevive.lab import Lab

from .conftest import OnNode

pytestmark = pytest.mark.lab


def _request(ips: list[str]) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, "system:node:worker1"),
        ]
    )
    sans: list[x509.GeneralName] = [x509.DNSName("worker1")] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode()


@pytest.fixture
def apis(lab: Lab, on_node: OnNode) -> Iterator[tuple[KubeApi, KubeApi, list[str]]]:
    admin = KubeApi.from_kubeconfig(on_node("cp1", "cat", "/etc/kubernetes/admin.conf").stdout)
    pem = on_node("worker1", "cat", "/var/lib/kubelet/pki/kubelet-client-current.pem").stdout
    cert = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", pem, re.S)
    key = re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----\n", pem, re.S)
    assert cert and key
    ca = on_node("cp1", "cat", "/etc/kubernetes/pki/ca.crt").stdout.encode()
    node = KubeApi(admin.server, ca, cert.group(0).encode(), key.group(0).encode())
    created: list[str] = []
    yield admin, node, created
    for name in created:
        with contextlib.suppress(KubeApiError):
            admin.delete(f"{CSR_PATH}/{name}")


def test_honest_csr_is_approved_and_issued_spoofed_one_stays_pending(lab: Lab, apis):
    admin, node, created = apis
    worker_ip, cp_ip = lab.cfg.node("worker1").ip, lab.cfg.node("cp1").ip
    names = {}
    for label, ips in (("honest", [worker_ip]), ("spoofed", [worker_ip, cp_ip])):
        obj = node.create(
            CSR_PATH,
            {
                "apiVersion": "certificates.k8s.io/v1",
                "kind": "CertificateSigningRequest",
                "metadata": {"generateName": f"kr-test-{label}-"},
                "spec": {
                    "request": _request(ips),
                    "signerName": "kubernetes.io/kubelet-serving",
                    "usages": ["digital signature", "server auth"],
                },
            },
        )
        names[label] = obj["metadata"]["name"]
        created.append(names[label])

    decisions, objects = review_serving_csrs(admin)
    by_name = {d.name: d for d in decisions}
    honest, spoofed = by_name[names["honest"]], by_name[names["spoofed"]]
    assert honest.approve, honest.reasons  # the API filled in username/groups from worker1's client cert
    assert not spoofed.approve
    assert spoofed.reasons == (f"IP {cp_ip} is not an address of Node worker1",)

    results = approve_csrs(admin, [honest, spoofed], objects)
    assert [(r.name, r.ok) for r in results] == [(names["honest"], True)]

    def issued() -> bool:
        return bool(admin.get(f"{CSR_PATH}/{names['honest']}").get("status", {}).get("certificate"))

    deadline = time.monotonic() + 30
    while not issued():
        assert time.monotonic() < deadline, "kube-controller-manager did not sign the approved CSR"
        time.sleep(0.5)
    cert = x509.load_pem_x509_certificate(
        base64.b64decode(admin.get(f"{CSR_PATH}/{names['honest']}")["status"]["certificate"])
    )
    assert cert.subject.rfc4514_string() == "CN=system:node:worker1,O=system:nodes"
    left = admin.get(f"{CSR_PATH}/{names['spoofed']}")
    assert not (left.get("status") or {}).get("conditions")  # still pending, not denied
