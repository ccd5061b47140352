"""``diagnose`` never hangs, never aborts on one bad file, and says what it could not read (issue 18, adversarial
F7, F8, F9, F11: every case carries its id, so ``grep -rn D-10 tests`` finds it).

Real processes with a timeout (a hang fails the test instead of blocking it), on a node tree written by
``kuberevive generate all`` in a temporary root (the ``node`` fixture of test_diagnose_cli).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.oddfiles import make_fifo, make_zero_link
from tests.integration.test_diagnose_cli import CONFIG, node

__all__ = ["node"]  # the fixture, shared

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="FIFOs, devices and ownership as root")

#: root without the capabilities that let root ignore file permissions: a non-root user's view (D-U1, D-U3)
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-dac_override,-dac_read_search"]


def diagnose(root: Path, *extra: str, prefix: tuple[str, ...] = ()) -> tuple[int, str, str]:
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "kuberevive", "diagnose", "--root", str(root), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def findings(out: str) -> list[dict[str, Any]]:
    return list(json.loads(out)["findings"])


def about(data: list[dict[str, Any]], subject: str) -> list[str]:
    return [f"{f['id']}|{f['severity']}|{f['message']}" for f in data if f["subject"] == subject]


def fifo(path: Path) -> None:
    make_fifo(path.parent, path)


def zero(path: Path) -> None:
    make_zero_link(next(p for p in path.parents if p.name == "node"), path)


def huge(path: Path) -> None:
    with path.open("wb") as fh:
        fh.truncate(100 << 20)  # 100 MB, sparse


@pytest.mark.parametrize(
    ("case", "node_path", "make", "expected"),
    [
        ("D-10", "etc/passwd", fifo, "/etc/passwd is not a regular file (a FIFO)"),
        ("D-11", "etc/hostname", fifo, "/etc/hostname is not a regular file (a FIFO)"),
        ("D-14", "etc/passwd", zero, "/etc/passwd is not a regular file (a device)"),
        ("D-8", "etc/kubernetes/pki/ca.crt", fifo, "the ca certificate cannot be read: it is a FIFO"),
        ("D-6", "etc/kubernetes/pki/ca.crt", huge, "the ca certificate cannot be read: it is 104857600 bytes"),
    ],
)
def test_a_fifo_device_or_huge_file_is_a_finding_never_a_hang(
    node: Path, case: str, node_path: str, make: Callable[[Path], None], expected: str
):
    make(node / node_path)
    code, out, err = diagnose(node, "--offline", "--json")
    # the node is healthy otherwise: an unreadable side file is a warning (1), an unreadable ca.crt an error (2)
    assert code == (2 if "ca.crt" in node_path else 1) and err == "", (case, code, err)
    data = findings(out)
    assert any(expected in m for m in about(data, "/" + node_path)), (case, about(data, "/" + node_path))
    if case in ("D-6", "D-8"):  # the verdict does not claim ca.key is gone: it is present
        assert not [f for f in data if "ca.key are gone" in f["message"] or "ca.key is gone" in f["message"]]
        # kubelet.conf embeds the same CA certificate, and ca.key matches it: the CA can be kept
        keep = next(f for f in data if f["id"] == "recovery.ca-keep")
        assert "kubelet.conf" in keep["subject"], keep
        if case == "D-8":  # a FIFO is not the file the manifest needs (a 100 MB file at least exists)
            assert "cannot be read" in next(f["message"] for f in data if f["id"] == "manifest.missing-file")
        (node / "etc/kubernetes/kubelet.conf").unlink()  # no copy of the certificate left: a new CA, ca.key present
        _, out, _ = diagnose(node, "--offline", "--json")
        verdict = next(f["message"] for f in findings(out) if f["id"] == "recovery.ca-new")
        assert "while ca.key is present" in verdict and "ca.key is gone" not in verdict, verdict


def test_D_12_a_fifo_in_the_etcd_data_is_skipped_never_waited_on(node: Path):
    fifo(node / "var/lib/etcd/member/snap/db")
    code, out, err = diagnose(node, "--offline", "--json")
    assert code in (0, 1) and err == "", err
    assert any(f["subject"] == "/var/lib/etcd" for f in findings(out))


def test_D_N6fifo_D_N6zero_a_kubeconfig_ca_file_that_is_a_fifo_or_device(node: Path):
    """Online diagnose: admin.conf names its CA by file, and that file is a FIFO, then /dev/zero (servers refuse
    at once: 127.0.0.1:1)."""
    conf = node / "etc/kubernetes/admin.conf"
    doc = yaml.safe_load(conf.read_text())
    cluster = doc["clusters"][0]["cluster"]
    del cluster["certificate-authority-data"]
    cluster["certificate-authority"] = "/etc/kubernetes/pki/admin-ca.crt"
    cluster["server"] = "https://127.0.0.1:1"
    conf.write_text(yaml.safe_dump(doc))
    for make, kind in ((fifo, "FIFO"), (zero, "device")):
        make(node / "etc/kubernetes/pki/admin-ca.crt")
        code, out, err = diagnose(node, "--json")
        assert code in (1, 2) and "Traceback" not in err, (kind, code, err)
        messages = " ".join(m for f in findings(out) for m in [f["message"]] if "admin-ca.crt" in f["subject"])
        assert f"not a regular file (a {kind})" in messages, (kind, messages)


def test_D_T3_many_unrelated_files_do_not_hide_kubeadm_files(node: Path):
    junk = node / "etc/kubernetes/junk"  # sorts before manifests/ and pki/
    junk.mkdir()
    for i in range(6000):
        (junk / f"f{i:05d}").touch()
    _, out, err = diagnose(node, "--offline", "--json", "--config", str(CONFIG))
    assert err == "", err
    data = findings(out)
    assert not [f for f in data if f["id"] == "file.missing" and "manifests" in f["subject"]]
    assert any(f["id"] == "node.too-many-files" for f in data)
    _, out2, _ = diagnose(node, "--offline", "--json")
    assert json.loads(out2)["config"]["source"].startswith("reconstructed from"), json.loads(out2)["config"]


@pytest.mark.parametrize("case", ["D-16", "D-U3"])
def test_one_looping_or_unreadable_file_is_a_finding_and_diagnose_goes_on(node: Path, case: str):
    pki = node / "etc/kubernetes/pki"
    prefix: tuple[str, ...] = ()
    if case == "D-16":
        (pki / "a").symlink_to("b")
        (pki / "b").symlink_to("a")
        subject, words, hint = "/etc/kubernetes/pki/a", "a loop", "move it aside"
    else:
        notes = node / "etc/kubernetes/notes.txt"
        notes.write_text("not ours")
        os.chown(notes, 65534, 65534)
        notes.chmod(0o600)
        prefix = tuple(NO_DAC)
        subject, words, hint = "/etc/kubernetes/notes.txt", "permission denied", "as root"
    code, out, err = diagnose(node, "--offline", "--json", prefix=prefix)
    assert code in (1, 2) and err == "", (code, err)
    data = findings(out)
    hit = [f for f in data if f["subject"] == subject and f["id"] == "file.unreadable"]
    assert hit and words in hit[0]["message"] and hint in hit[0]["hint"], about(data, subject)
    assert any(f["id"] == "recovery.ca-keep" for f in data)  # the rest was diagnosed


def test_D_U1_a_root_that_cannot_be_read_is_exit_3_with_one_line(node: Path):
    os.chown(node, 65534, 65534)
    node.chmod(0o700)
    code, out, err = diagnose(node, "--offline", prefix=tuple(NO_DAC))
    assert code == 3 and out == "", (code, out, err)
    assert err.strip().splitlines() == [
        f"kuberevive: error: cannot read the root directory {node}: Permission denied. Run kuberevive diagnose as root."
    ]


def test_D_21_deep_nesting_in_a_manifest_and_a_kubeconfig_is_reported_not_exit_70(node: Path):
    (node / "etc/kubernetes/manifests/kube-scheduler.yaml").write_text("a: " + "[" * 100000 + "]" * 100000 + "\n")
    (node / "etc/kubernetes/admin.conf").write_text("clusters: " + "[" * 100000 + "]" * 100000 + "\n")
    code, out, err = diagnose(node, "--offline", "--json")
    assert code == 2 and err == "", (code, err[-300:])
    subjects = {f["subject"] for f in findings(out) if f["severity"] == "error"}
    assert {"/etc/kubernetes/manifests/kube-scheduler.yaml", "/etc/kubernetes/admin.conf"} <= subjects


def test_D_O999_a_huge_expiry_warning_is_a_usage_error_not_exit_70(node: Path):
    code, _, err = diagnose(node, "--offline", "--expiry-warning-days", "999999999999")
    assert code == 64 and "--expiry-warning-days" in err and "Traceback" not in err, (code, err)


def test_D_25_a_manifest_path_with_dotdot_is_resolved_inside_the_root(node: Path, tmp_path: Path):
    """The manifest names /etc/kubernetes/../../../../<outside>/ca.crt: on the node that is /<outside>/ca.crt, which
    exists only outside the root here, so it is reported missing (not counted as present)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(node / "etc/kubernetes/pki/ca.crt", outside / "ca.crt")
    manifest = node / "etc/kubernetes/manifests/kube-apiserver.yaml"
    escape = "/etc/kubernetes/" + "../" * (len(node.parts) + 2) + str(outside.relative_to("/")) + "/ca.crt"
    manifest.write_text(
        manifest.read_text().replace("--client-ca-file=/etc/kubernetes/pki/ca.crt", f"--client-ca-file={escape}")
    )
    _, out, err = diagnose(node, "--offline", "--json")
    assert err == "", err
    missing = [f for f in findings(out) if f["id"] == "manifest.missing-file" and escape in f["message"]]
    assert missing and missing[0]["severity"] == "error", [f for f in findings(out) if "apiserver" in f["subject"]]


def test_hints_under_root_name_the_paths_under_the_root_and_carry_root(node: Path):
    """ux (issue 18): 'chmod 600 /etc/kubernetes/pki/ca.key' pasted on a rescue host would change the rescue
    host; under --root the hint names the file under the root, and kuberevive commands carry --root."""
    (node / "etc/kubernetes/pki/ca.key").chmod(0o644)
    (node / "etc/kubernetes/manifests/kube-scheduler.yaml").unlink()
    _, out, _ = diagnose(node, "--offline", "--json")
    data = findings(out)
    hints = [f["hint"] for f in data if f["subject"] == "/etc/kubernetes/pki/ca.key" and "chmod" in f["hint"]]
    assert hints and all(f"chmod 600 {node}/etc/kubernetes/pki/ca.key" in h for h in hints), hints
    generate = [f["hint"] for f in data if "kuberevive generate" in f["hint"]]
    assert generate and all(f"--root {node}" in h for h in generate), generate
