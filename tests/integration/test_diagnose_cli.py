"""``kuberevive diagnose`` end to end on trees written by ``kuberevive generate all`` into a temporary root."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from kuberevive.cli.app import main
from kuberevive.cli.env import Environment

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "endpoint-sans.yaml"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the CIS ownership checks expect root-owned files")


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), Environment(stdout=out, stderr=err, environ={}))
    return code, out.getvalue(), err.getvalue()


def diagnose_json(root: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run("diagnose", "--root", str(root), "--offline", "--json", *extra)
    assert err == "", err
    return code, json.loads(out)


def problems(data: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(f["id"], f["severity"], f["subject"]) for f in data["findings"] if f["severity"] in ("warning", "error")}


@pytest.fixture
def node(tmp_path: Path) -> Path:
    root = tmp_path / "node"
    root.mkdir()
    code, _, err = run("generate", "all", "--config", str(CONFIG), "--root", str(root))
    assert code == 0, err
    kubelet = root / "var/lib/kubelet"
    kubelet.mkdir(parents=True)
    (kubelet / "config.yaml").write_text("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n")
    (kubelet / "kubeadm-flags.env").write_text('KUBELET_KUBEADM_ARGS="--node-ip=10.20.30.40"\n')
    for f in ("config.yaml", "kubeadm-flags.env"):
        (kubelet / f).chmod(0o644)
    member = root / "var/lib/etcd/member/snap"
    member.mkdir(parents=True)
    (root / "var/lib/etcd").chmod(0o700)
    (member / "db").write_bytes(b'\x00{"id":1,"peerURLs":["https://10.20.30.40:2380"],"name":"master-a"}\x00')
    wal = root / "var/lib/etcd/member/wal"  # a data dir etcd can start from has its WAL beside the db
    wal.mkdir()
    (wal / "0000000000000000-0000000000000000.wal").write_bytes(b"")
    return root


def test_healthy_generated_tree_exits_0(node: Path):
    code, data = diagnose_json(node, "--config", str(CONFIG))
    assert (code, data["status"], problems(data)) == (0, "healthy", set())
    assert data["config"]["source"] == f"--config {CONFIG}"
    etcd = next(f for f in data["findings"] if f["id"] == "recovery.etcd-data")
    assert etcd["details"]["member_names"] == ["master-a"]


def test_deleted_certificate_exits_2(node: Path):
    (node / "etc/kubernetes/pki/front-proxy-client.crt").unlink()
    code, data = diagnose_json(node)
    assert code == 2
    assert problems(data) == {
        ("file.missing", "error", "/etc/kubernetes/pki/front-proxy-client.crt"),
        ("manifest.missing-file", "error", "/etc/kubernetes/manifests/kube-apiserver.yaml"),
    }
    assert data["config"]["kind"] == "node"


def test_key_mode_0644_on_disk(node: Path):
    (node / "etc/kubernetes/pki/apiserver.key").chmod(0o644)
    code, data = diagnose_json(node)
    assert code == 2
    assert problems(data) == {
        ("file.permissions", "error", "/etc/kubernetes/pki/apiserver.key"),
        ("cis.1.1.21", "warning", "/etc/kubernetes/pki/apiserver.key"),
    }


def test_human_view_lists_errors_first(node: Path):
    (node / "etc/kubernetes/manifests/kube-scheduler.yaml").unlink()
    code, out, err = run("diagnose", "--root", str(node), "--offline")
    assert code == 2 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("kuberevive diagnose: ")
    assert lines[lines.index("ERRORS (1)") + 1].split() == [
        "manifest",
        "/etc/kubernetes/manifests/kube-scheduler.yaml:",
        *["the", "kube-scheduler", "static", "Pod", "manifest", "is", "missing"],
    ]
    assert lines.index("ERRORS (1)") < lines.index(next(x for x in lines if x.startswith("INFO (")))
    assert any(x.startswith("passed: ") and "manifest 3" in x for x in lines)  # passed checks: one line
    assert max(map(len, lines)) > 100  # not a terminal and no COLUMNS: one line per finding, not wrapped
    assert "\033[" not in out  # not a terminal: no colours
    assert lines[-1].startswith("errors: 1 error(s), 0 warning(s)")


def test_ten_thousand_unrelated_files_is_not_a_kubeadm_node(tmp_path: Path):
    root = tmp_path / "junk"
    for i in range(100):
        d = root / "etc" / f"dir{i}" if i % 2 else root / "usr/share" / f"d{i}"
        d.mkdir(parents=True)
        for j in range(100):
            (d / f"file{j}.txt").write_text(f"{i} {j}\n")
    started = time.monotonic()
    code, out, err = run("diagnose", "--root", str(root), "--offline")
    assert time.monotonic() - started < 10
    assert code == 3 and err == ""
    assert "this is not a kubeadm node" in out
    code, data = diagnose_json(root)
    assert code == 3 and data["status"] == "not-kubeadm"
    assert [f["id"] for f in data["findings"]] == ["node.not-kubeadm"]


def test_empty_root_and_missing_root(tmp_path: Path):
    code, out, err = run("diagnose", "--root", str(tmp_path), "--offline")
    assert code == 3 and "this is not a kubeadm node" in out
    code, out, err = run("diagnose", "--root", str(tmp_path / "nope"), "--offline")
    assert (code, out) == (3, "")
    missing = tmp_path / "nope"
    assert err == f"kuberevive: error: the root directory {missing} does not exist. Pass the node's root with --root.\n"


def test_unreadable_config_file_is_exit_3(node: Path, tmp_path: Path):
    code, out, err = run("diagnose", "--root", str(node), "--offline", "--config", str(tmp_path / "missing.yaml"))
    assert code == 3 and out == ""
    assert err.startswith("kuberevive: error: cannot read the configuration file ")
    assert err.count("\n") == 1


def test_a_lost_etc_kubernetes_is_one_error_in_the_text_and_a_lists_the_files(node: Path):
    import shutil

    shutil.rmtree(node / "etc/kubernetes")
    code, out, _err = run("diagnose", "--root", str(node), "--offline")
    assert code == 2, out
    errors = out.split("ERRORS (", 1)[1].split("\n\n", 1)[0]
    assert errors.startswith("2)"), errors  # the lost directory and the CA verdict
    assert "/etc/kubernetes: everything kubeadm wrote here is gone" in errors
    assert "is missing" not in errors
    assert f"'kuberevive recover --apply --root {node}'" in errors
    assert "missing files are part of the first error; -a lists them" in out
    assert out.rstrip().splitlines()[-1].startswith("errors: 2 error(s) (+")
    code, everything, _err = run("diagnose", "--root", str(node), "--offline", "-a")
    assert code == 2 and "/etc/kubernetes/pki/ca.key: the ca key is missing" in everything
