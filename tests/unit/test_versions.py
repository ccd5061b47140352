"""core/versions.py: the per-minor table, the supported range, configuration API versions and feature gates.

The values asserted here were read in kubeadm's sources of each minor (file named in each table entry); the
manifests and kubeconfigs they lead to are compared with each minor's real kubeadm output by the golden tests.
"""

from __future__ import annotations

import dataclasses
import typing

import pytest

from kuberevive.core import versions as v
from kuberevive.errors import ConfigError
from kuberevive.model.config import EncryptionAlgorithm, NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config

FACTS = NodeFacts(hostname="cp1")


def _config(version: str, api: str = "v1beta4", cluster_extra: str = "") -> str:
    return (
        f"apiVersion: kubeadm.k8s.io/{api}\nkind: InitConfiguration\nlocalAPIEndpoint:\n"
        f"  advertiseAddress: 10.0.0.1\nnodeRegistration:\n  name: cp1\n---\n"
        f"apiVersion: kubeadm.k8s.io/{api}\nkind: ClusterConfiguration\nkubernetesVersion: {version}\n{cluster_extra}"
    )


def test_every_change_names_a_setting_a_minor_in_range_and_a_source() -> None:
    settings = {f.name for f in dataclasses.fields(v.KubeadmMinor)}
    hints = typing.get_type_hints(v.KubeadmMinor)
    for c in v.CHANGES:
        assert v.OLDEST_MINOR <= c.since <= v.NEWEST_MINOR, c
        assert c.what and c.source, c
        if c.setting.startswith("gate:"):
            assert c.value is None or isinstance(c.value, v.Gate), c
            continue
        assert c.setting in settings - {"minor", "feature_gates"}, c
        default = getattr(v.KubeadmMinor(), c.setting)
        assert isinstance(c.value, type(default)), (c, hints[c.setting])
    # in table order, never going back in minors (one place to read a minor's changes)
    assert [c.since for c in v.CHANGES] == sorted(c.since for c in v.CHANGES)


def test_each_minor_differs_from_the_one_before() -> None:
    for minor in range(v.OLDEST_MINOR + 1, v.NEWEST_MINOR + 1):
        assert v.changes_in(minor), minor
        assert v.minor_profile(minor) != v.minor_profile(minor - 1), minor


@pytest.mark.parametrize(
    ("minor", "expected"),
    [
        (30, {"etcd_image_tag": "3.5.15-0", "sort_all_args": True, "named_probe_port": False}),
        (31, {"etcd_image_tag": "3.5.24-0", "sort_all_args": True, "config_api_versions": ("v1beta3", "v1beta4")}),
        (32, {"sort_all_args": False, "scheduler_probes": v.Probes("/livez", "/readyz", "/livez")}),
        (33, {"etcd_v36_flags": "never", "creation_timestamp_null": True, "kubeconfig_preferences": True}),
        (34, {"etcd_image_tag": "3.6.5-0", "etcd_v36_flags": "by-image-tag", "named_probe_port": True}),
        (35, {"etcd_image_tag": "3.6.6-0", "creation_timestamp_null": False, "kcm_flexvolume_volume": True}),
        (36, {"etcd_image_tag": "3.6.8-0", "etcd_v36_flags": "always", "kcm_flexvolume_volume": False}),
        (37, {"etcd_image_tag": "3.7.0-0", "config_api_versions": ("v1beta4",)}),
    ],
)
def test_profile_values(minor: int, expected: dict[str, object]) -> None:
    p = v.minor_profile(minor)
    for name, value in expected.items():
        assert getattr(p, name) == value, name


def test_gates_per_minor() -> None:
    assert v.minor_profile(30).kubelet_local_mode({}) is False  # no gate yet: the control-plane endpoint
    assert v.minor_profile(32).kubelet_local_mode({}) is False  # alpha, off
    assert v.minor_profile(32).kubelet_local_mode({v.CONTROL_PLANE_KUBELET_LOCAL_MODE: True}) is True
    assert v.minor_profile(33).kubelet_local_mode({v.CONTROL_PLANE_KUBELET_LOCAL_MODE: False}) is False
    assert v.minor_profile(36).kubelet_local_mode({}) is True  # gate removed, always on
    assert v.minor_profile(33).writes_instance_config({}) is False
    assert v.minor_profile(34).writes_instance_config({}) is True
    assert v.minor_profile(37).writes_instance_config({}) is True
    assert v.minor_profile(36).writes_instance_config({v.NODE_LOCAL_CRI_SOCKET: False}) is False  # still read


@pytest.mark.parametrize("version", ["v1.29.15", "v1.38.0", "v2.0.0", "1.12.0"])
def test_a_version_outside_the_range_is_refused_naming_the_range(version: str) -> None:
    with pytest.raises(ConfigError, match=r"outside .*\(v1\.30 to v1\.37\)"):
        v.profile(version)
    with pytest.raises(ConfigError, match=r"kubernetesVersion .* outside .*v1\.30 to v1\.37"):
        load_kubeadm_config(_config(version), FACTS)


def test_v1beta3_is_read_up_to_v1_36_and_refused_by_v1_37() -> None:
    assert v.minors_reading("v1beta3") == (30, 31, 32, 33, 34, 35, 36)
    assert v.minors_reading("v1beta4") == (31, 32, 33, 34, 35, 36, 37)
    assert load_kubeadm_config(_config("v1.36.3", "v1beta3"), FACTS).cluster.kubernetes_version == "v1.36.3"
    with pytest.raises(ConfigError, match=r"kubeadm v1\.37 does not read kubeadm\.k8s\.io/v1beta3 \(kubeadm v1\.30 "
                       r"to v1\.36 read it\)\. Write the configuration as kubeadm\.k8s\.io/v1beta4"):  # fmt: skip
        load_kubeadm_config(_config("v1.37.2", "v1beta3"), FACTS)


def test_v1beta4_is_refused_by_v1_30() -> None:
    assert load_kubeadm_config(_config("v1.30.14", "v1beta3"), FACTS).cluster.kubernetes_version == "v1.30.14"
    with pytest.raises(ConfigError, match=r"kubeadm v1\.30 does not read kubeadm\.k8s\.io/v1beta4 \(kubeadm v1\.31"):
        load_kubeadm_config(_config("v1.30.14", "v1beta4"), FACTS)


def test_feature_gates_unknown_to_the_minor_are_refused() -> None:
    gate = "featureGates:\n  ControlPlaneKubeletLocalMode: false\n"
    assert load_kubeadm_config(_config("v1.34.4", cluster_extra=gate), FACTS).cluster.feature_gates == (
        ("ControlPlaneKubeletLocalMode", False),
    )
    # locked to its default (GA) but accepted, as kubeadm does; from v1.35 the gate is no longer read
    cfg = load_kubeadm_config(_config("v1.35.4", cluster_extra=gate), FACTS)
    assert v.minor_profile(35).kubelet_local_mode(dict(cfg.cluster.feature_gates)) is True
    assert v.minor_profile(34).kubelet_local_mode(dict(cfg.cluster.feature_gates)) is False
    with pytest.raises(ConfigError, match=r"kubeadm v1\.36 has no such feature gate"):
        load_kubeadm_config(_config("v1.36.3", cluster_extra=gate), FACTS)
    with pytest.raises(ConfigError, match=r"kubeadm v1\.30 has no such feature gate"):
        load_kubeadm_config(_config("v1.30.14", "v1beta3", cluster_extra=gate), FACTS)


def test_public_keys_ecdsa_gate_sets_the_algorithm_until_v1_37() -> None:
    on = "featureGates:\n  PublicKeysECDSA: true\n"
    cfg = load_kubeadm_config(_config("v1.30.14", "v1beta3", cluster_extra=on), FACTS)
    assert cfg.cluster.encryption_algorithm is EncryptionAlgorithm.ECDSA_P256
    off = "encryptionAlgorithm: ECDSA-P256\nfeatureGates:\n  PublicKeysECDSA: false\n"
    cfg = load_kubeadm_config(_config("v1.36.3", cluster_extra=off), FACTS)
    assert cfg.cluster.encryption_algorithm is EncryptionAlgorithm.RSA_2048  # the gate wins, as in kubeadm
    with pytest.raises(ConfigError, match=r"kubeadm v1\.37 has no such feature gate"):
        load_kubeadm_config(_config("v1.37.2", cluster_extra=on), FACTS)


def test_external_etcd_http_endpoints_is_a_field_from_v1_35() -> None:
    ext = "etcd:\n  external:\n    endpoints: [https://10.0.0.5:2379]\n    httpEndpoints: [http://10.0.0.5:2381]\n"
    cfg = load_kubeadm_config(_config("v1.35.4", cluster_extra=ext), FACTS)
    assert cfg.cluster.etcd_external is not None and cfg.cluster.etcd_external.endpoints == ("https://10.0.0.5:2379",)
    with pytest.raises(ConfigError, match=r"etcd\.external\.httpEndpoints: unknown field"):
        load_kubeadm_config(_config("v1.34.4", cluster_extra=ext), FACTS)


def test_the_etcd_tag_follows_the_patch_where_kubeadm_changed_it_within_the_minor() -> None:
    # v1.31.14's constants.go bumped its own minor's SupportedEtcdVersion; every earlier v1.31 patch writes 3.5.15-0
    assert [v.etcd_image_tag(x) for x in ("v1.31.0", "v1.31.13", "v1.31.14", "1.31.20")] == [
        "3.5.15-0",
        "3.5.15-0",
        "3.5.24-0",
        "3.5.24-0",
    ]
    assert v.etcd_image_tag("v1.33.2") == v.minor_profile(33).etcd_image_tag == "3.5.24-0"
    with pytest.raises(ConfigError):
        v.etcd_image_tag("v1.29.9")
