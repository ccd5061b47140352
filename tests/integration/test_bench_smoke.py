"""The benchmarks cannot rot: what ``benchmarks/vs_manual.py`` would run, checked against the real kubeadm.

``vs_manual.py`` needs two fresh labs and ~10 minutes, so it is not part of the suite. This checks, in
about a second, every ``kubeadm`` command of the manual procedure (:mod:`kuberevive.lab.manual`), with and
without the cluster's configuration: the subcommand exists in the lab's kubeadm (the version the benchmark runs)
and accepts every flag used, and the configuration files it is given are valid to it (``kubeadm config validate``).
``fleet.py`` runs whole at N = 3 (about 45 s on 2 cores, most of it the API server starting), and its ServiceAccount
remediation with a few Secrets and pods (the real kube-controller-manager re-mints and rolls them out).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kuberevive.lab import LabConfig
from kuberevive.lab.kubeadm import JoinCommand, dump, init_documents, join_documents, new_bootstrap_token
from kuberevive.lab.manual import KCM_CONTROLLERS, kubeadm_commands, manual_plan, minimal_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab_bin_dir() -> Path:
    """The binaries of the lab's default version, which the benchmarks' labs and the fleet run."""
    cfg = LabConfig()
    if not (cfg.bin_cache / "kubeadm").is_file():
        pytest.fail(f"{cfg.bin_cache}/kubeadm is missing: build it with {cfg.build_command}", pytrace=False)
    return cfg.bin_cache


def _help_flags(kubeadm: Path, subcommand: tuple[str, ...]) -> set[str]:
    run = subprocess.run([kubeadm, *subcommand, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, (subcommand, run.stderr)
    assert "Available Commands" not in run.stdout or subcommand[-1] in run.stdout, subcommand
    return set(re.findall(r"^\s+(?:-\w, )?(--[\w-]+)", run.stdout, re.MULTILINE))


@pytest.mark.parametrize("with_config", [True, False], ids=["config", "defaults"])
def test_every_manual_kubeadm_command_and_flag_exists(lab_bin_dir: Path, with_config: bool) -> None:
    cfg = LabConfig()
    commands = kubeadm_commands(manual_plan(cfg, with_config))
    paths = {c[: next(i for i, a in enumerate(c) if a.startswith("-"))] for c in commands}
    assert {("kubeadm", "init", "phase", "etcd", "local"), ("kubeadm", "join", "phase", "kubelet-start")} <= paths
    for argv in commands:
        first_flag = next(i for i, a in enumerate(argv) if a.startswith("-"))
        path = argv[1:first_flag]
        flags = _help_flags(lab_bin_dir / "kubeadm", path)
        used = {a.split("=")[0] for a in argv if a.startswith("--")}
        assert used <= flags, (argv, used - flags)
    with pytest.raises(AssertionError):  # a phase kubeadm does not have is caught
        _help_flags(lab_bin_dir / "kubeadm", ("init", "phase", "no-such-phase"))


def test_manual_configurations_are_valid_to_kubeadm(lab_bin_dir: Path, tmp_path: Path) -> None:
    cfg = LabConfig()
    files = {
        "minimal.yaml": minimal_config(cfg),
        "init.yaml": dump(init_documents(cfg, new_bootstrap_token())),
        "join.yaml": dump(
            join_documents(
                cfg, cfg.workers[0], JoinCommand(cfg.api_endpoint, new_bootstrap_token(), "sha256:" + "0" * 64)
            )
        ),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        run = subprocess.run(
            [lab_bin_dir / "kubeadm", "config", "validate", "--config", tmp_path / name],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 0, (name, run.stderr)


def test_the_controller_manager_edit_matches_kubeadms_manifest(lab_bin_dir: Path, tmp_path: Path) -> None:
    """The manual procedure turns taint-based eviction off by editing kubeadm's ``--controllers`` line."""
    (tmp_path / "kubeadm.yaml").write_text(minimal_config(LabConfig()))
    out = tmp_path / "dry-run"  # kubeadm's dry run writes here, never to this machine's /etc/kubernetes
    out.mkdir()
    argv = ["init", "phase", "control-plane", "controller-manager", "--config", str(tmp_path / "kubeadm.yaml")]
    run = subprocess.run(
        [lab_bin_dir / "kubeadm", *argv, "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "KUBEADM_INIT_DRYRUN_DIR": str(out)},
    )
    assert run.returncode == 0, run.stderr
    assert f"- {KCM_CONTROLLERS}\n" in (out / "kube-controller-manager.yaml").read_text()


def test_fleet_benchmark_at_three_nodes(tmp_path: Path) -> None:
    """``benchmarks/fleet.py --nodes 3`` end to end (~45 s): one node re-trusted, one slow but re-trusted, one
    unreachable and reported by name; the re-trusted nodes' "kubelets" reach the real API server with their new
    certificates (their status requests are in its audit log), and their old files were moved aside."""
    if os.geteuid() != 0:
        pytest.skip("the fleet needs root (network and mount namespaces, sshd)")
    script = Path(__file__).parents[2] / "benchmarks" / "fleet.py"
    argv = [sys.executable, str(script), "--nodes", "3", "--slow-seconds", "3", "--work", str(tmp_path)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    (size,) = json.loads(run.stdout.strip().splitlines()[-1])["sizes"]
    assert (size["nodes"], size["unreachable"], size["slow"]) == (3, [1], [2])
    assert size["ok"] == 2, size
    assert list(size["failed"]) == ["fleet-00001"] and "cannot connect" in size["failed"]["fleet-00001"]
    assert "failed: fleet-00001: " in run.stdout  # reported one per node
    assert size["node_requests"] == 2  # each re-trusted node posted its status with its new certificate
    assert size["api_requests"] >= 3  # the node list, then at least one Node read per re-trusted node
    new_ca = (tmp_path / "3/cp/etc/kubernetes/pki/ca.crt").read_bytes()
    for name, done in (("fleet-00000", True), ("fleet-00001", False), ("fleet-00002", True)):
        node = tmp_path / "3/nodes" / name
        assert ((node / "etc.up/kubernetes/pki/ca.crt").read_bytes() == new_ca) is done, name
        assert any((node / "var.up/lib/kuberevive/backup").glob("*/etc/kubernetes/kubelet.conf")) is done, name


def test_fleet_benchmark_sa_remediation_with_a_few_secrets_and_pods(tmp_path: Path) -> None:
    """``benchmarks/fleet.py --nodes 0 --secrets 6 --pods 4`` end to end: recover's sa-tokens code re-mints every
    legacy token Secret (the real token controller signs new ones with the fleet's sa.key) and rolls out every owner
    of a pod (the real Deployment and DaemonSet controllers, pods run by the simulator); nothing fails."""
    if os.geteuid() != 0:
        pytest.skip("the fleet needs root (network and mount namespaces)")
    script = Path(__file__).parents[2] / "benchmarks" / "fleet.py"
    argv = [sys.executable, str(script), "--nodes", "0", "--secrets", "6", "--pods", "4", "--sa-nodes", "2"]
    run = subprocess.run([*argv, "--work", str(tmp_path)], capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    sa = json.loads(run.stdout.strip().splitlines()[-1])["sa"]
    assert sa["actions"] == {"remint Secret": 6, "rollout-restart Deployment": 1, "rollout-restart DaemonSet": 1}, sa
    assert sa["outcomes"] == {"ok": 8, "skipped": 0, "failed": 0}, sa
    assert sa["api_requests"] >= 6 + 2  # a patch per Secret and per owner, plus the lists and the waits
    # the audit log's count by client and phase: the token controller (kube-controller-manager's own client) read
    # and updated each re-minted Secret while the tool waited for it
    remints = sa["rates"]["re-mints"]["clients"]
    assert remints["kube-controller-manager/tokens-controller"]["requests"] >= 2 * 6, sa["rates"]
    assert remints["tool"]["requests"] >= 6, sa["rates"]
    assert sa["controller_requests"] >= remints["kube-controller-manager/tokens-controller"]["requests"]
    assert "tokens-controller" in run.stdout and "--kube-api-qps 100 --kube-api-burst 200" in run.stdout
    assert "ServiceAccount remediation: 6 legacy token Secrets" in run.stdout
