"""``kuberevive recover`` on roots that are not kubeadm control-plane nodes: one clear line, nothing written."""

from __future__ import annotations

import io
from pathlib import Path

from kuberevive.cli.app import main
from kuberevive.cli.env import Environment


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), Environment(stdout=out, stderr=err, environ={}))
    return code, out.getvalue(), err.getvalue()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"" for p in sorted(root.rglob("*"))}


def test_unrelated_files_are_not_a_kubeadm_node_and_stay_untouched(tmp_path: Path) -> None:
    root = tmp_path / "junk"
    for i in range(20):
        d = root / "etc" / f"dir{i}"
        d.mkdir(parents=True)
        for j in range(20):
            (d / f"file{j}.txt").write_text(f"{i} {j}\n")
    before = _tree(root)
    for args in ([], ["--apply"], ["--apply", "--json"]):
        code, out, err = run("recover", "--root", str(root), *args)
        assert code == 1, (args, out, err)
        assert out == ""
        assert err.startswith("kuberevive: error: this is not a kubeadm node"), err
        assert err.count("\n") == 1  # one line: what is wrong and what to do
    assert _tree(root) == before


def test_a_worker_without_etcd_data_is_not_a_control_plane_node(tmp_path: Path) -> None:
    root = tmp_path / "worker"
    kubelet = root / "var/lib/kubelet"
    kubelet.mkdir(parents=True)
    (kubelet / "config.yaml").write_text("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n")
    (kubelet / "kubeadm-flags.env").write_text('KUBELET_KUBEADM_ARGS="--node-ip=10.20.30.41"\n')
    before = _tree(root)
    code, _out, err = run("recover", "--root", str(root), "--apply")
    assert code == 1 and "no local etcd data" in err, err
    assert _tree(root) == before
