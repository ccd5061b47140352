"""``lab node destroy|add``: the parts that need no running lab (which processes and cgroups belong to one node,
the address a new machine gets, the refusals). The real thing is tests/lab/test_replace_lab.py."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from kuberevive.errors import LabError
from kuberevive.lab import Lab
from kuberevive.lab.cluster import _under
from kuberevive.lab.config import LabConfig
from kuberevive.lab.network import host_mac


def _lab(tmp_path: Path, status: str = "up") -> Lab:
    cfg = dataclasses.replace(
        LabConfig.from_env({"KUBEREVIVE_LAB_INSTANCE": "7"}, control_planes=3, workers=1), state_dir=tmp_path
    )
    (tmp_path / "state.json").write_text(json.dumps({"status": status, "nodes": [n.__dict__ for n in cfg.nodes]}))
    return Lab(cfg)


def test_a_nodes_cgroups_are_its_root_and_below_never_a_longer_name() -> None:
    roots = ("/krlab7-cp1",)
    assert _under("/krlab7-cp1", roots, False) and _under("/krlab7-cp1/system.slice/kubelet.service", roots, False)
    assert not _under("/krlab7-cp10/system.slice", roots, False)
    assert _under("/krlab7-cp10", ("/krlab7-",), True)  # the whole lab: every root with the prefix


def test_a_new_machine_gets_the_next_free_address_or_the_one_asked_if_free(tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    assert lab._free_address(None) == "172.30.7.15"  # .10 lb, .11 cp1, .12 worker1, .13 cp2, .14 cp3
    assert lab._free_address("172.30.7.40") == "172.30.7.40"
    with pytest.raises(LabError, match="is taken"):
        lab._free_address("172.30.7.13")
    with pytest.raises(LabError, match="not an address of the lab network"):
        lab._free_address("10.0.0.5")


@pytest.mark.skipif(os.geteuid() != 0, reason="the lab commands need root first")
def test_add_needs_a_lab_that_is_up_and_destroy_refuses_cp1_and_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="no lab is up"):
        _lab(tmp_path, status="failed").add_node("cp4")
    lab = _lab(tmp_path)
    with pytest.raises(LabError, match="works through"):
        lab.destroy_node("cp1")
    with pytest.raises(LabError):
        lab.destroy_node("cp9")


def test_a_re_added_machine_keeps_its_mac_a_new_name_gets_another(tmp_path: Path) -> None:
    cfg = _lab(tmp_path).cfg
    mac = host_mac(cfg, "cp3")
    assert mac == host_mac(cfg, "cp3") != host_mac(cfg, "cp4")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01  # locally administered, unicast
