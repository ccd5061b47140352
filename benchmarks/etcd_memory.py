"""Peak memory of ``backup create --etcd-snapshot`` and ``restore-etcd`` on a 1 GiB etcd (issue 16: under 200 MB).

    python benchmarks/etcd_memory.py [--gib 1] [--etcd etcd-3.5.24|etcd-3.6.8] [--keep DIR]

As root. Starts a real etcd (tests/integration/etcdbin.py's builds) with kubeadm's certificates in a temporary node
root, fills it with incompressible 4 MiB values (etcd started with FILL_FLAGS) until its database file reaches
--gib GiB, then runs the real commands as new processes, each under ``/usr/bin/time -v`` when it is installed:

1. ``kuberevive backup create --etcd-snapshot`` (passphrase), the snapshot streamed from etcd into the backup;
2. ``kuberevive restore-etcd --snapshot BACKUP`` on the node with etcd stopped and its manifest taken from the
   backup (so no kubelet is needed): the snapshot decrypted into a file beside the data dir and restored by etcdutl.

For each it prints the wall time, kuberevive's own peak RSS (``VmHWM`` of the kuberevive process, polled) and
``/usr/bin/time``'s maximum resident set size (which also counts the etcdutl that restore-etcd runs); the last line
is one JSON object. The restored etcd is started and its keys counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.etcdbin import BUILDS, Member, manifest_for

from kuberevive.core.generate import Target, generate
from kuberevive.io.etcd import EtcdClient
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.config import NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config

CONFIG = Path(__file__).resolve().parents[1] / "tests/configs/defaults.yaml"
VALUE = 4 << 20
FILL_FLAGS = ("--max-request-bytes=8388608", "--unsafe-no-fsync")
"""For the fill's speed only (4 MiB values, no fsync); nothing the measured commands do depends on them."""


def vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measured(argv: list[str], env: dict[str, str]) -> dict[str, object]:
    """Run ``argv`` (a kuberevive command) under /usr/bin/time -v if present; its wall time and peak RSS."""
    timer = shutil.which("time") and Path("/usr/bin/time").exists()
    cmd = ["/usr/bin/time", "-v", *argv] if timer else argv
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    own = 0
    while proc.poll() is None:
        pids = [proc.pid]
        if timer:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            with contextlib.suppress(OSError):
                pids = [int(p) for p in children.read_text().split()] or pids
        own = max([own, *(vm_hwm_kib(p) for p in pids)])
        time.sleep(0.2)
    out, err = proc.communicate()
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{out}\n{err[-3000:]}")
    total = None
    for line in err.splitlines():
        if "Maximum resident set size" in line:
            total = int(line.rsplit(":", 1)[1])
    return {"seconds": round(seconds, 1), "kuberevive_peak_rss_mb": round(own / 1024, 1),
            "time_v_max_rss_mb": round(total / 1024, 1) if total else None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--etcd", choices=sorted(BUILDS), default="etcd-3.5.24")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary directory)")
    args = parser.parse_args()
    bindir = BUILDS[args.etcd]
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kuberevive-etcd-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    root = work / "node"
    root.mkdir(exist_ok=True)
    facts = NodeFacts(hostname="etcd-node")
    cfg = load_kubeadm_config(CONFIG.read_text(), facts)
    NodeRoot(root).write_all(generate(Target.CERTS, cfg, facts, datetime.now(UTC), {}).artifacts)
    member = Member(bindir, root, "n1", root / "var/lib/etcd")
    extra = ("--quota-backend-bytes=8589934592",)
    manifest = root / "etc/kubernetes/manifests/etcd.yaml"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_bytes(manifest_for(member, args.etcd.removeprefix("etcd-") + "-0", extra))
    member.start(extra=(*extra, *FILL_FLAGS))
    try:
        pki = root / "etc/kubernetes/pki/etcd"
        ca, cert = (pki / "ca.crt").read_bytes(), (pki / "healthcheck-client.crt").read_bytes()
        client = EtcdClient(member.endpoint, ca, cert, (pki / "healthcheck-client.key").read_bytes(), timeout=60)
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.health()[0]:
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"etcd did not start:\n{member.log_tail()}")
            time.sleep(0.5)
        target = int(args.gib * (1 << 30))
        t0, n = time.monotonic(), 0
        while int(client.status().get("dbSize", 0)) < target:
            client.put(f"/registry/bench/k{n:06}".encode(), os.urandom(VALUE))
            n += 1
        fill = time.monotonic() - t0
        db_size = int(client.status()["dbSize"])
        print(f"filled etcd ({args.etcd}) with {n} keys of {VALUE} bytes: db {db_size} bytes in {fill:.0f} s")
        env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "KUBEREVIVE_PASSPHRASE": "benchmark"}
        out = work / "backups"
        backup = measured([sys.executable, "-m", "kuberevive", "backup", "create", "--root", str(root), "--out",
                           f"{out}/", "--etcd-snapshot", "--json"], env)  # fmt: skip
        print(f"backup create --etcd-snapshot: {backup}")
    finally:
        member.stop()
    [file] = sorted(out.glob("*.age"))
    manifest.rename(work / "etcd.yaml.away")  # no kubelet here: restore-etcd takes the manifest from the backup
    restore = measured([sys.executable, "-m", "kuberevive", "restore-etcd", "--root", str(root), "--snapshot",
                        str(file), "--json"], env)  # fmt: skip
    print(f"restore-etcd: {restore}")
    restored = Member(bindir, root, "n1", root / "var/lib/etcd", member.client, member.peer)
    restored.start(extra=extra)
    try:
        deadline = time.monotonic() + 300
        while restored.etcdctl("endpoint", "health", check=False).returncode != 0:
            if time.monotonic() > deadline:
                sys.exit(f"the restored etcd did not start:\n{restored.log_tail()}")
            time.sleep(1)
        got = restored.etcdctl("get", "/registry/bench/", "--prefix", "--keys-only", timeout=300)
        count = len([line for line in got.stdout.splitlines() if line.strip()])
    finally:
        restored.stop()
    print(f"restored etcd holds {count} of {n} keys")
    summary = {"etcd": args.etcd, "db_bytes": db_size, "keys": n, "backup_bytes": file.stat().st_size,
               "backup_create": backup, "restore_etcd": restore, "restored_keys": count}  # fmt: skip
    if not args.keep:
        shutil.rmtree(work)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
