"""kuberevive.core.kubeconfig: the five kubeconfigs (URLs, names, client certs, YAML) and the parser."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from kuberevive.core import kubeconfig, pki
from kuberevive.errors import ConfigError, PkiError
from kuberevive.model.artifacts import ArtifactKind
from kuberevive.model.config import (
    APIEndpoint,
    ClusterConfiguration,
    EncryptionAlgorithm,
    InitConfiguration,
    KubeadmConfig,
    NodeFacts,
    NodeRegistration,
)
from kuberevive.model.kubeadm_yaml import load_kubeadm_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
KC = PurePosixPath("/etc/kubernetes")


def load_config(name: str) -> KubeadmConfig:
    return load_kubeadm_config((CONFIGS / name).read_text(), NodeFacts(hostname="ignored"))


def make_config(
    adv: str = "192.168.56.10", port: int = 6443, cpe: str = "", gates: tuple[tuple[str, bool], ...] = ()
) -> KubeadmConfig:
    cluster = ClusterConfiguration(kubernetes_version="v1.33.13", control_plane_endpoint=cpe, feature_gates=gates)
    return KubeadmConfig(cluster, InitConfiguration(APIEndpoint(adv, port), NodeRegistration("cp1")))


@pytest.fixture(scope="module")
def ca() -> pki.PkiBundle:
    cfg = load_config("endpoint-sans.yaml")
    return pki.build_certificates(cfg, NOW - timedelta(days=10), {})


@pytest.fixture(scope="module")
def prod(ca: pki.PkiBundle) -> dict[str, bytes]:
    assert ca.ca_key_pem is not None
    arts = kubeconfig.build_kubeconfigs(load_config("endpoint-sans.yaml"), ca.ca_cert_pem, ca.ca_key_pem, NOW)
    return {a.path.name: a.content for a in arts}


def user_data(text: bytes) -> tuple[x509.Certificate, bytes]:
    kc = kubeconfig.Kubeconfig.from_yaml(text)
    _cluster, user = kc.current()
    assert user.client_certificate_data is not None and user.client_key_data is not None
    return x509.load_pem_x509_certificate(user.client_certificate_data), user.client_key_data


# ------------------------------------------------------------------------------------------ URLs


@pytest.mark.parametrize(
    ("config", "cpe_url", "local_url"),
    [
        ("defaults.yaml", "https://192.168.56.10:6443", "https://192.168.56.10:6443"),
        ("ecdsa-validity.yaml", "https://172.16.5.5:6443", "https://172.16.5.5:6443"),
        ("endpoint-sans.yaml", "https://api.prod.example.com:8443", "https://10.20.30.40:6443"),
    ],
)
def test_urls_of_the_reference_configs(config: str, cpe_url: str, local_url: str) -> None:
    cfg = load_config(config)
    assert kubeconfig.control_plane_url(cfg) == cpe_url
    assert kubeconfig.local_api_url(cfg) == local_url
    servers = {s.file_name: s.server for s in kubeconfig.kubeconfig_specs(cfg)}
    assert servers == {
        "admin.conf": cpe_url,
        "super-admin.conf": cpe_url,
        "kubelet.conf": local_url,  # ControlPlaneKubeletLocalMode, on by default in v1.33
        "controller-manager.conf": local_url,
        "scheduler.conf": local_url,
    }


def test_url_edge_cases() -> None:
    assert kubeconfig.local_api_url(make_config(adv="fd00::10", port=7443)) == "https://[fd00::10]:7443"
    assert kubeconfig.local_api_url(make_config(adv="010.000.000.001")) == "https://10.0.0.1:6443"
    assert kubeconfig.control_plane_url(make_config(cpe="lb.example.com", port=7443)) == "https://lb.example.com:7443"
    assert kubeconfig.control_plane_url(make_config(cpe="[fd00::1]:443")) == "https://[fd00::1]:443"
    assert kubeconfig.control_plane_url(make_config(cpe="fd00::1")) == "https://[fd00::1]:6443"
    with pytest.raises(ConfigError, match="controlPlaneEndpoint"):
        kubeconfig.control_plane_url(make_config(cpe="lb.example.com:99999"))


def test_kubelet_uses_the_endpoint_when_local_mode_is_off() -> None:
    cfg = make_config(cpe="lb.example.com:443", gates=(("ControlPlaneKubeletLocalMode", False),))
    servers = {s.file_name: s.server for s in kubeconfig.kubeconfig_specs(cfg)}
    assert servers["kubelet.conf"] == "https://lb.example.com:443"
    assert servers["scheduler.conf"] == "https://192.168.56.10:6443"


# ---------------------------------------------------------------------------------- the files


def test_five_files_with_mode_and_kind(ca: pki.PkiBundle) -> None:
    assert ca.ca_key_pem is not None
    arts = kubeconfig.build_kubeconfigs(load_config("endpoint-sans.yaml"), ca.ca_cert_pem, ca.ca_key_pem, NOW)
    assert [(str(a.path), a.mode, a.kind) for a in arts] == [
        (f"/etc/kubernetes/{n}", 0o600, ArtifactKind.KUBECONFIG)
        for n in ("admin.conf", "super-admin.conf", "kubelet.conf", "controller-manager.conf", "scheduler.conf")
    ]


def test_exact_yaml_layout(prod: dict[str, bytes], ca: pki.PkiBundle) -> None:
    text = prod["admin.conf"].decode()
    cert, key = user_data(prod["admin.conf"])
    b64 = base64.b64encode
    expected = (
        "apiVersion: v1\n"
        "clusters:\n"
        "- cluster:\n"
        f"    certificate-authority-data: {b64(ca.ca_cert_pem).decode()}\n"
        "    server: https://api.prod.example.com:8443\n"
        "  name: prod-eu\n"
        "contexts:\n"
        "- context:\n"
        "    cluster: prod-eu\n"
        "    user: kubernetes-admin\n"
        "  name: kubernetes-admin@prod-eu\n"
        "current-context: kubernetes-admin@prod-eu\n"
        "kind: Config\n"
        "preferences: {}\n"
        "users:\n"
        "- name: kubernetes-admin\n"
        "  user:\n"
        f"    client-certificate-data: {b64(pki.encode_certificate_pem(cert)).decode()}\n"
        f"    client-key-data: {b64(key).decode()}\n"
    )
    assert text == expected


@pytest.mark.parametrize(
    ("name", "cn", "orgs"),
    [
        ("admin.conf", "kubernetes-admin", ["kubeadm:cluster-admins"]),
        ("super-admin.conf", "kubernetes-super-admin", ["system:masters"]),
        ("kubelet.conf", "system:node:master-a", ["system:nodes"]),
        ("controller-manager.conf", "system:kube-controller-manager", []),
        ("scheduler.conf", "system:kube-scheduler", []),
    ],
)
def test_client_certificates(prod: dict[str, bytes], ca: pki.PkiBundle, name: str, cn: str, orgs: list[str]) -> None:
    kc = kubeconfig.Kubeconfig.from_yaml(prod[name])
    assert kc.current_context == f"{cn}@prod-eu"
    assert list(kc.users) == [cn] and list(kc.clusters) == ["prod-eu"]
    cert, key_pem = user_data(prod[name])
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == orgs
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    ca_cert = ca.ca.cert
    assert pki.verify_signed_by(cert, ca_cert)
    assert cert.not_valid_before_utc == ca_cert.not_valid_before_utc  # pkiutil inherits the CA's NotBefore
    assert cert.not_valid_after_utc == NOW + timedelta(hours=8760)
    key = pki.load_private_key(key_pem, name)
    assert key_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----") and pki.key_matches_certificate(key, cert)


def test_ecdsa_cluster_gives_ecdsa_client_keys() -> None:
    cfg = load_config("ecdsa-validity.yaml")
    bundle = pki.build_certificates(cfg, NOW, {})
    assert bundle.ca_key_pem is not None
    arts = kubeconfig.build_kubeconfigs(cfg, bundle.ca_cert_pem, bundle.ca_key_pem, NOW)
    cert, key_pem = user_data(arts[0].content)
    assert key_pem.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert cert.not_valid_after_utc == NOW + timedelta(hours=720)


def test_existing_kubeconfig_with_the_same_ca_is_kept(prod: dict[str, bytes], ca: pki.PkiBundle) -> None:
    assert ca.ca_key_pem is not None
    existing = {KC / "admin.conf": prod["admin.conf"]}
    arts = kubeconfig.build_kubeconfigs(load_config("endpoint-sans.yaml"), ca.ca_cert_pem, ca.ca_key_pem, NOW, existing)
    assert [a.path.name for a in arts] == [
        "super-admin.conf",
        "kubelet.conf",
        "controller-manager.conf",
        "scheduler.conf",
    ]


def test_existing_kubeconfig_with_another_ca_is_an_error(prod: dict[str, bytes]) -> None:
    other = pki.build_certificates(make_config(), NOW, {})
    assert other.ca_key_pem is not None
    existing = {KC / "scheduler.conf": prod["scheduler.conf"]}
    with pytest.raises(PkiError, match=r"^/etc/kubernetes/scheduler\.conf trusts a different CA than ca\.crt"):
        kubeconfig.build_kubeconfigs(make_config(), other.ca_cert_pem, other.ca_key_pem, NOW, existing)


def test_external_ca_requires_supplied_kubeconfigs(prod: dict[str, bytes], ca: pki.PkiBundle) -> None:
    cfg = load_config("endpoint-sans.yaml")
    existing = {KC / n: prod[n] for n in prod}
    assert kubeconfig.build_kubeconfigs(cfg, ca.ca_cert_pem, None, NOW, existing) == []
    del existing[KC / "kubelet.conf"]
    with pytest.raises(
        PkiError, match=r"external CA mode \(no ca\.key\): /etc/kubernetes/kubelet\.conf must be supplied"
    ):
        kubeconfig.build_kubeconfigs(cfg, ca.ca_cert_pem, None, NOW, existing)


def test_mismatched_ca_key_is_refused(ca: pki.PkiBundle) -> None:
    other = pki.build_certificates(make_config(), NOW, {})
    assert other.ca_key_pem is not None
    with pytest.raises(PkiError, match="does not belong"):
        kubeconfig.build_kubeconfigs(make_config(), ca.ca_cert_pem, other.ca_key_pem, NOW)


# ---------------------------------------------------------------------------------------- parser

# kubelet.conf of a real kubeadm v1.33.0 node after kubelet-finalize (spec §0 "S-1.33"), CA data shortened.
S133_KUBELET_CONF = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
    server: https://192.168.121.223:6443
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: system:node:controlplane
  name: system:node:controlplane@kubernetes
current-context: system:node:controlplane@kubernetes
kind: Config
preferences: {}
users:
- name: system:node:controlplane
  user:
    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem
    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem
"""


def test_parse_a_real_finalized_kubelet_conf() -> None:
    kc = kubeconfig.Kubeconfig.from_yaml(S133_KUBELET_CONF)
    cluster, user = kc.current()
    assert cluster.server == "https://192.168.121.223:6443"
    assert cluster.certificate_authority_data == b"-----BEGIN CERTIFICATE-----\n"
    assert user.client_certificate == user.client_key == "/var/lib/kubelet/pki/kubelet-client-current.pem"
    assert user.client_certificate_data is None and user.token is None
    assert kc.contexts["system:node:controlplane@kubernetes"].namespace is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n", "not a YAML mapping"),
        ("kind: Pod\n", "kind 'Pod'"),
        ("clusters: {}\n", "clusters must be a list"),
        ("clusters:\n- cluster: {}\n", r"clusters\[0\] needs a name"),
        ("clusters:\n- name: x\n  cluster:\n    certificate-authority-data: '***'\n", "not valid base64"),
        ("clusters:\n- name: x\n  cluster:\n    insecure-skip-tls-verify: 'yes'\n", "must be true or false"),
        ("users:\n- name: u\n  user:\n    token: 5\n", "must be a string"),
        ("key: [unclosed\n", "not valid YAML"),
    ],
)
def test_parser_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        kubeconfig.Kubeconfig.from_yaml(text)


def test_current_context_must_resolve() -> None:
    base = "contexts:\n- name: c\n  context:\n    cluster: k\n    user: u\n"
    with pytest.raises(ConfigError, match="names no context"):
        kubeconfig.Kubeconfig.from_yaml(base + "current-context: other\n").current()
    with pytest.raises(ConfigError, match="unknown cluster 'k'"):
        kubeconfig.Kubeconfig.from_yaml(base + "current-context: c\n").current()


TWO_CLUSTERS = """\
clusters:
- name: a
  cluster:
    server: https://a:6443
    certificate-authority-data: QQ==
- name: b
  cluster:
    server: https://b:6443
- name: c
  cluster:
    certificate-authority-data: Qw==
contexts:
- name: first
  context: {cluster: b, user: u}
- name: second
  context: {cluster: a}
users:
- name: u
  user: {tokenFile: /var/run/secrets/token}
"""


def test_current_or_first_falls_back_to_the_first_context_and_an_empty_user() -> None:
    kc = kubeconfig.Kubeconfig.from_yaml(TWO_CLUSTERS)
    cluster, user = kc.current_or_first()  # no current-context: the first context, as kubectl with one
    assert cluster.server == "https://b:6443" and user.token_file == "/var/run/secrets/token"
    cluster, user = kubeconfig.Kubeconfig.from_yaml(TWO_CLUSTERS + "current-context: second\n").current_or_first()
    assert cluster.server == "https://a:6443" and user == kubeconfig.User()
    with pytest.raises(ConfigError, match="has no context"):
        kubeconfig.Kubeconfig.from_yaml("clusters: []\n").current_or_first()
    with pytest.raises(ConfigError, match="names no context"):
        kubeconfig.Kubeconfig.from_yaml(TWO_CLUSTERS + "current-context: gone\n").current_or_first()


def test_cluster_cas_and_first_cluster_ca() -> None:
    assert kubeconfig.Kubeconfig.from_yaml(TWO_CLUSTERS).cluster_cas() == [b"A", b"C"]
    assert kubeconfig.first_cluster_ca(TWO_CLUSTERS) == b"A"
    assert (
        kubeconfig.first_cluster_ca(TWO_CLUSTERS.replace("QQ==", "").replace("    certificate-authority-data: \n", ""))
        is None
    )
    with pytest.raises(ConfigError, match="has no cluster"):
        kubeconfig.first_cluster_ca("users: []\n")
    with pytest.raises(ConfigError, match="not valid base64"):
        kubeconfig.first_cluster_ca(TWO_CLUSTERS.replace("QQ==", "'***'"))


def test_only_the_named_kubeconfigs_are_made_each_with_one_new_key(
    ca: pki.PkiBundle, keys_made: list[EncryptionAlgorithm]
) -> None:
    made = keys_made
    assert ca.ca_key_pem is not None
    cfg = load_config("endpoint-sans.yaml")
    arts = kubeconfig.build_kubeconfigs(cfg, ca.ca_cert_pem, ca.ca_key_pem, NOW, names=["kubelet.conf"])
    assert [a.path.name for a in arts] == ["kubelet.conf"] and len(made) == 1  # recover made all five, used one
    arts = kubeconfig.build_kubeconfigs(cfg, ca.ca_cert_pem, ca.ca_key_pem, NOW, names=["admin.conf", "scheduler.conf"])
    assert [a.path.name for a in arts] == ["admin.conf", "scheduler.conf"] and len(made) == 3
