"""Golden files: the four static Pod manifests for each reference configuration, byte for byte.

Two sets (tests/golden/README.md):
* v1.<minor>/<config>/manifests: the three reference configurations of tests/configs/, for every minor that has
  goldens, each written by that minor's real kubeadm (tests/golden/minors.py);
* v1.33/crosscheck-<config>/manifests: the edge-case configurations of tests/golden/crosscheck/
  (IPv6, external etcd, extraArgs/extraVolumes/extraEnvs, proxy variables), checked against kubeadm v1.33.13.

Regenerate (only after checking the change against real kubeadm, see tests/golden/README.md):

    KUBEREVIVE_REGEN_GOLDEN=1 pytest tests/unit/test_golden_manifests.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kuberevive.core.manifests import MANIFEST_MODE, build_manifests
from kuberevive.model.artifacts import ArtifactKind
from kuberevive.model.config import NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config
from tests.golden import minors

TESTS = Path(__file__).resolve().parent.parent
CONFIGS = sorted((TESTS / "configs").glob("*.yaml"))
CROSSCHECK_CONFIGS = sorted((TESTS / "golden" / "crosscheck").glob("*.yaml"))
GOLDEN = TESTS / "golden" / "v1.33"
REGEN = os.environ.get("KUBEREVIVE_REGEN_GOLDEN") == "1"

# The facts every golden file was made with (and the scratch root of the kubeadm cross-check has).
GOLDEN_EXISTING = frozenset({"/etc/ssl/certs", "/etc/ca-certificates", "/usr/share/ca-certificates"})


# kubeadm's environment for the cross-check goldens (an empty *_proxy value is ignored by kubeadm).
CROSSCHECK_PROXY_ENV = (
    ("EMPTY_PROXY", ""),
    ("HTTPS_PROXY", "http://proxy:3128"),
    ("no_proxy", "localhost,10.0.0.0/8"),
)


def _facts_for(text: str, proxy_env: tuple[tuple[str, str], ...] = ()) -> NodeFacts:
    probe = load_kubeadm_config(text, NodeFacts(hostname="placeholder"))
    return NodeFacts(
        hostname=probe.node_name, default_address=None, existing_paths=GOLDEN_EXISTING, proxy_env=proxy_env
    )


def test_reference_configs_present() -> None:
    assert [c.stem for c in CONFIGS] == ["defaults", "ecdsa-validity", "endpoint-sans"]


def _check_against_golden(text: str, gdir: Path, proxy_env: tuple[tuple[str, str], ...]) -> None:
    facts = _facts_for(text, proxy_env)
    artifacts = build_manifests(load_kubeadm_config(text, facts), facts)
    if REGEN:
        gdir.mkdir(parents=True, exist_ok=True)
        for stale in gdir.glob("*.yaml"):
            stale.unlink()
        for a in artifacts:
            (gdir / a.path.name).write_bytes(a.content)
        pytest.skip("golden files regenerated")
    expected = {p.name: p.read_bytes() for p in sorted(gdir.glob("*.yaml"))}
    got = {a.path.name: a.content for a in artifacts}
    assert expected, f"no golden files in {gdir}"
    assert sorted(got) == sorted(expected)
    for name, content in got.items():
        assert content.decode() == expected[name].decode(), f"{gdir}/{name} differs from the golden file"
    for a in artifacts:
        assert a.mode == MANIFEST_MODE == 0o600
        assert a.kind is ArtifactKind.MANIFEST
        assert str(a.path) == f"/etc/kubernetes/manifests/{a.path.name}"


MINOR_CASES = [(minor, name) for minor in minors.golden_minors() for name in minors.CONFIG_NAMES]


@pytest.mark.parametrize(("minor", "name"), MINOR_CASES, ids=[f"v1.{m}-{n}" for m, n in MINOR_CASES])
def test_manifests_match_golden(minor: int, name: str) -> None:
    _check_against_golden(minors.config_text(name, minor), minors.golden_dir(minor) / name / "manifests", ())


def test_every_newer_minor_has_goldens() -> None:
    """Every minor but v1.31 (its kubeadm cannot be built from the proxy) has golden files made by its kubeadm."""
    assert {30, 32, 33, 34, 35, 36, 37} <= set(minors.golden_minors())


@pytest.mark.parametrize("config", CROSSCHECK_CONFIGS, ids=[c.stem for c in CROSSCHECK_CONFIGS])
def test_crosscheck_manifests_match_golden(config: Path) -> None:
    _check_against_golden(config.read_text(), GOLDEN / f"crosscheck-{config.stem}" / "manifests", CROSSCHECK_PROXY_ENV)


def test_golden_file_sets() -> None:
    """Local etcd gives four manifests; external etcd has no etcd.yaml."""
    four = ["etcd.yaml", "kube-apiserver.yaml", "kube-controller-manager.yaml", "kube-scheduler.yaml"]
    for minor, name in MINOR_CASES:
        assert sorted(p.name for p in (minors.golden_dir(minor) / name / "manifests").glob("*.yaml")) == four
    ext = GOLDEN / "crosscheck-external-etcd" / "manifests"
    assert sorted(p.name for p in ext.glob("*.yaml")) == four[1:]
