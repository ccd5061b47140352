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


JOIN = "kubeadm join 172.30.7.10:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:" + "a" * 64


def test_a_join_command_of_the_other_role_is_refused_before_kubeadm_runs(tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    with pytest.raises(LabError, match="cp2 is a control plane; the join command is not one for a control plane"):
        lab.join_node("cp2", JOIN)
    with pytest.raises(LabError, match="worker1 is a worker; the join command is one for a control plane"):
        lab.join_node("worker1", JOIN + " --control-plane --certificate-key " + "b" * 64)
    assert "pod_cidrs" not in lab.read_state()


def test_only_a_destroyed_added_node_is_forgotten_and_then_the_lab_is_as_built(tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    with pytest.raises(LabError, match="one of the nodes the lab was built with"):
        lab.forget_node("cp3")
    extra = {"name": "cp4", "ip": "172.30.7.15", "role": "control-plane"}
    lab._write_state(extra_nodes=[extra], pod_cidrs={"cp1": "10.123.0.0/24", "cp4": "10.123.5.0/24"})
    lab = Lab(lab.cfg)
    assert "cp4" in lab.cfg.node_names
    with pytest.raises(LabError, match="lab node cp4 is not destroyed"):
        lab.forget_node("cp4")
    lab._write_state(destroyed=["cp4"])
    lab.forget_node("cp4")
    state = lab.read_state()
    assert state["extra_nodes"] == [] and state["destroyed"] == [] and state["pod_cidrs"] == {"cp1": "10.123.0.0/24"}
    assert lab.cfg.node_names == Lab(lab.cfg).cfg.node_names == ["cp1", "cp2", "cp3", "worker1"]
