"""Trust plan and apply against the lab's real cluster.

Observed behaviour (v1.33.13 lab):
* kube-controller-manager's root-ca publisher watches ``kube-root-ca.crt`` ConfigMaps and rewrites a
  changed one to the exact bytes of its ``--root-ca-file`` almost at once (well under a second in the
  lab). A stale ``kube-root-ca.crt`` is therefore only observable in the object the write returned;
  the test asserts that and that the publisher restores it (the plan is empty again).
* kube-apiserver's ClusterAuthenticationTrustController only *adds* CAs to
  ``extension-apiserver-authentication``: a stale CA placed there stays until removed, which the
  apply step does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kuberevive.core import trust
from kuberevive.core.pki import encode_certificate_pem, new_self_signed_ca
from kuberevive.errors import KubeApiError
from kuberevive.io.kubeapi import KubeApi
from kuberevive.io.trust_apply import apply_trust_plan, read_trust_plan

from .conftest import OnNode

pytestmark = pytest.mark.lab

NS = "kr-trust-test"


def _other_ca() -> bytes:
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    return encode_certificate_pem(new_self_signed_ca("kubernetes", key, now, now + timedelta(days=1)))


@pytest.fixture(scope="module")
def cluster(on_node: OnNode) -> Iterator[tuple[KubeApi, bytes, bytes, str]]:
    api = KubeApi.from_kubeconfig(on_node("cp1", "cat", "/etc/kubernetes/admin.conf").stdout)
    ca = on_node("cp1", "cat", "/etc/kubernetes/pki/ca.crt").stdout.encode()
    fp = on_node("cp1", "cat", "/etc/kubernetes/pki/front-proxy-ca.crt").stdout.encode()
    try:
        api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    except KubeApiError as exc:
        if exc.status != 409:
            raise
    yield api, ca, fp, api.server
    api.delete(f"/api/v1/namespaces/{NS}")


def _exists(api: KubeApi, path: str) -> bool:
    try:
        api.get(path)
    except KubeApiError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _wait(predicate, seconds: float = 30.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"condition not met within {seconds}s")


def _about(plan: trust.TrustPlan, ref: str) -> list[str]:
    return [c.summary() for c in plan.changes if c.ref == ref]


# Assertions are about the objects each test controls, so the tests hold on a lab that an earlier
# test (recover) left with other stale objects.


def test_a_new_namespace_gets_a_current_root_ca(cluster):
    api, ca, fp, server = cluster
    _wait(lambda: _exists(api, f"/api/v1/namespaces/{NS}/configmaps/kube-root-ca.crt"))
    plan = read_trust_plan(api, ca, fp, server)
    assert f"{NS}/kube-root-ca.crt" in plan.current
    assert _about(plan, f"{NS}/kube-root-ca.crt") == []


def test_a_stale_root_ca_is_reported_and_the_publisher_restores_it(cluster):
    api, ca, fp, server = cluster
    old = _other_ca()
    path = f"/api/v1/namespaces/{NS}/configmaps/kube-root-ca.crt"
    written = api.patch(path, {"data": {"ca.crt": old.decode()}})
    change = trust.plan_root_ca(NS, written, ca)
    assert change is not None and change.action == "update"
    assert change.reasons[0].startswith("ca.crt holds the old CA CN=kubernetes (sha256 ")
    assert change.data == {"ca.crt": ca.decode()}
    # kube-controller-manager's root-ca publisher puts the real CA back by itself, usually in well under a
    # second; the limit is generous because on a loaded machine (two labs on two cores) the controller-manager
    # can lose its lease and take a restart plus a new lease before its publisher runs again (seen in CI)
    took = _wait(lambda: api.get(path)["data"]["ca.crt"] == ca.decode(), 180)
    print(f"root-ca publisher restored {NS}/kube-root-ca.crt after {took:.2f}s")
    plan = read_trust_plan(api, ca, fp, server)
    assert _about(plan, f"{NS}/kube-root-ca.crt") == []
    # applying the stale plan now races with (and loses to) the publisher: a conflict, reported per object
    (result,) = apply_trust_plan(api, trust.TrustPlan((change,)))
    assert not result.ok and "changed or appeared while planning" in result.message


def test_a_stale_ca_in_extension_apiserver_authentication_is_removed(cluster):
    api, ca, fp, server = cluster
    path = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
    original = api.get(path)["data"]["client-ca-file"]
    old = _other_ca()
    try:
        api.patch(path, {"data": {"client-ca-file": old.decode() + original}})
        time.sleep(1)
        plan = read_trust_plan(api, ca, fp, server)
        (change,) = [c for c in plan.changes if c.ref == "kube-system/extension-apiserver-authentication"]
        assert change.reasons[0].startswith("client-ca-file still trusts CN=kubernetes (sha256 ")
        injected = trust.CertInfo.of(trust.load_bundle(old)[0])
        assert injected in change.removed
        results = apply_trust_plan(api, trust.TrustPlan((change,)))
        assert [r.ok for r in results] == [True]
        assert api.get(path)["data"]["client-ca-file"] == ca.decode()
        time.sleep(2)  # kube-apiserver's trust controller adds CAs, never removes: it leaves ours alone
        assert _about(read_trust_plan(api, ca, fp, server), change.ref) == []
    finally:
        if api.get(path)["data"]["client-ca-file"] != original:
            api.patch(path, {"data": {"client-ca-file": original}})
