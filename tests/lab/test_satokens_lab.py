"""The key-id rule against the lab's real kube-apiserver: tokens it issues carry the kid of sa.pub."""

from __future__ import annotations

import base64
import time

import pytest

from kuberevive.core.satokens import key_ids, stale_token_secrets, token_kid
from kuberevive.io.kubeapi import KubeApi

from .conftest import OnNode

pytestmark = pytest.mark.lab


def test_issued_tokens_carry_the_kid_of_sa_pub(on_node: OnNode):
    api = KubeApi.from_kubeconfig(on_node("cp1", "cat", "/etc/kubernetes/admin.conf").stdout)
    current = key_ids(on_node("cp1", "cat", "/etc/kubernetes/pki/sa.pub").stdout.encode())
    assert len(current) == 1
    # a bound token, as the kubelet requests for every pod's projected volume
    req = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}}
    issued = api.create("/api/v1/namespaces/default/serviceaccounts/default/token", req)
    assert token_kid(issued["status"]["token"]) in current

    # a legacy token Secret, filled in by kube-controller-manager's token controller
    path = "/api/v1/namespaces/default/secrets"
    name = "kr-satokens-test"
    api.create(
        path,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {"name": name, "annotations": {"kubernetes.io/service-account.name": "default"}},
        },
    )
    try:
        deadline = time.monotonic() + 30
        while not (api.get(f"{path}/{name}").get("data") or {}).get("token"):
            assert time.monotonic() < deadline, "the token controller did not fill the Secret"
            time.sleep(0.5)
        filled = api.get(f"{path}/{name}")
        assert token_kid(base64.b64decode(filled["data"]["token"]).decode()) in current
        assert stale_token_secrets([filled], current) == []
        assert [s.name for s in stale_token_secrets([filled], frozenset({"some-other-key"}))] == [name]
    finally:
        api.delete(f"{path}/{name}")
