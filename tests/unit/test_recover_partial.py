"""Recovery planning from whatever subset of the kubeadm files survives or was already put back.

Each case starts from a complete, consistent control-plane node (what ``kubeadm init`` writes, built by the
same pure code), removes or replaces files as a partial loss or a half-done manual ``kubeadm init phase``
attempt would, and runs the file-writing steps of the plan in order (etcd certificates with the bootstrap
configuration, then certificates, kubeconfigs, the kubelet's kubeconfig and the manifests with the stored
one). Every case must converge, without an exception, to a node whose every file the survey keeps, and
must keep whatever trust material survived.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

import pytest
import yaml
from cryptography import x509

from kuberevive.core import pki, satokens
from kuberevive.core import recover as core
from kuberevive.core.kubeconfig import build_kubeconfigs
from kuberevive.core.manifests import build_manifests
from kuberevive.io.host import LocalHost
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.artifacts import Artifact
from kuberevive.model.config import KubeadmConfig, NodeFacts
from kuberevive.run.recover import plan_recovery
from tests.unit.test_recover import STORED, evidence

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=3)
PKI = PurePosixPath("/etc/kubernetes/pki")
K8S = PurePosixPath("/etc/kubernetes")
FACTS = NodeFacts(hostname="cp1")
IDENT = core.identify(evidence())
BOOT = core.bootstrap_config(IDENT)
CFG = core.final_config(IDENT, STORED, None)
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
CA_KEYS = ("ca.key", "front-proxy-ca.key", "etcd/ca.key")

Files = dict[PurePosixPath, bytes]


def _healthy_node(cfg: KubeadmConfig = CFG, now: datetime = NOW) -> Files:
    """What kubeadm init leaves under /etc/kubernetes for ``cfg`` (kubelet.conf as kubelet-finalize leaves it)."""
    bundle = pki.build_certificates(cfg, now, {})
    files = {a.path: a.content for a in bundle.artifacts}
    ca, key = files[PKI / "ca.crt"], files[PKI / "ca.key"]
    files |= {a.path: a.content for a in build_kubeconfigs(cfg, ca, key, now) if a.path.name != "kubelet.conf"}
    files[K8S / "kubelet.conf"] = core.kubelet_files(cfg, ca, key, now, "2026-11-25-12-00-00").kubeconfig.content
    files |= {a.path: a.content for a in build_manifests(cfg, FACTS)}
    return files


HEALTHY = _healthy_node()


def _converge(files: Mapping[PurePosixPath, bytes], kept: Mapping[str, bytes] | None = None) -> Files:
    """The file-writing steps of the plan, in order, each on the node as the previous left it."""
    node = dict(files)
    kept_paths = core.kept_files(CFG, kept or {})

    def write(arts: list[Artifact]) -> None:
        node.update({a.path: a.content for a in arts})

    write(core.etcd_pki_artifacts(BOOT, LATER, node, kept_paths))
    write(core.manifests_for(BOOT, FACTS, ("etcd",)))
    write(core.pki_artifacts(CFG, LATER, node, kept_paths))
    ca, key = core.ca_pair(CFG, node)
    write(core.control_plane_kubeconfigs(CFG, LATER, ca, key, node))
    write([core.kubelet_files(CFG, ca, key, LATER, "2026-11-25-15-00-00").kubeconfig])
    write(core.manifests_for(CFG, FACTS, COMPONENTS))
    return node


def _not_kept(node: Mapping[PurePosixPath, bytes]) -> list[str]:
    return [v.line() for v in core.survey_node(CFG, FACTS, node, {}, LATER) if v.action != core.KEEP]


def _without(*names: str) -> Callable[[Files], Files]:
    return lambda f: {p: b for p, b in f.items() if not any(str(p) == n or str(p).startswith(n + "/") for n in names)}


def _pki(*rel: str) -> tuple[str, ...]:
    return tuple(str(PKI / r) for r in rel)


def _fresh_phase(select: Callable[[PurePosixPath], bool]) -> Callable[[Files], Files]:
    """The seed disaster, then the output of a manual ``kubeadm init phase`` run (a new consistent set)."""
    other = _healthy_node(CFG, NOW + timedelta(minutes=30))
    return lambda _f: {p: b for p, b in other.items() if select(p)}


def _replace(path: PurePosixPath, data: bytes) -> Callable[[Files], Files]:
    return lambda f: f | {path: data}


def _corrupt(path: PurePosixPath) -> Callable[[Files], Files]:
    return lambda f: f | {path: f[path][: len(f[path]) // 2]}


def _is_etcd_phase(p: PurePosixPath) -> bool:
    return str(p).startswith(str(PKI / "etcd")) or p.name in ("etcd.yaml", "apiserver-etcd-client.crt")


_OTHER = _healthy_node(CFG, NOW + timedelta(minutes=30))

# (case id, what happened to the node, which of ca / sa trust material survives)
CASES: list[tuple[str, Callable[[Files], Files]]] = [
    ("nothing lost", lambda f: f),
    ("seed disaster: everything", lambda _f: {}),
    ("only pki/", _without(str(PKI))),
    ("only the CA keys", _without(*_pki(*CA_KEYS))),
    ("only ca.key", _without(*_pki("ca.key"))),
    ("only ca.crt (key survives)", _without(*_pki("ca.crt"))),
    ("only etcd/ca.crt (key survives)", _without(*_pki("etcd/ca.crt"))),
    ("only sa.key", _without(*_pki("sa.key"))),
    ("only sa.pub", _without(*_pki("sa.pub"))),
    ("only the manifests", _without(str(K8S / "manifests"))),
    ("only admin.conf and super-admin.conf", _without(str(K8S / "admin.conf"), str(K8S / "super-admin.conf"))),
    (
        "only the kubeconfigs",
        _without(
            *(
                str(K8S / n)
                for n in ("admin.conf", "super-admin.conf", "kubelet.conf", "controller-manager.conf", "scheduler.conf")
            )
        ),
    ),
    ("only pki/etcd", _without(str(PKI / "etcd"))),
    ("only the leaf keys", _without(*_pki("apiserver.key", "apiserver-kubelet-client.key", "front-proxy-client.key"))),
    ("manual: etcd phases after the seed", _fresh_phase(_is_etcd_phase)),
    (
        "manual: etcd phases + a CA after the seed",
        _fresh_phase(lambda p: _is_etcd_phase(p) or p.name.startswith("ca.")),
    ),
    ("manual: certs all after the seed", _fresh_phase(lambda p: str(p).startswith(str(PKI)))),
    (
        "manual: certs all + kubeconfig all after the seed",
        _fresh_phase(lambda p: str(p).startswith(str(PKI)) or p.suffix == ".conf"),
    ),
    (
        "manual: kubeconfig all with another CA, pki/ lost",
        lambda f: {p: b for p, b in _OTHER.items() if p.suffix == ".conf"},
    ),
    (
        "manual: certs all over a surviving node (new CA, old kubeconfigs)",
        lambda f: f | {p: b for p, b in _OTHER.items() if str(p).startswith(str(PKI))},
    ),
    ("truncated apiserver.key", _corrupt(PKI / "apiserver.key")),
    ("truncated ca.crt (key survives)", _corrupt(PKI / "ca.crt")),
    ("truncated sa.key", _corrupt(PKI / "sa.key")),
    ("apiserver.crt from another CA", _replace(PKI / "apiserver.crt", _OTHER[PKI / "apiserver.crt"])),
    ("apiserver.key of another pair", _replace(PKI / "apiserver.key", _OTHER[PKI / "apiserver.key"])),
    ("ca.crt of another CA (ca.key survives)", _replace(PKI / "ca.crt", _OTHER[PKI / "ca.crt"])),
    ("sa.pub of another key", _replace(PKI / "sa.pub", _OTHER[PKI / "sa.pub"])),
    ("admin.conf of another cluster", _replace(K8S / "admin.conf", _OTHER[K8S / "admin.conf"])),
    ("scheduler.conf garbage", _replace(K8S / "scheduler.conf", b"not: [a kubeconfig")),
    ("controller-manager.conf is admin.conf", _replace(K8S / "controller-manager.conf", HEALTHY[K8S / "admin.conf"])),
    ("etcd.yaml of another configuration", _replace(K8S / "manifests/etcd.yaml", b"apiVersion: v1\nkind: Pod\n")),
    ("kube-apiserver.yaml empty", _replace(K8S / "manifests/kube-apiserver.yaml", b"")),
]
# and every single kubeadm file lost on its own
CASES += [(f"only {p.relative_to(K8S)}", _without(str(p))) for p in sorted(HEALTHY)]


@pytest.mark.parametrize(("case", "damage"), CASES, ids=[c for c, _ in CASES])
def test_every_partial_state_converges(case: str, damage: Callable[[Files], Files]) -> None:
    before = damage(dict(HEALTHY))
    after = _converge(before)
    assert _not_kept(after) == [], case
    # surviving trust material is kept: a CA key, sa.key
    for rel in (*CA_KEYS, "sa.key"):
        p = PKI / rel
        if before.get(p) == HEALTHY[p]:
            assert after[p] == HEALTHY[p], f"{case}: {rel} was replaced"
    ca_crt, ca_key = PKI / "ca.crt", PKI / "ca.key"
    if before.get(ca_key) == HEALTHY[ca_key]:
        old = x509.load_pem_x509_certificate(HEALTHY[ca_crt])
        new = x509.load_pem_x509_certificate(after[ca_crt])
        if before.get(ca_crt) == HEALTHY[ca_crt]:
            assert after[ca_crt] == HEALTHY[ca_crt], case  # surviving ca.crt + ca.key: no new CA at all
        # what the old certificate signed (worker kubelets, their kubelet.conf) verifies with the new one
        worker = core.kubelet_files(CFG, HEALTHY[ca_crt], HEALTHY[ca_key], NOW, "w").pem.content
        assert pki.verify_signed_by(x509.load_pem_x509_certificate(worker), new), case
        assert new.subject == old.subject


def test_a_healthy_node_is_kept_file_for_file() -> None:
    assert _not_kept(HEALTHY) == []
    assert _converge(HEALTHY) == HEALTHY  # nothing rewritten


def test_survey_says_why() -> None:
    node = dict(HEALTHY)
    del node[PKI / "ca.key"]
    node[PKI / "sa.pub"] = _OTHER[PKI / "sa.pub"]
    node[K8S / "admin.conf"] = _OTHER[K8S / "admin.conf"]
    del node[K8S / "manifests/kube-scheduler.yaml"]
    lines = {str(v.path): (v.action, v.why) for v in core.survey_node(CFG, FACTS, node, {}, LATER)}
    assert lines[str(PKI / "ca.crt")][0] == core.REPLACE and "ca.key is missing" in lines[str(PKI / "ca.crt")][1]
    assert lines[str(PKI / "apiserver.crt")] == (core.REPLACE, "its CA (ca) is new")
    assert lines[str(PKI / "sa.key")][0] == core.KEEP
    assert lines[str(PKI / "sa.pub")] == (core.REPLACE, "does not belong to sa.key: derived again from it")
    assert lines[str(K8S / "manifests/kube-scheduler.yaml")] == (core.REPLACE, "missing")
    assert lines[str(PKI / "etcd/ca.key")][0] == core.KEEP


def test_kubeconfig_survey_checks_the_client_certificate() -> None:
    ca = HEALTHY[PKI / "ca.crt"]
    node = dict(HEALTHY)
    # scheduler.conf carrying the controller-manager's identity: right CA, wrong user
    node[K8S / "scheduler.conf"] = HEALTHY[K8S / "controller-manager.conf"]
    verdicts = {v.path.name: v for v in core.survey_kubeconfigs(CFG, node, ca, LATER).verdicts}
    assert verdicts["scheduler.conf"].action == core.REPLACE
    assert "CN=system:kube-controller-manager" in verdicts["scheduler.conf"].why
    assert verdicts["admin.conf"].action == core.KEEP
    expired = core.survey_kubeconfigs(CFG, HEALTHY, ca, NOW + timedelta(days=400)).verdicts
    assert all(v.action == core.REPLACE and "expired" in v.why for v in expired if v.path.name != "kubelet.conf")
    assert {v.path.name: v.action for v in expired}["kubelet.conf"] == core.KEEP  # its pem is the kubelet's


def test_kept_material_wins_over_the_node() -> None:
    node = _fresh_phase(lambda p: str(p).startswith(str(PKI)))({})  # a manual 'certs all': another CA
    kept = {n: HEALTHY[PKI / n] for n in ("ca.crt", "ca.key", "sa.key", "sa.pub")}
    after = _converge(node, kept)
    assert _not_kept(after) == []
    for n, data in kept.items():
        assert after[PKI / n] == data


def test_the_plan_lists_each_surviving_file_and_writes_nothing(tmp_path: Path) -> None:
    """``recover`` (no --apply) on a node root where only pki/ was lost and sa.key survives truncated."""
    root = tmp_path / "node"
    for p, data in HEALTHY.items():
        if not str(p).startswith(str(PKI)):
            (root / str(p).lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (root / str(p).lstrip("/")).write_bytes(data)
    (root / "etc/kubernetes/pki").mkdir()
    (root / "etc/kubernetes/pki/sa.key").write_bytes(HEALTHY[PKI / "sa.key"][:40])
    (root / "var/lib/kubelet").mkdir(parents=True)
    (root / "var/lib/kubelet/config.yaml").write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
    )
    (root / "var/lib/kubelet/kubeadm-flags.env").write_text('KUBELET_KUBEADM_ARGS="--node-ip=172.30.2.11"\n')
    (root / "var/lib/etcd/member/snap").mkdir(parents=True)
    before = sorted((str(p), p.read_bytes() if p.is_file() else b"") for p in root.rglob("*"))
    init = yaml.safe_dump(core._init_doc(IDENT))
    plan = plan_recovery(LocalHost(NodeRoot(root), live=False), {}, "---\n" + init + "---\n" + STORED, environ={})
    assert [s.id for s in plan.steps] == list(core.SEED_STEP_IDS)
    notes = "\n".join(plan.notes)
    assert "/etc/kubernetes/pki/sa.key: replace (unreadable" in notes
    assert "/etc/kubernetes/admin.conf: replace (the cluster CA is new)" in notes
    assert "/etc/kubernetes/pki/ca.crt: replace (missing)" in notes
    assert "/etc/kubernetes/manifests/etcd.yaml: keep" in notes
    assert sorted((str(p), p.read_bytes() if p.is_file() else b"") for p in root.rglob("*")) == before


def _kid(pem: bytes) -> str:
    (kid,) = satokens.key_ids(pem)
    return kid


def test_trust_changes_compare_with_what_the_cluster_trusts() -> None:
    """A CA or sa.key that a half-done manual attempt made is new to the cluster although it is on the node."""
    usable = core.survey_pki(CFG, HEALTHY, LATER).usable
    ours, other = HEALTHY[PKI / "ca.crt"], _OTHER[PKI / "ca.crt"]
    sa_kid, other_kid = _kid(HEALTHY[PKI / "sa.key"]), _kid(_OTHER[PKI / "sa.key"])
    info = core.cluster_info_kubeconfig("https://172.30.2.11:6443", ours).encode()
    assert core.embedded_ca(info) == ours
    assert core.embedded_ca(HEALTHY[K8S / "admin.conf"]) == ours
    assert core.embedded_ca(b"[") is None
    same = core.trust_changes(CFG, usable, ours, frozenset({sa_kid}))
    assert same == {"new_ca": False, "new_front_proxy": False, "new_sa": False}
    # the cluster trusts another CA and its pods hold tokens of another sa.key
    assert core.trust_changes(CFG, usable, other, frozenset({other_kid})) == {
        "new_ca": True,
        "new_front_proxy": False,
        "new_sa": True,
    }
    # nothing to compare with (no cluster-info, no token on the node): what survives stands
    assert core.trust_changes(CFG, usable, None, frozenset()) == same
    # a CA certificate made again for the surviving key is the same CA
    rebuilt = core.survey_pki(CFG, {p: b for p, b in HEALTHY.items() if p != PKI / "ca.crt"}, LATER)
    assert core.trust_changes(CFG, rebuilt.usable, ours, frozenset())["new_ca"] is False
    # lost: new
    lost = core.survey_pki(CFG, {p: b for p, b in HEALTHY.items() if p.name not in ("ca.key", "sa.key")}, LATER)
    assert core.trust_changes(CFG, lost.usable, ours, frozenset({sa_kid})) == {
        "new_ca": True,
        "new_front_proxy": False,
        "new_sa": True,
    }


def test_token_key_ids_come_from_the_kubelets_projected_tokens(tmp_path: Path) -> None:
    import base64
    import json

    from kuberevive.run.steps.control_plane import token_key_ids

    def jwt(kid: str) -> bytes:
        header = base64.urlsafe_b64encode(json.dumps({"alg": "RS256", "kid": kid}).encode()).rstrip(b"=")
        return header + b".eyJzdWIiOiJ4In0.c2ln"

    vol = tmp_path / "var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~projected/kube-api-access-abc"
    (vol / "..2026_11_25").mkdir(parents=True)
    (vol / "..2026_11_25/token").write_bytes(jwt("kid-one"))
    (vol / "..data").symlink_to("..2026_11_25")
    (vol / "token").symlink_to("..data/token")
    other = tmp_path / "var/lib/kubelet/pods/uid-2/volumes/kubernetes.io~secret/creds"
    other.mkdir(parents=True)
    (other / "token").write_bytes(jwt("not-a-projected-token"))
    (tmp_path / "var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~projected/broken").mkdir()
    (tmp_path / "var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~projected/broken/token").write_bytes(b"\xff junk")
    assert token_key_ids(NodeRoot(tmp_path)) == frozenset({"kid-one"})
    assert token_key_ids(NodeRoot(tmp_path / "nothing")) == frozenset()
