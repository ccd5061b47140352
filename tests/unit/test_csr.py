"""Kubelet serving-CSR approval decision, with real PKCS#10 requests made here with cryptography.

The CSR objects have the shape a v1.33 kubelet with ``serverTLSBootstrap: true`` creates: ECDSA P-256
key, subject ``O=system:nodes, CN=system:node:<name>``, SANs = the node's Hostname and InternalIP
addresses, usages ``digital signature`` + ``server auth`` (``key encipherment`` only for RSA keys).
"""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from kuberevive.core.csr import NodeIdentity, approval_condition, decide, decide_all

KEY = ec.generate_private_key(ec.SECP256R1())

WORKER1 = {
    "metadata": {"name": "worker1"},
    "status": {
        "addresses": [
            {"type": "InternalIP", "address": "172.30.0.12"},
            {"type": "Hostname", "address": "worker1"},
        ]
    },
}
CP1 = {
    "metadata": {"name": "cp1"},
    "status": {
        "addresses": [
            {"type": "InternalIP", "address": "172.30.0.11"},
            {"type": "ExternalIP", "address": "2001:db8::11"},
            {"type": "Hostname", "address": "cp1"},
            {"type": "InternalDNS", "address": "cp1.lab.example"},
        ]
    },
}
NODES = [NodeIdentity.from_node(WORKER1), NodeIdentity.from_node(CP1)]


def make_request(
    cn: str = "system:node:worker1",
    orgs: tuple[str, ...] = ("system:nodes",),
    dns: tuple[str, ...] = ("worker1",),
    ips: tuple[str, ...] = ("172.30.0.12",),
    extra_san: list[x509.GeneralName] | None = None,
    key: Any = KEY,
    extra_subject: list[x509.NameAttribute[str]] | None = None,
) -> bytes:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs += [x509.NameAttribute(NameOID.COMMON_NAME, cn)] + (extra_subject or [])
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    names += extra_san or []
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def make_csr(
    pem: bytes | None = None,
    username: str = "system:node:worker1",
    groups: tuple[str, ...] = ("system:nodes", "system:authenticated"),
    signer: str = "kubernetes.io/kubelet-serving",
    usages: tuple[str, ...] = ("digital signature", "server auth"),
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": "csr-abcde", "generateName": "csr-"},
        "spec": {
            "groups": list(groups),
            "request": base64.b64encode(pem if pem is not None else make_request()).decode(),
            "signerName": signer,
            "usages": list(usages),
            "username": username,
        },
        "status": status or {},
    }


def test_a_kubelet_serving_csr_matching_its_node_is_approved():
    d = decide(make_csr(), NODES)
    assert d.approve, d.reasons
    assert d.node == "worker1" and d.reasons == ()
    assert d.requested_ips == ("172.30.0.12",) and d.requested_dns == ("worker1",)
    assert d.summary() == "CSR csr-abcde: approve (kubelet serving certificate of node worker1)"
    cond = approval_condition(d, "2026-11-25T18:00:00Z")
    assert cond["type"] == "Approved" and cond["status"] == "True"


def test_rsa_key_with_key_encipherment_ipv6_and_internal_dns_is_approved():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = make_request(
        cn="system:node:cp1", dns=("cp1", "CP1.lab.example"), ips=("172.30.0.11", "2001:db8::11"), key=rsa_key
    )
    usages = ("key encipherment", "digital signature", "server auth")
    d = decide(make_csr(pem, username="system:node:cp1", usages=usages), NODES)
    assert d.approve, d.reasons


def _refused(csr: dict[str, Any]) -> tuple[str, ...]:
    d = decide(csr, NODES)
    assert not d.approve
    assert d.summary().startswith("CSR csr-abcde: left pending: ")
    return d.reasons


def test_wrong_signer_is_refused():
    assert _refused(make_csr(signer="kubernetes.io/kube-apiserver-client-kubelet")) == (
        "signer is 'kubernetes.io/kube-apiserver-client-kubelet', not kubernetes.io/kubelet-serving",
    )


def test_requester_not_a_node_is_refused():
    reasons = _refused(make_csr(username="system:serviceaccount:kube-system:default"))
    assert "requester 'system:serviceaccount:kube-system:default' is not a node (system:node:<name>)" in reasons


def test_requester_without_the_nodes_group_is_refused():
    assert _refused(make_csr(groups=("system:authenticated",))) == ("requester is not in the system:nodes group",)


def test_unknown_node_is_refused():
    pem = make_request(cn="system:node:intruder")
    reasons = _refused(make_csr(pem, username="system:node:intruder"))
    assert reasons == ("no Node named 'intruder' exists",)


def test_another_nodes_name_in_the_subject_is_refused():
    # worker1 asks for a certificate in cp1's name
    pem = make_request(cn="system:node:cp1", dns=("worker1",), ips=("172.30.0.12",))
    assert _refused(make_csr(pem)) == ("subject CN ['system:node:cp1'] is not the requester 'system:node:worker1'",)


def test_wrong_organisation_is_refused():
    pem = make_request(orgs=("system:masters",))
    assert _refused(make_csr(pem)) == ("subject O ['system:masters'] is not ['system:nodes']",)


def test_extra_subject_attributes_are_refused():
    pem = make_request(extra_subject=[x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "x")])
    assert _refused(make_csr(pem)) == ("subject has other attributes: OU=x",)


def test_an_ip_of_another_node_is_refused():
    pem = make_request(ips=("172.30.0.12", "172.30.0.11"))
    assert _refused(make_csr(pem)) == ("IP 172.30.0.11 is not an address of Node worker1",)


def test_a_foreign_dns_name_is_refused():
    pem = make_request(dns=("worker1", "kubernetes.default.svc"))
    assert _refused(make_csr(pem)) == ("DNS name kubernetes.default.svc is not a hostname of Node worker1",)


def test_email_and_uri_sans_are_refused():
    pem = make_request(extra_san=[x509.RFC822Name("a@example.com"), x509.UniformResourceIdentifier("spiffe://x/y")])
    reasons = _refused(make_csr(pem))
    assert reasons == (
        "the request has a RFC822Name SAN ('a@example.com'); only DNS and IP are allowed",
        "the request has a UniformResourceIdentifier SAN ('spiffe://x/y'); only DNS and IP are allowed",
    )


def test_no_san_at_all_is_refused():
    pem = make_request(dns=(), ips=())
    assert _refused(make_csr(pem)) == ("the request names no DNS name or IP address",)


def test_client_auth_usage_is_refused_and_missing_server_auth_too():
    reasons = _refused(make_csr(usages=("digital signature", "client auth")))
    assert reasons == ("usages lack server auth", "usages include client auth")


def test_garbage_and_tampered_requests_are_refused():
    assert _refused(make_csr(b"not a pem")) == ("spec.request is not exactly one PEM CERTIFICATE REQUEST",)
    csr = make_csr()
    csr["spec"]["request"] = "@@@"
    assert _refused(csr) == ("spec.request is not base64",)
    # two requests in one PEM
    assert _refused(make_csr(make_request() + make_request())) == (
        "spec.request is not exactly one PEM CERTIFICATE REQUEST",
    )
    # signed by another key than the one inside: swap the public key bytes of two requests
    other = ec.generate_private_key(ec.SECP256R1())
    good = x509.load_pem_x509_csr(make_request()).public_bytes(serialization.Encoding.DER)
    pub_a = KEY.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pub_b = other.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    tampered_der = good.replace(pub_a, pub_b)
    assert tampered_der != good
    tampered = b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(tampered_der)
    tampered += b"-----END CERTIFICATE REQUEST-----\n"
    assert _refused(make_csr(tampered)) == ("the request's signature does not match its public key",)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ({"conditions": [{"type": "Approved", "status": "True"}]}, "it is already approved"),
        ({"conditions": [{"type": "Denied", "status": "True"}]}, "it is already denied"),
        ({"certificate": "Zm9v"}, "it already has a certificate"),
    ],
)
def test_decided_csrs_are_not_touched(status, reason):
    assert _refused(make_csr(status=status)) == (reason,)


def test_decide_all_ignores_other_signers_and_never_approves_a_refusal():
    client = make_csr(signer="kubernetes.io/kube-apiserver-client-kubelet")
    decisions = decide_all([client, make_csr(), make_csr(username="system:node:worker9")], [WORKER1, CP1])
    assert [d.approve for d in decisions] == [True, False]
    with pytest.raises(ValueError):
        approval_condition(decisions[1], "2026-11-25T18:00:00Z")
