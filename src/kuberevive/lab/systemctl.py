"""``systemctl`` for lab nodes: enough of systemd's CLI for kubeadm, kuberevive and people.

kubeadm picks its init system by looking for ``systemctl`` on PATH
(cmd/kubeadm/app/util/initsystem/initsystem_unix.go) and then runs ``systemctl daemon-reload``,
``start``/``stop``/``restart <svc>``, ``status <svc>`` (service exists unless the output has
"Loaded: not-found" or "could not be found"), ``is-enabled <svc>`` (exit code) and ``is-active <svc>``
(stdout "active"/"activating"). The lab puts this shim first on every node's PATH; it manages the
per-service supervisors (``supervisor.py``) of the node it runs in.

Commands: start, stop, restart, try-restart, reload-or-restart, is-active, is-enabled, is-failed,
enable, disable (``--now`` honoured), status, show (-p MainPID/ActiveState), daemon-reload,
reset-failed. Options such as ``-q``, ``--quiet``, ``--no-pager``, ``--now`` are accepted.

Node description: ``/etc/kuberevive-lab/node.json`` (in the node's own /etc) names the unit
directory (``<name>.json`` unit files, ``<name>.enabled`` markers), the run directory holding pid files,
the Python interpreter and the supervisor script. Standard library only (``python3 -I -S``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

NODE_FILE = Path("/etc/kuberevive-lab/node.json")


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class Units:
    def __init__(self, node: dict[str, Any]) -> None:
        self.node = node
        self.units_dir = Path(node["units_dir"])
        self.run_dir = Path(node["run_dir"])

    @staticmethod
    def norm(name: str) -> str:
        return name[: -len(".service")] if name.endswith(".service") else name

    def unit_file(self, name: str) -> Path:
        return self.units_dir / f"{name}.json"

    def exists(self, name: str) -> bool:
        return self.unit_file(name).is_file()

    def enabled(self, name: str) -> bool:
        return (self.units_dir / f"{name}.enabled").exists()

    def supervisor_pid(self, name: str) -> int | None:
        pid = _read_pid(self.run_dir / f"{name}.supervisor.pid")
        return pid if _alive(pid) else None

    def main_pid(self, name: str) -> int | None:
        pid = _read_pid(self.run_dir / f"{name}.pid")
        return pid if _alive(pid) else None

    def state(self, name: str) -> str:
        if self.supervisor_pid(name) is None:
            return "inactive"
        return "active" if self.main_pid(name) is not None else "activating"

    def start(self, name: str) -> None:
        if self.supervisor_pid(name) is not None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        subprocess.Popen(
            [self.node["python"], "-I", "-S", self.node["supervisor"], str(self.unit_file(name))],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            cwd="/",
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.main_pid(name) is not None:
                return
            time.sleep(0.05)

    def stop(self, name: str) -> None:
        pid = self.supervisor_pid(name)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 40
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _status_text(units: Units, name: str) -> str:
    if not units.exists(name):
        return f"Unit {name}.service could not be found.\n"
    state = units.state(name)
    enabled = "enabled" if units.enabled(name) else "disabled"
    main = units.main_pid(name)
    sub = {"active": "running", "activating": "auto-restart", "inactive": "dead"}[state]
    lines = [
        f"● {name}.service - {name} (kuberevive lab supervisor)",
        f"     Loaded: loaded ({units.unit_file(name)}; {enabled}; preset: enabled)",
        f"     Active: {state} ({sub})",
    ]
    if main:
        lines.append(f"   Main PID: {main} ({name})")
    sup = units.supervisor_pid(name)
    if sup:
        lines.append(f" Supervisor: {sup}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    opts: list[str] = []
    args: list[str] = []
    it = iter(argv)
    for a in it:
        if a in ("-p", "--property"):  # `show -p MainPID`: the value belongs to the option
            opts.append("--property=" + next(it, ""))
        elif a.startswith("-"):
            opts.append(a)
        else:
            args.append(a)
    quiet = "-q" in opts or "--quiet" in opts
    now = "--now" in opts
    if not args:
        print("systemctl (kuberevive lab shim): a command is required", file=sys.stderr)
        return 1
    try:
        node = json.loads(NODE_FILE.read_text())
    except OSError as exc:
        print(f"systemctl (kuberevive lab shim): cannot read {NODE_FILE}: {exc}", file=sys.stderr)
        return 1
    units = Units(node)
    cmd, names = args[0], [Units.norm(n) for n in args[1:]]

    if cmd in ("daemon-reload", "reset-failed", "daemon-reexec"):
        return 0
    missing = [n for n in names if not units.exists(n)]
    if cmd in ("start", "stop", "restart", "try-restart", "reload-or-restart", "enable", "disable") and missing:
        verb = {"enable": "enable", "disable": "disable"}.get(cmd, cmd)
        print(f"Failed to {verb} unit: Unit {missing[0]}.service not found.", file=sys.stderr)
        return 5
    if cmd == "start":
        for n in names:
            units.start(n)
        return 0
    if cmd == "stop":
        for n in names:
            units.stop(n)
        return 0
    if cmd in ("restart", "reload-or-restart"):
        for n in names:
            units.stop(n)
            units.start(n)
        return 0
    if cmd == "try-restart":
        for n in names:
            if units.supervisor_pid(n) is not None:
                units.stop(n)
                units.start(n)
        return 0
    if cmd == "enable":
        for n in names:
            (units.units_dir / f"{n}.enabled").touch()
            if now:
                units.start(n)
        return 0
    if cmd == "disable":
        for n in names:
            (units.units_dir / f"{n}.enabled").unlink(missing_ok=True)
            if now:
                units.stop(n)
        return 0
    if cmd == "is-active":
        rc = 0
        for n in names:
            st = units.state(n) if units.exists(n) else "inactive"
            if not quiet:
                print(st)
            rc = rc if st == "active" else 3
        return rc
    if cmd == "is-failed":
        return 1
    if cmd == "is-enabled":
        rc = 0
        for n in names:
            if not units.exists(n):
                print(f"Failed to get unit file state for {n}.service: No such file or directory", file=sys.stderr)
                rc = 1
                continue
            en = units.enabled(n)
            if not quiet:
                print("enabled" if en else "disabled")
            rc = rc if en else 1
        return rc
    if cmd == "status":
        rc = 0
        for n in names or []:
            sys.stdout.write(_status_text(units, n))
            if not units.exists(n):
                rc = 4
            elif units.state(n) != "active":
                rc = max(rc, 3)
        return rc
    if cmd == "show":
        props = [a.split("=", 1)[1] if a.startswith("--property=") else a for a in opts if "property" in a]
        for n in names:
            values = {
                "MainPID": str(units.main_pid(n) or 0),
                "ActiveState": units.state(n),
                "UnitFileState": "enabled" if units.enabled(n) else "disabled",
                "LoadState": "loaded" if units.exists(n) else "not-found",
            }
            for k, v in values.items():
                if not props or k in ",".join(props).split(","):
                    print(f"{k}={v}")
        return 0
    print(f"systemctl (kuberevive lab shim): unsupported command {cmd!r}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
