"""A client that requests the labapp Service every 100 ms from inside each node, for the impact numbers.

One small Python process per node runs in the node's network namespace (``nsenter --net``) and GETs
``http://<ClusterIP>/`` at a fixed interval with a 1 s timeout, counting answers and failures (with
the time and reason of each failure). It stops by itself when the stop file appears or after
``max_seconds``, and writes its result as JSON. Traffic stays inside the lab's namespaces.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kuberevive.errors import LabError
from kuberevive.lab.config import WORKLOAD_NAMESPACE

_SCRIPT = r"""
import json, os, ssl, sys, time, urllib.request
url, out, stop, interval, max_seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
ca_file, token_file = (sys.argv[6], sys.argv[7]) if len(sys.argv) > 7 else ("", "")
handlers = [urllib.request.ProxyHandler({})]
if ca_file:
    handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=ca_file)))
headers = {"Authorization": "Bearer " + open(token_file).read().strip()} if token_file else {}
opener = urllib.request.build_opener(*handlers)
ok = 0
failures = []
start = time.time()
last_write = 0.0
def write(done):
    tmp = out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"ok": ok, "failed": len(failures), "failures": failures[:200], "started": start,
                   "ended": time.time(), "done": done}, fh)
    os.replace(tmp, out)
while not os.path.exists(stop) and time.time() - start < max_seconds:
    t0 = time.time()
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=1.0) as r:
            r.read()
            if r.status == 200:
                ok += 1
            else:
                failures.append([round(t0 - start, 2), "HTTP %d" % r.status])
    except Exception as e:
        failures.append([round(t0 - start, 2), str(e)[:120]])
    if t0 - last_write > 1.0:
        write(False)
        last_write = t0
    time.sleep(max(0.0, interval - (time.time() - t0)))
write(True)
"""


@dataclass
class ProbeResult:
    node: str
    ok: int
    failed: int
    failures: list[list[Any]] = field(default_factory=list)
    seconds: float = 0.0
    started: float = 0.0
    """When the client started (Unix time): each failure's first element is seconds since then."""

    def failed_at(self) -> list[str]:
        """Each failure's UTC wall-clock time (to place it against a command's timestamped progress) and reason."""
        return [
            f"{datetime.fromtimestamp(self.started + rel, UTC).strftime('%H:%M:%S.%f')[:-3]}Z {why}"
            for rel, why in self.failures
        ]

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "ok": self.ok, "failed": self.failed, "seconds": round(self.seconds, 1)} | {
            "first_failures": self.failures[:10],
            "failed_at": self.failed_at()[:10],
        }


class ServiceProbe:
    """``with ServiceProbe(lab, dir) as probe: ...``; then ``probe.results`` (one :class:`ProbeResult` a node)."""

    def __init__(
        self,
        lab: Any,
        work_dir: Path,
        interval: float = 0.1,
        max_seconds: float = 1800.0,
        nodes: list[str] | None = None,
    ) -> None:
        self.lab = lab
        self.dir = work_dir
        self.interval = interval
        self.max_seconds = max_seconds
        self.nodes = nodes or list(lab.cfg.node_names)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.results: dict[str, ProbeResult] = {}

    def _url(self) -> str:
        return f"http://{self.lab.service_ip()}/"

    def _extra_args(self) -> list[str]:
        return []

    def _out(self, node: str) -> Path:
        return self.dir / f"probe-{node}.json"

    @property
    def _stop(self) -> Path:
        return self.dir / "probe.stop"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop.unlink(missing_ok=True)
        url = self._url()
        for n in self.nodes:
            self._out(n).unlink(missing_ok=True)
            argv = [
                "nsenter",
                f"--net={self.lab.node(n).netns}",
                "--",
                sys.executable,
                "-c",
                _SCRIPT,
                url,
                str(self._out(n)),
                str(self._stop),
                str(self.interval),
                str(self.max_seconds),
                *self._extra_args(),
            ]
            self.procs[n] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(self._out(n).exists() for n in self.nodes):
            time.sleep(0.2)

    def snapshot(self) -> dict[str, ProbeResult]:
        out = {}
        for n in self.nodes:
            try:
                d = json.loads(self._out(n).read_text())
            except (OSError, ValueError):
                continue
            out[n] = ProbeResult(
                n, int(d["ok"]), int(d["failed"]), d["failures"], d["ended"] - d["started"], float(d["started"])
            )
        return out

    def wait_for_answers(self, more: int, timeout: float = 60.0) -> None:
        """Return once every node's client has ``more`` successful answers beyond those it has now.

        The clients write their counts about once a second; this replaces fixed sleeps (a warm-up before a
        disaster, a tail after a recovery) with a count of real answers.
        """
        base = {n: r.ok for n, r in self.snapshot().items()}
        deadline = time.monotonic() + timeout
        while True:
            now = self.snapshot()
            short = [n for n in self.nodes if n not in now or now[n].ok < base.get(n, 0) + more]
            if not short:
                return
            if time.monotonic() > deadline:
                raise LabError(
                    f"the Service probe on {', '.join(short)} did not get {more} answers within {timeout:.0f} s",
                    "check the labapp pods and the Service with 'kuberevive lab exec cp1 -- kubectl -n krlab get all'",
                )
            time.sleep(0.2)

    def stop(self) -> dict[str, ProbeResult]:
        self._stop.touch()
        for p in self.procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.results = self.snapshot()
        return self.results

    def __enter__(self) -> ServiceProbe:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ApiProbe(ServiceProbe):
    """The same client against the API at the controlPlaneEndpoint (the load balancer in the HA lab):
    ``GET https://<endpoint>/api/v1/namespaces/krlab/pods`` with a ServiceAccount ``token`` every ``interval``,
    verified with the cluster CA (issue 12: an API client sees no failed request while one control-plane node
    is recovered)."""

    def __init__(
        self,
        lab: Any,
        work_dir: Path,
        token: str,
        ca_pem: bytes,
        interval: float = 0.1,
        max_seconds: float = 1800.0,
        nodes: list[str] | None = None,
    ) -> None:
        super().__init__(lab, work_dir, interval, max_seconds, nodes)
        self.token = token
        self.ca_pem = ca_pem

    def _url(self) -> str:
        return f"https://{self.lab.cfg.api_endpoint}/api/v1/namespaces/{WORKLOAD_NAMESPACE}/pods"

    def _extra_args(self) -> list[str]:
        ca, token = self.dir / "ca.crt", self.dir / "token"
        ca.write_bytes(self.ca_pem)
        token.touch(mode=0o600)
        token.write_text(self.token)
        return [str(ca), str(token)]
