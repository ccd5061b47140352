"""Golden files: the five kubeconfigs for each reference configuration, compared as whole text with
the random parts (keys, certificates) replaced by what they are (tests/golden/kubeconfig_normalise.py).

The same normalised text is produced from real kubeadm's kubeconfigs by
tests/integration/test_kubeadm_compare.py::test_kubeadm_kubeconfigs_match_golden, so these files are
kubeadm's output, not ours blessed. Regenerate: KUBEREVIVE_REGEN_GOLDEN=1 pytest tests/unit/test_golden_kubeconfigs.py
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kuberevive.core.generate import KUBECONFIG_NAMES, Target, generate
from kuberevive.model.config import NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config
from tests.golden.kubeconfig_normalise import normalise

TESTS = Path(__file__).resolve().parent.parent
GOLDEN = TESTS / "golden" / "v1.33"
CONFIGS = ["defaults", "endpoint-sans", "ecdsa-validity"]
NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("config_name", CONFIGS)
def test_kubeconfigs_match_golden(config_name: str):
    text = (TESTS / "configs" / f"{config_name}.yaml").read_text()
    facts = NodeFacts(hostname="placeholder")
    cfg = load_kubeadm_config(text, facts)
    artifacts = {a.path.name: a for a in generate(Target.ALL, cfg, facts, NOW, {}).artifacts}
    gdir = GOLDEN / config_name / "kubeconfigs"
    for name in KUBECONFIG_NAMES:
        got = normalise(artifacts[name].content.decode())
        assert artifacts[name].mode == 0o600
        if os.environ.get("KUBEREVIVE_REGEN_GOLDEN") == "1":
            gdir.mkdir(parents=True, exist_ok=True)
            (gdir / name).write_text(got)
        assert got == (gdir / name).read_text(), f"{config_name}/{name} differs from its golden file"


def test_normalise_keeps_everything_but_random_parts():
    text = (GOLDEN / "defaults" / "kubeconfigs" / "admin.conf").read_text()
    assert "server: https://192.168.56.10:6443" in text
    assert "<CERT subject=CN=kubernetes-admin,O=kubeadm:cluster-admins issuer=CN=kubernetes" in text
    assert "name: kubernetes-admin@kubernetes" in text
