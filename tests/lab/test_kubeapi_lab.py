"""KubeApi against the lab's real kube-apiserver, reached from the host at the node's address."""

from __future__ import annotations

import base64

import pytest
import yaml

from kuberevive.errors import KubeApiError
from kuberevive.io.kubeapi import KubeApi
from kuberevive.lab import Lab

from .conftest import OnNode

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def admin_conf(lab: Lab, on_node: OnNode) -> str:
    return on_node("cp1", "cat", "/etc/kubernetes/admin.conf").stdout


def test_admin_kubeconfig_reaches_the_real_apiserver(admin_conf: str):
    api = KubeApi.from_kubeconfig(admin_conf)
    ok, body = api.readyz()
    assert ok and body == "ok"
    names = [n["metadata"]["name"] for n in api.get("/api/v1/nodes")["items"]]
    assert sorted(names) == ["cp1", "worker1"]

    path = "/api/v1/namespaces/default/configmaps"
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kubeapi-test"}, "data": {"a": "1"}}
    try:
        api.create(path, cm)
        with pytest.raises(KubeApiError) as exists:
            api.create(path, cm)
        assert exists.value.status == 409 and exists.value.reason == "AlreadyExists"
        api.patch(f"{path}/kubeapi-test", {"data": {"b": "2"}})
        assert api.get(f"{path}/kubeapi-test")["data"] == {"a": "1", "b": "2"}
    finally:
        api.delete(f"{path}/kubeapi-test")
    with pytest.raises(KubeApiError) as missing:
        api.get(f"{path}/kubeapi-test")
    assert missing.value.status == 404 and missing.value.reason == "NotFound"


def test_a_foreign_ca_is_not_trusted_even_when_the_environment_trusts_the_cluster_ca(
    admin_conf: str, monkeypatch: pytest.MonkeyPatch, tmp_path
):
    from datetime import UTC, datetime

    from kuberevive.core.generate import Target, generate
    from kuberevive.model.config import NodeFacts
    from kuberevive.model.kubeadm_yaml import load_kubeadm_config

    facts = NodeFacts(hostname="x", default_address="192.0.2.9")
    cfg = load_kubeadm_config("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n", facts)
    foreign_ca = next(
        a for a in generate(Target.CERTS, cfg, facts, datetime.now(UTC), {}).artifacts if a.path.name == "ca.crt"
    )
    doc = yaml.safe_load(admin_conf)
    # the environment's CA bundles hold the REAL cluster CA: honouring them would make the request succeed
    real_ca = base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"])
    (tmp_path / "cluster-ca.crt").write_bytes(real_ca)
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(name, str(tmp_path / "cluster-ca.crt"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    doc["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(foreign_ca.content).decode()
    with pytest.raises(KubeApiError, match="not trusted by the kubeconfig's CA"):
        KubeApi.from_kubeconfig(yaml.safe_dump(doc)).readyz()
