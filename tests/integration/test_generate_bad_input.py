"""``generate`` on bad input and odd files (issue 18, adversarial F7, F8, F9, F12, F13): one line, exit 1, nothing
written, never a hang or exit 70; and the inputs kubeadm accepts (long node names) generated as kubeadm does.

Each case carries its adversarial id, so ``grep -rn G-F1 tests`` finds it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.integration.oddfiles import make_fifo, make_zero_link

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEFAULTS = CONFIGS / "defaults.yaml"
BASE = DEFAULTS.read_text()


def kuberevive(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kuberevive", *args],
        capture_output=True,
        text=True,
        timeout=120,  # a hang (FIFO, /dev/zero) fails the test instead of blocking it
        check=False,
        cwd=cwd,
    )


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.lstat().st_mode for p in root.rglob("*")}


def assert_one_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("kuberevive: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for f in fragments:
        assert f in errors[0], errors[0]


def with_node_name(name: str) -> str:
    return BASE.replace("name: cp1", f"name: {name}")


def dns_name(length: int) -> str:
    """A valid DNS-1123 subdomain of exactly ``length`` characters (labels of at most 63)."""
    labels: list[str] = []
    while (used := sum(len(x) + 1 for x in labels)) < length:
        labels.append("n" * min(63, length - used))
    return ".".join(labels)


BAD_CONFIGS = {
    # F9
    "G-C-nodename-1000": (with_node_name(dns_name(1019)), ("nodeRegistration.name", "at most 253")),
    "G-C-nodename-254": (with_node_name(dns_name(254)), ("nodeRegistration.name", "at most 253")),
    "G-C-deep-nesting": (BASE + "apiServer:\n  certSANs: " + "[" * 100000 + "]" * 100000 + "\n", ("nested deeper",)),
    "G-C-deep-nesting-map": (
        BASE + "apiServer:\n  extraArgs: " + "{k: " * 50000 + "x" + "}" * 50000 + "\n",
        ("nested deeper",),
    ),
    "G-C-validity-huge": (
        BASE + "certificateValidityPeriod: 876000000h\n",
        ("certificateValidityPeriod", "longest duration kubeadm accepts"),
    ),
    # F12
    "G-C-dupkey": (
        BASE.replace(
            "advertiseAddress: 192.168.56.10", "advertiseAddress: 192.168.56.10\n  advertiseAddress: 10.9.9.9"
        ),
        ("duplicate key 'advertiseAddress'",),
    ),
    "G-C-dupkey-top": (BASE + "kubernetesVersion: v1.33.1\n", ("duplicate key 'kubernetesVersion'",)),
    "G-C-clustername-nul": (BASE + 'clusterName: "kube\\0rnetes"\n', ("clusterName", "control character")),
    "G-C-extraarg-nul": (
        BASE + 'apiServer:\n  extraArgs:\n  - name: event-ttl\n    value: "2h\\0--anonymous-auth=true"\n',
        ("extraArgs[0].value", "control character"),
    ),
    "G-C-extraarg-newline": (
        BASE + 'apiServer:\n  extraArgs:\n  - name: event-ttl\n    value: "2h\\n--anonymous-auth=true"\n',
        ("extraArgs[0].value", "control character"),
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_configuration_is_one_line_and_exit_1(tmp_path: Path, case: str):
    text, fragments = BAD_CONFIGS[case]
    config = tmp_path / "kubeadm.yaml"
    config.write_text(text)
    root = tmp_path / "node"
    root.mkdir()
    result = kuberevive("generate", "all", "--config", str(config), "--root", str(root))
    assert_one_line(result, *fragments)
    assert tree(root) == {}, case


@pytest.mark.filterwarnings("ignore:Attribute's length must be")  # cryptography reading the long CN back
@pytest.mark.parametrize("length", [53, 64, 65, 253])
def test_G_C_nodename_long_node_names_kubeadm_accepts_are_generated(tmp_path: Path, length: int):
    """G-C-nodename-53/-label64/-65/-253: kubeadm validates a node name as a DNS-1123 subdomain (at most 253
    characters, ``ValidateDNS1123Subdomain``) and Go's crypto/x509 does not enforce RFC 5280's 64-character
    common name, so kubeadm writes ``system:node:<name>`` (and etcd's CN <name>) for these: so does generate."""
    name = dns_name(length) if length != 64 else "n" * 64  # one 64-character label, as in G-C-nodename-label64
    config = tmp_path / "kubeadm.yaml"
    config.write_text(with_node_name(name))
    root = tmp_path / "node"
    root.mkdir()
    result = kuberevive("generate", "all", "--config", str(config), "--root", str(root))
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    pki = root / "etc/kubernetes/pki"
    server = x509.load_pem_x509_certificate((pki / "etcd/server.crt").read_bytes())
    assert server.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
    again = kuberevive("generate", "all", "--config", str(config), "--root", str(root), "--json")
    assert again.returncode == 0 and '"action": "create"' not in again.stdout, again.stderr  # read back, reused


def _directory(root: Path, path: Path) -> None:
    (path / "x").mkdir(parents=True)


def _without_lock(snapshot: dict[str, int]) -> dict[str, int]:
    """A tree without the node's lock and its directories (the tool's own state, made by any writing run)."""
    lock = {"var", "var/lib", "var/lib/kuberevive", "var/lib/kuberevive/recover", "var/lib/kuberevive/recover/lock"}
    return {k: v for k, v in snapshot.items() if k not in lock}


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of /dev/zero needs root")
@pytest.mark.parametrize(
    ("case", "node_path", "make", "fragment"),
    [
        ("G-F1", "etc/kubernetes/admin.conf", make_fifo, "not a regular file (a FIFO)"),
        ("G-F2", "etc/kubernetes/pki/ca.crt", make_fifo, "not a regular file (a FIFO)"),
        ("G-F3", "etc/kubernetes/kubelet.conf", make_zero_link, "not a regular file (a device)"),
        ("G-D1f", "etc/kubernetes/pki/ca.key", _directory, "is a directory"),
    ],
)
def test_odd_files_where_generate_reads_are_one_line_never_a_hang(
    tmp_path: Path, case: str, node_path: str, make: Callable[[Path, Path], None], fragment: str
):
    """F7/F8 (G-F1, G-F2: FIFO; G-F3: /dev/zero) and F12 G-D1f (a directory at pki/ca.key is not external-CA
    mode, also with --force): exit 1 naming the file, nothing written or moved."""
    root = tmp_path / "node"
    target = root / node_path
    target.parent.mkdir(parents=True)
    make(root, target)
    before = tree(root)
    for extra in ([], ["--force"]):
        result = kuberevive("generate", "all", "--config", str(DEFAULTS), "--root", str(root), *extra)
        assert_one_line(result, "/" + node_path, fragment)
        assert _without_lock(tree(root)) == before, case


def test_G_R1_an_empty_root_is_refused_not_taken_as_the_current_directory(tmp_path: Path):
    result = kuberevive("generate", "all", "--config", str(DEFAULTS), "--root", "", cwd=tmp_path)
    assert_one_line(result, "--root is empty")
    assert list(tmp_path.iterdir()) == []
