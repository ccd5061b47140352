"""Rules of the static Pod manifests (kubeadm v1.33.13), on configurations built directly.

Every expected value here was also observed in real kubeadm v1.33.13 output (tests/golden/README.md).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from kuberevive.core import manifests as m
from kuberevive.core._args import (
    arguments_to_command,
    get_arg_value,
    go_clean,
    go_dir,
    go_join,
    is_ipv6_string,
    set_arg_value,
)
from kuberevive.core.netaddr import join_host_port
from kuberevive.errors import ConfigError
from kuberevive.model.config import (
    APIEndpoint,
    APIServer,
    Arg,
    ClusterConfiguration,
    ControlPlaneComponent,
    EnvVar,
    ExternalEtcd,
    HostPathMount,
    InitConfiguration,
    KubeadmConfig,
    LocalEtcd,
    Networking,
    NodeFacts,
    NodeRegistration,
    Timeouts,
)

FACTS = NodeFacts(hostname="cp1")


def make_cfg(
    *,
    adv: str = "192.168.56.10",
    bind_port: int = 6443,
    health_check: timedelta = timedelta(minutes=4),
    **cluster: Any,
) -> KubeadmConfig:
    return KubeadmConfig(
        cluster=ClusterConfiguration(kubernetes_version="v1.33.13", **cluster),
        init=InitConfiguration(
            local_api_endpoint=APIEndpoint(adv, bind_port),
            node_registration=NodeRegistration("cp1"),
            timeouts=Timeouts(control_plane_component_health_check=health_check),
        ),
    )


def container(pod: dict[str, Any]) -> dict[str, Any]:
    c = pod["spec"]["containers"]
    assert len(c) == 1
    result: dict[str, Any] = c[0]
    return result


def flags(pod: dict[str, Any]) -> list[str]:
    return container(pod)["command"][1:]  # type: ignore[no-any-return]


def pod(component: str, cfg: KubeadmConfig, facts: NodeFacts = FACTS, **kw: Any) -> dict[str, Any]:
    return m.build_pod(component, cfg, facts, **kw)


# --- ArgumentsToCommand -----------------------------------------------------------------------


def test_arguments_to_command_override_drops_every_default_of_that_name() -> None:
    base = [Arg("b", "1"), Arg("a", "x"), Arg("b", "2"), Arg("c", "3")]
    assert arguments_to_command(base, [Arg("b", "9")]) == ["--a=x", "--c=3", "--b=9"]


def test_arguments_to_command_keeps_user_order_and_duplicates_after_sorted_defaults() -> None:
    base = [Arg("z", "1"), Arg("m", "b"), Arg("m", "a"), Arg("a", "0")]
    overrides = [Arg("y", "2"), Arg("k", "1"), Arg("y", "1")]
    assert arguments_to_command(base, overrides) == ["--a=0", "--m=a", "--m=b", "--z=1", "--y=2", "--k=1", "--y=1"]


def test_arguments_to_command_empty_value_and_no_overrides() -> None:
    assert arguments_to_command([Arg("x", ""), Arg("a", "1")], []) == ["--a=1", "--x="]


def test_get_and_set_arg_value_work_on_the_last_entry() -> None:
    args = [Arg("a", "1"), Arg("b", "2"), Arg("a", "3")]
    assert get_arg_value(args, "a") == "3"
    assert get_arg_value(args, "nope") is None
    set_arg_value(args, "a", "4")
    assert args == [Arg("a", "1"), Arg("b", "2"), Arg("a", "4")]
    set_arg_value(args, "c", "5")
    assert args[-1] == Arg("c", "5")


def test_user_extra_args_follow_the_sorted_defaults_in_the_apiserver() -> None:
    extra = (
        Arg("service-account-issuer", "https://b"),
        Arg("service-account-issuer", "https://a"),
        Arg("audit-log-maxage", "7"),
    )
    f = flags(pod("kube-apiserver", make_cfg(api_server=APIServer(extra_args=extra))))
    assert f[-3:] == [
        "--service-account-issuer=https://b",
        "--service-account-issuer=https://a",
        "--audit-log-maxage=7",
    ]
    assert sum(1 for x in f if x.startswith("--service-account-issuer=")) == 2
    defaults = f[:-3]
    assert defaults == sorted(defaults)


# --- kube-apiserver ---------------------------------------------------------------------------


def test_apiserver_default_authorization_mode() -> None:
    f = flags(pod("kube-apiserver", make_cfg()))
    assert "--authorization-mode=Node,RBAC" in f


def test_apiserver_user_authorization_mode_is_kept_verbatim() -> None:
    extra = (Arg("authorization-mode", "Node,Foo,RBAC"),)
    f = flags(pod("kube-apiserver", make_cfg(api_server=APIServer(extra_args=extra))))
    assert [x for x in f if x.startswith("--authorization-mode")] == ["--authorization-mode=Node,Foo,RBAC"]


def test_apiserver_authorization_config_drops_authorization_mode() -> None:
    extra = (Arg("authorization-config", "/etc/kubernetes/authz.yaml"),)
    f = flags(pod("kube-apiserver", make_cfg(api_server=APIServer(extra_args=extra))))
    assert not [x for x in f if x.startswith("--authorization-mode")]
    assert f[-1] == "--authorization-config=/etc/kubernetes/authz.yaml"


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (None, "Node,RBAC"),
        ("", "Node,RBAC"),
        ("Foo,Bar", "Node,RBAC"),
        ("Webhook,Foo,Node", "Webhook,Node"),
        ("AlwaysAllow", "AlwaysAllow"),
    ],
)
def test_authorization_modes_filter(requested: str | None, expected: str) -> None:
    assert m.authorization_modes(requested) == expected


def test_apiserver_flags_follow_config_values() -> None:
    cfg = make_cfg(
        bind_port=7443,
        certificates_dir="/srv/pki",
        networking=Networking(service_subnet="10.112.0.0/16", dns_domain="corp.local"),
    )
    f = flags(pod("kube-apiserver", cfg))
    for expected in (
        "--secure-port=7443",
        "--client-ca-file=/srv/pki/ca.crt",
        "--service-account-issuer=https://kubernetes.default.svc.corp.local",
        "--service-cluster-ip-range=10.112.0.0/16",
        "--etcd-cafile=/srv/pki/etcd/ca.crt",
        "--etcd-servers=https://127.0.0.1:2379",
    ):
        assert expected in f
    ann = pod("kube-apiserver", cfg)["metadata"]["annotations"]
    assert ann == {"kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint": "192.168.56.10:7443"}


def test_apiserver_etcd_servers_from_local_etcd_advertise_client_urls() -> None:
    local = LocalEtcd(
        extra_args=(Arg("advertise-client-urls", "https://a:2379"), Arg("advertise-client-urls", "https://b:2379"))
    )
    f = flags(pod("kube-apiserver", make_cfg(etcd_local=local)))
    assert [x for x in f if x.startswith("--etcd-servers")] == ["--etcd-servers=https://b:2379"]


# --- kube-controller-manager ------------------------------------------------------------------

POD_SUBNET_FLAGS = ("--allocate-node-cidrs=", "--cluster-cidr=", "--service-cluster-ip-range=")


def test_kcm_without_pod_subnet_has_no_cidr_flags() -> None:
    f = flags(pod("kube-controller-manager", make_cfg()))
    assert not [x for x in f if x.startswith(POD_SUBNET_FLAGS)]
    assert "--cluster-name=kubernetes" in f
    assert "--controllers=*,bootstrapsigner,tokencleaner" in f


def test_kcm_with_pod_subnet_allocates_node_cidrs() -> None:
    cfg = make_cfg(
        networking=Networking(service_subnet="10.112.0.0/16", pod_subnet="10.123.0.0/16"), cluster_name="prod"
    )
    f = flags(pod("kube-controller-manager", cfg))
    assert [x for x in f if x.startswith(POD_SUBNET_FLAGS)] == [
        "--allocate-node-cidrs=true",
        "--cluster-cidr=10.123.0.0/16",
        "--service-cluster-ip-range=10.112.0.0/16",
    ]
    assert "--cluster-name=prod" in f


def test_kcm_signing_files_normally_point_at_the_ca() -> None:
    f = flags(pod("kube-controller-manager", make_cfg()))
    assert "--cluster-signing-cert-file=/etc/kubernetes/pki/ca.crt" in f
    assert "--cluster-signing-key-file=/etc/kubernetes/pki/ca.key" in f


def test_kcm_external_ca_gives_empty_signing_flags() -> None:
    facts = NodeFacts(hostname="cp1", existing_paths=frozenset({"/etc/kubernetes/pki/ca.crt"}))
    f = flags(pod("kube-controller-manager", make_cfg(), facts))
    assert "--cluster-signing-cert-file=" in f
    assert "--cluster-signing-key-file=" in f
    # ca.key present again: not external; and the explicit override wins over detection
    both = NodeFacts(
        hostname="cp1", existing_paths=frozenset({"/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key"})
    )
    assert "--cluster-signing-key-file=/etc/kubernetes/pki/ca.key" in flags(
        pod("kube-controller-manager", make_cfg(), both)
    )
    assert "--cluster-signing-key-file=" in flags(pod("kube-controller-manager", make_cfg(), both, external_ca=True))


def test_kcm_flexvolume_dir_follows_extra_arg_and_is_writable() -> None:
    cm = ControlPlaneComponent(extra_args=(Arg("flex-volume-plugin-dir", "/opt/flex"),))
    p = pod("kube-controller-manager", make_cfg(controller_manager=cm))
    vols = {v["name"]: v for v in p["spec"]["volumes"]}
    assert vols["flexvolume-dir"]["hostPath"] == {"path": "/opt/flex", "type": "DirectoryOrCreate"}
    mounts = {v["name"]: v for v in container(p)["volumeMounts"]}
    assert mounts["flexvolume-dir"] == {"name": "flexvolume-dir", "mountPath": "/opt/flex"}
    default = pod("kube-controller-manager", make_cfg())
    dvols = {v["name"]: v for v in default["spec"]["volumes"]}
    assert dvols["flexvolume-dir"]["hostPath"]["path"] == "/usr/libexec/kubernetes/kubelet-plugins/volume/exec"


# --- probes -----------------------------------------------------------------------------------


def probe_hosts(p: dict[str, Any]) -> list[str | None]:
    c = container(p)
    return [c[k]["httpGet"].get("host") for k in ("livenessProbe", "readinessProbe", "startupProbe") if k in c]


@pytest.mark.parametrize(
    ("bind", "host"),
    [(None, "127.0.0.1"), ("0.0.0.0", None), ("::", None), ("10.1.1.1", "10.1.1.1"), ("::1", "::1")],
)
def test_kcm_and_scheduler_probe_host_follows_bind_address(bind: str | None, host: str | None) -> None:
    comp = ControlPlaneComponent(extra_args=() if bind is None else (Arg("bind-address", bind),))
    cfg = make_cfg(controller_manager=comp, scheduler=comp)
    assert probe_hosts(pod("kube-controller-manager", cfg)) == [host, host]
    assert probe_hosts(pod("kube-scheduler", cfg)) == [host, host, host]


def test_apiserver_probe_host_is_empty_for_unspecified_advertise_address() -> None:
    assert probe_hosts(pod("kube-apiserver", make_cfg(adv="0.0.0.0"))) == [None, None, None]
    assert probe_hosts(pod("kube-apiserver", make_cfg(adv=""))) == ["127.0.0.1"] * 3


def test_probe_shapes_and_paths() -> None:
    cfg = make_cfg(health_check=timedelta(seconds=95))
    sched = container(pod("kube-scheduler", cfg))
    assert sched["livenessProbe"] == {
        "failureThreshold": 8,
        "httpGet": {"host": "127.0.0.1", "path": "/livez", "port": 10259, "scheme": "HTTPS"},
        "initialDelaySeconds": 10,
        "periodSeconds": 10,
        "timeoutSeconds": 15,
    }
    assert sched["readinessProbe"] == {
        "failureThreshold": 3,
        "httpGet": {"host": "127.0.0.1", "path": "/readyz", "port": 10259, "scheme": "HTTPS"},
        "periodSeconds": 1,
        "timeoutSeconds": 15,
    }
    assert sched["startupProbe"]["failureThreshold"] == 10  # ceil(95 s / 10 s)
    assert sched["startupProbe"]["httpGet"]["path"] == "/livez"
    kcm = container(pod("kube-controller-manager", cfg))
    assert "readinessProbe" not in kcm
    assert kcm["livenessProbe"]["httpGet"]["path"] == kcm["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert kcm["livenessProbe"]["httpGet"]["port"] == 10257
    default = container(pod("etcd", make_cfg()))
    assert default["startupProbe"]["failureThreshold"] == 24


@pytest.mark.parametrize(
    ("urls", "expected"),
    [
        ("https://0.0.0.0:2382,http://127.0.0.1:2381", ("0.0.0.0", 2382, "HTTPS")),
        ("http://[fd00::1]:2390", ("fd00::1", 2390, "HTTP")),
        ("http://:2399", ("127.0.0.1", 2399, "HTTP")),
        ("http://10.0.0.1", ("10.0.0.1", 2381, "HTTP")),
        ("http://10.0.0.1:0", ("10.0.0.1", 2381, "HTTP")),
        ("http://10.0.0.1:99999", ("10.0.0.1", 2381, "HTTP")),
        ("10.0.0.1:2390", ("127.0.0.1", 2381, "HTTP")),  # Go url.Parse error -> defaults
        ("http://10.0.0.1:x", ("127.0.0.1", 2381, "HTTP")),
    ],
)
def test_etcd_probe_endpoint_from_listen_metrics_urls(urls: str, expected: tuple[str, int, str]) -> None:
    cfg = make_cfg(etcd_local=LocalEtcd(extra_args=(Arg("listen-metrics-urls", urls),)))
    assert m.etcd_probe_endpoint(cfg) == expected
    c = container(pod("etcd", cfg))
    host, port, scheme = expected
    assert c["livenessProbe"]["httpGet"] == {"host": host, "path": "/livez", "port": port, "scheme": scheme}
    assert c["readinessProbe"]["httpGet"]["path"] == c["startupProbe"]["httpGet"]["path"] == "/readyz"


# --- IPv6 -------------------------------------------------------------------------------------


def test_ipv6_advertise_address_is_bracketed_everywhere() -> None:
    cfg = make_cfg(adv="fd00:10::10")
    api = pod("kube-apiserver", cfg)
    assert api["metadata"]["annotations"] == {
        "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint": "[fd00:10::10]:6443"
    }
    assert "--advertise-address=fd00:10::10" in flags(api)
    assert "--etcd-servers=https://[::1]:2379" in flags(api)
    assert probe_hosts(api) == ["fd00:10::10"] * 3
    etcd = pod("etcd", cfg)
    assert etcd["metadata"]["annotations"] == {
        "kubeadm.kubernetes.io/etcd.advertise-client-urls": "https://[fd00:10::10]:2379"
    }
    f = flags(etcd)
    for expected in (
        "--advertise-client-urls=https://[fd00:10::10]:2379",
        "--listen-client-urls=https://[::1]:2379,https://[fd00:10::10]:2379",
        "--listen-metrics-urls=http://[::1]:2381",
        "--listen-peer-urls=https://[fd00:10::10]:2380",
        "--initial-cluster=cp1=https://[fd00:10::10]:2380",
    ):
        assert expected in f
    assert probe_hosts(etcd) == ["::1"] * 3


def test_ipv4_mapped_ipv6_counts_as_ipv4() -> None:
    assert is_ipv6_string("fd00::1")
    assert not is_ipv6_string("::ffff:10.0.0.1")
    assert not is_ipv6_string("10.0.0.1")
    assert not is_ipv6_string("not-an-ip")
    assert join_host_port("::1", 2379) == "[::1]:2379"
    assert join_host_port("10.0.0.1", "80") == "10.0.0.1:80"


# --- volumes ----------------------------------------------------------------------------------


def volume_names(p: dict[str, Any]) -> list[str]:
    return [v["name"] for v in p["spec"]["volumes"]]


def test_optional_ca_volumes_follow_existing_paths() -> None:
    none = NodeFacts(hostname="cp1")
    assert volume_names(pod("kube-apiserver", make_cfg(), none)) == ["ca-certs", "k8s-certs"]
    assert volume_names(pod("kube-controller-manager", make_cfg(), none)) == [
        "ca-certs",
        "flexvolume-dir",
        "k8s-certs",
        "kubeconfig",
    ]
    every = NodeFacts(
        hostname="cp1",
        existing_paths=frozenset(
            {
                "/etc/pki/ca-trust",
                "/etc/pki/tls/certs",
                "/etc/ca-certificates",
                "/usr/share/ca-certificates",
                "/usr/local/share/ca-certificates",
                "/etc/pki",
            }
        ),
    )
    expected_optional = [
        "etc-ca-certificates",
        "etc-pki-ca-trust",
        "etc-pki-tls-certs",
        "usr-local-share-ca-certificates",
        "usr-share-ca-certificates",
    ]
    assert volume_names(pod("kube-apiserver", make_cfg(), every)) == sorted(
        ["ca-certs", "k8s-certs", *expected_optional]
    )
    api = pod("kube-apiserver", make_cfg(), every)
    assert [v["name"] for v in container(api)["volumeMounts"]] == volume_names(api)
    assert all(v.get("readOnly") is True for v in container(api)["volumeMounts"])
    # the scheduler only ever mounts its kubeconfig
    assert volume_names(pod("kube-scheduler", make_cfg(), every)) == ["kubeconfig"]


def test_extra_volumes_are_added_and_replace_same_name_defaults() -> None:
    extra = (
        HostPathMount("ca-certs", "/etc/pki/custom", "/etc/ssl/certs", read_only=True),
        HostPathMount("audit", "/var/log/kubernetes", "/var/log/kubernetes", path_type="DirectoryOrCreate"),
    )
    p = pod("kube-apiserver", make_cfg(api_server=APIServer(extra_args=(), extra_volumes=extra)))
    vols = {v["name"]: v for v in p["spec"]["volumes"]}
    mounts = {v["name"]: v for v in container(p)["volumeMounts"]}
    assert volume_names(p) == ["audit", "ca-certs", "k8s-certs"]
    assert vols["ca-certs"] == {"name": "ca-certs", "hostPath": {"path": "/etc/pki/custom", "type": ""}}
    assert mounts["ca-certs"] == {"name": "ca-certs", "mountPath": "/etc/ssl/certs", "readOnly": True}
    assert vols["audit"]["hostPath"]["type"] == "DirectoryOrCreate"
    assert mounts["audit"] == {"name": "audit", "mountPath": "/var/log/kubernetes"}
    text = m.render_manifest(p)
    assert '      path: /etc/pki/custom\n      type: ""\n' in text


def test_etcd_volumes_and_fixed_mount_order() -> None:
    p = pod("etcd", make_cfg(etcd_local=LocalEtcd(data_dir="/data/etcd")))
    assert p["spec"]["volumes"] == [
        {"name": "etcd-certs", "hostPath": {"path": "/etc/kubernetes/pki/etcd", "type": "DirectoryOrCreate"}},
        {"name": "etcd-data", "hostPath": {"path": "/data/etcd", "type": "DirectoryOrCreate"}},
    ]
    assert container(p)["volumeMounts"] == [
        {"name": "etcd-data", "mountPath": "/data/etcd"},
        {"name": "etcd-certs", "mountPath": "/etc/kubernetes/pki/etcd"},
    ]


# --- external etcd ----------------------------------------------------------------------------


def test_external_etcd_apiserver_flags_volumes_and_no_etcd_manifest() -> None:
    ext = ExternalEtcd(
        endpoints=("https://10.0.0.21:2379", "https://10.0.0.22:2379"),
        ca_file="/etc/ssl/certs/etcd-ca.pem",
        cert_file="/opt/etcd/pki/client/apiserver.crt",
        key_file="/opt/etcd/pki/apiserver.key",
    )
    cfg = make_cfg(etcd_local=None, etcd_external=ext)
    assert m.components(cfg) == ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
    assert [a.path.name for a in m.build_manifests(cfg, FACTS)] == [
        "kube-apiserver.yaml",
        "kube-controller-manager.yaml",
        "kube-scheduler.yaml",
    ]
    api = pod("kube-apiserver", cfg)
    etcd_flags = [x for x in flags(api) if x.startswith("--etcd-")]
    assert etcd_flags == [
        "--etcd-cafile=/etc/ssl/certs/etcd-ca.pem",
        "--etcd-certfile=/opt/etcd/pki/client/apiserver.crt",
        "--etcd-keyfile=/opt/etcd/pki/apiserver.key",
        "--etcd-servers=https://10.0.0.21:2379,https://10.0.0.22:2379",
    ]
    vols = {v["name"]: v["hostPath"]["path"] for v in api["spec"]["volumes"]}
    # /etc/ssl/certs is mounted anyway; /opt/etcd/pki/client collapses into its parent
    assert vols == {"ca-certs": "/etc/ssl/certs", "etcd-certs-0": "/opt/etcd/pki", "k8s-certs": "/etc/kubernetes/pki"}
    with pytest.raises(ConfigError):
        m.build_pod("etcd", cfg, FACTS)
    with pytest.raises(ConfigError):
        m.etcd_flags(cfg)


def test_external_etcd_cert_without_key_and_no_ca() -> None:
    ext = ExternalEtcd(endpoints=("http://e:2379",), cert_file="/a/c.crt")
    f = flags(pod("kube-apiserver", make_cfg(etcd_local=None, etcd_external=ext)))
    assert [x for x in f if x.startswith("--etcd-")] == ["--etcd-servers=http://e:2379"]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (("", "", ""), []),
        (("/x/ca.crt", "/x/y/c.crt", "/z/k.key"), ["/x", "/z"]),
        (("/x/y/c.crt", "/x/ca.crt", "/x/y/z/k.key"), ["/x"]),
        (("/etc/pki/ca-trust/a", "/usr/share/ca-certificates/b", "/etc/kubernetes/pki/etcd/c"), []),
        (("ca.crt", "/b/c.crt", "/b/c.key"), ["/b"]),
    ],
)
def test_external_etcd_cert_dirs(files: tuple[str, str, str], expected: list[str]) -> None:
    ext = ExternalEtcd(endpoints=("https://e:2379",), ca_file=files[0], cert_file=files[1], key_file=files[2])
    api = pod("kube-apiserver", make_cfg(etcd_local=None, etcd_external=ext))
    got = [(v["name"], v["hostPath"]["path"]) for v in api["spec"]["volumes"] if v["name"].startswith("etcd-certs")]
    assert got == [(f"etcd-certs-{i}", d) for i, d in enumerate(expected)]


# --- env --------------------------------------------------------------------------------------


def test_proxy_env_merged_with_extra_envs_sorted_and_not_given_to_etcd() -> None:
    facts = NodeFacts(
        hostname="cp1",
        proxy_env=(("no_proxy", "localhost"), ("HTTPS_PROXY", "http://p:3128"), ("EMPTY_PROXY", ""), ("PATH", "/x")),
    )
    cfg = make_cfg(
        api_server=APIServer(extra_envs=(EnvVar("no_proxy", "override"), EnvVar("A", "1"), EnvVar("E", ""))),
        etcd_local=LocalEtcd(extra_envs=(EnvVar("ETCD_X", "y"),)),
    )
    assert container(pod("kube-apiserver", cfg, facts))["env"] == [
        {"name": "A", "value": "1"},
        {"name": "E"},
        {"name": "HTTPS_PROXY", "value": "http://p:3128"},
        {"name": "no_proxy", "value": "override"},
    ]
    assert container(pod("kube-scheduler", cfg, facts))["env"] == [
        {"name": "HTTPS_PROXY", "value": "http://p:3128"},
        {"name": "no_proxy", "value": "localhost"},
    ]
    assert container(pod("etcd", cfg, facts))["env"] == [{"name": "ETCD_X", "value": "y"}]
    assert "env" not in container(pod("kube-scheduler", cfg))


# --- etcd -------------------------------------------------------------------------------------


def test_etcd_flags_are_the_manifest_command() -> None:
    cfg = make_cfg(etcd_local=LocalEtcd(extra_args=(Arg("quota-backend-bytes", "8589934592"),)))
    assert m.etcd_command(cfg) == ["etcd", *m.etcd_flags(cfg)] == container(pod("etcd", cfg))["command"]
    f = m.etcd_flags(cfg)
    assert f[-1] == "--quota-backend-bytes=8589934592"
    assert "--experimental-initial-corrupt-check=true" in f
    assert "--experimental-watch-progress-notify-interval=5s" in f
    assert "--initial-cluster=cp1=https://192.168.56.10:2380" in f
    assert "--snapshot-count=10000" in f


def _at(cfg: KubeadmConfig, version: str) -> KubeadmConfig:
    return dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, kubernetes_version=version))


@pytest.mark.parametrize(
    ("version", "tag"),
    [
        ("v1.30.14", "3.5.15-0"),
        ("v1.31.0", "3.5.15-0"),  # kubeadm v1.31.0-v1.31.13's own SupportedEtcdVersion entry
        ("v1.31.14", "3.5.24-0"),
        ("v1.33.13", "3.5.24-0"),
        ("v1.34.0", "3.6.5-0"),
        ("v1.35.4", "3.6.6-0"),
        ("v1.36.1", "3.6.8-0"),
        ("v1.37.2", "3.7.0-0"),
    ],
)
def test_etcd_image_tag_of_each_minor(version: str, tag: str) -> None:
    # kubeadm constants.SupportedEtcdVersion of v1.30.14 ... v1.37.2 (core/versions.py)
    assert m.etcd_image_tag(_at(make_cfg(), version)) == tag
    assert m.etcd_image(_at(make_cfg(), version)) == f"registry.k8s.io/etcd:{tag}"


@pytest.mark.parametrize(
    ("version", "image_tag", "v36"),
    [
        ("v1.33.13", "3.6.5-0", False),  # before v1.34: the experimental flags whatever the image
        ("v1.34.4", "", True),  # v1.34 and v1.35: by the etcd image tag (default 3.6.5-0)
        ("v1.34.4", "3.5.24-0", False),
        ("v1.35.4", "3.5.24-0", False),
        ("v1.36.3", "3.5.24-0", True),  # from v1.36: always the etcd 3.6 flags
    ],
)
def test_etcd_36_flags_follow_the_minor_and_image_tag(version: str, image_tag: str, v36: bool) -> None:
    cfg = _at(make_cfg(etcd_local=LocalEtcd(image_tag=image_tag)), version)
    f = m.etcd_flags(cfg)
    new = ["--feature-gates=InitialCorruptCheck=true", "--watch-progress-notify-interval=5s"]
    old = ["--experimental-initial-corrupt-check=true", "--experimental-watch-progress-notify-interval=5s"]
    assert all((x in f) == v36 for x in new)
    assert all((x in f) != v36 for x in old)


def test_images() -> None:
    cfg = make_cfg(image_repository="registry.example.com/k8s")
    assert container(pod("kube-apiserver", cfg))["image"] == "registry.example.com/k8s/kube-apiserver:v1.33.13"
    assert m.etcd_image(cfg) == "registry.example.com/k8s/etcd:3.5.24-0"
    local = LocalEtcd(image_repository="quay.example.com/coreos", image_tag="3.6.5-0")
    assert m.etcd_image(make_cfg(etcd_local=local)) == "quay.example.com/coreos/etcd:3.6.5-0"
    plus = dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, kubernetes_version="v1.33.13+abc"))
    assert m.kubernetes_image("kube-scheduler", plus) == "registry.example.com/k8s/kube-scheduler:v1.33.13_abc"


# --- pod skeleton, rendering, parsing ---------------------------------------------------------


def test_pod_skeleton() -> None:
    p = pod("kube-scheduler", make_cfg())
    assert p["apiVersion"] == "v1" and p["kind"] == "Pod" and p["status"] == {}
    assert p["metadata"] == {
        "creationTimestamp": None,
        "labels": {"component": "kube-scheduler", "tier": "control-plane"},
        "name": "kube-scheduler",
        "namespace": "kube-system",
    }
    spec = p["spec"]
    assert spec["hostNetwork"] is True
    assert spec["priority"] == 2000001000
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    c = container(p)
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["resources"] == {"requests": {"cpu": "100m"}}
    assert container(pod("etcd", make_cfg()))["resources"] == {"requests": {"cpu": "100m", "memory": "100Mi"}}


def test_render_and_parse_round_trip_and_flag_helpers() -> None:
    cfg = make_cfg(controller_manager=ControlPlaneComponent(extra_args=(Arg("v", "2"), Arg("v", "4"))))
    for name, p in m.build_pods(cfg, FACTS).items():
        text = m.render_manifest(p)
        assert text.startswith("apiVersion: v1\nkind: Pod\nmetadata:\n")
        assert "  creationTimestamp: null\n" in text and text.endswith("status: {}\n")
        parsed = m.parse_manifest(text)
        assert parsed == p, name
    kcm = m.parse_manifest(m.render_manifest(m.build_pod("kube-controller-manager", cfg, FACTS)))
    assert m.manifest_command(kcm)[0] == "kube-controller-manager"
    fl = m.manifest_flags(kcm)
    assert fl["kubeconfig"] == "/etc/kubernetes/controller-manager.conf"
    assert fl["v"] == "4"  # last one wins, like pflag
    assert [a.value for a in m.manifest_args(kcm) if a.name == "v"] == ["2", "4"]


def test_manifest_helpers_tolerate_odd_pods() -> None:
    assert m.manifest_command({}) == []
    assert m.manifest_flags({"spec": {"containers": []}}) == {}
    odd = {"spec": {"containers": [{"command": ["x", "positional", "--flag", "-s=1", "--a=b=c"]}]}}
    assert m.manifest_flags(odd) == {"flag": "", "s": "1", "a": "b=c"}


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "kind: Service\n", "a: [\n"])
def test_parse_manifest_rejects_non_pods(text: str) -> None:
    with pytest.raises(ConfigError):
        m.parse_manifest(text)


def test_build_manifests_paths_modes_and_order() -> None:
    arts = m.build_manifests(make_cfg(), FACTS)
    assert [str(a.path) for a in arts] == [
        "/etc/kubernetes/manifests/etcd.yaml",
        "/etc/kubernetes/manifests/kube-apiserver.yaml",
        "/etc/kubernetes/manifests/kube-controller-manager.yaml",
        "/etc/kubernetes/manifests/kube-scheduler.yaml",
    ]
    assert {a.mode for a in arts} == {0o600}
    assert m.parse_manifest(arts[1].content) == m.build_pod("kube-apiserver", make_cfg(), FACTS)


def test_unsupported_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown control-plane component"):
        m.build_pod("kube-proxy", make_cfg(), FACTS)
    rootless = make_cfg(feature_gates=(("RootlessControlPlane", True),))
    with pytest.raises(ConfigError, match="RootlessControlPlane"):
        m.build_manifests(rootless, FACTS)
    cfg = make_cfg()
    patched = dataclasses.replace(cfg, init=dataclasses.replace(cfg.init, patches_directory="/etc/kubeadm/patches"))
    with pytest.raises(ConfigError, match="patches"):
        m.build_manifests(patched, FACTS)


def test_component_command_matches_pods() -> None:
    cfg = make_cfg()
    for name, p in m.build_pods(cfg, FACTS).items():
        assert m.component_command(name, cfg, FACTS) == container(p)["command"]


# --- Go path helpers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "clean", "directory"),
    [
        ("", ".", "."),
        ("ca.crt", "ca.crt", "."),
        ("/etc//ssl/./certs/", "/etc/ssl/certs", "/etc/ssl/certs"),
        ("//a/b/../c", "/a/c", "/a"),
        ("/..", "/", "/"),
        ("a/../../b", "../b", ".."),
    ],
)
def test_go_path_helpers(path: str, clean: str, directory: str) -> None:
    assert go_clean(path) == clean
    assert go_dir(path) == directory


def test_go_join() -> None:
    assert go_join("/etc/kubernetes/pki/", "etcd/ca.crt") == "/etc/kubernetes/pki/etcd/ca.crt"
    assert go_join("", "") == ""
    assert go_join("a", "", "b") == "a/b"


# --- how long a stopped control-plane container gets between SIGTERM and SIGKILL ----------------------------------


def _manifest(component: str, cfg: KubeadmConfig, **spec: Any) -> bytes:
    built = pod(component, cfg)
    built["spec"].update(spec)
    return m.render_manifest(built).encode()


def test_a_stopped_api_server_gets_its_shutdown_delay_and_a_drain_the_others_the_pods_grace() -> None:
    """kubeadm's kube-apiserver (no delay): 5 s to drain; with --shutdown-delay-duration 5s (the HA lab) 10 s: it fails
    /readyz at SIGTERM, serves 5 s while the load balancer takes it out, drains, and is not waited for while its watch
    streams stay open (up to 60 s: the v1.37 lab's API server still ran 30 s after SIGTERM). Never beyond the Pod's
    grace period (30 s unless the Pod says), which etcd, the controller-manager and the scheduler get."""
    cfg = make_cfg()
    assert m.stop_grace_seconds(m.KUBE_APISERVER, _manifest(m.KUBE_APISERVER, cfg)) == 5
    delayed = make_cfg(api_server=APIServer(extra_args=(Arg("shutdown-delay-duration", "5s"),)))
    assert m.stop_grace_seconds(m.KUBE_APISERVER, _manifest(m.KUBE_APISERVER, delayed)) == 10
    slow = make_cfg(api_server=APIServer(extra_args=(Arg("shutdown-delay-duration", "1m10s"),)))
    assert m.stop_grace_seconds(m.KUBE_APISERVER, _manifest(m.KUBE_APISERVER, slow)) == 30  # the Pod's grace
    long_grace = _manifest(m.KUBE_APISERVER, slow, terminationGracePeriodSeconds=120)
    assert m.stop_grace_seconds(m.KUBE_APISERVER, long_grace) == 75
    for component in (m.ETCD, m.KUBE_CONTROLLER_MANAGER, m.KUBE_SCHEDULER):
        assert m.stop_grace_seconds(component, _manifest(component, cfg)) == 30
    assert m.stop_grace_seconds(m.ETCD, _manifest(m.ETCD, cfg, terminationGracePeriodSeconds=12)) == 12
    # no manifest, not YAML, a flag that is not a duration: the Pod's default
    soon = make_cfg(api_server=APIServer(extra_args=(Arg("shutdown-delay-duration", "soon"),)))
    bad = _manifest(m.KUBE_APISERVER, soon)
    for manifest in (None, b"", b"{[", b"- a list", bad):
        assert m.stop_grace_seconds(m.KUBE_APISERVER, manifest) == 30, manifest
