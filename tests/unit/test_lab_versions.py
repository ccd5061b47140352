"""The lab's Kubernetes version knob: which binaries, etcd and sandbox image a lab of a version uses (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kuberevive.errors import LabError
from kuberevive.lab.config import BUILD_SCRIPT, PAUSE_IMAGE, LabConfig, lab_versions


def test_default_lab_is_v1_37_with_its_etcd_pause_and_cache_dir() -> None:
    cfg = LabConfig.from_env({})
    assert (cfg.k8s_version, cfg.etcd_version, cfg.pause_image) == ("1.37.2", "3.7.0", PAUSE_IMAGE)
    assert PAUSE_IMAGE == "registry.k8s.io/pause:3.10.2"
    assert cfg.bin_cache == Path("/var/cache/kuberevive/k8s-v1.37.2-etcd-v3.7.0/bin")
    assert cfg.build_command == f"bash {BUILD_SCRIPT}"


def test_env_knob_selects_v1_33_with_kubeadms_etcd_and_pause() -> None:
    cfg = LabConfig.from_env({"KUBEREVIVE_LAB_INSTANCE": "7", "KUBEREVIVE_LAB_KUBERNETES_VERSION": "1.33.13"})
    assert (cfg.k8s_version, cfg.etcd_version) == ("1.33.13", "3.5.24")
    assert cfg.pause_image == "registry.k8s.io/pause:3.10"
    assert cfg.bin_cache == Path("/var/cache/kuberevive/k8s-v1.33.13-etcd-v3.5.24/bin")
    assert cfg.network == "172.30.7.0/24"  # the instance is kept
    assert cfg.build_command.startswith("K8S_VERSION=1.33.13 ETCD_VERSION=3.5.24 ETCDCTL_VERSION=3.5.33 bash ")


def test_argument_wins_over_the_env_and_a_leading_v_is_accepted() -> None:
    cfg = LabConfig.from_env({"KUBEREVIVE_LAB_KUBERNETES_VERSION": "1.37.2"}, kubernetes_version="v1.34.4")
    assert (cfg.k8s_version, cfg.etcd_version, cfg.pause_image) == ("1.34.4", "3.6.5", "registry.k8s.io/pause:3.10.1")


@pytest.mark.parametrize("version", ["1.29.15", "1.38.0"])
def test_a_version_outside_the_range_is_refused_naming_the_range(version: str) -> None:
    with pytest.raises(LabError, match=r"v1\.30 to v1\.37"):
        lab_versions(version)


@pytest.mark.parametrize("version", ["latest", "1.37", "1.37.2; rm -rf /"])
def test_a_malformed_version_is_refused(version: str) -> None:
    with pytest.raises(LabError, match=r"not a Kubernetes version like 1\.37\.2"):
        LabConfig.from_env({"KUBEREVIVE_LAB_KUBERNETES_VERSION": version})


def test_preflight_checks_ignored_only_from_v1_35() -> None:
    from kuberevive.lab.kubeadm import JoinCommand, init_documents, join_documents

    old = LabConfig.from_env({"KUBEREVIVE_LAB_KUBERNETES_VERSION": "1.33.13"})
    assert "ignorePreflightErrors" not in init_documents(old, "abcdef.0123456789abcdef")[0]["nodeRegistration"]
    new = LabConfig.from_env({})
    init = init_documents(new, "abcdef.0123456789abcdef")
    assert init[0]["nodeRegistration"]["ignorePreflightErrors"] == ["SystemVerification"]
    assert init[1]["kubernetesVersion"] == "v1.37.2"
    join = join_documents(new, new.workers[0], JoinCommand("172.30.7.11:6443", "abcdef.0123456789abcdef", "sha256:00"))
    assert join[0]["nodeRegistration"]["ignorePreflightErrors"] == ["SystemVerification"]


def test_only_the_ha_labs_api_servers_keep_serving_5_s_after_sigterm() -> None:
    """Behind the load balancer, kube-apiserver fails /readyz at SIGTERM and serves 5 s more, so haproxy takes it out
    first (issue 14: a master restarted by certs renew cut requests through the load balancer)."""
    from kuberevive.lab.kubeadm import init_documents

    ha = LabConfig.from_env({"KUBEREVIVE_LAB_CONTROL_PLANES": "3"})
    assert ha.ha
    args = init_documents(ha, "abcdef.0123456789abcdef", "0" * 64)[1]["apiServer"]["extraArgs"]
    assert {"name": "shutdown-delay-duration", "value": "5s"} in args
    one = init_documents(LabConfig.from_env({}), "abcdef.0123456789abcdef")[1]["apiServer"]["extraArgs"]
    assert one == [{"name": "event-ttl", "value": "2h0m0s"}]  # the 1+1 lab: kubeadm's default (0)


def test_instances_up_to_19_have_their_own_network_and_names_and_20_is_refused() -> None:
    one, nineteen = (LabConfig.from_env({"KUBEREVIVE_LAB_INSTANCE": n}) for n in ("1", "19"))
    assert (nineteen.network, nineteen.prefix, nineteen.host_if) == ("172.30.19.0/24", "krlab19", "krlab190")
    # instance 1's host interface is krlab10: never a name instance 10 uses for itself (krlab10-*, krlab100)
    ten = LabConfig.from_env({"KUBEREVIVE_LAB_INSTANCE": "10"})
    assert one.host_if not in (ten.host_if, ten.switch_netns) and ten.cgroup_root("cp1") != one.cgroup_root("cp1")
    with pytest.raises(LabError, match="from 0 to 19"):
        LabConfig.from_env({"KUBEREVIVE_LAB_INSTANCE": "20"})
