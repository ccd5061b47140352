"""kuberevive.core.diagnose on in-memory node trees made by kuberevive.core.generate (no disk, no network).

Every broken state is made on purpose from a healthy tree, and the exact non-passing findings are asserted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

import pytest

from kuberevive.core import diagnose as d
from kuberevive.core import pki
from kuberevive.core.generate import Target, generate
from kuberevive.model import paths
from kuberevive.model.config import KubeadmConfig, NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config

CONFIG_PATH = Path(__file__).resolve().parents[1] / "configs" / "endpoint-sans.yaml"
CONFIG_TEXT = CONFIG_PATH.read_text()
FACTS = NodeFacts(hostname="master-a")
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
PKI = PurePosixPath("/etc/kubernetes/pki")
K8S = PurePosixPath("/etc/kubernetes")
MANIFESTS = K8S / "manifests"
KUBELET_CONFIG = b"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
clusterDomain: cluster.local
authentication:
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
"""
KUBELET_FLAGS = b'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///run/containerd/containerd.sock"\n'

Files = dict[PurePosixPath, d.FileInfo]


def _cfg(text: str = CONFIG_TEXT) -> KubeadmConfig:
    return load_kubeadm_config(text, FACTS)


def _file(path: PurePosixPath | str, content: bytes, mode: int) -> d.FileInfo:
    p = PurePosixPath(path)
    return d.FileInfo(p, "file", mode, 0, 0, len(content), content)


def _dir(path: PurePosixPath | str, mode: int = 0o755) -> d.FileInfo:
    return d.FileInfo(PurePosixPath(path), "dir", mode, 0, 0, 4096)


def make_tree(cfg: KubeadmConfig | None = None, now: datetime = NOW) -> Files:
    """What ``kuberevive generate all`` writes, plus the kubelet's files kubeadm writes at kubelet-start."""
    result = generate(Target.ALL, cfg or _cfg(), FACTS, now, {})
    files: Files = {a.path: _file(a.path, a.content, a.mode) for a in result.artifacts}
    for p in (K8S, PKI, PKI / "etcd"):
        files[p] = _dir(p)
    files[MANIFESTS] = _dir(MANIFESTS, 0o700)
    files[paths.KUBELET_CONFIG] = _file(paths.KUBELET_CONFIG, KUBELET_CONFIG, 0o644)
    files[paths.KUBEADM_FLAGS] = _file(paths.KUBEADM_FLAGS, KUBELET_FLAGS, 0o644)
    return files


ETCD = d.EtcdData(PurePosixPath("/var/lib/etcd"), True, True, 123456, ("master-a",))


def snapshot(files: Files, *, config: bool = True, etcd: d.EtcdData | None = ETCD, **kw: object) -> d.NodeSnapshot:
    return d.NodeSnapshot(
        root="/",
        now=NOW,
        hostname="master-a",
        files=files,
        config_text=CONFIG_TEXT if config else None,
        config_file=str(CONFIG_PATH) if config else None,
        etcd=etcd,
        passwd={"root": 0},
        group={"root": 0},
        **kw,  # type: ignore[arg-type]
    )


def problems(report: d.Report) -> set[tuple[str, str, str]]:
    """(id, severity, subject) of every warning and error."""
    return {
        (f.id, f.severity.value, f.subject)
        for f in report.findings
        if f.severity in (d.Severity.WARNING, d.Severity.ERROR)
    }


@pytest.fixture(scope="module")
def healthy() -> Files:
    return make_tree()


@pytest.fixture(scope="module")
def other() -> Files:
    """A second tree with its own CA."""
    return make_tree()


def test_healthy_tree_has_no_problem(healthy: Files):
    report = d.diagnose(snapshot(healthy))
    assert problems(report) == set()
    assert report.exit_code == 0 and report.status == "healthy"
    assert report.ca_verdict == (True, report.ca_verdict[1] if report.ca_verdict else "")
    ok = {f.detail("name") for f in report.findings if f.id == "cert.ok"}
    assert ok == {s.name for s in pki.CERT_SPECS}
    assert {f.subject for f in report.findings if f.id == "kubeconfig.ok"} == {
        str(K8S / n) for n in paths.KUBECONFIG_NAMES
    }
    etcd = next(f for f in report.findings if f.id == "recovery.etcd-data")
    assert etcd.detail("member_names") == ("master-a",)


def test_healthy_tree_expiry_dates_are_reported(healthy: Files):
    report = d.diagnose(snapshot(healthy))
    apiserver = next(f for f in report.findings if f.id == "cert.ok" and f.detail("name") == "apiserver")
    cert = pki.load_certificate(healthy[PKI / "apiserver.crt"].content or b"", "apiserver.crt")
    assert apiserver.detail("not_after") == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_deleted_key(healthy: Files):
    files = dict(healthy)
    del files[PKI / "apiserver.key"]
    report = d.diagnose(snapshot(files))
    assert problems(report) == {
        ("file.missing", "error", "/etc/kubernetes/pki/apiserver.key"),
        ("manifest.missing-file", "error", "/etc/kubernetes/manifests/kube-apiserver.yaml"),
    }
    assert report.exit_code == 2


def _reissue(files: Files, cfg: KubeadmConfig, now: datetime, name: str) -> Files:
    """Re-sign cert ``name`` with the tree's own CA for ``cfg`` at time ``now`` (kubeadm validity: 365 days)."""
    cas = [PKI / f"{n}.{ext}" for n in ("ca", "front-proxy-ca", "etcd/ca") for ext in ("crt", "key")]
    keep = {p: files[p].content or b"" for p in cas}
    bundle = pki.build_certificates(cfg, now, keep)
    out = dict(files)
    for a in bundle.artifacts:
        if a.path.stem == name and a.path.parent == PKI:
            out[a.path] = _file(a.path, a.content, a.mode)
    return out


def test_expired_certificate(healthy: Files):
    files = _reissue(healthy, _cfg(), NOW - timedelta(days=400), "apiserver")
    report = d.diagnose(snapshot(files))
    assert problems(report) == {("cert.expired", "error", "/etc/kubernetes/pki/apiserver.crt")}
    finding = next(f for f in report.findings if f.id == "cert.expired")
    assert finding.detail("not_after") == (NOW - timedelta(days=35)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # the hint names kuberevive's own renewal (it renews the kubelet too), not kubeadm's; under --root with it
    assert "'kuberevive certs renew --apply'" in finding.hint and "kubeadm" not in finding.hint
    under_root = d.diagnose(dataclasses.replace(snapshot(files), root="/mnt/node"))
    (moved,) = [f for f in under_root.findings if f.id == "cert.expired"]
    assert "'kuberevive certs renew --apply --root /mnt/node'" in moved.hint


def test_expiring_certificate_and_the_warning_window(healthy: Files):
    files = _reissue(healthy, _cfg(), NOW - timedelta(days=350), "front-proxy-client")
    report = d.diagnose(snapshot(files))
    assert problems(report) == {("cert.expiring", "warning", "/etc/kubernetes/pki/front-proxy-client.crt")}
    assert report.exit_code == 1
    assert problems(d.diagnose(snapshot(files), d.Options(expiry_warning_days=10))) == set()


def test_certificate_signed_by_another_ca(healthy: Files, other: Files):
    files = dict(healthy)
    for name in ("apiserver.crt", "apiserver.key"):
        files[PKI / name] = other[PKI / name]
    report = d.diagnose(snapshot(files))
    assert problems(report) == {("cert.wrong-signer", "error", "/etc/kubernetes/pki/apiserver.crt")}


def test_swapped_key(healthy: Files):
    files = dict(healthy)
    files[PKI / "apiserver.key"] = replace(healthy[PKI / "front-proxy-client.key"], path=PKI / "apiserver.key")
    report = d.diagnose(snapshot(files))
    assert problems(report) == {("cert.key-mismatch", "error", "/etc/kubernetes/pki/apiserver.key")}


def test_san_missing_the_advertise_address(healthy: Files):
    moved = _cfg(CONFIG_TEXT.replace("advertiseAddress: 10.20.30.40", "advertiseAddress: 10.20.30.99"))
    files = _reissue(healthy, moved, NOW, "apiserver")
    report = d.diagnose(snapshot(files))
    assert problems(report) == {("cert.san-missing", "error", "/etc/kubernetes/pki/apiserver.crt")}
    finding = next(f for f in report.findings if f.id == "cert.san-missing")
    assert finding.detail("missing") == ("IP:10.20.30.40",)


def test_kubeconfig_with_a_foreign_ca(healthy: Files, other: Files):
    files = dict(healthy)
    files[K8S / "admin.conf"] = other[K8S / "admin.conf"]
    report = d.diagnose(snapshot(files))
    assert problems(report) == {
        ("kubeconfig.ca-mismatch", "error", "/etc/kubernetes/admin.conf"),
        ("kubeconfig.client-cert-invalid", "error", "/etc/kubernetes/admin.conf"),
    }


def test_private_key_mode_0644(healthy: Files):
    files = dict(healthy)
    files[PKI / "sa.key"] = replace(healthy[PKI / "sa.key"], mode=0o644)
    report = d.diagnose(snapshot(files))
    assert problems(report) == {
        ("file.permissions", "error", "/etc/kubernetes/pki/sa.key"),
        ("cis.1.1.21", "warning", "/etc/kubernetes/pki/sa.key"),
    }
    cis = next(f for f in report.findings if f.id == "cis.1.1.21" and f.severity is d.Severity.WARNING)
    assert cis.message == "CIS 1.1.21: sa.key should be 600 or more restrictive, is 0644"
    assert cis.hint == "chmod 600 /etc/kubernetes/pki/sa.key"


def test_manifest_mode_0644_names_the_cis_item(healthy: Files):
    path = MANIFESTS / "kube-apiserver.yaml"
    files = dict(healthy)
    files[path] = replace(healthy[path], mode=0o644)
    report = d.diagnose(snapshot(files))
    assert problems(report) == {("cis.1.1.1", "warning", str(path))}
    assert [f.message for f in report.findings if f.id == "cis.1.1.1"] == [
        "CIS 1.1.1: kube-apiserver.yaml should be 600 or more restrictive, is 0644"
    ]


def test_kubeadm_default_deviations_are_info_unless_strict(healthy: Files):
    strict = d.diagnose(snapshot(healthy), d.Options(cis_strict=True))
    assert ("cis.1.1.20", "warning", "/etc/kubernetes/pki/ca.crt") in problems(strict)
    assert ("cis.4.1.9", "warning", "/var/lib/kubelet/config.yaml") in problems(strict)
    normal = d.diagnose(snapshot(healthy))
    info = next(f for f in normal.findings if f.id == "cis.1.1.20")
    assert info.severity is d.Severity.INFO and "kubeadm's own default" in info.message


def test_missing_manifest(healthy: Files):
    files = dict(healthy)
    del files[MANIFESTS / "kube-scheduler.yaml"]
    report = d.diagnose(snapshot(files))
    assert problems(report) == {("file.missing", "error", "/etc/kubernetes/manifests/kube-scheduler.yaml")}


def test_owner_not_root(healthy: Files):
    files = dict(healthy)
    files[K8S / "admin.conf"] = replace(healthy[K8S / "admin.conf"], uid=1000, gid=1000)
    report = d.diagnose(snapshot(files))
    assert problems(report) == {("cis.1.1.14", "warning", "/etc/kubernetes/admin.conf")}


def test_configuration_is_reconstructed_from_the_manifests(healthy: Files):
    report = d.diagnose(snapshot(healthy, config=False))
    assert report.config.kind == "node"
    cfg = report.config.config
    assert cfg is not None
    assert (cfg.node_name, cfg.advertise_address, cfg.cluster.control_plane_endpoint) == (
        "master-a",
        "10.20.30.40",
        "api.prod.example.com:8443",
    )
    assert cfg.cluster.networking.service_subnet == "10.112.0.0/16"
    # certSANs cannot be reconstructed, so nothing may be reported missing
    assert problems(report) == set()


def test_nothing_kubernetes_is_not_a_kubeadm_node():
    report = d.diagnose(snapshot({}, config=False, etcd=d.EtcdData(PurePosixPath("/var/lib/etcd"), False)))
    assert [(f.id, f.severity.value) for f in report.findings] == [("node.not-kubeadm", "error")]
    assert report.exit_code == 3 and report.status == "not-kubeadm"


def _lost(healthy: Files) -> Files:
    """``rm -rf /etc/kubernetes``: only the kubelet's files survive (and its client certificate)."""
    files = {p: i for p, i in healthy.items() if not str(p).startswith("/etc/kubernetes")}
    # the kubelet's client certificate, issued by the (now lost) cluster CA
    ca = pki.load_certificate(healthy[PKI / "ca.crt"].content or b"", "ca.crt")
    ca_key = pki.load_private_key(healthy[PKI / "ca.key"].content or b"", "ca.key")
    key = pki.generate_private_key(_cfg().cluster.encryption_algorithm)
    cert = pki.issue_certificate(
        common_name="system:node:master-a",
        organization=("system:nodes",),
        usages=(pki.KeyUsage.CLIENT_AUTH,),
        public_key=key.public_key(),
        ca_cert=ca,
        ca_key=ca_key,
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=300),
    )
    pem = pki.encode_certificate_pem(cert) + pki.encode_private_key_pem(key)
    files[paths.KUBELET_CLIENT_CURRENT] = _file(paths.KUBELET_CLIENT_CURRENT, pem, 0o600)
    return files


def test_after_losing_etc_kubernetes_a_new_ca_is_needed(healthy: Files):
    report = d.diagnose(snapshot(_lost(healthy), config=False))
    assert report.role == "control-plane"
    ids = {(f.id, f.subject) for f in report.findings}
    assert ("file.missing", "/etc/kubernetes/pki/ca.key") in ids
    assert ("recovery.ca-new", "/etc/kubernetes/pki/ca.crt") in ids
    assert report.ca_verdict is not None and report.ca_verdict[0] is False
    kubelet = next(f for f in report.findings if f.id == "recovery.kubelet-client-cert")
    assert kubelet.detail("issuer") == "kubernetes"
    assert report.config.kind == "none"  # no file names the advertise address any more
    assert report.exit_code == 2


def test_a_lost_etc_kubernetes_is_one_error_pointing_at_recover_and_the_files_are_part_of_it(healthy: Files):
    report = d.diagnose(snapshot(_lost(healthy), config=False))
    lost = [f for f in report.findings if f.id == "node.kubernetes-dir-lost"]
    assert len(lost) == 1 and lost[0].severity is d.Severity.ERROR and lost[0].subject == "/etc/kubernetes"
    assert "'kuberevive recover'" in lost[0].hint and "'kuberevive recover --apply'" in lost[0].hint
    missing = [f for f in report.findings if f.id == "file.missing"]
    assert len(missing) >= 20 and all(f.detail(d.PART_OF) == "node.kubernetes-dir-lost" for f in missing)
    assert lost[0].detail("missing_files") == len(missing)  # a number (diagnose/v2: typed details)
    # the other errors (the CA verdict) are not part of it
    assert not [f for f in report.findings if f.id.startswith("recovery.") and f.detail(d.PART_OF)]


def test_one_file_left_under_etc_kubernetes_means_no_grouping(healthy: Files):
    files = _lost(healthy)
    files[K8S / "admin.conf"] = healthy[K8S / "admin.conf"]
    report = d.diagnose(snapshot(files, config=False))
    assert not [f for f in report.findings if f.id == "node.kubernetes-dir-lost" or f.detail(d.PART_OF)]


def test_a_backup_with_the_ca_key_means_the_ca_can_be_kept(healthy: Files):
    files = _lost(healthy)
    backup = paths.BACKUP_DIR / "20260301T000000.000000Z/etc/kubernetes/pki"
    for name in ("ca.crt", "ca.key"):
        files[backup / name] = replace(healthy[PKI / name], path=backup / name)
    report = d.diagnose(snapshot(files, config=False))
    assert report.ca_verdict is not None and report.ca_verdict[0] is True
    keep = next(f for f in report.findings if f.id == "recovery.ca-keep")
    assert keep.subject == str(backup / "ca.crt")
    kubelet = next(f for f in report.findings if f.id == "recovery.kubelet-client-cert")
    assert kubelet.detail("signed_by") == str(backup / "ca.crt")


def test_worker_reports_its_ca_copy(healthy: Files):
    files = {p: healthy[p] for p in (K8S / "kubelet.conf", PKI / "ca.crt", paths.KUBELET_CONFIG, paths.KUBEADM_FLAGS)}
    report = d.diagnose(snapshot(files, config=False, etcd=None))
    assert report.role == "worker"
    assert report.ca_verdict is None
    copies = {f.subject for f in report.findings if f.id == "recovery.ca-copy"}
    assert str(PKI / "ca.crt") in copies
    assert problems(report) == set()


def test_api_objects_that_hold_a_stale_ca(healthy: Files, other: Files):
    own_ca = (healthy[PKI / "ca.crt"].content or b"").decode()
    foreign_ca = (other[PKI / "ca.crt"].content or b"").decode()
    fp_ca = (healthy[PKI / "front-proxy-ca.crt"].content or b"").decode()
    api = d.ApiData(
        "admin.conf",
        "https://10.20.30.40:6443",
        objects={
            "nodes": {
                "items": [
                    {"metadata": {"name": "master-a"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
                    {"metadata": {"name": "w1"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}},
                ]
            },
            "csrs": {"items": [{"metadata": {"name": "csr-1"}, "spec": {"username": "system:node:w1"}, "status": {}}]},
            "extension-apiserver-authentication": {
                "data": {"client-ca-file": foreign_ca, "requestheader-client-ca-file": fp_ca}
            },
            "kube-root-ca": {
                "items": [
                    {"metadata": {"namespace": "default"}, "data": {"ca.crt": own_ca}},
                    {"metadata": {"namespace": "krlab"}, "data": {"ca.crt": foreign_ca}},
                ]
            },
        },
    )
    report = d.diagnose(snapshot(healthy, api=api))
    assert problems(report) == {
        ("cluster.node-not-ready", "warning", "node/w1"),
        ("cluster.csr-pending", "warning", "csr/csr-1"),
        (
            "cluster.extension-auth-ca",
            "error",
            "configmap/kube-system/extension-apiserver-authentication (client-ca-file)",
        ),
        ("cluster.root-ca-configmap", "warning", "configmap/krlab/kube-root-ca.crt"),
    }


def test_unreachable_server_is_a_warning(healthy: Files):
    probes = {"https://10.20.30.40:6443": d.Probe(False, "connection refused")}
    report = d.diagnose(snapshot(healthy, probes=probes))
    assert problems(report) == {("kubeconfig.server-unreachable", "warning", "https://10.20.30.40:6443")}
    (f,) = [f for f in report.findings if f.id == "kubeconfig.server-unreachable"]  # one root cause, reported once
    assert f.message == (
        "the API server https://10.20.30.40:6443 does not answer (connection refused); "
        "used by kubelet.conf, controller-manager.conf, scheduler.conf"
    )
    assert f.detail("kubeconfigs") == tuple(
        f"/etc/kubernetes/{n}" for n in ("kubelet.conf", "controller-manager.conf", "scheduler.conf")
    )


def test_etcd_member_names_are_read_from_raw_bytes():
    raw = b'\x00\x01{"id":130651217359416063,"peerURLs":["https://172.30.1.11:2380"],"name":"cp1","clientURLs":[]}\xff'
    assert d.etcd_member_names(raw) == {"cp1"}
    assert d.etcd_member_names(b"nothing here") == set()


def test_json_schema_keys(healthy: Files):
    data = d.diagnose(snapshot(healthy)).as_json()
    assert list(data) == [
        "schema",
        "kind",
        "root",
        "generated_at",
        "status",
        "exit_code",
        "summary",
        "node",
        "config",
        "ca_verdict",
        "findings",
    ]
    assert (data["schema"], data["kind"]) == ("kuberevive.diagnose/v2", "DiagnoseReport")
    assert set(data["findings"][0]) == {"id", "severity", "area", "subject", "message", "hint", "details"}


def test_the_reconstructed_version_is_the_newest_api_server_image_compared_as_versions(healthy: Files):
    # no kube-apiserver manifest: the version comes from the runtime's images, v1.37 newer than v1.9 (not as text)
    files = {p: f for p, f in healthy.items() if p != MANIFESTS / "kube-apiserver.yaml"}
    images = ("registry.k8s.io/kube-apiserver:v1.9.0", "registry.k8s.io/kube-apiserver:v1.37.2")
    text, _used = d.reconstruct_config_yaml(snapshot(files, config=False, images=images))
    assert text is not None and "kubernetesVersion: v1.37.2" in text, text


def test_a_reconstructed_ipv6_control_plane_endpoint_keeps_its_brackets(healthy: Files):
    """admin.conf's server another than the node's own (a load balancer) becomes controlPlaneEndpoint; an IPv6 host
    with a port is written in brackets (core/netaddr), as kubeadm reads it."""
    admin = healthy[K8S / "admin.conf"]
    content = admin.content or b""
    server = next(line.split("server: ", 1)[1] for line in content.decode().splitlines() if "server: " in line)
    files = dict(healthy)
    files[K8S / "admin.conf"] = _file(admin.path, content.replace(server.encode(), b"https://[fd00::99]:8443"), 0o600)
    text, used = d.reconstruct_config_yaml(snapshot(files, config=False))
    assert text is not None and "controlPlaneEndpoint: '[fd00::99]:8443'" in text, text
    assert str(K8S / "admin.conf") in used
