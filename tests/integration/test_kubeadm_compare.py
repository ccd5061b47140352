"""The check against each minor's real kubeadm (v1.30 to v1.37, every one built in the cache).

For each minor whose kubeadm is built (tests/golden/minors.py: ``kubeadm_path``; build one with
``src/kuberevive/lab/data/build-kubeadm.sh VERSION``) and each reference configuration (its ``kubernetesVersion`` set
to that minor's checked patch), ``kubeadm init phase certs all / kubeconfig all / control-plane all /
etcd local`` runs in one scratch root (``--rootfs``: kubeadm chroots there, the host's /etc/kubernetes is
never touched) and ``kuberevive generate all`` in another; then the two trees are compared field by
field. Keys and serial numbers are random, so certificates are compared by subject, issuer, SANs,
usages, basic constraints, validity length, key algorithm and size, signature algorithm and key-id
extensions; kubeconfigs by every field with the embedded certificates decoded; manifests as whole
documents. Any difference fails the test unless it is listed, with a reason, in
``kubeadm_accepted_differences.yaml`` beside this file.
"""

from __future__ import annotations

import base64
import contextlib
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kuberevive.core.versions import CHECKED_PATCH
from kuberevive.lab.config import BUILD_SCRIPT
from tests.golden import minors

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs"
ACCEPTED = HERE / "kubeadm_accepted_differences.yaml"
PHASES = (("certs", "all"), ("kubeconfig", "all"), ("control-plane", "all"), ("etcd", "local"))
#: Host CA directories kubeadm mounts into the control plane when they exist; created in both roots.
CA_DIRS = ("etc/ssl/certs", "etc/ca-certificates", "usr/share/ca-certificates")


BUILD_KUBEADM = Path(BUILD_SCRIPT).with_name("build-kubeadm.sh")
CONFIG_NAMES = list(minors.CONFIG_NAMES)
#: Minors whose kubeadm build-kubeadm.sh cannot build from the Go module proxy (as of 2026-12-05).
UNBUILDABLE: dict[int, str] = {}  # v1.31: v1.31.14 cannot be (the proxy refuses k8s.io/kube-proxy@v0.31.14): v1.31.9
CASES = [(minor, name) for minor in CHECKED_PATCH for name in CONFIG_NAMES]
CASE_IDS = [f"v1.{m}-{n}" for m, n in CASES]


def kubeadm_binary(minor: int = 33) -> Path:
    """kubeadm of the minor's checked patch. CI builds every one (.ci/install), so a missing one fails there; on a
    workstation a minor that is not in the cache is skipped, with the command that builds it."""
    kubeadm = minors.kubeadm_path(minor)
    if not kubeadm.exists():
        if os.environ.get("CI") and minor not in UNBUILDABLE:
            pytest.fail(f"{kubeadm} is missing: .ci/install must build every minor's kubeadm ({BUILD_KUBEADM})")
        if minor in UNBUILDABLE:
            pytest.skip(f"kubeadm {CHECKED_PATCH[minor]} cannot be built here: {UNBUILDABLE[minor]}")
        build = BUILD_SCRIPT if minor == 33 else f"{BUILD_KUBEADM} {CHECKED_PATCH[minor].removeprefix('v')}"
        pytest.skip(f"kubeadm {CHECKED_PATCH[minor]} is not built ({kubeadm}); run {build}")
    return kubeadm


def accepted() -> list[dict[str, str]]:
    data = yaml.safe_load(ACCEPTED.read_text()) or {}
    items = data.get("accepted") or []
    for item in items:
        assert item.get("reason"), f"an accepted difference needs a reason: {item}"
    return list(items)


# -- describing a tree ---------------------------------------------------------------------------


def describe_cert(pem: bytes) -> dict[str, Any]:
    cert = x509.load_pem_x509_certificate(pem)
    exts = {e.oid._name: e for e in cert.extensions}
    out: dict[str, Any] = {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "version": cert.version.name,
        # whole minutes: kubeadm v1.30 reads the clock twice per certificate (NotBefore, then NotAfter), so its
        # validity is a second longer when a second ticks between; v1.31+ use one start time (certlist.go)
        "validity_minutes": round((cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 60),
        "signature_algorithm": cert.signature_algorithm_oid._name,
        "extensions": sorted(f"{name}{'(critical)' if e.critical else ''}" for name, e in exts.items()),
    }
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        out["public_key"] = f"RSA-{key.key_size} e={key.public_numbers().e}"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        out["public_key"] = f"EC-{key.curve.name}"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        out["san_dns"] = san.get_values_for_type(x509.DNSName)
        out["san_ip"] = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        out["key_usage"] = sorted(
            n
            for n in ("digital_signature", "key_encipherment", "key_cert_sign", "crl_sign", "content_commitment")
            if getattr(ku, n)
        )
    except x509.ExtensionNotFound:
        pass
    with contextlib.suppress(x509.ExtensionNotFound):
        out["ext_key_usage"] = [u._name for u in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value]
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        out["basic_constraints"] = {"ca": bc.ca, "path_length": bc.path_length}
    except x509.ExtensionNotFound:
        pass
    return out


def describe_key(pem: bytes) -> dict[str, Any]:
    first = pem.decode().splitlines()[0]
    return {"pem_header": first}


def describe_client_cert(pem: bytes, ca_pem: bytes) -> dict[str, Any]:
    """A kubeconfig's client certificate. kubeadm's kubeconfig phase may start a second after the certs
    phase, so NotBefore is described relative to the CA's (the validity is in whole minutes, as for every cert)."""
    out = describe_cert(pem)
    cert, ca = x509.load_pem_x509_certificate(pem), x509.load_pem_x509_certificate(ca_pem)
    out["not_before_minus_ca_not_before"] = (cert.not_valid_before_utc - ca.not_valid_before_utc).total_seconds()
    return out


def describe_kubeconfig(data: bytes) -> dict[str, Any]:
    doc = yaml.safe_load(data)
    ca_pem = base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"])

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for k, v in node.items():
                if k == "certificate-authority-data":
                    out[k] = describe_cert(base64.b64decode(v))
                elif k == "client-certificate-data":
                    out[k] = describe_client_cert(base64.b64decode(v), ca_pem)
                elif k == "client-key-data":
                    out[k] = describe_key(base64.b64decode(v))
                else:
                    out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return {"top_level_keys": sorted(doc), "content": walk(doc)}


def describe_tree(root: Path) -> dict[str, Any]:
    k = root / "etc/kubernetes"
    out: dict[str, Any] = {}
    for path in sorted(k.rglob("*")):
        rel = "/" + str(path.relative_to(root))
        mode = f"{stat.S_IMODE(path.stat().st_mode):04o}"
        if path.is_dir():
            out[rel] = {"type": "dir", "mode": mode}
            continue
        data = path.read_bytes()
        entry: dict[str, Any] = {"mode": mode}
        if path.suffix == ".crt":
            entry["cert"] = describe_cert(data)
        elif path.suffix == ".key":
            entry["key"] = describe_key(data)
        elif path.name == "sa.pub":
            entry["pem_header"] = data.decode().splitlines()[0]
        elif path.suffix == ".conf":
            entry["kubeconfig"] = describe_kubeconfig(data)
        elif path.suffix == ".yaml":
            entry["manifest"] = yaml.safe_load(data)
        out[rel] = entry
    return out


def diff(a: Any, b: Any, where: str = "") -> list[tuple[str, Any, Any]]:
    """Every leaf where kubeadm (a) and kuberevive (b) disagree, as (path, kubeadm, kuberevive)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{where}.{key}" if where else str(key)
            if key not in a:
                out.append((sub, "<absent>", b[key]))
            elif key not in b:
                out.append((sub, a[key], "<absent>"))
            else:
                out += diff(a[key], b[key], sub)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += diff(x, y, f"{where}[{i}]")
        return out
    return [] if a == b else [(where, a, b)]


# -- the test ------------------------------------------------------------------------------------


def prepare_root(root: Path) -> None:
    for d in CA_DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)


def kubeadm_phases(kubeadm: Path, root: Path, phases: tuple[tuple[str, str], ...] = PHASES) -> None:
    """``kubeadm init phase <phase> <sub> --config /kubeadm.yaml --rootfs root`` for each phase, in order."""
    for phase, sub in phases:
        run = subprocess.run(
            [str(kubeadm), "init", "phase", phase, sub, "--config", "/kubeadm.yaml", "--rootfs", str(root)],
            capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert run.returncode == 0, f"kubeadm init phase {phase} {sub}: {run.stderr}"


@pytest.mark.parametrize(("minor", "config_name"), CASES, ids=CASE_IDS)
def test_generated_tree_equals_real_kubeadm(tmp_path: Path, minor: int, config_name: str):
    kubeadm = kubeadm_binary(minor)
    if os.geteuid() != 0:
        pytest.skip("kubeadm --rootfs needs root (chroot)")
    config = tmp_path / "kubeadm.yaml"
    config.write_text(minors.config_text(config_name, minor))
    theirs, ours = tmp_path / "kubeadm", tmp_path / "kuberevive"
    for root in (theirs, ours):
        prepare_root(root)
    (theirs / "kubeadm.yaml").write_bytes(config.read_bytes())
    kubeadm_phases(kubeadm, theirs)
    gen = subprocess.run(
        [sys.executable, "-m", "kuberevive", "generate", "all", "--config", str(config), "--root", str(ours)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr

    differences = diff(describe_tree(theirs), describe_tree(ours))
    allowed = [a for a in accepted() if a.get("config") in (config_name, "*")]
    unexplained = [
        d for d in differences if not any(d[0] == a["field"] or d[0].startswith(a["field"] + ".") for a in allowed)
    ]
    report = "\n".join(f"  {path}\n    kubeadm:    {k!r}\n    kuberevive: {o!r}" for path, k, o in unexplained)
    assert not unexplained, f"{len(unexplained)} difference(s) from kubeadm v1.{minor} for {config_name}:\n{report}"


@pytest.mark.parametrize(("minor", "config_name"), CASES, ids=CASE_IDS)
def test_kubeadm_output_is_the_golden_files(minor: int, config_name: str):
    """The golden files (tests/golden/v1.<minor>/<config>/{manifests,kubeconfigs}) are that minor's real kubeadm's
    output: manifests byte for byte, kubeconfigs normalised (tests/golden/kubeconfig_normalise.py)."""
    kubeadm = kubeadm_binary(minor)
    if os.geteuid() != 0:
        pytest.skip("kubeadm --rootfs needs root (chroot)")
    files = minors.kubeadm_output(kubeadm, minors.config_text(config_name, minor))
    golden = minors.golden_dir(minor) / config_name
    assert sorted(files) == sorted(str(p.relative_to(golden)) for p in golden.rglob("*") if p.is_file())
    for rel, text in files.items():
        assert text == (golden / rel).read_text(), f"kubeadm {CHECKED_PATCH[minor]}'s {rel} differs from {golden}"


def test_kubeconfig_client_certs_with_an_old_ca_equal_kubeadm(tmp_path: Path):
    """With a CA made ten days ago, the client certificates' NotBefore and NotAfter match kubeadm's."""
    from datetime import UTC, datetime, timedelta

    from kuberevive.core.generate import Target, generate
    from kuberevive.io.noderoot import NodeRoot
    from kuberevive.model.config import NodeFacts
    from kuberevive.model.kubeadm_yaml import load_kubeadm_config

    kubeadm = kubeadm_binary()
    if os.geteuid() != 0:
        pytest.skip("kubeadm --rootfs needs root (chroot)")
    config = CONFIGS / "defaults.yaml"
    facts = NodeFacts(hostname="cp1")
    cfg = load_kubeadm_config(config.read_text(), facts)
    old = generate(Target.CERTS, cfg, facts, datetime.now(UTC) - timedelta(days=10), {})
    theirs, ours = tmp_path / "kubeadm", tmp_path / "kuberevive"
    for root in (theirs, ours):
        root.mkdir()
        NodeRoot(root).write_all(a for a in old.artifacts if a.path.name in ("ca.crt", "ca.key"))
    (theirs / "kubeadm.yaml").write_bytes(config.read_bytes())
    run = subprocess.run(
        [str(kubeadm), "init", "phase", "kubeconfig", "all", "--config", "/kubeadm.yaml", "--rootfs", str(theirs)],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    gen = subprocess.run(
        [sys.executable, "-m", "kuberevive", "generate", "kubeconfigs", "--config", str(config), "--root", str(ours)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    for name in ("admin.conf", "super-admin.conf", "kubelet.conf", "controller-manager.conf", "scheduler.conf"):
        certs = []
        for root in (theirs, ours):
            doc = yaml.safe_load((root / "etc/kubernetes" / name).read_bytes())
            data = base64.b64decode(doc["users"][0]["user"]["client-certificate-data"])
            certs.append(x509.load_pem_x509_certificate(data))
        k, o = certs
        assert o.not_valid_before_utc == k.not_valid_before_utc, name  # both: the CA's NotBefore
        assert abs((o.not_valid_after_utc - k.not_valid_after_utc).total_seconds()) < 60, name


def test_the_comparison_can_fail(tmp_path: Path):
    """The differ itself: a changed SAN, mode or flag is reported (so a green run means something)."""
    a = {"/etc/kubernetes/pki/apiserver.crt": {"mode": "0644", "cert": {"san_dns": ["a", "b"]}}}
    b = {"/etc/kubernetes/pki/apiserver.crt": {"mode": "0600", "cert": {"san_dns": ["a", "c"]}}}
    assert diff(a, b) == [
        ("/etc/kubernetes/pki/apiserver.crt.cert.san_dns[1]", "b", "c"),
        ("/etc/kubernetes/pki/apiserver.crt.mode", "0644", "0600"),
    ]
    assert diff({"x": [1]}, {"x": [1, 2]}) == [("x", [1], [1, 2])]


def validate_both(kubeadm: Path, text: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], str | None]:
    """``kubeadm config validate`` of ``text`` and kuberevive's parser's error for it (None: accepted)."""
    from kuberevive.errors import ConfigError
    from kuberevive.model.config import NodeFacts
    from kuberevive.model.kubeadm_yaml import load_kubeadm_config

    config = tmp_path / "kubeadm.yaml"
    config.write_text(text)
    run = subprocess.run(
        [str(kubeadm), "config", "validate", "--config", str(config)],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    try:
        load_kubeadm_config(text, NodeFacts(hostname="cp1"))
    except ConfigError as exc:
        return run, str(exc)
    return run, None


@pytest.mark.parametrize("minor", list(CHECKED_PATCH), ids=[f"v1.{m}" for m in CHECKED_PATCH])
@pytest.mark.parametrize("api", ["v1beta3", "v1beta4"])
def test_config_api_versions_accepted_as_by_kubeadm(tmp_path: Path, minor: int, api: str):
    """kuberevive reads a kubeadm.k8s.io/<api> configuration for a minor exactly when that minor's
    ``kubeadm config validate`` does (v1beta3 up to v1.36, v1beta4 from v1.31), and says which minor refuses it."""
    kubeadm = kubeadm_binary(minor)
    source = CONFIGS / ("v1beta3/defaults.yaml" if api == "v1beta3" else "defaults.yaml")
    text = minors.VERSION_LINE.sub(f"kubernetesVersion: {CHECKED_PATCH[minor]}", source.read_text())
    run, ours = validate_both(kubeadm, text, tmp_path)
    assert (run.returncode == 0) == (ours is None), f"kubeadm: {run.returncode} {run.stderr.strip()}; ours: {ours}"
    if ours is not None:
        assert f"kubeadm v1.{minor} does not read kubeadm.k8s.io/{api}" in ours


GATE_CASES = [
    ("ControlPlaneKubeletLocalMode", "false"),
    ("NodeLocalCRISocket", "false"),
    ("WaitForAllControlPlaneComponents", "false"),
    ("EtcdLearnerMode", "false"),
    ("PublicKeysECDSA", "true"),
    ("NoSuchGate", "true"),
]


@pytest.mark.parametrize("minor", list(CHECKED_PATCH), ids=[f"v1.{m}" for m in CHECKED_PATCH])
@pytest.mark.parametrize(("gate", "value"), GATE_CASES, ids=[f"{g}={v}" for g, v in GATE_CASES])
def test_feature_gates_accepted_as_by_kubeadm(tmp_path: Path, minor: int, gate: str, value: str):
    """A feature gate (unknown, locked GA, or settable) is refused by kuberevive exactly when that minor's
    ``kubeadm config validate`` refuses it."""
    kubeadm = kubeadm_binary(minor)
    text = minors.config_text("defaults", minor) + f"featureGates:\n  {gate}: {value}\n"
    run, ours = validate_both(kubeadm, text, tmp_path)
    assert (run.returncode == 0) == (ours is None), f"kubeadm: {run.returncode} {run.stderr.strip()}; ours: {ours}"


@pytest.mark.parametrize("minor", list(CHECKED_PATCH), ids=[f"v1.{m}" for m in CHECKED_PATCH])
def test_kubelet_conf_server_with_the_local_mode_gate_off_as_kubeadm(tmp_path: Path, minor: int):
    """kubelet.conf's server with ControlPlaneKubeletLocalMode=false (where the minor knows the gate) and a
    controlPlaneEndpoint: the endpoint while kubeadm reads the gate (v1.31-v1.34), the local API server from v1.35."""
    from kuberevive.core.kubeconfig import kubeconfig_specs
    from kuberevive.core.versions import CONTROL_PLANE_KUBELET_LOCAL_MODE, minor_profile
    from kuberevive.model.config import NodeFacts
    from kuberevive.model.kubeadm_yaml import load_kubeadm_config

    kubeadm = kubeadm_binary(minor)
    if os.geteuid() != 0:
        pytest.skip("kubeadm --rootfs needs root (chroot)")
    text = minors.config_text("endpoint-sans", minor)
    if CONTROL_PLANE_KUBELET_LOCAL_MODE in minor_profile(minor).feature_gates:
        text += f"featureGates:\n  {CONTROL_PLANE_KUBELET_LOCAL_MODE}: false\n"
    prepare_root(tmp_path)
    (tmp_path / "kubeadm.yaml").write_text(text)
    kubeadm_phases(kubeadm, tmp_path, (("certs", "ca"), ("kubeconfig", "kubelet")))
    theirs = yaml.safe_load((tmp_path / "etc/kubernetes/kubelet.conf").read_text())["clusters"][0]["cluster"]["server"]
    cfg = load_kubeadm_config(text, NodeFacts(hostname="cp1"))
    (ours,) = [s.server for s in kubeconfig_specs(cfg) if s.file_name == "kubelet.conf"]
    assert ours == theirs


@pytest.mark.parametrize("version", ["v1.29.15", "v1.38.0"])
def test_generate_outside_the_range_is_one_line_and_writes_nothing(tmp_path: Path, version: str):
    config = tmp_path / "kubeadm.yaml"
    config.write_text(minors.VERSION_LINE.sub(f"kubernetesVersion: {version}", (CONFIGS / "defaults.yaml").read_text()))
    root = tmp_path / "root"
    root.mkdir()
    gen = subprocess.run(
        [sys.executable, "-m", "kuberevive", "generate", "all", "--config", str(config), "--root", str(root)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert gen.returncode == 1
    assert gen.stderr.count("\n") == 1 and "outside" in gen.stderr and "(v1.30 to v1.37)" in gen.stderr, gen.stderr
    assert list(root.rglob("*")) == []


@pytest.mark.parametrize("minor", list(CHECKED_PATCH), ids=[f"v1.{m}" for m in CHECKED_PATCH])
def test_image_tags_of_the_table_are_kubeadms_image_list(minor: int):
    """The etcd and pause tags of the per-minor table are what that minor's ``kubeadm config images list`` names
    (the lab builds exactly these images; recover writes etcd's)."""
    from kuberevive.core.versions import etcd_image_tag, minor_profile

    kubeadm = kubeadm_binary(minor)
    run = subprocess.run(
        [str(kubeadm), "config", "images", "list", "--kubernetes-version", CHECKED_PATCH[minor]],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    tags = {line.rsplit("/", 1)[-1].split(":")[0]: line.rsplit(":", 1)[1] for line in run.stdout.split()}
    profile = minor_profile(minor)
    assert (tags["etcd"], tags["pause"]) == (etcd_image_tag(CHECKED_PATCH[minor]), profile.pause_image_tag)
