"""Pure recovery planning: identity from node evidence, configuration from etcd, files and objects."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath

import pytest
import yaml
from cryptography import x509

from kuberevive.core import pki, versions
from kuberevive.core import recover as core
from kuberevive.core.manifests import etcd_image
from kuberevive.errors import ConfigError, PkiError, PlanError
from kuberevive.model.config import EncryptionAlgorithm
from kuberevive.model.recover import NodeEvidence, StepKind

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

STORED = """\
apiServer:
  certSANs:
  - kuberevive-lab.invalid
  extraArgs:
  - name: event-ttl
    value: 2h0m0s
apiVersion: kubeadm.k8s.io/v1beta4
caCertificateValidityPeriod: 87600h0m0s
certificateValidityPeriod: 8760h0m0s
certificatesDir: /etc/kubernetes/pki
clusterName: kubernetes
controllerManager: {}
dns:
  disabled: true
encryptionAlgorithm: ECDSA-P256
etcd:
  local:
    dataDir: /var/lib/etcd
imageRepository: registry.k8s.io
kind: ClusterConfiguration
kubernetesVersion: v1.33.13
networking:
  dnsDomain: cluster.local
  podSubnet: 10.123.0.0/16
  serviceSubnet: 10.96.0.0/12
proxy: {}
scheduler: {}
"""


def evidence(**over: object) -> NodeEvidence:
    base: dict[str, object] = {
        "hostname": "cp1",
        "kubelet_config_yaml": "kind: KubeletConfiguration\n",
        "kubeadm_flags": (
            ("container-runtime-endpoint", "unix:///run/containerd/containerd.sock"),
            ("node-ip", "172.30.2.11"),
        ),
        "kubeadm_flags_present": True,
        "kubelet_client_cn": "system:node:cp1",
        "etcd_data_dirs": ("/var/lib/etcd",),
        "addresses": ("172.30.2.11",),
        "images": ("registry.k8s.io/etcd:3.5.24-0", "registry.k8s.io/kube-apiserver:v1.33.13"),
        "kubelet_version": "v1.33.13",
    }
    base.update(over)
    return NodeEvidence(**base)  # type: ignore[arg-type]


def test_identity_from_the_lab_node() -> None:
    ident = core.identify(evidence())
    assert (ident.node_name, ident.advertise_address, ident.bind_port) == ("cp1", "172.30.2.11", 6443)
    assert ident.cri_socket == "unix:///run/containerd/containerd.sock"
    assert ident.etcd_image == "registry.k8s.io/etcd:3.5.24-0"
    assert dict(ident.sources)["node name"].startswith("CN of")


def test_identity_fallbacks() -> None:
    ident = core.identify(
        evidence(kubelet_client_cn=None, kubeadm_flags=(("hostname-override", "node-a"),), default_address="10.0.0.5")
    )
    assert (ident.node_name, ident.advertise_address) == ("node-a", "10.0.0.5")
    assert ident.cri_socket == "unix:///var/run/containerd/containerd.sock"
    assert core.identify(evidence(kubelet_client_cn=None, kubeadm_flags=())).node_name == "cp1"


def test_a_hostname_borrowed_from_this_machine_is_said_in_the_plan() -> None:
    """ux (issue 18): under --root with no /etc/hostname the name is this machine's; the plan says so."""
    source = "this machine's hostname, because there is no /etc/hostname under /mnt/node"
    ident = core.identify(
        evidence(
            kubelet_client_cn=None,
            kubeadm_flags=(("node-ip", "10.0.0.9"),),
            hostname="rescue-host",
            hostname_source=source,
            hostname_borrowed=True,
        )
    )
    assert ident.node_name == "rescue-host"
    assert dict(ident.sources)["node name"] == f"{source}: WARNING, pass --config to name the node"
    own = core.identify(evidence(kubelet_client_cn=None, kubeadm_flags=(("node-ip", "10.0.0.9"),)))
    assert dict(own.sources)["node name"] == "the hostname"


def test_etcd_image_taken_from_the_runtime_when_the_default_is_absent() -> None:
    ident = core.identify(evidence(images=("my.registry/etcd:3.5.21-0",)))
    assert ident.etcd_image == "my.registry/etcd:3.5.21-0"
    cfg = core.bootstrap_config(ident)
    assert cfg.cluster.etcd_local is not None and cfg.cluster.etcd_local.image_tag == "3.5.21-0"


def test_not_a_kubeadm_node() -> None:
    with pytest.raises(PlanError, match="not a kubeadm node"):
        core.identify(evidence(kubelet_config_yaml=None, kubeadm_flags_present=False))


def test_worker_is_not_a_control_plane_node() -> None:
    with pytest.raises(PlanError, match="no local etcd data"):
        core.identify(evidence(etcd_data_dirs=()))


def test_ambiguous_address_is_refused() -> None:
    with pytest.raises(PlanError, match="cannot tell the node's API address"):
        core.identify(evidence(kubeadm_flags=(), addresses=("10.0.0.1", "10.0.0.2")))


def test_final_config_uses_the_stored_cluster_configuration() -> None:
    ident = core.identify(evidence())
    cfg = core.final_config(ident, STORED, "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n")
    assert cfg.cluster.networking.pod_subnet == "10.123.0.0/16"
    assert cfg.cluster.api_server.cert_sans == ("kuberevive-lab.invalid",)
    assert cfg.cluster.api_server.arg("event-ttl") == "2h0m0s"
    assert cfg.cluster.encryption_algorithm.value == "ECDSA-P256"
    assert cfg.node_name == "cp1" and cfg.advertise_address == "172.30.2.11"
    assert cfg.init.node_registration.cri_socket == "unix:///run/containerd/containerd.sock"


def test_config_differences_name_the_fields() -> None:
    ident = core.identify(evidence())
    stored = core.final_config(ident, STORED, None)
    assert core.config_differences(stored, stored) == []
    other = core.final_config(ident, STORED.replace("10.123.0.0/16", "10.244.0.0/16"), None)
    diffs = core.config_differences(other, stored)
    assert diffs == ["networking.pod_subnet: file '10.244.0.0/16', etcd '10.123.0.0/16'"]


def test_refine_identity_checks_etcd_memory() -> None:
    ident = core.identify(evidence())
    assert core.refine_identity(ident, "172.30.2.11:6443", ["https://172.30.2.11:2380"]) == ident
    assert core.refine_identity(ident, "172.30.2.11:7443", []).bind_port == 7443
    with pytest.raises(PlanError, match=r"advertised 10\.0\.0\.9"):
        core.refine_identity(ident, "10.0.0.9:6443", [])
    with pytest.raises(PlanError, match="peer URL"):
        core.refine_identity(ident, None, ["https://10.0.0.9:2380"])


def _ca(cn: str = "kubernetes") -> tuple[bytes, bytes]:
    key = pki.generate_private_key(EncryptionAlgorithm.ECDSA_P256)
    cert = pki.new_self_signed_ca(cn, key, NOW - timedelta(minutes=5), NOW + timedelta(days=3650))
    return pki.encode_certificate_pem(cert), pki.encode_private_key_pem(key)


def test_kept_material_is_checked_and_written() -> None:
    cfg = core.final_config(core.identify(evidence()), STORED, None)
    ca_crt, ca_key = _ca()
    kept = core.kept_files(cfg, {"ca.crt": ca_crt, "ca.key": ca_key})
    on_node = {a.path: a.content for a in core.etcd_pki_artifacts(cfg, NOW, {}, kept)}
    arts = core.pki_artifacts(cfg, NOW, on_node, kept)
    paths = {str(a.path): a for a in arts}
    assert paths["/etc/kubernetes/pki/ca.crt"].content == ca_crt
    assert paths["/etc/kubernetes/pki/ca.key"].mode == 0o600
    apiserver = x509.load_pem_x509_certificate(paths["/etc/kubernetes/pki/apiserver.crt"].content)
    assert pki.verify_signed_by(apiserver, x509.load_pem_x509_certificate(ca_crt))
    # etcd leaves are not made here (the etcd step made them and they are on the node)
    assert not any("etcd" in p for p in paths)


def test_kept_material_mismatch_is_refused() -> None:
    cfg = core.final_config(core.identify(evidence()), STORED, None)
    ca_crt, _ = _ca()
    _, other_key = _ca()
    with pytest.raises(PkiError, match="does not belong"):
        core.kept_files(cfg, {"ca.crt": ca_crt, "ca.key": other_key})
    with pytest.raises(PkiError, match=r"without ca\.key"):
        core.kept_files(cfg, {"ca.crt": ca_crt})
    with pytest.raises(PlanError, match="unexpected kept files"):
        core.kept_files(cfg, {"apiserver.key": b""})


def test_etcd_step_makes_only_etcd_material() -> None:
    cfg = core.bootstrap_config(core.identify(evidence()))
    arts = core.etcd_pki_artifacts(cfg, NOW, {}, {})
    names = sorted(str(a.path.relative_to("/etc/kubernetes/pki")) for a in arts)
    assert names == sorted(
        [
            "etcd/ca.crt",
            "etcd/ca.key",
            "etcd/server.crt",
            "etcd/server.key",
            "etcd/peer.crt",
            "etcd/peer.key",
            "etcd/healthcheck-client.crt",
            "etcd/healthcheck-client.key",
            "apiserver-etcd-client.crt",
            "apiserver-etcd-client.key",
        ]
    )


def test_kubelet_files_point_at_the_current_pem() -> None:
    cfg = core.final_config(core.identify(evidence()), STORED, None)
    ca_crt, ca_key = _ca()
    files = core.kubelet_files(cfg, ca_crt, ca_key, NOW, "2026-11-25-12-00-00")
    assert files.pem_path == PurePosixPath("/var/lib/kubelet/pki/kubelet-client-2026-11-25-12-00-00.pem")
    conf = yaml.safe_load(files.kubeconfig.content)
    user = conf["users"][0]
    assert user["name"] == "system:node:cp1"
    assert user["user"] == {
        "client-certificate": "/var/lib/kubelet/pki/kubelet-client-current.pem",
        "client-key": "/var/lib/kubelet/pki/kubelet-client-current.pem",
    }
    assert base64.b64decode(conf["clusters"][0]["cluster"]["certificate-authority-data"]) == ca_crt
    cert = x509.load_pem_x509_certificate(files.pem.content)
    assert cert.subject.rfc4514_string() == "CN=system:node:cp1,O=system:nodes"
    assert b"PRIVATE KEY" in files.pem.content and files.pem.mode == 0o600


def test_bootstrap_token_format_and_secret() -> None:
    token = core.new_bootstrap_token(lambda n: bytes([255, 0, 35, 36, 251] * n)[:n])
    assert token == "0z0z0z.0z0z0z0z0z0z0z0z"  # 255 discarded; 0->0, 35->z, 36->0, 251->z
    secret = core.bootstrap_token_secret("abcdef.0123456789abcdef", NOW)
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert secret["metadata"] == {"name": "bootstrap-token-abcdef", "namespace": "kube-system"}
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    assert data["token-id"] == "abcdef" and data["token-secret"] == "0123456789abcdef"
    assert data["expiration"] == "2026-11-26T12:00:00Z"
    assert data["usage-bootstrap-authentication"] == data["usage-bootstrap-signing"] == "true"
    assert data["auth-extra-groups"] == "system:bootstrappers:kubeadm:default-node-token"


def test_cluster_info_kubeconfig_shape() -> None:
    ca_crt, _ = _ca()
    doc = yaml.safe_load(core.cluster_info_kubeconfig("https://172.30.2.11:6443", ca_crt))
    assert doc["clusters"][0]["name"] == ""
    assert doc["clusters"][0]["cluster"]["server"] == "https://172.30.2.11:6443"
    assert doc["contexts"] is None and doc["users"] is None and doc["current-context"] == ""


def test_jws_signature_vector() -> None:
    # spec §5.3: the header for kid abcdef
    token, payload = "abcdef.0123456789abcdef", "kubeconfig-bytes"
    header = "eyJhbGciOiJIUzI1NiIsImtpZCI6ImFiY2RlZiJ9"
    assert (
        base64.urlsafe_b64decode(header + "==")
        == json.dumps({"alg": "HS256", "kid": "abcdef"}).replace(" ", "").encode()
    )
    body = base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode()
    sig = hmac.new(b"0123456789abcdef", f"{header}.{body}".encode(), hashlib.sha256).digest()
    detached = f"{header}..{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"
    assert core.jws_signature_ok(detached, payload, token)
    assert not core.jws_signature_ok(detached, payload + "x", token)


def test_join_command() -> None:
    cfg = core.final_config(core.identify(evidence()), STORED, None)
    ca_crt, _ = _ca()
    digest = pki.discovery_token_ca_cert_hash(x509.load_pem_x509_certificate(ca_crt))
    assert core.join_command(cfg, "abcdef.0123456789abcdef", ca_crt) == (
        f"kubeadm join 172.30.2.11:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash {digest}"
    )


def test_plan_covers_every_step_in_order() -> None:
    ident = core.identify(evidence())
    plan = core.make_plan(ident, core.bootstrap_config(ident), {})
    assert tuple(s.id for s in plan.steps) == core.SEED_STEP_IDS
    assert plan.steps[0].kind is StepKind.WRITE and "/etc/kubernetes/pki/etcd/ca.key" in plan.steps[0].files
    assert all(s.why for s in plan.steps)
    healthy = core.make_plan(None, None, {}, healthy_reason="healthy")
    assert healthy.steps == () and healthy.nothing_to_do == "healthy"
    steps = json.loads(json.dumps(plan.as_dict()))["steps"]
    assert [s["kind"] for s in steps if s["id"] in ("kubelet-start", "etcd-ready")] == ["process", "wait"]


# -- the cluster's version from what survives (issue 13) ------------------------------------------------------------

APISERVER_MANIFEST_PATH = "/etc/kubernetes/manifests/kube-apiserver.yaml"


def test_version_precedence_kubelet_then_surviving_manifest_then_runtime_images() -> None:
    """Without the stored ClusterConfiguration (etcd not running yet): the kubelet, else a surviving manifest's
    image, else the newest control-plane image of the runtime; each choice says where it came from."""
    runtime = ("registry.k8s.io/kube-apiserver:v1.9.11", "registry.k8s.io/kube-apiserver:v1.36.3")
    manifests = ((APISERVER_MANIFEST_PATH, "registry.k8s.io/kube-apiserver:v1.37.2"),)
    kubelet = core.identify(evidence(kubelet_version="v1.35.4", manifest_images=manifests, images=runtime))
    assert kubelet.kubernetes_version == "v1.35.4"
    assert dict(kubelet.sources)["Kubernetes version"].startswith("kubelet --version")
    manifest = core.identify(evidence(kubelet_version=None, manifest_images=manifests, images=runtime))
    assert manifest.kubernetes_version == "v1.37.2"
    assert APISERVER_MANIFEST_PATH in dict(manifest.sources)["Kubernetes version"]
    newest = core.identify(evidence(kubelet_version=None, images=runtime))  # v1.36.3 > v1.9.11 as versions
    assert newest.kubernetes_version == "v1.36.3"
    assert dict(newest.sources)["Kubernetes version"].startswith("the newest kube-apiserver image")
    scheduler = core.identify(evidence(kubelet_version=None, images=("registry.k8s.io/kube-scheduler:v1.34.4",)))
    assert scheduler.kubernetes_version == "v1.34.4"


def test_the_etcd_image_follows_the_minor_read_from_the_node() -> None:
    """Bootstrapping etcd as that minor's kubeadm: v1.37's etcd 3.7.0-0, v1.34's 3.6.5-0."""
    ident = core.identify(evidence(kubelet_version="v1.37.2", images=()))
    assert ident.etcd_image == "registry.k8s.io/etcd:3.7.0-0"
    assert core.identify(evidence(kubelet_version="v1.34.4", images=())).etcd_image == "registry.k8s.io/etcd:3.6.5-0"


@pytest.mark.parametrize(
    "over",
    [
        {"kubelet_version": "v1.29.15"},
        {"kubelet_version": None, "images": ("registry.k8s.io/kube-apiserver:v1.38.0",)},
        {"kubelet_version": None, "manifest_images": ((APISERVER_MANIFEST_PATH, "r.example/kube-apiserver:v1.28.1"),)},
    ],
)
def test_a_version_outside_the_range_is_refused_naming_the_range_and_the_source(over: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"outside .*\(v1\.30 to v1\.37\)") as info:
        core.identify(evidence(**over))
    assert "the cluster's Kubernetes version (" in info.value.message


def test_no_version_anywhere_is_refused() -> None:
    with pytest.raises(PlanError, match="cannot tell the Kubernetes version"):
        core.identify(evidence(kubelet_version=None, images=("registry.k8s.io/etcd:3.7.0-0",)))


def test_the_stored_cluster_configuration_outranks_the_kubelet() -> None:
    """After an upgrade whose kubelet lags (kubelet v1.36, control plane v1.37): the stored kubernetesVersion wins,
    and everything after is generated as v1.37's kubeadm (etcd 3.7.0-0, no v1beta3...)."""
    ident = core.identify(evidence(kubelet_version="v1.36.3"))
    stored_yaml = STORED.replace("kubernetesVersion: v1.33.13", "kubernetesVersion: v1.37.2")
    refined = core.with_stored_version(ident, stored_yaml)
    assert refined.kubernetes_version == "v1.37.2"
    assert dict(refined.sources)["Kubernetes version"] == versions.STORED_CONFIGURATION
    cfg = core.final_config(refined, stored_yaml, None)
    assert cfg.cluster.kubernetes_version == "v1.37.2"
    assert etcd_image(cfg) == "registry.k8s.io/etcd:3.7.0-0"


def test_a_stored_configuration_without_kubernetes_version_keeps_the_nodes_version() -> None:
    ident = core.identify(evidence(kubelet_version="v1.36.3"))
    stored_yaml = STORED.replace("kubernetesVersion: v1.33.13\n", "")
    assert core.with_stored_version(ident, stored_yaml) == ident
    assert core.final_config(ident, stored_yaml, None).cluster.kubernetes_version == "v1.36.3"


def test_a_stored_version_outside_the_range_is_refused() -> None:
    ident = core.identify(evidence())
    with pytest.raises(ConfigError, match=r"v1\.29\.15 is outside .*\(v1\.30 to v1\.37\)"):
        core.with_stored_version(ident, STORED.replace("v1.33.13", "v1.29.15"))


def test_cri_socket_from_instance_config_yaml_as_kubeadm_v1_34_writes_it() -> None:
    """kubeadm v1.34+ leaves the CRI socket out of kubeadm-flags.env (NodeLocalCRISocket): instance-config.yaml,
    else the kubelet's config.yaml (kubeadm merges it in), else kubeadm's default."""
    flags = (("node-ip", "172.30.2.11"),)
    socket = "unix:///run/containerd/containerd.sock"
    ident = core.identify(
        evidence(kubeadm_flags=flags, kubelet_instance_config_yaml=f'containerRuntimeEndpoint: "{socket}"\n')
    )
    assert ident.cri_socket == socket
    assert dict(ident.sources)["CRI socket"] == "containerRuntimeEndpoint in /var/lib/kubelet/instance-config.yaml"
    merged = core.identify(
        evidence(
            kubeadm_flags=flags, kubelet_config_yaml=f"kind: KubeletConfiguration\ncontainerRuntimeEndpoint: {socket}\n"
        )
    )
    assert (merged.cri_socket, dict(merged.sources)["CRI socket"]) == (
        socket,
        "containerRuntimeEndpoint in /var/lib/kubelet/config.yaml",
    )
    default = core.identify(evidence(kubeadm_flags=flags, kubelet_instance_config_yaml="{broken"))
    assert (default.cri_socket, dict(default.sources)["CRI socket"]) == (
        "unix:///var/run/containerd/containerd.sock",
        "kubeadm's default",
    )


@pytest.mark.parametrize(("version", "written"), [("v1.33.13", False), ("v1.34.4", True), ("v1.37.2", True)])
def test_instance_config_yaml_where_the_minor_writes_it(version: str, written: bool) -> None:
    """Byte for byte what kubeadm's WriteInstanceConfigToDisk writes (``containerRuntimeEndpoint: %q``), mode 0644."""
    ident = core.identify(evidence(kubelet_version=version))
    cfg = core.final_config(ident, STORED.replace("v1.33.13", version), None)
    art = core.kubelet_instance_config(cfg)
    if not written:
        assert art is None
        return
    assert art is not None
    assert (str(art.path), art.mode) == ("/var/lib/kubelet/instance-config.yaml", 0o644)
    assert art.content == b'containerRuntimeEndpoint: "unix:///run/containerd/containerd.sock"\n'


def test_instance_config_yaml_follows_the_gate_where_the_minor_reads_it() -> None:
    ident = core.identify(evidence(kubelet_version="v1.35.4"))
    stored = STORED.replace("v1.33.13", "v1.35.4") + "featureGates:\n  NodeLocalCRISocket: false\n"
    assert core.kubelet_instance_config(core.final_config(ident, stored, None)) is None


def test_a_new_pki_makes_one_key_per_file(keys_made: list[EncryptionAlgorithm]) -> None:
    """etcd's 5, the control plane's 6 (with sa.key), four kubeconfigs and the kubelet's client certificate: 16 keys,
    each on the recovery's critical path (the kubelet restart waits for them). The etcd step made every certificate's
    key and kept etcd's; each kubeconfig builder made all five kubeconfigs' keys and threw most away."""
    cfg = core.final_config(core.identify(evidence()), STORED, None)
    made = keys_made
    etcd = {a.path: a.content for a in core.etcd_pki_artifacts(cfg, NOW, {}, {})}
    assert len(made) == 5 and len(etcd) == 10
    on_node = etcd | {a.path: a.content for a in core.pki_artifacts(cfg, NOW, etcd, {})}
    assert len(made) == 11
    ca_crt, ca_key = core.ca_pair(cfg, on_node)
    confs = core.control_plane_kubeconfigs(cfg, NOW, ca_crt, ca_key, on_node)
    core.kubelet_files(cfg, ca_crt, ca_key, NOW, "2026-11-25-12-00-00")
    assert sorted(a.path.name for a in confs) == [
        "admin.conf",
        "controller-manager.conf",
        "scheduler.conf",
        "super-admin.conf",
    ]
    assert len(made) == 16
