"""The recovery survey keeps what the real kubeadm v1.33.13 writes, file for file.

``kubeadm init phase certs all / kubeconfig all / control-plane all / etcd local`` runs in a scratch root
(``--rootfs``: the host's /etc/kubernetes is never touched) for each reference configuration; every file it
wrote must be judged ``keep`` by ``core.recover.survey_node`` (a healthy node is never "recovered"), and
the same tree with ``ca.key`` removed must not be (a CA that cannot sign is replaced).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest

from kuberevive.core import recover as core
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.config import NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config
from tests.integration.test_kubeadm_compare import CA_DIRS, CONFIGS, kubeadm_binary, kubeadm_phases, prepare_root

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("config_name", ["defaults", "endpoint-sans", "ecdsa-validity"])
def test_the_survey_keeps_what_kubeadm_writes(tmp_path: Path, config_name: str) -> None:
    kubeadm = kubeadm_binary()
    if os.geteuid() != 0:
        pytest.skip("kubeadm --rootfs needs root (chroot)")
    prepare_root(tmp_path)
    config = CONFIGS / f"{config_name}.yaml"
    (tmp_path / "kubeadm.yaml").write_bytes(config.read_bytes())
    kubeadm_phases(kubeadm, tmp_path)
    existing = frozenset("/" + d for d in CA_DIRS)
    cfg = load_kubeadm_config(config.read_text(), NodeFacts(hostname="cp1"))
    facts = NodeFacts(hostname=cfg.node_name, existing_paths=existing)
    root = NodeRoot(tmp_path)
    files = root.read_tree(cfg.cluster.certificates_dir) | root.read_tree("/etc/kubernetes")
    verdicts = core.survey_node(cfg, facts, files, {}, datetime.now(UTC))
    not_kept = [v.line() for v in verdicts if v.action != core.KEEP]
    assert not_kept == []
    assert {v.path for v in verdicts} >= set(files)  # every file kubeadm wrote was judged
    ca_key = PurePosixPath(cfg.cluster.certificates_dir) / "ca.key"
    lost = core.survey_node(cfg, facts, {p: b for p, b in files.items() if p != ca_key}, {}, datetime.now(UTC))
    assert any(v.path.name == "ca.crt" and v.action == core.REPLACE for v in lost)
