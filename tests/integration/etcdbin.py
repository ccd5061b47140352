"""The real etcd builds the tests run against, and a helper that starts one member on loopback.

:func:`etcd_builds` is the one place that knows where they are: etcd 3.5.24 (kubeadm v1.33's, built with the
v1.33.13 set: ``K8S_VERSION=1.33.13 ETCD_VERSION=3.5.24 ETCDCTL_VERSION=3.5.33 build-binaries.sh``, as
.ci/install does) and etcd 3.6.8 (kubeadm v1.36's, ``build-etcd.sh``), each with its etcdctl and etcdutl.
A missing build skips on a workstation and fails under CI (``CI`` set).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("KUBEREVIVE_CACHE", "/var/cache/kuberevive"))
BUILDS = {
    "etcd-3.5.24": CACHE / "k8s-v1.33.13-etcd-v3.5.24/bin",
    "etcd-3.6.8": CACHE / "etcd-v3.6.8/bin",
}
BUILT_BY = {
    "etcd-3.5.24": "build-binaries.sh with K8S_VERSION=1.33.13 ETCD_VERSION=3.5.24 ETCDCTL_VERSION=3.5.33",
    "etcd-3.6.8": "build-etcd.sh 3.6.8",
}


def etcd_bin(label: str) -> Path:
    """The bin directory of one build (etcd, etcdctl, etcdutl), or skip/fail when it is not built."""
    path = BUILDS[label]
    if not all((path / b).is_file() for b in ("etcd", "etcdctl", "etcdutl")):
        what = f"{label} is not built in {path}: run src/kuberevive/lab/data/{BUILT_BY[label]}"
        if os.environ.get("CI"):
            pytest.fail(f"{what} (CI is set, so this is a failure, not a skip)", pytrace=False)
        pytest.skip(what)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Member:
    """One real etcd member with kubeadm's certificates of ``root`` (``etc/kubernetes/pki/etcd``)."""

    bin: Path
    root: Path
    name: str
    data: Path
    client: int = field(default_factory=free_port)
    peer: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.client}"

    @property
    def peer_url(self) -> str:
        return f"https://127.0.0.1:{self.peer}"

    def argv(self, initial_cluster: str = "", state: str = "new", extra: tuple[str, ...] = ()) -> list[str]:
        pki = self.root / "etc/kubernetes/pki/etcd"
        return [
            str(self.bin / "etcd"), f"--name={self.name}", f"--data-dir={self.data}",
            f"--listen-client-urls={self.endpoint}", f"--advertise-client-urls={self.endpoint}",
            f"--listen-peer-urls={self.peer_url}", f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={initial_cluster or f'{self.name}={self.peer_url}'}",
            f"--initial-cluster-state={state}",
            f"--cert-file={pki}/server.crt", f"--key-file={pki}/server.key", f"--trusted-ca-file={pki}/ca.crt",
            "--client-cert-auth=true", f"--peer-cert-file={pki}/peer.crt", f"--peer-key-file={pki}/peer.key",
            f"--peer-trusted-ca-file={pki}/ca.crt", "--peer-client-cert-auth=true", "--listen-metrics-urls=",
            *extra,
        ]  # fmt: skip

    def start(self, initial_cluster: str = "", state: str = "new", extra: tuple[str, ...] = ()) -> None:
        self.log = self.root.parent / f"{self.name}-{self.data.name}.etcd.log"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv(initial_cluster, state, extra), stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log and self.log.exists() else ""

    def etcdctl(
        self, *args: str, check: bool = True, timeout: float = 60, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        pki = self.root / "etc/kubernetes/pki/etcd"
        return subprocess.run(
            [str(self.bin / "etcdctl"), f"--endpoints={self.endpoint}", f"--cacert={pki}/ca.crt",
             f"--cert={pki}/healthcheck-client.crt", f"--key={pki}/healthcheck-client.key",
             "--command-timeout=30s", *args],
            capture_output=True, text=True, timeout=timeout, check=check, input=stdin,
        )  # fmt: skip

    def wait_healthy(self, limit: float = 120) -> None:
        """Poll ``etcdctl endpoint health`` (generous limit: the machine is shared)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"etcd {self.name} exited {self.proc.returncode}:\n{self.log_tail()}")
            if self.etcdctl("endpoint", "health", check=False, timeout=30).returncode == 0:
                return
            time.sleep(0.5)
        pytest.fail(f"etcd {self.name} did not become healthy within {limit:.0f} s:\n{self.log_tail()}")

    def starts_within(self, limit: float = 60) -> bool:
        """Whether etcd answers ``endpoint health`` within ``limit`` (False: it exited or never got healthy)."""
        assert self.proc is not None
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if self.etcdctl("endpoint", "health", check=False, timeout=20).returncode == 0:
                    return True
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.5)
        return False


def manifest_for(member: Member, image_tag: str, extra: tuple[str, ...] = ()) -> bytes:
    """A kubeadm-like etcd static Pod manifest for ``member`` (node paths: /var/lib/etcd)."""
    flags = [
        "etcd", f"--name={member.name}", "--data-dir=/var/lib/etcd",
        f"--advertise-client-urls={member.endpoint}", f"--listen-client-urls={member.endpoint}",
        f"--initial-advertise-peer-urls={member.peer_url}", f"--initial-cluster={member.name}={member.peer_url}",
        *extra,
    ]  # fmt: skip
    return (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: etcd, namespace: kube-system}\nspec:\n  containers:\n"
        f"  - name: etcd\n    image: registry.k8s.io/etcd:{image_tag}\n    command: [{', '.join(flags)}]\n"
    ).encode()
