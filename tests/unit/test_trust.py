"""Trust plan for CA-derived objects, with objects shaped as a v1.33 kubeadm cluster has them."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from kuberevive.core import trust
from kuberevive.core.pki import encode_certificate_pem, new_self_signed_ca

NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)


def _ca(cn: str) -> bytes:
    return encode_certificate_pem(
        new_self_signed_ca(cn, ec.generate_private_key(ec.SECP256R1()), NOW, NOW + timedelta(days=3650))
    )


OLD_CA, NEW_CA = _ca("kubernetes"), _ca("kubernetes")
OLD_FP, NEW_FP = _ca("front-proxy-ca"), _ca("front-proxy-ca")


def cm(ns: str, name: str, data: dict[str, str], rv: str = "100") -> dict[str, Any]:
    return {"kind": "ConfigMap", "metadata": {"namespace": ns, "name": name, "resourceVersion": rv}, "data": data}


def ext_auth(client: bytes, front: bytes) -> dict[str, Any]:
    return cm(
        "kube-system",
        "extension-apiserver-authentication",
        {
            "client-ca-file": client.decode(),
            "requestheader-allowed-names": '["front-proxy-client"]',
            "requestheader-client-ca-file": front.decode(),
            "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
            "requestheader-group-headers": '["X-Remote-Group"]',
            "requestheader-username-headers": '["X-Remote-User"]',
        },
    )


def cluster_info(ca: bytes, server: str = "https://172.30.0.11:6443") -> dict[str, Any]:
    kubeconfig: dict[str, Any] = {
        "apiVersion": "v1",
        "clusters": [
            {"cluster": {"certificate-authority-data": base64.b64encode(ca).decode(), "server": server}, "name": ""}
        ],
        "contexts": None,
        "current-context": "",
        "kind": "Config",
        "preferences": {},
        "users": None,
    }
    return cm(
        "kube-public", "cluster-info", {"jws-kubeconfig-8w0q8d": "eyJ..x", "kubeconfig": yaml.safe_dump(kubeconfig)}
    )


def ns(name: str, phase: str = "Active") -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"phase": phase}}


NAMESPACES = [ns("default"), ns("kube-system"), ns("kube-public"), ns("krlab")]


def plan(**overrides: Any) -> trust.TrustPlan:
    args: dict[str, Any] = {
        "ca_pem": NEW_CA,
        "front_proxy_ca_pem": NEW_FP,
        "extension_auth": ext_auth(NEW_CA, NEW_FP),
        "cluster_info": cluster_info(NEW_CA),
        "namespaces": NAMESPACES,
        "root_ca_configmaps": [
            cm(n["metadata"]["name"], "kube-root-ca.crt", {"ca.crt": NEW_CA.decode()}) for n in NAMESPACES
        ],
    }
    args.update(overrides)
    return trust.plan_trust(**args)


def test_a_healthy_cluster_needs_nothing():
    p = plan()
    assert p.empty and p.lines() == []
    assert p.current == (
        "kube-system/extension-apiserver-authentication",
        "kube-public/cluster-info",
        "default/kube-root-ca.crt",
        "krlab/kube-root-ca.crt",
        "kube-public/kube-root-ca.crt",
        "kube-system/kube-root-ca.crt",
    )


def test_after_a_ca_change_every_object_is_stale_and_the_old_cas_are_named():
    # what kube-apiserver's trust controller leaves after restarting with a new CA: old + new merged
    p = plan(
        extension_auth=ext_auth(OLD_CA + NEW_CA, OLD_FP + NEW_FP),
        cluster_info=cluster_info(OLD_CA),
        root_ca_configmaps=[
            cm(n["metadata"]["name"], "kube-root-ca.crt", {"ca.crt": OLD_CA.decode()}) for n in NAMESPACES
        ],
    )
    refs = [(c.ref, c.action) for c in p.changes]
    assert refs == [
        ("kube-system/extension-apiserver-authentication", "update"),
        ("kube-public/cluster-info", "update"),
        ("default/kube-root-ca.crt", "update"),
        ("krlab/kube-root-ca.crt", "update"),
        ("kube-public/kube-root-ca.crt", "update"),
        ("kube-system/kube-root-ca.crt", "update"),
    ]
    ext = p.changes[0]
    assert set(ext.data) == {"client-ca-file", "requestheader-client-ca-file"}  # other keys untouched
    assert ext.data["client-ca-file"] == NEW_CA.decode()
    assert ext.data["requestheader-client-ca-file"] == NEW_FP.decode()
    assert len(ext.removed) == 2 and ext.resource_version == "100"
    assert ext.reasons[0].startswith("client-ca-file still trusts CN=kubernetes (sha256 ")
    assert ext.reasons[1].startswith("requestheader-client-ca-file still trusts CN=front-proxy-ca (sha256 ")

    info = p.changes[1]
    new_kc = yaml.safe_load(info.data["kubeconfig"])
    assert base64.b64decode(new_kc["clusters"][0]["cluster"]["certificate-authority-data"]) == NEW_CA
    assert new_kc["clusters"][0]["cluster"]["server"] == "https://172.30.0.11:6443"
    assert info.reasons[0].startswith("its kubeconfig pins the old CA CN=kubernetes")

    root = p.changes[2]
    assert root.data == {"ca.crt": NEW_CA.decode()}
    assert root.reasons[0].startswith("ca.crt holds the old CA CN=kubernetes (sha256 ")


def test_missing_current_ca_in_extension_auth_is_added():
    p = plan(extension_auth=ext_auth(OLD_CA, NEW_FP))
    (change,) = p.changes
    assert change.data == {"client-ca-file": NEW_CA.decode()}
    assert "client-ca-file lacks the current CA" in change.reasons[1]


def test_missing_root_ca_configmaps_are_created_and_terminating_namespaces_skipped():
    p = plan(
        namespaces=[*NAMESPACES, ns("new-team"), ns("going-away", "Terminating")],
    )
    assert [(c.ref, c.action, c.reasons) for c in p.changes] == [
        ("new-team/kube-root-ca.crt", "create", ("it is missing",))
    ]
    assert p.skipped == ("going-away",)


def test_same_ca_different_bytes_is_rewritten_like_the_publisher_would():
    reencoded = NEW_CA.decode().replace("\n", "\r\n")
    p = plan(root_ca_configmaps=[cm("default", "kube-root-ca.crt", {"ca.crt": reencoded})], namespaces=[ns("default")])
    (change,) = p.changes
    assert change.reasons == ("ca.crt holds the current CA but not byte-for-byte as kube-controller-manager writes it",)


def test_garbage_root_ca_is_replaced():
    p = plan(root_ca_configmaps=[cm("default", "kube-root-ca.crt", {"ca.crt": "junk"})], namespaces=[ns("default")])
    (change,) = p.changes
    assert change.action == "update" and change.reasons == (
        "ca.crt is not a valid PEM bundle (no PEM CERTIFICATE block)",
    )


def test_missing_objects_are_reported_not_invented():
    p = plan(extension_auth=None, cluster_info=None)
    assert [(c.ref, c.action) for c in p.changes] == [
        ("kube-system/extension-apiserver-authentication", "report"),
        ("kube-public/cluster-info", "report"),
    ]
    assert "check that kube-apiserver is running" in p.changes[0].summary()


def test_cluster_info_server_mismatch_is_reported_only():
    p = plan(expected_server="https://cp.example:6443")
    (change,) = p.changes
    assert change.action == "report" and not change.data
    assert change.reasons == (
        "its server is 'https://172.30.0.11:6443', expected 'https://cp.example:6443'"
        " (not changed: check the control-plane endpoint)",
    )


def test_without_front_proxy_the_requestheader_key_is_left_alone():
    p = plan(front_proxy_ca_pem=None, extension_auth=ext_auth(NEW_CA, OLD_FP))
    assert p.empty


def test_a_bad_current_ca_raises():
    with pytest.raises(trust.BadPem):
        plan(ca_pem=b"nope")
