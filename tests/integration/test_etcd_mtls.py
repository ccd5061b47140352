"""A real etcd, started with the generated etcd certificates and EXACTLY the flags of the generated
etcd.yaml, accepts mTLS from the generated client certificates and refuses a client from another CA.

etcd runs in a private network namespace (``unshare --net``), so its fixed ports 2379/2380/2381 never
collide with anything on this machine; the clients (the real ``etcdctl``) join that namespace.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kuberevive.core.generate import Target, generate
from kuberevive.core.manifests import etcd_command, parse_manifest
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.config import NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config

pytestmark = pytest.mark.integration

BIN_DIR = Path(os.environ.get("KUBEREVIVE_BIN_DIR", "/var/cache/kuberevive/k8s-v1.33.13-etcd-v3.5.24/bin"))
ADVERTISE = "127.0.0.2"  # loopback, inside the private namespace


def _etcd_binaries() -> list[tuple[str, Path, Path]]:
    """(label, etcd, etcdctl): Debian's etcd-server (the one .ci/run installs) and the built 3.5.24."""
    found = []
    debian_etcd, debian_ctl = shutil.which("etcd"), shutil.which("etcdctl")
    if debian_etcd and debian_ctl:
        found.append(("debian", Path(debian_etcd), Path(debian_ctl)))
    if (BIN_DIR / "etcd").exists():
        found.append(("built-3.5.24", BIN_DIR / "etcd", BIN_DIR / "etcdctl"))
    if not found:
        if os.environ.get("CI"):
            pytest.fail("no etcd binary: .ci/install must install etcd-server and build the test binaries")
        pytest.skip("no etcd binary on this machine")
    return found


def _config(tmp: Path, version: str = "v1.33.13") -> str:
    return f"""
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: {ADVERTISE}
nodeRegistration:
  name: etcd-mtls
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: {version}
certificatesDir: {tmp}/pki
etcd:
  local:
    dataDir: {tmp}/etcd-data
"""


def _generate_tree(tmp: Path, text: str) -> NodeRoot:
    """Write certs and manifests for ``text`` under the real path ``tmp`` (the config points there)."""
    root = NodeRoot(Path("/"))
    cfg = load_kubeadm_config(text, NodeFacts(hostname="etcd-mtls"))
    # The manifest goes to <tmp>/manifests: only the certificates directory is configurable in kubeadm.
    result = generate(Target.CERTS, cfg, NodeFacts(hostname="etcd-mtls"), datetime.now(UTC), {})
    root.write_all(result.artifacts)
    manifests = generate(Target.MANIFESTS, cfg, NodeFacts(hostname="etcd-mtls"), datetime.now(UTC), {})
    etcd_yaml = next(a for a in manifests.artifacts if a.path.name == "etcd.yaml")
    (tmp / "etcd.yaml").write_bytes(etcd_yaml.content)
    return root


@pytest.fixture(params=[label for label, _, _ in _etcd_binaries()])
def etcd_in_netns(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, int, Path]]:
    if os.geteuid() != 0:
        pytest.skip("needs root for a private network namespace")
    label = request.param
    _, etcd_bin, etcdctl = next(b for b in _etcd_binaries() if b[0] == label)
    _generate_tree(tmp_path, _config(tmp_path))
    pod = parse_manifest((tmp_path / "etcd.yaml").read_text())
    command = pod["spec"]["containers"][0]["command"]
    cfg = load_kubeadm_config(_config(tmp_path), NodeFacts(hostname="etcd-mtls"))
    assert command == etcd_command(cfg)  # the manifest and the helper agree
    argv = [str(etcd_bin), *command[1:]]
    log = (tmp_path / "etcd.log").open("wb")
    # lo up and a second loopback address as the advertise address, then exec etcd with the manifest's flags
    script = f'ip link set lo up && ip addr add {ADVERTISE}/8 dev lo 2>/dev/null; exec "$@"'
    proc = subprocess.Popen(["unshare", "--net", "sh", "-c", script, "sh", *argv], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield tmp_path, proc.pid, etcdctl
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _etcdctl(pid: int, etcdctl: Path, pki: Path, client: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        "nsenter", f"--net=/proc/{pid}/ns/net", str(etcdctl),
        f"--endpoints=https://{ADVERTISE}:2379", f"--cacert={pki}/etcd/ca.crt",
        f"--cert={pki}/{client}.crt", f"--key={pki}/{client}.key", "--dial-timeout=3s", "--command-timeout=5s", *args,
    ]  # fmt: skip
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=30, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}
    )


def _wait_healthy(tmp: Path, pid: int, etcdctl: Path) -> None:
    deadline = time.monotonic() + 30
    last = None
    while time.monotonic() < deadline:
        last = _etcdctl(pid, etcdctl, tmp / "pki", "etcd/healthcheck-client", "endpoint", "health")
        if last.returncode == 0:
            return
        time.sleep(0.5)
    log = (tmp / "etcd.log").read_text()[-3000:]
    pytest.fail(f"etcd did not become healthy: {last.stderr if last else ''}\n--- etcd log ---\n{log}")


def test_real_etcd_accepts_generated_clients_and_refuses_a_foreign_ca(etcd_in_netns):
    tmp, pid, etcdctl = etcd_in_netns
    pki = tmp / "pki"
    _wait_healthy(tmp, pid, etcdctl)

    # the apiserver's client certificate can write and read
    put = _etcdctl(pid, etcdctl, pki, "apiserver-etcd-client", "put", "/registry/kuberevive", "ok")
    assert put.returncode == 0, put.stderr
    got = _etcdctl(pid, etcdctl, pki, "apiserver-etcd-client", "get", "/registry/kuberevive", "--print-value-only")
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "ok"
    # the health-check client too
    health = _etcdctl(pid, etcdctl, pki, "etcd/healthcheck-client", "endpoint", "health")
    assert health.returncode == 0, health.stderr

    # a client certificate of the same shape, signed by a different (freshly generated) etcd CA, is refused
    foreign = tmp / "foreign"
    foreign.mkdir()
    text = _config(foreign)
    _generate_tree(foreign, text)
    # (the client trusts the real etcd CA, so only the client certificate differs)
    cmd_ok_ca = [
        "nsenter", f"--net=/proc/{pid}/ns/net", str(etcdctl), f"--endpoints=https://{ADVERTISE}:2379",
        f"--cacert={pki}/etcd/ca.crt", f"--cert={foreign}/pki/apiserver-etcd-client.crt",
        f"--key={foreign}/pki/apiserver-etcd-client.key", "--dial-timeout=3s", "--command-timeout=5s",
        "get", "/registry/kuberevive",
    ]  # fmt: skip
    refused = subprocess.run(cmd_ok_ca, capture_output=True, text=True, timeout=30, env={"ETCDCTL_API": "3"})
    assert refused.returncode != 0
    assert "ok" not in refused.stdout
    log = (tmp / "etcd.log").read_text()
    # etcd itself says why: the client certificate does not chain to its trusted CA
    assert "certificate signed by unknown authority" in log, log[-2000:]
