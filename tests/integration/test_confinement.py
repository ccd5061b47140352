"""Nothing is read or written outside ``--root`` (adversarial report, groups F1, F3 and F4).

Every case builds a node root ``R`` and, beside it, a directory ``VICTIM`` standing for the rescue host's own
files. The command runs as a real process under ``strace -f -e trace=%file``; each case then checks that

* no file system call named a path under ``VICTIM`` (nothing outside the root was read or written), and
* ``VICTIM`` is byte for byte, mode for mode, the same afterwards (the file-system diff),

and what the command itself must have done (refused with one line, or done its job inside the root).
The case ids are the ids of the adversarial report's FAILs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest

from kuberevive.core import backup as core
from kuberevive.io.backupfile import open_backup

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PASSPHRASE = "confinement passphrase"
KUBELET_PEM = "/var/lib/kubelet/pki/kubelet-client-2026-01-01-00-00-00.pem"


def _strace() -> str:
    path = shutil.which("strace")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("strace is not installed (CI is set, so this is a failure, not a skip)", pytrace=False)
        pytest.skip("strace is not installed")
    return path


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    paths: list[str]
    """Every path a file system call of the process tree named (readlink buffers and symlink targets aside)."""


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _paths(log: str) -> list[str]:
    out: list[str] = []
    for line in log.splitlines():
        body = re.sub(r"^\d+\s+", "", line)
        if body.startswith("<...") or body.startswith("execve(") or body.startswith("+++") or body.startswith("---"):
            continue  # a resumed call's results (readlink buffers), the command lines we gave, exits
        strings = _QUOTED.findall(body)
        if body.startswith(("readlink(", "readlinkat(")):
            strings = strings[:1]  # the second string is the link's target as read, not a path accessed
        elif body.startswith(("symlink(", "symlinkat(")):
            strings = strings[1:]  # the first string is the new link's content
        out.extend(s.encode().decode("unicode_escape") for s in strings)
    return out


def kuberevive(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Run:
    log = tmp / f"strace-{len(list(tmp.glob('strace-*')))}.log"
    base = {k: v for k, v in os.environ.items() if k != "KUBEREVIVE_PASSPHRASE"}
    proc = subprocess.run(
        [
            _strace(),
            "-f",
            "-qq",
            "-s",
            "4096",
            "-e",
            "trace=%file",
            "-o",
            str(log),
            sys.executable,
            "-m",
            "kuberevive",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=base | (env or {}),
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, _paths(log.read_text(errors="replace")))


def fs_state(top: Path) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            out[str(p.relative_to(top))] = (st.st_mode, os.readlink(p) if p.is_symlink() else digest)
    return out


def one_line_error(run: Run, *fragments: str) -> None:
    assert run.returncode == 1, (run.returncode, run.stderr)
    errors = [line for line in run.stderr.splitlines() if line.startswith("kuberevive: error:")]
    assert len(errors) == 1 and "Traceback" not in run.stderr, run.stderr
    for f in fragments:
        assert f in errors[0], errors[0]


@dataclass
class Case:
    tmp: Path
    root: Path
    victim: Path
    inputs: Path

    def generate(self, root: Path | None = None, config: Path = CONFIGS / "defaults.yaml", *extra: str) -> None:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "kuberevive",
                "generate",
                "all",
                "--config",
                str(config),
                "--root",
                str(root or self.root),
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr

    def kubelet_files(self, root: Path, absolute: bool = True) -> None:
        """The kubelet's files as kubeadm leaves them: kubelet-client-current.pem an ABSOLUTE symlink."""
        pki = root / "var/lib/kubelet/pki"
        pki.mkdir(parents=True, exist_ok=True)
        conf = (root / "etc/kubernetes/kubelet.conf").read_text()
        m = re.search(r"client-certificate-data: (\S+)", conf)
        assert m is not None
        (pki / Path(KUBELET_PEM).name).write_bytes(base64.b64decode(m.group(1)))
        (pki / "kubelet-client-current.pem").symlink_to(KUBELET_PEM if absolute else Path(KUBELET_PEM).name)
        (root / "var/lib/kubelet/config.yaml").write_text("kind: KubeletConfiguration\n")
        (root / "var/lib/kubelet/kubeadm-flags.env").write_text('KUBELET_KUBEADM_ARGS="--node-ip=192.0.2.10"\n')

    def passfile(self) -> Path:
        p = self.inputs / "passphrase"
        p.write_text(PASSPHRASE + "\n")
        return p

    def backup(self, root: Path, name: str) -> Path:
        out = self.inputs / name
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "kuberevive",
                "backup",
                "create",
                "--root",
                str(root),
                "--out",
                str(out),
                "--passphrase-file",
                str(self.passfile()),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return out

    def config_with(self, certificates_dir: str) -> Path:
        text = (CONFIGS / "defaults.yaml").read_text()
        text = "\n".join(line for line in text.splitlines() if not line.startswith("certificatesDir:"))
        text = text.replace(
            "kind: ClusterConfiguration", f"kind: ClusterConfiguration\ncertificatesDir: {certificates_dir}"
        )
        p = self.inputs / "config.yaml"
        p.write_text(text)
        return p


@pytest.fixture
def case(tmp_path: Path) -> Case:
    c = Case(tmp_path, tmp_path / "root", tmp_path / "victim", tmp_path / "inputs")
    for d in (c.root, c.victim, c.inputs):
        d.mkdir()
    (c.victim / "host-secret.txt").write_text("HOST-ONLY-SECRET\n")
    (c.victim / "keep").mkdir()
    (c.victim / "secret.pem").write_text("-----BEGIN PRIVATE KEY-----\nnot really\n")
    return c


# -- the cases: (prepare the root, run the command, check what it did) ------------------------------------


def g_certdir_traversal(c: Case) -> Run:
    cfg = c.config_with("/../../../../../../../.." + str(c.victim))
    r = kuberevive(c.tmp, "generate", "all", "--config", str(cfg), "--root", str(c.root))
    one_line_error(r, "certificatesDir", "'..'")
    assert list(c.root.iterdir()) == []
    return r


def g_certdir_escape2(c: Case) -> Run:
    (c.root / "etc/kubernetes").mkdir(parents=True)
    cfg = c.config_with("/etc/kubernetes/../../../../../../.." + str(c.victim))
    r = kuberevive(c.tmp, "generate", "certs", "--config", str(cfg), "--root", str(c.root))
    one_line_error(r, "certificatesDir", "'..'")
    return r


def g_s1(c: Case) -> Run:
    (c.root / "etc/kubernetes").mkdir(parents=True)
    (c.root / "etc/kubernetes/pki").symlink_to(c.victim)
    r = kuberevive(c.tmp, "generate", "all", "--config", str(CONFIGS / "defaults.yaml"), "--root", str(c.root))
    one_line_error(r, "/etc/kubernetes/pki is a symlink", "does not exist on the node")
    return r


def g_s1_inside(c: Case) -> Run:
    """The same link, but its target exists on the node (a PKI on another disk of the node): followed there."""
    (c.root / "etc/kubernetes").mkdir(parents=True)
    (c.root / "data/pki").mkdir(parents=True)
    (c.root / "etc/kubernetes/pki").symlink_to("/data/pki")
    r = kuberevive(c.tmp, "generate", "all", "--config", str(CONFIGS / "defaults.yaml"), "--root", str(c.root))
    assert r.returncode == 0, r.stderr
    assert (c.root / "data/pki/ca.key").stat().st_mode & 0o777 == 0o600
    return r


def g_s2(c: Case) -> Run:
    (c.root / "etc").mkdir()
    (c.root / "etc/kubernetes").symlink_to(c.victim)
    r = kuberevive(c.tmp, "generate", "all", "--config", str(CONFIGS / "defaults.yaml"), "--root", str(c.root))
    one_line_error(r, "/etc/kubernetes is a symlink", "does not exist on the node")
    return r


def g_s5(c: Case) -> Run:
    c.generate()
    (c.root / "etc/kubernetes/admin.conf").write_text("changed by hand\n")
    (c.root / "var/lib/kuberevive").mkdir(parents=True, exist_ok=True)  # generate made it for the node's lock
    (c.root / "var/lib/kuberevive/backup").symlink_to(c.victim)
    r = kuberevive(
        c.tmp, "generate", "all", "--config", str(CONFIGS / "defaults.yaml"), "--root", str(c.root), "--force"
    )
    one_line_error(r, "/var/lib/kuberevive/backup is a symlink")
    assert (c.root / "etc/kubernetes/admin.conf").read_text() == "changed by hand\n"  # rolled back
    return r


def b_s1(c: Case) -> Run:
    src = c.tmp / "src"
    src.mkdir()
    c.generate(src)
    backup = c.backup(src, "honest.age")
    (c.root / "etc/kubernetes").mkdir(parents=True)
    (c.root / "etc/kubernetes/pki").symlink_to(c.victim)
    r = kuberevive(
        c.tmp, "backup", "restore", str(backup), "--root", str(c.root), "--passphrase-file", str(c.passfile())
    )
    one_line_error(r, "/etc/kubernetes/pki is a symlink")
    return r


def b_s2(c: Case) -> Run:
    c.generate()
    backup = c.backup(c.root, "honest.age")
    (c.root / "etc/kubernetes/admin.conf").write_text("changed by hand\n")
    (c.root / "var/lib/kuberevive").mkdir(parents=True, exist_ok=True)
    (c.root / "var/lib/kuberevive/backup").symlink_to(c.victim)
    r = kuberevive(
        c.tmp, "backup", "restore", str(backup), "--root", str(c.root), "--all", "--passphrase-file", str(c.passfile())
    )
    one_line_error(r, "/var/lib/kuberevive/backup is a symlink")
    return r


def b_c5(c: Case) -> Run:
    c.generate()
    (c.root / "etc/kubernetes/notes.txt").symlink_to(c.victim / "host-secret.txt")
    (c.root / "etc/kubernetes/hostdir").symlink_to(c.victim)
    out = c.inputs / "b.age"
    r = kuberevive(
        c.tmp, "backup", "create", "--root", str(c.root), "--out", str(out), "--passphrase-file", str(c.passfile())
    )
    assert r.returncode == 0, r.stderr
    contents = open_backup(out, passphrase=PASSPHRASE)
    assert all(b"HOST-ONLY-SECRET" not in f.content for f in contents.files.values())
    assert not any("notes.txt" in str(p) or "hostdir" in str(p) for p in contents.files)
    return r


def b_r7(c: Case) -> Run:
    theirs = c.tmp / "theirs"
    theirs.mkdir()
    c.generate(theirs)
    foreign = c.backup(theirs, "foreign.age")
    c.generate()
    c.kubelet_files(c.root, absolute=True)
    shutil.rmtree(c.root / "etc/kubernetes")  # the seed disaster: only the kubelet's files survive
    r = kuberevive(
        c.tmp, "backup", "restore", str(foreign), "--root", str(c.root), "--passphrase-file", str(c.passfile())
    )
    one_line_error(r, "another cluster", "kubelet-client-current.pem")
    assert not (c.root / "etc/kubernetes").exists()
    return r


def d_30(c: Case) -> Run:
    c.generate()
    c.kubelet_files(c.root, absolute=True)
    r = kuberevive(c.tmp, "diagnose", "--root", str(c.root), "--offline", "--json", "--all")
    assert r.returncode in (0, 1, 2), r.stderr
    ids = {f["id"] for f in json.loads(r.stdout)["findings"]}
    assert "recovery.kubelet-client-cert" in ids, sorted(ids)
    assert KUBELET_PEM not in r.paths  # the host's /var/lib/kubelet was not looked at
    return r


def d_25(c: Case) -> Run:
    c.generate()
    manifest = c.root / "etc/kubernetes/manifests/kube-apiserver.yaml"
    text = manifest.read_text()
    text = re.sub(
        r"--client-ca-file=\S+", "--client-ca-file=/../../../../../../../.." + str(c.victim / "secret.pem"), text
    )
    manifest.write_text(text)
    r = kuberevive(c.tmp, "diagnose", "--root", str(c.root), "--offline", "--json", "--all")
    report = json.loads(r.stdout)
    missing = [f for f in report["findings"] if f["id"] == "manifest.missing-file"]
    assert any("secret.pem" in f["subject"] + f["message"] for f in missing), missing
    return r


def b_e2(c: Case) -> Run:
    """restore-etcd from a (passphrase-valid) backup whose etcd.yaml says --data-dir=/../../..VICTIM."""
    src = c.tmp / "src"
    src.mkdir()
    c.generate(src)
    manifest = (src / "etc/kubernetes/manifests/etcd.yaml").read_text()
    manifest = manifest.replace("--data-dir=/var/lib/etcd", "--data-dir=/../../../../../../../.." + str(c.victim))
    files = [
        core.BackupFile(
            PurePosixPath("/etc/kubernetes/pki/ca.crt"), 0o644, (src / "etc/kubernetes/pki/ca.crt").read_bytes()
        ),
        core.BackupFile(PurePosixPath("/etc/kubernetes/manifests/etcd.yaml"), 0o600, manifest.encode()),
    ]
    db = bytes(4096)
    plaintext = core.build_archive(
        files,
        created=datetime.now(UTC),
        node=core.NodeIdentity("cp1", "cp1", ()),
        tool_version="test",
        etcd_snapshot=db + hashlib.sha256(db).digest(),
    )
    backup = c.inputs / "etcd-escape.age"
    backup.write_bytes(core.encrypt(plaintext, core.Secret(passphrase=PASSPHRASE)))
    bindir = c.inputs / "bin"
    bindir.mkdir()
    marker = c.inputs / "etcdutl-ran"
    (bindir / "etcdutl").write_text(f"#!/bin/sh\ntouch {marker}\nexit 99\n")
    (bindir / "etcdutl").chmod(0o755)
    r = kuberevive(
        c.tmp,
        "restore-etcd",
        "--snapshot",
        str(backup),
        "--root",
        str(c.root),
        "--passphrase-file",
        str(c.passfile()),
        env={"PATH": f"{bindir}:{os.environ['PATH']}"},
    )
    one_line_error(r, "--data-dir", "'..'")
    assert not marker.exists()
    return r


CASES: dict[str, Callable[[Case], Run]] = {
    "G-C-certdir-traversal": g_certdir_traversal,
    "G-C-certdir-escape2": g_certdir_escape2,
    "G-S1": g_s1,
    "G-S1-target-on-the-node": g_s1_inside,
    "G-S2": g_s2,
    "G-S5": g_s5,
    "B-S1": b_s1,
    "B-S2": b_s2,
    "B-C5": b_c5,
    "B-R7": b_r7,
    "D-30": d_30,
    "D-25": d_25,
    "B-E2": b_e2,
}


@pytest.mark.parametrize("fail_id", list(CASES))
def test_nothing_outside_the_root_is_read_or_written(case: Case, fail_id: str) -> None:
    before = fs_state(case.victim)
    run = CASES[fail_id](case)
    touched = [p for p in run.paths if p == str(case.victim) or p.startswith(str(case.victim) + "/")]
    assert touched == [], touched[:5]
    assert fs_state(case.victim) == before
    assert run.paths, "strace recorded no file system call: the check would be vacuous"
