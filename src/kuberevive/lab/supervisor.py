"""A restart-always supervisor for one lab service: the lab's stand-in for a systemd unit.

There is no systemd on the lab host (PID 1 is not systemd), but kubeadm and kuberevive restart the
kubelet with ``systemctl`` as on a real node. Each node therefore runs one supervisor per service,
started and stopped by the ``systemctl`` shim (``kuberevive/lab/systemctl.py``). It behaves like a
``Type=simple``, ``Restart=always``, ``KillMode=process`` unit:

* each start re-reads the unit's ``EnvironmentFile``s (e.g. ``/var/lib/kubelet/kubeadm-flags.env``) and
  expands ``$VAR`` words the way systemd does (a lone ``$VAR`` splits into several arguments), so the
  kubelet gets exactly the kubeadm drop-in flags (``10-kubeadm.conf``);
* when the program exits it is started again after ``restart_sec``;
* SIGTERM to the supervisor stops the program (SIGTERM, then SIGKILL after ``stop_timeout``) and
  only the program: containers and containerd shims keep running, as with systemd's
  ``KillMode=process`` for containerd and kubelet;
* it moves itself into the unit's cgroup (under the node's cgroup root) so ``lab down`` finds every
  process the lab started.

Standard library only: it runs as ``python3 -I -S supervisor.py UNIT.json`` inside a node.
The unit file is JSON: name, exec (argv), environment, environment_files, restart_sec, stop_timeout,
log, run_dir, cgroup, runtime_directories.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_LONE_VAR = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
_BRACED_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def read_environment_file(path: str) -> dict[str, str] | None:
    """systemd ``EnvironmentFile=`` semantics (subset): KEY=VALUE lines, # comments, outer quotes removed.

    A leading ``-`` on the path means "ignore if missing"; None is returned for a missing file.
    """
    optional = path.startswith("-")
    p = Path(path[1:] if optional else path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        if optional:
            return None
        raise
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def expand_argv(argv: list[str], env: dict[str, str]) -> list[str]:
    """``$VAR`` alone as a word -> split on whitespace (empty -> nothing); ``${VAR}`` -> one word."""
    out: list[str] = []
    for word in argv:
        m = _LONE_VAR.match(word)
        if m:
            out.extend(env.get(m.group(1), "").split())
            continue
        out.append(_BRACED_VAR.sub(lambda mm: env.get(mm.group(1), ""), word))
    return out


def cgroup_mounts(mountinfo: str | None = None) -> list[tuple[str, Path, set[str]]]:
    """Mounted cgroup hierarchies from ``/proc/self/mountinfo`` (or the text given): (fstype, mount point,
    controllers). ``fstype`` is ``cgroup`` (v1, controllers from the super options) or ``cgroup2`` (``{""}``).

    The lab's one reader of cgroup mounts: it lives here because this file runs alone (standard library only);
    ``lab/cluster.py`` imports it."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as fh:
            mountinfo = fh.read()
    found = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        parts = right.split()
        if parts and parts[0] in ("cgroup", "cgroup2"):
            opts = set(parts[2].split(",")) if parts[0] == "cgroup" and len(parts) > 2 else {""}
            found.append((parts[0], Path(left.split()[4]), opts))
    return found


def ensure_cgroup(rel: str) -> list[Path]:
    """Create ``rel`` (e.g. ``/krlab-cp1/system.slice/kubelet.service``) in every v1 hierarchy."""
    made = []
    for _, root, _ in (m for m in cgroup_mounts() if m[0] == "cgroup"):  # v1 only: the lab kubelet runs on v1
        cur = root
        for part in [p for p in rel.split("/") if p]:
            parent, cur = cur, cur / part
            if not cur.is_dir():
                cur.mkdir(exist_ok=True)
                # A new cpuset cgroup is empty until it gets CPUs and memory nodes.
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    if (cur / knob).exists() and not (cur / knob).read_text().strip():
                        (cur / knob).write_text((parent / knob).read_text())
        made.append(cur)
    return made


def join_cgroup(rel: str, pid: int) -> None:
    for cg in ensure_cgroup(rel):
        try:
            (cg / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            print(f"supervisor: cannot join {cg}: {exc}", file=sys.stderr)


class Supervisor:
    def __init__(self, unit: dict[str, Any]) -> None:
        self.unit = unit
        self.name: str = unit["name"]
        self.run_dir = Path(unit["run_dir"])
        self.pidfile = self.run_dir / f"{self.name}.supervisor.pid"
        self.childfile = self.run_dir / f"{self.name}.pid"
        self.log_path = Path(unit["log"])
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None

    def log(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self.log_path.open("a") as fh:
            fh.write(f"[supervisor {stamp}] {self.name}: {text}\n")

    def _on_term(self, signum: int, _frame: object) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def environment(self) -> dict[str, str]:
        env = {
            "PATH": self.unit.get("path", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": "/root",
            "LANG": "C.UTF-8",
        }
        env.update(self.unit.get("environment", {}))
        for f in self.unit.get("environment_files", []):
            values = read_environment_file(f)
            if values:
                env.update(values)
        return env

    def start_child(self) -> None:
        for d in self.unit.get("runtime_directories", []):
            Path(d).mkdir(parents=True, exist_ok=True)
        env = self.environment()
        argv = expand_argv(list(self.unit["exec"]), env)
        self.log("starting: " + " ".join(argv))
        logf = self.log_path.open("ab")
        try:
            self.child = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd="/", close_fds=True
            )
        finally:
            logf.close()
        self.childfile.write_text(f"{self.child.pid}\n")

    def stop_child(self) -> None:
        child = self.child
        if child is None:
            return
        deadline = time.monotonic() + float(self.unit.get("stop_timeout", 20))
        while child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if child.poll() is None:
            self.log("did not stop in time; sending SIGKILL")
            child.kill()
            child.wait()

    def run(self) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.pidfile.write_text(f"{os.getpid()}\n")
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if self.unit.get("cgroup"):
            join_cgroup(self.unit["cgroup"], os.getpid())
        restart_sec = float(self.unit.get("restart_sec", 2))
        try:
            while not self.stopping:
                try:
                    self.start_child()
                except OSError as exc:
                    self.log(f"cannot start: {exc}")
                    self.child = None
                while self.child is not None and self.child.poll() is None and not self.stopping:
                    time.sleep(0.2)
                if self.stopping:
                    break
                rc = self.child.returncode if self.child is not None else None
                self.childfile.unlink(missing_ok=True)
                self.log(f"exited with status {rc}; restarting in {restart_sec:g}s")
                until = time.monotonic() + restart_sec
                while time.monotonic() < until and not self.stopping:
                    time.sleep(0.1)
            self.stop_child()
            if self.child is not None:
                self.log(f"stopped (status {self.child.returncode})")
        finally:
            self.childfile.unlink(missing_ok=True)
            self.pidfile.unlink(missing_ok=True)
        return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: supervisor.py UNIT.json", file=sys.stderr)
        return 2
    unit = json.loads(Path(argv[1]).read_text())
    return Supervisor(unit).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
