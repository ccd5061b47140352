"""etcd 3.6 and 3.7 (kubeadm v1.34+) where recovery meets etcd: a real etcd of the minor runs with EXACTLY the flags
of the etcd.yaml kuberevive generates for that minor (the 3.6 ``--feature-gates=InitialCorruptCheck=true`` flags),
diagnose finds the member name in its data files, and a snapshot it streamed is restored with that etcd's
``etcdutl snapshot restore`` (io/etcdrestore.py, as ``restore-etcd`` and ``backup restore`` run it) into a data
directory a new etcd serves the same keys from.

Binaries: etcd 3.6.8 (``/var/cache/kuberevive/etcd-v3.6.8/bin``) with kubeadm v1.36.3's manifest, and the v1.37 lab
tree's etcd 3.7.0 with v1.37.2's; a missing tree is a skip with the command that builds it (CI builds neither yet).
etcd runs in a private network namespace, as in test_etcd_mtls.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest

from kuberevive.core.manifests import parse_manifest
from kuberevive.io.etcdrestore import _etcdutl_restore, member_from_manifest
from kuberevive.io.snapshot import _scan_members
from tests.integration.test_etcd_mtls import ADVERTISE, _config, _etcdctl, _generate_tree

pytestmark = pytest.mark.integration

CACHE = Path(os.environ.get("KUBEREVIVE_CACHE", "/var/cache/kuberevive"))
TREES = {
    "etcd-3.6.8-v1.36": ("v1.36.3", CACHE / "etcd-v3.6.8/bin", "ETCD_VERSION=3.6.8 ETCDCTL_VERSION=3.6.8"),
    "etcd-3.7.0-v1.37": (
        "v1.37.2",
        CACHE / "k8s-v1.37.2-etcd-v3.7.0/bin",
        "K8S_VERSION=1.37.2 ETCD_VERSION=3.7.0 ETCDCTL_VERSION=3.7.4",
    ),
}
MEMBER = "etcd-mtls"  # the node name of test_etcd_mtls._config


@dataclass
class Etcd:
    tmp: Path
    bin_dir: Path
    manifest: bytes
    proc: subprocess.Popen[bytes] | None = None
    log: BinaryIO | None = None

    def start(self, data_dir: Path | None = None) -> None:
        command = parse_manifest(self.manifest)["spec"]["containers"][0]["command"]
        if data_dir is not None:
            command = [f"--data-dir={data_dir}" if a.startswith("--data-dir=") else a for a in command]
        argv = [str(self.bin_dir / "etcd"), *command[1:]]
        self.log = log = (self.tmp / "etcd.log").open("ab")
        script = f'ip link set lo up && ip addr add {ADVERTISE}/8 dev lo 2>/dev/null; exec "$@"'
        self.proc = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", script, "sh", *argv], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.ctl("etcd/healthcheck-client", "endpoint", "health").returncode == 0:
                return
            assert self.proc.poll() is None, (self.tmp / "etcd.log").read_text()[-3000:]
            time.sleep(0.5)
        pytest.fail(f"etcd did not become healthy:\n{(self.tmp / 'etcd.log').read_text()[-3000:]}")

    def ctl(self, client: str, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.proc is not None
        return _etcdctl(self.proc.pid, self.bin_dir / "etcdctl", self.tmp / "pki", client, *args)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self.log is not None:
            self.log.close()
            self.log = None


@pytest.fixture(params=list(TREES))
def etcd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Etcd, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root for a private network namespace")
    version, bin_dir, build = TREES[request.param]
    if not all((bin_dir / b).is_file() for b in ("etcd", "etcdctl", "etcdutl")):
        pytest.skip(f"no etcd tree in {bin_dir}: {build} bash src/kuberevive/lab/data/build-binaries.sh")
    _generate_tree(tmp_path, _config(tmp_path, version))
    server = Etcd(tmp_path, bin_dir, (tmp_path / "etcd.yaml").read_bytes())
    try:
        yield server, version
    finally:
        server.stop()


def test_real_etcd_of_the_minor_runs_the_generated_manifest_is_diagnosed_and_its_snapshot_restored(etcd):
    server, version = etcd
    manifest = server.manifest.decode()
    assert "--feature-gates=InitialCorruptCheck=true" in manifest  # etcd 3.6's flags, as kubeadm v1.36+ writes
    assert "--experimental-initial-corrupt-check" not in manifest  # gone in etcd 3.6
    server.start()
    version_out = server.ctl("apiserver-etcd-client", "version").stdout
    put = server.ctl("apiserver-etcd-client", "put", "/registry/kuberevive", version)
    assert put.returncode == 0, put.stderr
    snap = server.tmp / "snap.db"
    saved = server.ctl("etcd/healthcheck-client", "snapshot", "save", str(snap))
    assert saved.returncode == 0, saved.stderr
    server.stop()

    # diagnose: the member name in the data files etcd of this minor wrote
    data = server.tmp / "etcd-data"
    files = [p for p in data.rglob("*") if p.is_file() and (p.name == "db" or p.name.endswith(".wal"))]
    assert files, list(data.rglob("*"))
    assert MEMBER in {r.name for p in files for r in _scan_members(p)[0]}

    # restore with this etcd's etcdutl, as restore-etcd does: the member settings of the manifest
    member = member_from_manifest(server.manifest, "etcd.yaml")
    assert member.name == MEMBER
    restored = server.tmp / "restored"
    fd = os.open(snap, os.O_RDONLY)  # restored through a descriptor, as restore-etcd streams it
    try:
        _etcdutl_restore(str(server.bin_dir / "etcdutl"), member, fd, restored, skip_hash_check=False)
    finally:
        os.close(fd)
    assert (restored / "member").is_dir()
    server.start(data_dir=restored)
    got = server.ctl("apiserver-etcd-client", "get", "/registry/kuberevive", "--print-value-only")
    assert got.returncode == 0 and got.stdout.strip() == version, (got.stderr, version_out)
    members = server.ctl("etcd/healthcheck-client", "member", "list")
    assert members.returncode == 0 and f", {MEMBER}, " in members.stdout, members.stdout
