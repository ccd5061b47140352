"""Issue 15: output that fits the terminal. The real commands run in a pseudo-terminal (python's ``pty``) at 80 and
120 columns on a generated root with files removed: no line is wider than the terminal, errors come first, one API
server that does not answer is one finding, colour only without ``NO_COLOR``."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "endpoint-sans.yaml"
ANSI = re.compile(r"\033\[[0-9;]*m")


def in_pty(columns: int, *args: str, no_color: bool = True) -> tuple[int, list[str]]:
    """Run kuberevive with stdout and stderr on a terminal ``columns`` wide; its lines, colour codes removed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR", "LINES")}
    env |= {"COLUMNS": str(columns), "TERM": "xterm"} | ({"NO_COLOR": "1"} if no_color else {})
    proc = subprocess.Popen([sys.executable, "-m", "kuberevive", *args], stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    code = proc.wait(timeout=120)
    text = b"".join(chunks).decode()
    assert ("\033[" in text) is not no_color, text[:500]  # colour on a terminal, never with NO_COLOR
    return code, [ANSI.sub("", line) for line in text.replace("\r\n", "\n").split("\n")]


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A control-plane node made by ``generate``, then: apiserver.key and admin.conf gone, ca.key 0644, every
    kubeconfig pointing at an API server that refuses connections, kubelet files and etcd data present."""
    root = tmp_path_factory.mktemp("term") / "node"
    root.mkdir()
    gen = subprocess.run(
        [sys.executable, "-m", "kuberevive", "generate", "all", "--config", str(CONFIG), "--root", str(root)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    k8s = root / "etc/kubernetes"
    (k8s / "pki/apiserver.key").unlink()
    (k8s / "admin.conf").unlink()
    (k8s / "pki/ca.key").chmod(0o644)
    for name in ("super-admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf"):
        doc = yaml.safe_load((k8s / name).read_text())
        doc["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
        (k8s / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    kubelet = root / "var/lib/kubelet"
    kubelet.mkdir(parents=True)
    (kubelet / "config.yaml").write_text("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n")
    (kubelet / "kubeadm-flags.env").write_text('KUBELET_KUBEADM_ARGS="--node-ip=10.20.30.40"\n')
    (root / "var/lib/etcd/member/snap").mkdir(parents=True)
    return root


def fits(lines: list[str], columns: int) -> None:
    long = [line for line in lines if len(line) > columns]
    assert not long, "\n".join(long)


@pytest.mark.parametrize("columns", [80, 120])
def test_diagnose_fits_the_terminal_and_lists_errors_first(broken: Path, columns: int) -> None:
    code, lines = in_pty(columns, "diagnose", "--root", str(broken))
    assert code == 2, lines
    fits(lines, columns)
    sections = [line.split(" (")[0] for line in lines if re.fullmatch(r"[A-Z]+ \(\d+\)", line)]
    assert sections == ["ERRORS", "WARNINGS", "INFO"], lines
    errors = lines[lines.index(next(x for x in lines if x.startswith("ERRORS"))) :]
    assert "apiserver.key: the apiserver key is missing" in " ".join(errors[: errors.index("")])
    # one API server that does not answer: one finding naming the kubeconfigs that use it
    joined = " ".join(line.strip() for line in lines)
    assert joined.count("does not answer") == 1 and "Connection refused" in joined, lines
    assert "the API cannot be used through" not in joined  # cluster.unreachable is the same root cause
    assert "used by super-admin.conf, kubelet.conf, controller-manager.conf, scheduler.conf" in joined
    assert lines[-2].startswith("errors: ") or lines[-1].startswith("errors: "), lines[-3:]


def test_diagnose_colours_on_a_terminal_without_no_color(broken: Path) -> None:
    code, lines = in_pty(100, "diagnose", "--root", str(broken), "--offline", no_color=False)
    assert code == 2 and "ERRORS (4)" in lines, lines


@pytest.mark.parametrize("columns", [80, 120])
def test_recover_plan_and_its_error_fit_the_terminal(broken: Path, columns: int) -> None:
    code, lines = in_pty(columns, "recover", "--root", str(broken), "--config", str(CONFIG))
    assert code == 0, lines
    fits(lines, columns)
    assert lines[0] == "recovery plan for node master-a (10.20.30.40:6443)"
    assert any(line.startswith(" 1. [write-files] ") for line in lines), lines
    wrapped = [line for line in lines if line.startswith("          ")]  # why/file lines continued under the text
    assert wrapped, lines
    missing = broken.parent / ("a-root-directory-with-a-long-name-" + "x" * columns)
    code, lines = in_pty(columns, "recover", "--root", str(missing))
    assert code == 1, lines
    fits(lines, columns)
    assert lines[0].startswith("kuberevive: error: ") and len([x for x in lines if x]) > 1, lines  # wrapped
