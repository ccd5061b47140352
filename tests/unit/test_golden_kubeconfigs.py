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
from tests.golden import minors
from tests.golden.kubeconfig_normalise import normalise

TESTS = Path(__file__).resolve().parent.parent
GOLDEN = TESTS / "golden" / "v1.33"
CONFIGS = ["defaults", "endpoint-sans", "ecdsa-validity"]
NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


MINOR_CASES = [(minor, name) for minor in minors.golden_minors() for name in CONFIGS]


@pytest.mark.parametrize(("minor", "config_name"), MINOR_CASES, ids=[f"v1.{m}-{n}" for m, n in MINOR_CASES])
def test_kubeconfigs_match_golden(minor: int, config_name: str):
    text = minors.config_text(config_name, minor)
    facts = NodeFacts(hostname="placeholder")
    cfg = load_kubeadm_config(text, facts)
    artifacts = {a.path.name: a for a in generate(Target.ALL, cfg, facts, NOW, {}).artifacts}
    gdir = minors.golden_dir(minor) / config_name / "kubeconfigs"
    for name in KUBECONFIG_NAMES:
        got = normalise(artifacts[name].content.decode())
        assert artifacts[name].mode == 0o600
        if os.environ.get("KUBEREVIVE_REGEN_GOLDEN") == "1":
            gdir.mkdir(parents=True, exist_ok=True)
            (gdir / name).write_text(got)
        assert got == (gdir / name).read_text(), f"{config_name}/{name} differs from its golden file"


def _admin_conf(config_name: str = "defaults") -> str:
    text = (TESTS / "configs" / f"{config_name}.yaml").read_text()
    facts = NodeFacts(hostname="placeholder")
    cfg = load_kubeadm_config(text, facts)
    (admin,) = [a for a in generate(Target.ALL, cfg, facts, NOW, {}).artifacts if a.path.name == "admin.conf"]
    return admin.content.decode()


def test_normalise_keeps_everything_but_random_parts():
    raw = _admin_conf()
    got = normalise(raw)
    # every line without key material is kept byte for byte, in order (kubeadm backdates NotBefore by 5 min)
    plain = [line for line in raw.splitlines() if "-data: " not in line]
    assert [line for line in got.splitlines() if "-data: " not in line] == plain
    # the three random fields are replaced by what they are, and nothing random is left
    fields = dict(line.strip().split(": ", 1) for line in got.splitlines() if "-data: " in line)
    assert fields == {
        "certificate-authority-data": "<CA CN=kubernetes sig=sha256WithRSAEncryption key=RSA-2048>",
        "client-certificate-data": "<CERT subject=CN=kubernetes-admin,O=kubeadm:cluster-admins issuer=CN=kubernetes"
        " eku=clientAuth validity=525605min key=RSA-2048>",
        "client-key-data": "<KEY -----BEGIN RSA PRIVATE KEY----->",
    }
    assert "LS0t" not in got  # no base64 PEM left
    # two generations differ in every random byte, yet normalise to the same text
    again = _admin_conf()
    assert again != raw and normalise(again) == got


def test_normalise_tells_key_types_and_validity_apart():
    # ecdsa-validity.yaml: ECDSA keys and a non-default certificate validity must show in the normalised text
    got = normalise(_admin_conf("ecdsa-validity"))
    assert "key=EC-secp256r1" in got and "key=RSA" not in got
    assert "validity=525605min" not in got
