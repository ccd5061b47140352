"""The etcd client and the protobuf reader against the lab's real etcd, holding objects a real
kube-apiserver wrote; the JWS check against the real controller-manager's cluster-info signature."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest
import yaml

from kuberevive.core import recover as core
from kuberevive.core.k8sproto import decode_configmap, object_meta
from kuberevive.errors import EtcdError
from kuberevive.io.etcd import EtcdClient
from kuberevive.lab import Lab

pytestmark = pytest.mark.lab

OnNode = Callable[..., "subprocess.CompletedProcess[str]"]


def _client(lab: Lab, ca: str = "etcd/ca.crt") -> EtcdClient:
    pki = "/etc/kubernetes/pki/"
    read = lab.cp.read_file
    return EtcdClient(
        f"https://{lab.cfg.control_plane.ip}:2379",
        read(pki + ca).encode(),
        read(pki + "etcd/healthcheck-client.crt").encode(),
        read(pki + "etcd/healthcheck-client.key").encode(),
    )


def test_kubeadm_config_read_from_etcd_equals_the_api(lab: Lab, on_node: OnNode) -> None:
    client = _client(lab)
    assert client.health() == (True, "")
    raw = client.get(core.KUBEADM_CONFIG_KEY)
    assert raw is not None and raw.startswith(b"k8s\x00")
    cm = decode_configmap(raw)
    api = json.loads(on_node("cp1", "kubectl", "get", "cm", "-n", "kube-system", "kubeadm-config", "-o", "json").stdout)
    assert cm.data == api["data"]
    assert cm.metadata.uid == api["metadata"]["uid"]
    stored = yaml.safe_load(cm.data["ClusterConfiguration"])
    init = {d["kind"]: d for d in yaml.safe_load_all(lab.cfg.init_config_file.read_text())}
    assert stored["networking"]["podSubnet"] == init["ClusterConfiguration"]["networking"]["podSubnet"]
    assert stored["apiServer"]["extraArgs"] == init["ClusterConfiguration"]["apiServer"]["extraArgs"]
    kubelet = decode_configmap(client.get(core.KUBELET_CONFIG_KEY) or b"")
    assert yaml.safe_load(kubelet.data["kubelet"])["cgroupDriver"] == "cgroupfs"


def test_mirror_pod_annotation_and_member(lab: Lab) -> None:
    client = _client(lab)
    raw = client.get("/registry/pods/kube-system/kube-apiserver-cp1")
    assert raw is not None
    envelope, meta = object_meta(raw)
    assert (envelope.api_version, envelope.kind) == ("v1", "Pod")
    assert meta.annotations[core.APISERVER_ENDPOINT_ANNOTATION] == f"{lab.cfg.control_plane.ip}:6443"
    members = client.members()
    assert [m.name for m in members] == ["cp1"]
    assert members[0].peer_urls == (f"https://{lab.cfg.control_plane.ip}:2380",)
    keys = [kv.key for kv in client.range(b"/registry/configmaps/kube-system/", prefix=True, keys_only=True)]
    assert b"/registry/configmaps/kube-system/kubeadm-config" in keys


def test_trust_is_the_etcd_ca_only(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # the cluster CA is not etcd's CA: the server certificate must be refused, whatever the environment says
    monkeypatch.setenv("SSL_CERT_FILE", "/dev/null")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/dev/null")
    assert _client(lab).health()[0]
    with pytest.raises(EtcdError, match="not trusted by the etcd CA"):
        _client(lab, ca="ca.crt").health()


def test_jws_check_accepts_the_controller_managers_signature(lab: Lab, on_node: OnNode) -> None:
    token = lab.read_state().get("bootstrap_token")
    if not token:
        pytest.skip("the lab state has no bootstrap token")
    cm = json.loads(on_node("cp1", "kubectl", "get", "cm", "-n", "kube-public", "cluster-info", "-o", "json").stdout)
    token_id = token.partition(".")[0]
    sig = cm["data"].get(f"jws-kubeconfig-{token_id}")
    if sig is None:
        pytest.skip("the lab's init token is gone (expired or replaced by a recovery)")
    assert core.jws_signature_ok(sig, cm["data"]["kubeconfig"], token)
    assert not core.jws_signature_ok(sig, cm["data"]["kubeconfig"] + "\n", token)
