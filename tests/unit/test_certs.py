"""kuberevive.core.certs on in-memory node trees made by kuberevive.core.generate, with a fake clock.

Each broken state (expiring, expired, missing, wrong signer, kubelet CN mismatch) is made on purpose from a healthy
tree; the statuses and the exit code are asserted exactly. Renewal: the renewed files verify against the CA,
keep the subject and every SAN, and carry new keys.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

import pytest
import yaml

from kuberevive.core import certs, pki, retrust
from kuberevive.core.kubeconfig import Kubeconfig
from kuberevive.errors import PlanError
from kuberevive.model import paths
from kuberevive.model.config import KubeadmConfig, NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config
from tests.unit.test_diagnose import K8S, NOW, PKI, Files, _cfg, _file, make_tree, snapshot

CURRENT = paths.KUBELET_CLIENT_CURRENT
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
KUBEADM_ROWS = {
    "admin.conf",
    "apiserver",
    "apiserver-etcd-client",
    "apiserver-kubelet-client",
    "controller-manager.conf",
    "etcd-healthcheck-client",
    "etcd-peer",
    "etcd-server",
    "front-proxy-client",
    "scheduler.conf",
    "super-admin.conf",
}
CAS = {"ca", "front-proxy-ca", "etcd-ca"}


def with_kubelet_pem(files: Files, cfg: KubeadmConfig, node: str = "master-a", now: datetime = NOW) -> Files:
    """What kubelet-finalize leaves: kubelet.conf pointing at kubelet-client-current.pem (a symlink)."""
    ca, key = files[PKI / "ca.crt"].content or b"", files[PKI / "ca.key"].content or b""
    t = retrust.node_trust_files(cfg, ca, key, node, "https://10.20.30.40:6443", str(PKI / "ca.crt"), now, "stamp")
    out = dict(files)
    out[K8S / "kubelet.conf"] = _file(K8S / "kubelet.conf", t.kubeconfig, 0o600)
    out[PurePosixPath(t.pem_path)] = _file(t.pem_path, t.pem, 0o600)
    out[CURRENT] = replace(_file(CURRENT, t.pem, 0o600), link=t.pem_path)
    return out


def check(files: Files, now: datetime = NOW, days: int = 30) -> certs.CertsReport:
    cfg = _cfg()
    return certs.check(snapshot(files), cfg, cfg.node_name, now, days, "test")


def statuses(report: certs.CertsReport) -> dict[str, str]:
    return {i.name: i.status.value for i in report.items}


@pytest.fixture(scope="module")
def healthy() -> Files:
    return with_kubelet_pem(make_tree(), _cfg())


@pytest.fixture(scope="module")
def other() -> Files:
    return make_tree()


def not_after(files: Files, path: PurePosixPath) -> datetime:
    return pki.load_certificate(files[path].content or b"", str(path)).not_valid_after_utc


def test_healthy_node_lists_kubeadms_rows_the_cas_and_the_kubelet(healthy: Files):
    report = check(healthy)
    by_group = {g: {i.name for i in report.items if i.group is g} for g in certs.Group}
    assert by_group[certs.Group.CERTIFICATE] | by_group[certs.Group.KUBECONFIG] == KUBEADM_ROWS
    assert by_group[certs.Group.CA] == CAS
    assert by_group[certs.Group.KUBELET] == {"kubelet-client", "kubelet-serving"}
    assert statuses(report) == {n: "ok" for n in KUBEADM_ROWS | CAS | {"kubelet-client"}} | {
        "kubelet-serving": "missing"  # optional: absent in this tree, does not count
    }
    assert report.exit_code == certs.EXIT_OK
    api = report.item("apiserver")
    assert (api.authority, api.issuer, api.signer_verified, api.subject) == ("ca", "kubernetes", True, "kube-apiserver")
    assert api.not_after == not_after(healthy, PKI / "apiserver.crt")
    assert (api.days_left, api.residual) == (365, "1y")  # kubeadm's ShortHumanDuration: 365 days are 1y
    later = check(healthy, now=NOW + timedelta(hours=1)).item("apiserver")
    assert (later.days_left, later.residual) == (364, "364d")
    assert report.item("etcd-server").authority == "etcd-ca"
    kubelet = report.item("kubelet-client")
    assert (kubelet.subject, kubelet.organization, kubelet.path) == (
        "system:node:master-a",
        ("system:nodes",),
        str(CURRENT),
    )
    assert report.item("ca").residual == "10y"


def test_expiring_within_the_warning_period_exits_3(healthy: Files):
    at = not_after(healthy, PKI / "apiserver.crt") - timedelta(days=10)
    report = check(healthy, now=at)
    assert report.item("apiserver").status is certs.Status.EXPIRING
    assert report.item("admin.conf").status is certs.Status.EXPIRING
    assert report.item("ca").status is certs.Status.OK
    assert report.exit_code == certs.EXIT_EXPIRING == 3
    assert check(healthy, now=at, days=5).exit_code == certs.EXIT_OK  # a shorter warning period


def test_expired_exits_4_and_shows_invalid_residual(healthy: Files):
    at = not_after(healthy, PKI / "apiserver.crt") + timedelta(minutes=1)
    report = check(healthy, now=at)
    s = statuses(report)
    assert {n for n, v in s.items() if v == "expired"} == KUBEADM_ROWS | {"kubelet-client"}
    assert {s[n] for n in CAS} == {"ok"}
    assert report.item("apiserver").residual == "<invalid>"
    assert report.exit_code == certs.EXIT_EXPIRED == 4
    assert report.as_json()["status"] == "expired-or-invalid"


def test_missing_required_file_exits_4_but_missing_super_admin_does_not(healthy: Files):
    files = {p: f for p, f in healthy.items() if p != PKI / "apiserver.crt"}
    report = check(files)
    assert report.item("apiserver").status is certs.Status.MISSING and report.exit_code == 4
    files = {p: f for p, f in healthy.items() if p != K8S / "super-admin.conf"}
    report = check(files)
    assert report.item("super-admin.conf").status is certs.Status.MISSING
    assert report.exit_code == 0


def test_wrong_signer_is_invalid(healthy: Files, other: Files):
    files = dict(healthy)
    for name in ("apiserver.crt", "apiserver.key"):
        files[PKI / name] = other[PKI / name]
    report = check(files)
    api = report.item("apiserver")
    assert (api.status, api.signer_verified) == (certs.Status.INVALID, False)
    assert any("not signed by ca" in p for p in api.problems)
    assert report.exit_code == 4
    # a key that does not belong to its certificate
    files = dict(healthy)
    files[PKI / "apiserver.key"] = other[PKI / "apiserver.key"]
    assert check(files).item("apiserver").status is certs.Status.INVALID


def test_kubelet_cn_of_another_node_is_invalid(healthy: Files):
    files = with_kubelet_pem(healthy, _cfg(), node="master-b")
    report = check(files)
    kubelet = report.item("kubelet-client")
    assert kubelet.status is certs.Status.INVALID
    assert kubelet.problems == ("its CN is system:node:master-b, not system:node:master-a (the node name)",)
    assert report.exit_code == 4


def test_externally_managed_when_the_ca_key_is_absent(healthy: Files):
    files = {p: f for p, f in healthy.items() if p != PKI / "front-proxy-ca.key"}
    report = check(files)
    assert report.item("front-proxy-client").externally_managed
    assert not report.item("apiserver").externally_managed
    at = not_after(healthy, PKI / "apiserver.crt") + timedelta(minutes=1)
    with pytest.raises(PlanError, match="front-proxy-client"):
        certs.renewal_targets(check(files, now=at))


def test_kubeadm_formats():
    assert certs.kubeadm_date(datetime(2027, 11, 5, 17, 42, 59, tzinfo=UTC)) == "Nov 05, 2027 17:42 UTC"
    assert [certs.short_duration(timedelta(seconds=s)) for s in (-5, 30, 600, 7200, 86400 * 364, 86400 * 3650)] == [
        "<invalid>",
        "30s",
        "10m",
        "2h",
        "364d",
        "10y",
    ]


# ------------------------------------------------------------------------------------------- renew


def contents(files: Files) -> dict[PurePosixPath, bytes]:
    return {p: f.content for p, f in files.items() if f.content is not None}


def test_targets_kubelet_first_and_only_what_needs_it(healthy: Files):
    at = not_after(healthy, PKI / "apiserver.crt") + timedelta(minutes=1)
    names = [i.name for i in certs.renewal_targets(check(healthy, now=at))]
    assert names[0] == "kubelet-client"
    assert set(names) == KUBEADM_ROWS | {"kubelet-client"}
    assert certs.renewal_targets(check(healthy)) == []
    assert {i.name for i in certs.renewal_targets(check(healthy), everything=True)} == set(names)


def test_renewed_leaf_keeps_subject_and_sans_and_verifies(healthy: Files):
    cfg = _cfg()
    later = NOW + timedelta(days=400)
    files = contents(healthy)
    key_art, cert_art = certs.renew_leaf("apiserver", cfg, files, later)
    assert (key_art.path, cert_art.path, key_art.mode, cert_art.mode) == (
        PKI / "apiserver.key",
        PKI / "apiserver.crt",
        0o600,
        0o644,
    )
    old = pki.load_certificate(files[PKI / "apiserver.crt"], "old")
    new = pki.load_certificate(cert_art.content, "new")
    assert new.subject == old.subject
    assert pki.certificate_alt_names(new) == pki.certificate_alt_names(old)
    assert pki.certificate_usages(new) == pki.certificate_usages(old)
    assert pki.verify_signed_by(new, pki.load_certificate(files[PKI / "ca.crt"], "ca"))
    assert pki.key_matches_certificate(pki.load_private_key(key_art.content, "k"), new)
    assert key_art.content != files[PKI / "apiserver.key"]
    assert new.not_valid_after_utc == later + cfg.cluster.certificate_validity
    # the renewed tree checks clean at that time (for this leaf)
    renewed = dict(healthy) | {a.path: _file(a.path, a.content, a.mode) for a in (key_art, cert_art)}
    assert check(renewed, now=later).item("apiserver").status is certs.Status.OK


def test_renewed_leaf_keeps_a_san_the_configuration_lacks(healthy: Files):
    cfg = _cfg()
    files = contents(healthy)
    ca = pki.load_certificate(files[PKI / "etcd/ca.crt"], "ca")
    ca_key = pki.load_private_key(files[PKI / "etcd/ca.key"], "ca.key")
    key = pki.generate_private_key(cfg.cluster.encryption_algorithm)
    extra = pki.AltNames.normalised(["extra.example.com", "master-a", "localhost"], [])
    old = pki.issue_certificate(
        common_name="master-a",
        organization=(),
        usages=("serverAuth", "clientAuth"),
        public_key=key.public_key(),
        ca_cert=ca,
        ca_key=ca_key,
        not_before=NOW,
        not_after=NOW + timedelta(days=1),
        alt_names=extra,
    )
    files[PKI / "etcd/server.crt"] = pki.encode_certificate_pem(old)
    _key, cert_art = certs.renew_leaf("etcd-server", cfg, files, NOW)
    sans = pki.certificate_alt_names(pki.load_certificate(cert_art.content, "new"))
    assert "extra.example.com" in sans.dns and "etcd.prod.example.com" in sans.dns


def test_renewed_kubeconfig_keeps_server_ca_and_subject(healthy: Files):
    cfg = _cfg()
    files = contents(healthy)
    path = K8S / "admin.conf"
    art = certs.renew_kubeconfig(path, files[path], cfg, files, NOW + timedelta(days=400))
    old_cluster, old_user = Kubeconfig.from_yaml(files[path]).current()
    cluster, user = Kubeconfig.from_yaml(art.content).current()
    assert cluster == old_cluster and art.mode == 0o600
    old_cert = pki.load_certificate(old_user.client_certificate_data or b"", "old")
    new_cert = pki.load_certificate(user.client_certificate_data or b"", "new")
    assert new_cert.subject == old_cert.subject and new_cert.serial_number != old_cert.serial_number
    assert pki.key_matches_certificate(pki.load_private_key(user.client_key_data or b"", "k"), new_cert)
    assert yaml.safe_load(art.content)["current-context"] == yaml.safe_load(files[path])["current-context"]


def test_renewed_kubelet_client_is_for_the_node_and_kubelet_conf_kept(healthy: Files):
    cfg = _cfg()
    files = contents(healthy)
    trust, rewrite = certs.renew_kubelet_client(cfg, files, files[K8S / "kubelet.conf"], "master-a", NOW, "s2")
    assert rewrite is False  # it already points at kubelet-client-current.pem with the same CA
    assert trust.pem_path == "/var/lib/kubelet/pki/kubelet-client-s2.pem"
    cert = pki.load_certificate(trust.pem, "pem")
    assert (cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()) == (
        "CN=system:node:master-a,O=system:nodes",
        "CN=kubernetes",
    )
    # generate's kubelet.conf embeds its certificate: renewal rewrites it to point at the pem
    embedded = contents(make_tree())
    _trust, rewrite = certs.renew_kubelet_client(cfg, embedded, embedded[K8S / "kubelet.conf"], "master-a", NOW, "s3")
    assert rewrite is True
    doc = yaml.safe_load(_trust.kubeconfig)
    assert doc["users"][0]["user"] == {"client-certificate": str(CURRENT), "client-key": str(CURRENT)}
    assert base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]) == embedded[PKI / "ca.crt"]


def test_report_json_schema(healthy: Files):
    data = check(healthy).as_json()
    assert data["schema"] == "kuberevive.certs/v1" and data["exit_code"] == 0
    row = next(i for i in data["items"] if i["name"] == "apiserver")
    assert row["not_after"].endswith("Z") and row["status"] == "ok" and row["signer_verified"] is True
    assert data["summary"]["ok"] == len(KUBEADM_ROWS | CAS) + 1
    assert paths.KUBELET_SERVING_CERT.name == "kubelet.crt"


def test_other_nodes_kubelet_items_count_but_are_not_renewed_here(healthy: Files):
    cfg = _cfg()
    report = check(healthy)
    worker = with_kubelet_pem(make_tree(), cfg, node="worker-1")  # another CA: its kubelet does not verify
    snap = snapshot(worker)
    ca = pki.load_certificate(healthy[PKI / "ca.crt"].content or b"", "ca")
    items = certs.kubelet_items(snap, ca, True, "worker-1", NOW, 30, other_node="worker-1")
    client = items[0]
    assert (client.node, client.subject, client.status, client.signer_verified) == (
        "worker-1",
        "system:node:worker-1",
        certs.Status.INVALID,
        False,
    )
    assert certs.with_items(report, items).exit_code == 4
    assert certs.renewal_targets(certs.with_items(report, items)) == []  # only this node's are renewed
    good = with_kubelet_pem(healthy, cfg, node="worker-1")
    items = certs.kubelet_items(snapshot(good), ca, True, "worker-1", NOW, 30, other_node="worker-1")
    assert items[0].status is certs.Status.OK and certs.with_items(report, items).exit_code == 0
    down = certs.with_items(report, [certs.unreachable_item("worker-2", "connection refused")])
    assert down.exit_code == 4 and down.items[-1].as_json()["node"] == "worker-2"


def test_kubelet_serving_certificate_signed_by_its_own_ca_in_the_same_file(healthy: Files):
    """The kubelet writes kubelet.crt as its serving certificate followed by the "<node>-ca@<time>" CA it made."""
    ca_key = pki.generate_private_key(_cfg().cluster.encryption_algorithm)
    own_ca = pki.new_self_signed_ca("master-a-ca@1700000000", ca_key, NOW, NOW + timedelta(days=365))
    key = pki.generate_private_key(_cfg().cluster.encryption_algorithm)
    leaf = pki.issue_certificate(
        common_name="master-a@1700000000",
        organization=(),
        usages=("serverAuth",),
        public_key=key.public_key(),
        ca_cert=own_ca,
        ca_key=ca_key,
        not_before=NOW,
        not_after=NOW + timedelta(days=365),
    )
    crt, key_path = paths.KUBELET_SERVING_CERT, paths.KUBELET_SERVING_CERT.with_suffix(".key")
    files = dict(healthy)
    files[crt] = _file(crt, pki.encode_certificate_pem(leaf) + pki.encode_certificate_pem(own_ca), 0o644)
    files[key_path] = _file(key_path, pki.encode_private_key_pem(key), 0o600)
    serving = check(files).item("kubelet-serving")
    assert (serving.status, serving.authority, serving.signer_verified) == (certs.Status.OK, "self", True)
    files[crt] = _file(crt, pki.encode_certificate_pem(leaf), 0o644)  # its CA gone: nothing verifies it
    assert check(files).item("kubelet-serving").status is certs.Status.INVALID


def test_renewal_keeps_the_key_algorithm_when_the_configuration_does_not_say():
    """An ECDSA node renewed with a configuration that says RSA-2048 (e.g. reconstructed): the keys stay ECDSA."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    ecdsa_cfg = load_kubeadm_config((CONFIGS / "ecdsa-validity.yaml").read_text(), NodeFacts(hostname="cp-ecdsa"))
    tree = with_kubelet_pem(make_tree(ecdsa_cfg), ecdsa_cfg, node="cp-ecdsa")
    files = contents(tree)
    rsa_cfg = _cfg()
    assert rsa_cfg.cluster.encryption_algorithm.value == "RSA-2048"
    key_art, _cert = certs.renew_leaf("apiserver", rsa_cfg, files, NOW)
    assert isinstance(pki.load_private_key(key_art.content, "k"), ec.EllipticCurvePrivateKey)
    conf = certs.renew_kubeconfig(K8S / "admin.conf", files[K8S / "admin.conf"], rsa_cfg, files, NOW)
    _cluster, user = Kubeconfig.from_yaml(conf.content).current()
    assert isinstance(pki.load_private_key(user.client_key_data or b"", "k"), ec.EllipticCurvePrivateKey)
    trust, _rewrite = certs.renew_kubelet_client(rsa_cfg, files, files[K8S / "kubelet.conf"], "cp-ecdsa", NOW, "s")
    assert isinstance(pki.load_private_key(trust.pem, "k"), ec.EllipticCurvePrivateKey)
    # and an RSA node stays RSA
    key_art, _cert = certs.renew_leaf("apiserver", ecdsa_cfg, contents(make_tree()), NOW)
    assert isinstance(pki.load_private_key(key_art.content, "k"), rsa.RSAPrivateKey)
