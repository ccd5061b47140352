"""``replace-control-plane``'s pure part (kuberevive.core.replace) against real keys and certificates: the quorum
refusals, the joined member's ``--initial-cluster``, the kubelet flags and every file of the new machine. The
end-to-end proof (a destroyed cp3 replaced on the real 3+1 lab, and the refusal with cp2 and cp3 gone) is
tests/lab/test_replace_lab.py."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import PurePosixPath

import pytest
from cryptography import x509

from kuberevive.core import pki
from kuberevive.core import replace as core
from kuberevive.core.manifests import manifest_flags, parse_manifest
from kuberevive.errors import PlanError
from kuberevive.model import paths, yamlload
from tests.unit.test_salvage import cluster_pki, trust

CP1, CP2, CP3, NEW = "172.30.2.11", "172.30.2.13", "172.30.2.14", "172.30.2.20"
NOW = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)
CLUSTER = """\
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.33.13
controlPlaneEndpoint: 172.30.2.10:6443
certificatesDir: /etc/kubernetes/pki
networking:
  podSubnet: 10.123.0.0/16
  serviceSubnet: 10.96.0.0/12
etcd:
  local:
    dataDir: /var/lib/etcd
"""
KUBELET = """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
authentication:
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
"""


def member(name: str, address: str, healthy: bool = True, learner: bool = False, id: str = "") -> core.EtcdMember:
    return core.EtcdMember(
        id or f"id-{name}", name, (core.peer_url(address),), learner, healthy, "" if healthy else "unreachable"
    )


def three(cp2: bool = True, cp3: bool = False) -> list[core.EtcdMember]:
    return [member("cp1", CP1), member("cp2", CP2, cp2), member("cp3", CP3, cp3)]


def test_one_lost_member_of_three_is_removed_and_the_two_healthy_keep_quorum() -> None:
    verdict = core.check_membership(three(), "cp3", CP3)
    assert verdict.lost is not None and verdict.lost.name == "cp3"
    assert verdict.healthy == ("cp1", "cp2") and verdict.voters == 3


def test_with_cp2_and_cp3_gone_it_refuses_and_says_quorum_is_lost_and_why() -> None:
    with pytest.raises(PlanError) as exc:
        core.check_membership(three(cp2=False), "cp3", CP3)
    msg = exc.value.message
    assert "lost quorum" in msg and "1 of 3 voting members healthy" in msg and "2 needed" in msg
    assert "cp1: healthy; cp2: unreachable; cp3: unreachable" in msg
    assert "kuberevive quorum-restore" in exc.value.hint


def test_five_members_two_lost_may_replace_one_but_three_lost_may_not() -> None:
    five = [*three(), member("cp4", "172.30.2.15", False), member("cp5", "172.30.2.16", True)]
    assert core.check_membership(five, "cp3", CP3).healthy == ("cp1", "cp2", "cp5")
    five[1] = member("cp2", CP2, False)
    with pytest.raises(PlanError, match="2 of 5 voting members healthy"):
        core.check_membership(five, "cp3", CP3)


def test_a_member_that_still_answers_is_not_replaced() -> None:
    with pytest.raises(PlanError, match="is healthy: its machine is not lost"):
        core.check_membership(three(cp3=True), "cp3", CP3)


def test_a_pending_learner_elsewhere_is_refused_but_our_own_from_a_stopped_run_is_fine() -> None:
    other = [*three(), member("", "172.30.2.99", False, learner=True)]
    with pytest.raises(PlanError, match="learner that is not promoted"):
        core.check_membership(other, "cp3", CP3)
    ours = [m for m in three() if m.name != "cp3"] + [member("", CP3, False, learner=True)]
    verdict = core.check_membership(ours, "cp3", CP3)
    assert verdict.lost is None and verdict.voters == 2


def test_a_new_address_that_another_member_has_is_refused() -> None:
    with pytest.raises(PlanError, match="already has the peer URL"):
        core.check_membership(three(), "cp3", CP2)


def test_the_initial_cluster_lists_every_member_in_etcds_order_with_the_new_one_named() -> None:
    after_add = [member("cp1", CP1), member("", NEW, False, learner=True), member("cp2", CP2)]
    assert core.initial_cluster(after_add, "cp9", NEW) == (
        ("cp1", core.peer_url(CP1)),
        ("cp9", core.peer_url(NEW)),
        ("cp2", core.peer_url(CP2)),
    )
    before_add = [member("cp1", CP1), member("cp2", CP2)]
    assert core.initial_cluster(before_add, "cp9", NEW)[-1] == ("cp9", core.peer_url(NEW))


def test_the_kubelet_flags_are_this_nodes_with_the_new_node_ip_and_the_given_ones_replacing() -> None:
    template = [
        ("container-runtime-endpoint", "unix:///run/containerd/containerd.sock"),
        ("pod-infra-container-image", "registry.k8s.io/pause:3.10"),
        ("cgroup-root", "/krlab5-cp1"),
        ("node-ip", CP1),
    ]
    text = core.kubeadm_flags(template, "cp3", CP3, [("cgroup-root", "/krlab5-cp3")]).decode()
    assert text == (
        'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///run/containerd/containerd.sock '
        f'--pod-infra-container-image=registry.k8s.io/pause:3.10 --node-ip={CP3} --cgroup-root=/krlab5-cp3"\n'
    )


def test_external_etcd_is_refused() -> None:
    external = CLUSTER.replace(
        "  local:\n    dataDir: /var/lib/etcd\n", "  external:\n    endpoints: [https://e:2379]\n"
    )
    with pytest.raises(PlanError, match="external etcd"):
        core.new_node_config(external, KUBELET, "cp3", CP3, 6443, "unix:///run/containerd/containerd.sock")


def _cert(data: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(data)


def test_the_new_machine_gets_the_clusters_trust_its_own_leaves_and_a_joined_etcd() -> None:
    cluster_trust = trust(cluster_pki("cp1", CP1))
    cfg = core.new_node_config(CLUSTER, KUBELET, "cp9", NEW, 6443, "unix:///run/containerd/containerd.sock")
    members = (("cp1", core.peer_url(CP1)), ("cp2", core.peer_url(CP2)), ("cp9", core.peer_url(NEW)))
    flags = b'KUBELET_KUBEADM_ARGS="--node-ip=172.30.2.20"\n'
    arts = core.node_artifacts(cfg, cluster_trust, "cp1", NOW, "2026-12-05-03-00-00", members, KUBELET.encode(), flags)
    by_path = {a.path: a for a in arts}
    assert len(by_path) == len(arts)  # no file twice
    pki_dir = PurePosixPath("/etc/kubernetes/pki")
    for name, data in cluster_trust.items():  # the cluster's CAs and sa key, byte for byte
        assert by_path[pki_dir / name].content == data
    for a in arts:
        if a.path.suffix == ".key" or a.path.name.endswith(".conf") or a.path.suffix == ".pem":
            assert a.mode == 0o600, a.path
    assert paths.SUPER_ADMIN_CONF not in by_path  # kubeadm join writes none
    ca = _cert(cluster_trust["ca.crt"])
    apiserver = _cert(by_path[pki_dir / "apiserver.crt"].content)
    assert pki.verify_signed_by(apiserver, ca)
    ips = [
        str(i)
        for i in apiserver.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.IPAddress
        )
    ]
    assert NEW in ips and CP1 not in ips
    etcd_ca = _cert(cluster_trust["etcd/ca.crt"])
    peer = _cert(by_path[pki_dir / "etcd/peer.crt"].content)
    assert pki.verify_signed_by(peer, etcd_ca) and "cp9" in str(peer.subject)
    flags_of = manifest_flags(parse_manifest(by_path[paths.ETCD_MANIFEST].content))
    assert flags_of["initial-cluster-state"] == "existing"
    assert flags_of["initial-cluster"] == ",".join(f"{n}={u}" for n, u in members)
    assert flags_of["name"] == "cp9" and flags_of["advertise-client-urls"] == f"https://{NEW}:2379"
    api_flags = manifest_flags(parse_manifest(by_path[paths.APISERVER_MANIFEST].content))
    assert api_flags["advertise-address"] == NEW
    # kubelet: a pem signed with the cluster CA for system:node:cp9, first (the caller points the link at it)
    pem = arts[0]
    assert pem.path == paths.KUBELET_PKI / "kubelet-client-2026-12-05-03-00-00.pem"
    client = _cert(pem.content)
    assert pki.verify_signed_by(client, ca) and "system:node:cp9" in str(client.subject)
    conf = yamlload.load(by_path[paths.KUBELET_CONF].content)
    assert conf["users"][0]["user"]["client-certificate"] == str(paths.KUBELET_CLIENT_CURRENT)
    # ControlPlaneKubeletLocalMode (on in v1.33): the kubelet talks to its own API server
    assert conf["clusters"][0]["cluster"]["server"] == f"https://{NEW}:6443"
    assert base64.b64decode(conf["clusters"][0]["cluster"]["certificate-authority-data"]) == cluster_trust["ca.crt"]
    admin = yamlload.load(by_path[paths.ADMIN_CONF].content)
    assert admin["clusters"][0]["cluster"]["server"] == "https://172.30.2.10:6443"
    assert by_path[paths.KUBELET_CONFIG].content == KUBELET.encode()
    assert by_path[paths.KUBEADM_FLAGS].content == flags


def test_the_old_node_step_is_planned_only_when_the_name_changes() -> None:
    assert "old-node" in core.plan_steps(True) and "old-node" not in core.plan_steps(False)
    assert core.plan_steps(False)[:3] == ["remove-member", "prepare-node", "add-learner"]


def test_a_resumed_replacement_still_needs_a_quorum_of_the_voters() -> None:
    after_remove = [member("cp1", CP1, False), member("cp2", CP2, False), member("", NEW, False, learner=True)]
    with pytest.raises(PlanError, match=r"0 of 2 voting members healthy.*resuming the replacement of cp3"):
        core.resumed_membership(after_remove, "cp3")
    ok = core.resumed_membership([member("cp1", CP1), member("cp2", CP2), member("", NEW, False, True)], "cp3")
    assert ok.lost is None and ok.healthy == ("cp1", "cp2") and ok.voters == 2
