"""The HA lab's load balancer: Debian's haproxy in its own network namespace, in front of every API server.

As kubeadm's HA guide sets one up (kubernetes/kubeadm docs/ha-considerations.md, "haproxy configuration"):
TCP mode, a frontend on ``<lb>:6443`` (the cluster's ``controlPlaneEndpoint``), one backend server per
control-plane node (``cpN:6443``) with health checks, round robin. The check is the guide's HTTPS check
(``option httpchk`` + ``check-ssl verify none``) on ``/readyz`` rather than ``/healthz``: a starting API server
opens its port (and answers /healthz) before its informers and RBAC cache have synced, and a TCP or /healthz
check sent requests to it too early (TLS handshake timeouts, a 403: measured in the one-master recovery test).
A stopped API server is taken out after ``fall`` failed checks, one that comes back is put in after ``rise``.
``retries`` with ``option redispatch`` sends a connection that is refused to another server, so a client
does not see an API server that went away between two checks.

Timeouts are longer than the guide's 35 s: kubelets, controllers and watches keep idle connections open
through the load balancer, and the lab should not cut them every half minute.

The load balancer is a lab host like a node but without kubelet, containerd or mount namespace: the
network namespace ``<prefix>-lb`` on the lab switch with the address ``.10``, one supervised service
(``haproxy``, run by lab/supervisor.py in the cgroup ``/<prefix>-lb/system.slice/haproxy.service``), its files
in ``S/nodes/lb/`` (haproxy.cfg, haproxy.json, log/haproxy.log, run/*.pid, haproxy.sock for ``show stat``).
``lab down`` stops it like every other supervised service.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
from pathlib import Path

from kuberevive.errors import LabError
from kuberevive.lab import supervisor as supervisor_module
from kuberevive.lab import systemctl as systemctl_module
from kuberevive.lab._proc import run, wait_for
from kuberevive.lab.config import API_PORT, LB_NAME, LabConfig

#: Health checks: every second; 2 failures take a server out, 2 successes put it back.
CHECK_INTER_MS = 1000
CHECK_FALL = 2
CHECK_RISE = 2


def haproxy_config(cfg: LabConfig, stats_socket: Path) -> str:
    servers = "".join(f"    server {n.name} {n.ip}:{API_PORT} check\n" for n in cfg.control_planes)
    return f"""\
# haproxy of the kuberevive HA lab (see kuberevive/lab/loadbalancer.py): TCP, health-checked API servers.
global
    log stdout format raw local0 info
    maxconn 4000
    stats socket {stats_socket} mode 600 level admin

defaults
    mode tcp
    log global
    option tcplog
    option dontlognull
    option log-health-checks
    option redispatch
    retries 3
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout check 2s

frontend apiserver
    bind {cfg.lb_ip}:{API_PORT}
    default_backend apiservers

backend apiservers
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter {CHECK_INTER_MS}ms fall {CHECK_FALL} rise {CHECK_RISE} check-ssl verify none
{servers}"""


class LoadBalancer:
    def __init__(self, cfg: LabConfig) -> None:
        self.cfg = cfg
        self.dir = cfg.node_dir(LB_NAME)
        self.log_dir = cfg.log_dir(LB_NAME)
        self.run_dir = cfg.node_run_dir(LB_NAME)
        self.config_file = self.dir / "haproxy.cfg"
        self.unit_file = self.dir / "haproxy.json"
        self.stats_socket = self.dir / "haproxy.sock"
        self.netns = cfg.netns_path(cfg.netns_name(LB_NAME))
        #: the unit's state and pids, read as a node's ``systemctl`` shim reads them
        self.units = systemctl_module.Units({"units_dir": str(self.dir), "run_dir": str(self.run_dir)})

    def _supervisor_argv(self) -> list[str]:
        return [self.cfg.python, "-I", "-S", str(Path(supervisor_module.__file__).resolve()), str(self.unit_file)]

    def start(self, timeout: float = 30) -> None:
        """Write the configuration (checked with ``haproxy -c``), start haproxy under its supervisor in the
        load balancer's network namespace, wait until it answers on its stats socket."""
        for d in (self.log_dir, self.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(haproxy_config(self.cfg, self.stats_socket))
        check = run(["haproxy", "-c", "-q", "-f", str(self.config_file)], step="checking haproxy.cfg", check=False)
        if check.returncode != 0:
            raise LabError(
                f"haproxy rejects the lab's configuration {self.config_file}: {check.stderr.strip()}",
                "Check the haproxy version (Debian 12's 2.6 is known to work).",
            )
        unit = {
            "name": "haproxy",
            # -db: stay in the foreground (the supervisor is the service manager); SIGTERM stops it.
            "exec": ["haproxy", "-db", "-f", str(self.config_file)],
            "environment": {},
            "environment_files": [],
            "restart_sec": 2,
            "stop_timeout": 10,
            "log": str(self.log_dir / "haproxy.log"),
            "run_dir": str(self.run_dir),
            "cgroup": f"{self.cfg.cgroup_root(LB_NAME)}/system.slice/haproxy.service",
            "runtime_directories": [],
        }
        self.unit_file.write_text(json.dumps(unit, indent=2) + "\n")
        if self.units.supervisor_pid("haproxy") is None:
            # setsid -f: the supervisor is detached at once (as a node's systemctl shim detaches it), and only
            # setsid itself is waited for here
            subprocess.run(
                ["setsid", "-f", "nsenter", f"--net={self.netns}", "--", *self._supervisor_argv()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                check=True,
            )
        wait_for(
            "haproxy (the load balancer) to answer",
            lambda: self._stat_or_none() is not None,
            timeout=timeout,
            interval=0.3,
            hint=f"Read {self.log_dir / 'haproxy.log'}.",
        )

    def running(self) -> bool:
        """haproxy runs under its supervisor and answers on its stats socket."""
        return self.units.state("haproxy") == "active" and self._stat_or_none() is not None

    def command(self, line: str, timeout: float = 5) -> str:
        """One command on haproxy's stats socket (e.g. ``show stat``); its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.stats_socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def add_server(self, name: str, ip: str) -> None:
        """A backend server for a new control-plane node, at run time (haproxy's dynamic servers on the admin
        stats socket: no restart, no connection cut) with the configured checks; haproxy.cfg is rewritten from the
        lab's control planes too, so a restart keeps it. What an operator does on their load balancer."""
        opts = f"check check-ssl verify none inter {CHECK_INTER_MS}ms fall {CHECK_FALL} rise {CHECK_RISE}"
        answer = self.command(f"add server apiservers/{name} {ip}:{API_PORT} {opts}")
        if "New server registered" not in answer:
            raise LabError(f"haproxy refused the backend {name} ({ip}): {answer.strip()}", "Read haproxy's log.")
        for line in (f"enable health apiservers/{name}", f"enable server apiservers/{name}"):
            self.command(line)
        self.config_file.write_text(haproxy_config(self.cfg, self.stats_socket))

    def server_states(self) -> dict[str, str]:
        """Each backend server's state as haproxy sees it: ``UP``, ``DOWN``, ``UP 1/2`` (going down)..."""
        rows = csv.DictReader(io.StringIO(self.command("show stat").lstrip("# ")))
        return {
            r["svname"]: r["status"]
            for r in rows
            if r.get("pxname") == "apiservers" and r.get("svname") not in ("FRONTEND", "BACKEND")
        }

    def _stat_or_none(self) -> dict[str, str] | None:
        try:
            return self.server_states()
        except OSError:
            return None
