"""`lab up`, `lab down`, `lab status`, `lab exec`: the lab as a whole.

``up`` (each step waits with a timeout and fails with the step and the log file to read):

1. checks: root, programs, the built binaries (``kuberevive/lab/data/build-binaries.sh``);
2. the network (network.py), then per node: its directories and pre-populated /etc, its mount and
   UTS namespaces, containerd and sshd started through the node's ``systemctl`` shim, the images;
3. ``kubeadm init --config S/kubeadm-init.yaml`` on cp1 (the kubelet is started by kubeadm itself, through
   the shim), the bridge CNI configuration for the node's pod CIDR; in the HA lab (three control planes)
   first the load balancer (loadbalancer.py), then ``kubeadm init --upload-certs``;
4. ``kubeadm join --config S/kubeadm-join-<node>.yaml`` on cp2, cp3 (HA: ``--control-plane`` in the file,
   one at a time, each adds its etcd member), then on each worker (bootstrap token + CA hash);
5. pod routes between nodes; wait for nodes Ready, control-plane pods and kube-proxy Running;
6. the workload (workload.py), and a check that its Service answers from every node.

``down`` stops the node supervisors, then kills every process left in a lab cgroup or in a lab
namespace, releases the namespaces, deletes the network, removes the lab cgroups and the state dir.
Both are safe to repeat.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kuberevive.errors import LabError
from kuberevive.lab import images as images_mod
from kuberevive.lab import kubeadm as kubeadm_mod
from kuberevive.lab import network, workload
from kuberevive.lab._proc import run, wait_for
from kuberevive.lab.config import LB_NAME, WORKLOAD_NAMESPACE, LabConfig, NodeSpec
from kuberevive.lab.loadbalancer import LoadBalancer
from kuberevive.lab.node import Node
from kuberevive.lab.supervisor import cgroup_mounts
from kuberevive.waiting import poll_until

Progress = Callable[[str], None]

REQUIRED_PROGRAMS = (
    "ip",
    "nsenter",
    "unshare",
    "mount",
    "umount",
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "ctr",
    "sshd",
    "ssh-keygen",
    "iptables",
    "gcc",
    "ldd",
)
REQUIRED_BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kubeadm",
    "kubectl",
    "kube-proxy",
    "etcd",
    "etcdctl",
    "crictl",
    "labapp",
)
SERVICES = ("containerd", "kubelet", "sshd")


#: The ``kubernetes`` column of the load balancer (a lab host, not a Kubernetes node).
NOT_A_NODE = "-"


def _noop(_: str) -> None:
    pass


def describe_topology(topology: tuple[int, int]) -> str:
    cps, workers = topology
    return f"{cps} control plane{'s' if cps != 1 else ''} and {workers} worker{'s' if workers != 1 else ''}"


@dataclass
class NodeStatus:
    name: str
    role: str
    address: str
    namespaces: bool
    services: dict[str, bool]
    kubernetes: str  # Ready / NotReady / unknown / absent

    @property
    def state(self) -> str:
        if not self.namespaces:
            return "down"
        if all(self.services.values()) and self.kubernetes in ("Ready", NOT_A_NODE):
            return "up"
        return "degraded"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "address": self.address,
            "state": self.state,
            "services": {k: "active" if v else "inactive" for k, v in self.services.items()},
            "kubernetes": self.kubernetes,
        }


class Lab:
    def __init__(self, cfg: LabConfig | None = None, progress: Progress = _noop) -> None:
        #: the topology asked for (``lab up`` builds it); ``cfg`` is the lab's as built (status, down, exec).
        self.requested = self.cfg = cfg or LabConfig.from_env()
        self.progress = progress
        recorded = self.recorded_topology()
        if recorded is not None and recorded != self.requested.topology:
            self.cfg = self.requested.with_topology(*recorded)
        version = self.read_state().get("kubernetes_version")
        if isinstance(version, str) and version != self.cfg.k8s_version:  # status, down, exec: the lab as built
            self.cfg = self.cfg.with_version(version)
        self._base_cfg = self.cfg
        # nodes added with add_worker() are remembered in the state file (so status/down see them)
        names = set(self.cfg.node_names)
        extra = tuple(NodeSpec(**d) for d in self.read_state().get("extra_nodes", []) if d["name"] not in names)
        if extra:
            self.cfg = dataclasses.replace(self.cfg, nodes=self.cfg.nodes + extra)
        self.nodes = {n.name: Node(self.cfg, n) for n in self.cfg.nodes}

    # --- helpers -------------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        self.cfg.node(name)  # raises LabError for an unknown name
        return self.nodes[name]

    @property
    def cp(self) -> Node:
        return self.nodes[self.cfg.control_plane.name]

    def recorded_topology(self) -> tuple[int, int] | None:
        """(control planes, workers) of the lab the state file describes; None without one."""
        nodes = self.read_state().get("nodes")
        if not isinstance(nodes, list) or not nodes:
            return None
        cps = sum(1 for n in nodes if n.get("role") == "control-plane")
        return cps, len(nodes) - cps

    def read_state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.cfg.state_file.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def _write_state(self, **values: Any) -> None:
        state = self.read_state()
        state.update(values)
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cfg.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.cfg.state_file)

    @staticmethod
    def require_root() -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (namespaces, mounts, cgroups)", "Run it as root.")

    def check_prerequisites(self) -> None:
        self.require_root()
        needed = (*REQUIRED_PROGRAMS, "haproxy") if self.requested.ha else REQUIRED_PROGRAMS
        missing = [p for p in needed if shutil.which(p) is None]
        if missing:
            raise LabError(
                f"programs the lab needs are missing: {', '.join(missing)}",
                "Install them (see docs/lab.md, 'Host requirements').",
            )
        b = self.requested.bin_cache
        absent = [x for x in REQUIRED_BINARIES if not (b / x).is_file()]
        if absent or not (b / ".complete").exists():
            raise LabError(
                f"the lab binaries are not built in {b} (missing: {', '.join(absent) or '.complete'})",
                f"Build them first: {self.requested.build_command} (it needs Go; tens of minutes on a cold cache).",
            )

    # --- up ------------------------------------------------------------------------------------
    def up(self) -> dict[str, Any]:
        t0 = time.monotonic()
        self.check_prerequisites()
        built = (self.cfg.topology, self.cfg.k8s_version)
        if built != (self.requested.topology, self.requested.k8s_version):
            if self.read_state().get("status") == "up":
                raise LabError(
                    f"the lab in {self.cfg.state_dir} is up with {describe_topology(self.cfg.topology)} on "
                    f"Kubernetes v{self.cfg.k8s_version}, not {describe_topology(self.requested.topology)} on "
                    f"v{self.requested.k8s_version}",
                    "Run `kuberevive lab down` first (same KUBEREVIVE_LAB_INSTANCE), or use another instance.",
                )
            self.progress("lab: removing the remains of a previous lab of another topology or version")
            self.down()
            self.cfg = self._base_cfg = self.requested
            self.nodes = {n.name: Node(self.cfg, n) for n in self.cfg.nodes}
        if self.read_state().get("status") == "up" and self._healthy():
            # a lab left by an earlier test (or command) may have restarted its static pods moments ago: "up"
            # means what a fresh `up` waits for, the control-plane pods and kube-proxy running and ready too
            try:
                self.wait_system_pods(timeout=120)
            except LabError as exc:
                self.progress(f"lab: up, but {exc.message}: rebuilding it")
            else:
                self.progress("lab: already up")
                return self.read_state()
        if self._anything_present():
            self.progress("lab: removing the remains of a previous lab")
            self.down()
        try:
            self._up()
        except BaseException:
            self._write_state(status="failed")
            raise
        duration = time.monotonic() - t0
        self._write_state(
            status="up", duration_s=round(duration, 1), up_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        )
        return self.read_state()

    def _up(self) -> None:
        cfg = self.cfg
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        token = kubeadm_mod.new_bootstrap_token()
        certificate_key = kubeadm_mod.new_certificate_key() if cfg.ha else None
        cps, workers = cfg.topology
        self._write_state(
            status="starting",
            topology={"control_planes": cps, "workers": workers},
            api_endpoint=cfg.api_endpoint,
            nodes=[n.__dict__ for n in cfg.nodes],
            host_ip=cfg.host_ip,
            network=cfg.network,
            kubeadm_init_config=str(cfg.init_config_file),
            kubernetes_version=cfg.k8s_version,
            bin_dir=str(cfg.bin_cache),
            state_dir=str(cfg.state_dir),
        )
        cfg.init_config_file.write_text(kubeadm_mod.dump(kubeadm_mod.init_documents(cfg, token, certificate_key)))

        self.progress("lab: network namespaces, bridge and links")
        self._prepare_ns_dir()
        network.create(cfg)
        self._prepare_ssh()
        first = self.nodes[cfg.nodes[0].name]
        first.install_shims()
        for n in self.nodes.values():
            n.prepare_fs(cfg.ssh_dir / "authorized_keys")
            n.create_namespaces()
        self._write_ssh_client_files()
        if cfg.ha:
            backends = ", ".join(n.name for n in cfg.control_planes)
            self.progress(f"lab: load balancer (haproxy on {cfg.api_endpoint}, backends {backends})")
            LoadBalancer(cfg).start()

        self.progress(
            "lab: images (kube-apiserver, kube-controller-manager, kube-scheduler, etcd, pause, kube-proxy, labapp)"
        )
        self._start_services(self.cp, ("containerd", "sshd"))
        lab_images, archives = self._image_archives()
        images_mod.prune_cache(cfg, list(archives.values()))

        joining = [n for n in cfg.nodes if n.name != self.cp.name]  # cp2, cp3 (HA), then the workers
        with ThreadPoolExecutor(max_workers=2) as pool:
            prepared = {
                n.name: pool.submit(self._prepare_node, self.nodes[n.name], lab_images, archives) for n in joining
            }
            self._import_images(self.cp, lab_images.refs_for(True), archives)
            self.progress(f"lab: kubeadm init on {self.cp.name} (log: {self.cp.log_dir / 'kubeadm-init.log'})")
            init = ["kubeadm", "init", "--config", str(cfg.init_config_file)]
            self._kubeadm(self.cp, [*init, "--upload-certs"] if cfg.ha else init, "kubeadm-init")
            pod_cidrs = {self.cp.name: self._configure_cni(self.cp)}
            ca_hash = kubeadm_mod.ca_cert_hash(self.cp.read_file("/etc/kubernetes/pki/ca.crt").encode())
            self._write_state(bootstrap_token=token, ca_cert_hash=ca_hash)
            if certificate_key:
                self._write_state(certificate_key=certificate_key)
            join = kubeadm_mod.JoinCommand(cfg.api_endpoint, token, ca_hash, certificate_key)
            for spec in joining:  # one at a time: each control plane adds an etcd member
                prepared[spec.name].result()
                pod_cidrs[spec.name] = self._join(spec, join)
        network.set_pod_routes(cfg, pod_cidrs)
        self._write_state(pod_cidrs=pod_cidrs)

        self.progress("lab: waiting for nodes Ready and the control plane")
        self.wait_nodes_ready(timeout=180)
        self.wait_system_pods(timeout=180)
        self.progress(f"lab: workload (Deployment labapp x{len(cfg.nodes)}, Service labapp, apicaller)")
        self.cp.kubectl("apply", "-f", "-", input=json.dumps(workload.manifests(cfg)))
        self.wait_workload(timeout=180)

    def add_worker(self, name: str, join_command: str, timeout: float = 240) -> Node:
        """Add a worker node to the running lab and join it with ``join_command`` (:meth:`join_node`). The node gets
        the next address of the lab network; ``status``/``down`` include it (it is recorded in the state file)."""
        kubeadm_mod.parse_join_command(join_command)  # refused before anything is made
        if name in self.nodes:
            raise LabError(f"the lab already has a node {name}", "pick another name")
        cfg = self.cfg
        spec = NodeSpec(name, self._free_address(None), "worker")
        extras = [*self.read_state().get("extra_nodes", []), dict(spec.__dict__)]
        self._write_state(extra_nodes=extras)
        self.cfg = cfg = dataclasses.replace(cfg, nodes=(*cfg.nodes, spec))
        node = self.nodes[name] = Node(cfg, spec)
        self.progress(f"lab: adding {name} ({spec.ip})")
        network.create(cfg)
        self._new_machine(node)
        return self.join_node(name, join_command, timeout)

    def join_node(self, name: str, join_command: str, timeout: float = 240) -> Node:
        """``kubeadm join`` on the fresh machine ``name`` (:meth:`add_node`, :meth:`add_worker`) with what
        ``join_command`` carries (a ``kubeadm join ENDPOINT --token ... --discovery-token-ca-cert-hash ...
        [--control-plane --certificate-key ...]`` line, e.g. the one ``kuberevive recover`` prints: its endpoint,
        token, hash and certificate key, with the node's own registration in a JoinConfiguration), then its pod
        network; waits until its Node is Ready. A control plane needs ``--control-plane``, a worker must not have it."""
        join = kubeadm_mod.parse_join_command(join_command)
        spec, node = self.cfg.node(name), self.node(name)
        if bool(join.certificate_key) != spec.is_control_plane:
            role = "a control plane" if spec.is_control_plane else "a worker"
            raise LabError(
                f"lab node {name} is {role}; the join command is {'not ' if spec.is_control_plane else ''}one for "
                "a control plane",
                "use the control-plane join command for a control plane, the worker one for a worker",
            )
        pod_cidrs = dict(self.read_state().get("pod_cidrs", {}))
        pod_cidrs[name] = self._join(spec, join)
        network.set_pod_routes(self.cfg, pod_cidrs)
        self._write_state(pod_cidrs=pod_cidrs)
        wait_for(
            f"{name} to be Ready",
            lambda: self.node_conditions().get(name) == "Ready",
            timeout=timeout,
            interval=2,
            hint=f"Read {node.log_dir / 'kubelet.log'}.",
        )
        return node

    def _new_machine(self, node: Node) -> None:
        """A fresh machine for ``node`` (its network namespace exists): file system, namespaces, a new SSH host
        key in the lab's known_hosts, containerd and sshd running, the images imported; no cluster state."""
        cfg = self.cfg
        node.prepare_fs(cfg.ssh_dir / "authorized_keys")
        node.create_namespaces()
        self._write_ssh_client_files()
        self._prepare_node(node, *self._image_archives())

    def _image_archives(self) -> tuple[images_mod.LabImages, dict[str, Path]]:
        """The images kubeadm expects (asked on the first control plane) and the lab's archive of each."""
        refs = self.cp.run(
            ["kubeadm", "config", "images", "list", "--config", str(self.cfg.init_config_file)],
            step="listing the images kubeadm expects",
        ).stdout.split()
        lab_images = images_mod.lab_images(self.cfg, refs)
        return lab_images, {ref: images_mod.ensure_archive(self.cfg, spec) for ref, spec in lab_images.specs.items()}

    def _join(self, spec: NodeSpec, join: kubeadm_mod.JoinCommand) -> str:
        """``kubeadm join`` on a prepared node (services started, images imported) with its JoinConfiguration, then
        its CNI configuration; returns its pod CIDR."""
        node = self.nodes[spec.name]
        path = self.cfg.join_config_file(spec.name)
        path.write_text(kubeadm_mod.dump(kubeadm_mod.join_documents(self.cfg, spec, join)))
        kind = "as a control plane " if spec.is_control_plane else ""
        self.progress(f"lab: kubeadm join {kind}on {spec.name} (log: {node.log_dir / 'kubeadm-join.log'})")
        self._kubeadm(node, ["kubeadm", "join", "--config", str(path)], "kubeadm-join")
        return self._configure_cni(node)

    def destroy_node(self, name: str) -> None:
        """The machine ``name`` is gone for good: its processes (kubelet, containers, etcd), namespaces, network
        link, cgroups and disks (``S/nodes/<name>``; its logs are kept under ``S/destroyed/<name>-<time>/``).
        What the cluster knows of it stays: its Node object and, on a control plane, its etcd member."""
        self.require_root()
        cfg = self.cfg
        cfg.node(name)  # LabError for an unknown name
        if name == self.cp.name:
            raise LabError(f"{name} is the node the lab itself works through (kubectl, status)", "destroy another node")
        self._stop_hosts([name], f"lab: destroying {name}")
        self._release_namespaces([name])
        for f in (cfg.mntns_file(name), cfg.utsns_file(name)):
            f.unlink(missing_ok=True)
        network.remove_node(cfg, name)
        _remove_cgroups(cfg, [name])
        logs = cfg.log_dir(name)
        if logs.is_dir():
            kept = cfg.state_dir / "destroyed" / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(logs, kept)
        node_dir = cfg.node_dir(name)
        if not _wait(lambda: _rmtree(node_dir), 20, f"{node_dir} to be removable"):
            raise LabError(f"cannot remove {node_dir}", "Check `grep kuberevive-lab /proc/mounts`.")
        self._write_state(destroyed=sorted({*self.read_state().get("destroyed", []), name}))
        self.progress(f"lab: {name} destroyed (its Node object and etcd member remain in the cluster)")

    def forget_node(self, name: str) -> None:
        """A destroyed node that :meth:`add_node` or :meth:`add_worker` added leaves the lab's records (state file,
        pod routes): ``status`` and ``down`` see the lab as it was built. Delete its Node object (and etcd member)
        in the cluster first."""
        if name in self._base_cfg.node_names:
            raise LabError(f"{name} is one of the nodes the lab was built with", "destroy it and add it back instead")
        state = self.read_state()
        if name not in state.get("destroyed", []):
            raise LabError(f"lab node {name} is not destroyed", f"kuberevive lab node destroy {name}")
        pod_cidrs = {n: c for n, c in state.get("pod_cidrs", {}).items() if n != name}
        self._write_state(
            extra_nodes=[d for d in state.get("extra_nodes", []) if d["name"] != name],
            destroyed=[n for n in state["destroyed"] if n != name],
            pod_cidrs=pod_cidrs,
        )
        self.cfg = dataclasses.replace(self.cfg, nodes=tuple(n for n in self.cfg.nodes if n.name != name))
        self.nodes.pop(name, None)

    def add_node(self, name: str, ip: str | None = None) -> Node:
        """A fresh machine ``name``: the packages and binaries, containerd and sshd with the lab key, the images,
        and no cluster state (no /etc/kubernetes, kubelet files or etcd data; the kubelet is not started). A
        destroyed node comes back at its address; a new name gets ``ip`` or the next free address and is a
        control plane to be (``status`` and ``down`` include it). The pod network (the bridge CNI file and the
        routes) is set up when the node's pod CIDR is known (:meth:`attach_pod_network` otherwise)."""
        self.require_root()
        if self.read_state().get("status") != "up":
            raise LabError(f"no lab is up in {self.cfg.state_dir}", "Run `kuberevive lab up` first.")
        cfg = self.cfg
        if name in self.nodes:
            spec = cfg.node(name)
            if self.nodes[name].is_up():
                raise LabError(f"lab node {name} is running", f"destroy it first: kuberevive lab node destroy {name}")
            if ip is not None and ip != spec.ip:
                raise LabError(f"lab node {name} has the address {spec.ip}, not {ip}", "leave out --ip")
        else:
            spec = NodeSpec(name, self._free_address(ip), "control-plane")
            self._write_state(extra_nodes=[*self.read_state().get("extra_nodes", []), dict(spec.__dict__)])
            self.cfg = cfg = dataclasses.replace(cfg, nodes=(*cfg.nodes, spec))
        node = self.nodes[name] = Node(cfg, spec)
        self.progress(f"lab: a fresh machine {name} ({spec.ip})")
        network.add_node(cfg, spec)
        self._new_machine(node)
        pod_cidrs = dict(self.read_state().get("pod_cidrs", {}))
        if name in pod_cidrs:
            self._write_cni(node, pod_cidrs[name])
        network.set_pod_routes(cfg, pod_cidrs)
        self._write_state(destroyed=[n for n in self.read_state().get("destroyed", []) if n != name])
        return node

    def attach_pod_network(self, name: str) -> str:
        """Wait for the pod CIDR of node ``name`` (the controller-manager allocates it), write its bridge CNI file
        and route it on every node; returns the CIDR."""
        pod_cidrs = dict(self.read_state().get("pod_cidrs", {}))
        cidr = pod_cidrs[name] = self._configure_cni(self.node(name))
        network.set_pod_routes(self.cfg, pod_cidrs)
        self._write_state(pod_cidrs=pod_cidrs)
        return cidr

    def _free_address(self, ip: str | None) -> str:
        cfg = self.cfg
        taken = {n.ip for n in cfg.nodes} | {cfg.host_ip, cfg.lb_ip}
        net = ipaddress.ip_network(cfg.network)
        if ip is None:
            return next(str(a) for a in net.hosts() if a.packed[-1] > 10 and str(a) not in taken)
        try:
            inside = ipaddress.ip_address(ip) in net
        except ValueError:
            inside = False
        if not inside or ip in taken:
            why = "is taken" if inside else f"is not an address of the lab network {cfg.network}"
            raise LabError(f"--ip {ip} {why}", f"pick a free address of {cfg.network} above .10, or leave out --ip")
        return ip

    def _prepare_node(self, node: Node, lab_images: images_mod.LabImages, archives: dict[str, Path]) -> None:
        self._start_services(node, ("containerd", "sshd"))
        self._import_images(node, lab_images.refs_for(node.spec.is_control_plane), archives)

    def _prepare_ns_dir(self) -> None:
        """Persisted namespaces need a private mount to live on (unshare(1) requirement)."""
        d = self.cfg.ns_dir
        d.mkdir(parents=True, exist_ok=True)
        if not _is_mountpoint(d):
            run(["mount", "--bind", str(d), str(d)], step="preparing the namespace directory")
        run(["mount", "--make-private", str(d)], step="preparing the namespace directory")

    def _prepare_ssh(self) -> None:
        d = self.cfg.ssh_dir
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)
        key = d / "id_ed25519"
        if not key.exists():
            run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kuberevive-lab", "-f", str(key)],
                step="generating the lab SSH client key",
            )
        (d / "authorized_keys").write_text((d / "id_ed25519.pub").read_text())

    def _write_ssh_client_files(self) -> None:
        d = self.cfg.ssh_dir
        known = "".join(
            f"{n.spec.name},{n.spec.ip} {n.host_public_key()}\n" for n in self.nodes.values() if n.has_host_key()
        )
        (d / "known_hosts").write_text(known)
        conf = "".join(
            f"Host {n.name}\n  HostName {n.ip}\n  User root\n  IdentityFile {d / 'id_ed25519'}\n"
            f"  IdentitiesOnly yes\n  UserKnownHostsFile {d / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n  ConnectTimeout 5\n\n"
            for n in self.cfg.nodes
        )
        (d / "config").write_text(conf)

    def _start_services(self, node: Node, services: tuple[str, ...]) -> None:
        node.systemctl("start", *services)
        if "containerd" in services:
            wait_for(
                f"containerd on {node.name}",
                lambda: node.run(["ctr", "version"], step="containerd", check=False).returncode == 0,
                timeout=30,
                interval=0.3,
                hint=f"Read {node.log_dir / 'containerd.log'}.",
            )

    def _import_images(self, node: Node, refs: list[str], archives: dict[str, Path]) -> None:
        present = set(node.run(["ctr", "-n", "k8s.io", "images", "ls", "-q"], step="listing images").stdout.split())
        for ref in refs:
            if ref in present:
                continue
            node.run(
                ["ctr", "-n", "k8s.io", "images", "import", str(archives[ref])],
                step=f"importing {ref}",
                timeout=300,
                log=node.log_dir / "images.log",
            )

    def _kubeadm(self, node: Node, argv: list[str], logname: str) -> None:
        log = node.log_dir / f"{logname}.log"
        node.run(
            argv,
            step=argv[0] + " " + argv[1],
            timeout=600,
            log=log,
            hint=f"Read {log} and {node.log_dir / 'kubelet.log'}.",
        )

    def _configure_cni(self, node: Node) -> str:
        """Wait for the node's pod CIDR (allocated by kube-controller-manager), write its CNI config."""
        cidr: str = wait_for(
            f"the pod CIDR of {node.name}",
            lambda: (
                self.cp.kubectl("get", "node", node.name, "-o", "jsonpath={.spec.podCIDR}", check=False).stdout.strip()
                or None
            ),
            timeout=120,
            hint=f"Read {self.cp.log_dir / 'kubelet.log'} (kube-controller-manager allocates it).",
        )
        self._write_cni(node, cidr)
        return cidr

    def _write_cni(self, node: Node, cidr: str) -> None:
        conf = {
            "cniVersion": "0.4.0",
            "name": "krlab",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": cidr}]], "routes": [{"dst": "0.0.0.0/0"}]},
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        node.write_file("/etc/cni/net.d/10-krlab.conflist", json.dumps(conf, indent=2) + "\n")

    # --- waiting -------------------------------------------------------------------------------
    def _kubectl_json(self, *args: str) -> dict[str, Any]:
        out = self.cp.kubectl(*args, "-o", "json", check=True, timeout=20).stdout
        data: dict[str, Any] = json.loads(out)
        return data

    def node_conditions(self) -> dict[str, str]:
        nodes = self._kubectl_json("get", "nodes")
        result = {}
        for item in nodes.get("items", []):
            ready = next((c["status"] for c in item["status"].get("conditions", []) if c["type"] == "Ready"), "")
            result[item["metadata"]["name"]] = "Ready" if ready == "True" else "NotReady"
        return result

    def wait_nodes_ready(self, timeout: float) -> None:
        names = set(self.cfg.node_names)

        def ready() -> bool:
            conds = self.node_conditions()
            return all(conds.get(n) == "Ready" for n in names)

        wait_for(
            "every node to be Ready",
            ready,
            timeout=timeout,
            interval=2,
            hint=f"Read the kubelet logs under {self.cfg.state_dir}/nodes/*/log/kubelet.log.",
        )

    def system_pods(self) -> dict[str, str]:
        pods = self._kubectl_json("get", "pods", "-n", "kube-system")
        return {p["metadata"]["name"]: _pod_state(p) for p in pods.get("items", [])}

    def wait_system_pods(self, timeout: float) -> None:
        components = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
        wanted = [f"{c}-{cp.name}" for cp in self.cfg.control_planes for c in components]

        def ok() -> bool:
            pods = self.system_pods()
            proxies = [v for k, v in pods.items() if k.startswith("kube-proxy-")]
            return (
                all(pods.get(w) == "Running" for w in wanted)
                and len(proxies) == len(self.cfg.nodes)
                and all(v == "Running" for v in proxies)
            )

        wait_for(
            "the control-plane pods and kube-proxy to run",
            ok,
            timeout=timeout,
            interval=2,
            hint="Check `kuberevive lab exec cp1 -- kubectl get pods -n kube-system`.",
        )

    def service_ip(self) -> str:
        return self.cp.kubectl(
            "get", "service", "labapp", "-n", WORKLOAD_NAMESPACE, "-o", "jsonpath={.spec.clusterIP}"
        ).stdout.strip()

    def request_service(self, node: str, timeout: float = 3) -> str | None:
        """GET http://<labapp ClusterIP>/ from inside ``node``'s network namespace; None on failure."""
        ip = self.service_ip()
        proc = self.node(node).run(
            ["curl", "-sS", "-m", str(timeout), f"http://{ip}/"], step="curl", check=False, timeout=timeout + 5
        )
        return proc.stdout if proc.returncode == 0 else None

    def wait_workload(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for deploy in ("labapp", "apicaller"):
            left = max(5, int(deadline - time.monotonic()))
            self.cp.kubectl(
                "rollout",
                "status",
                f"deployment/{deploy}",
                "-n",
                WORKLOAD_NAMESPACE,
                f"--timeout={left}s",
                timeout=left + 10,
            )
        for n in self.cfg.node_names:
            probe = functools.partial(self.request_service, n)
            wait_for(
                f"the labapp Service to answer from {n}",
                probe,
                timeout=max(5, deadline - time.monotonic()),
                interval=1,
                hint=f"kube-proxy on {n} may not have programmed its rules yet.",
            )
        wait_for(
            "apicaller to call the API successfully",
            lambda: "apicaller ok" in self.apicaller_logs(),
            timeout=max(5, deadline - time.monotonic()),
            interval=2,
        )

    def apicaller_logs(self, tail: int = 5) -> str:
        return self.cp.kubectl(
            "logs", "-n", WORKLOAD_NAMESPACE, "deployment/apicaller", f"--tail={tail}", check=False
        ).stdout

    # --- status --------------------------------------------------------------------------------
    def status(self) -> list[NodeStatus]:
        conds: dict[str, str] = {}
        cp = self.cp
        if cp.is_up():
            try:
                conds = self.node_conditions()
            except LabError:
                conds = {}
        result = []
        for spec in self.cfg.nodes:
            node = self.nodes[spec.name]
            up = node.is_up()
            services = {s: up and _service_active(node, s) for s in SERVICES}
            k8s = conds.get(spec.name, "unknown" if conds == {} else "absent") if up else "unknown"
            result.append(NodeStatus(spec.name, spec.role, spec.ip, up, services, k8s))
        if self.cfg.ha:
            lb = LoadBalancer(self.cfg)
            up = lb.netns.exists()
            result.append(
                NodeStatus(
                    LB_NAME,
                    "load-balancer",
                    self.cfg.lb_ip,
                    up,
                    {"haproxy": up and lb.running()},
                    NOT_A_NODE,
                )
            )
        return result

    def _healthy(self) -> bool:
        try:
            return all(s.state == "up" for s in self.status())
        except LabError:
            return False

    def _anything_present(self) -> bool:
        cfg = self.cfg
        return bool(
            network.lab_netns(cfg)
            or cfg.ns_dir.exists()
            or cfg.state_dir.exists()
            or _lab_cgroups(cfg)
            or Path(f"/sys/class/net/{cfg.host_if}").exists()
        )

    def leftovers(self) -> list[str]:
        """What the lab would leave behind right now: processes, mounts, namespaces, links, cgroups, files."""
        cfg = self.cfg
        found = [f"process {pid}" for pid in sorted(_lab_processes(cfg))]
        # whole path components only: instance 2's /run/kuberevive-lab-2 and krlab2-* are not this lab's
        dirs = (str(cfg.run_dir), str(cfg.state_dir))
        below = (*(d + "/" for d in dirs), f"/run/netns/{cfg.prefix}-")
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                target = line.split()[4]
                if target in dirs or target.startswith(below):
                    found.append(f"mount {target}")
        found += [f"netns {n}" for n in network.lab_netns(cfg)]
        if Path(f"/sys/class/net/{cfg.host_if}").exists():
            found.append(f"link {cfg.host_if}")
        found += [f"cgroup {p}" for p in _lab_cgroups(cfg)]
        found += [f"path {p}" for p in (cfg.state_dir, cfg.run_dir) if p.exists()]
        return found

    # --- exec ----------------------------------------------------------------------------------
    def exec(self, node_name: str, argv: list[str], cwd: str | None = None) -> int:
        node = self.node(node_name)
        if not node.is_up():
            raise LabError(f"lab node {node_name} is not running", "Run `kuberevive lab up` first.")
        cmd = node.nsenter(argv)
        if cwd:
            cmd.insert(1, f"--wd={cwd}")
        return subprocess.call(cmd)

    # --- down ----------------------------------------------------------------------------------
    def _stop_hosts(self, hosts: list[str] | None, what: str) -> None:
        """Stop the supervised services of ``hosts`` (None: every lab host), then SIGKILL every process left in
        their cgroups or namespaces, and remove the cgroups those processes had outside the node roots."""
        cfg = self.cfg
        names = cfg.service_hosts if hosts is None else hosts
        self.progress(f"{what}: stopping node services")
        for host in names:
            for pidfile in sorted(cfg.node_run_dir(host).glob("*.supervisor.pid")):
                _signal_pidfile(pidfile, signal.SIGTERM)
        _wait(
            lambda: not any(_pidfile_alive(p) for h in names for p in cfg.node_run_dir(h).glob("*.supervisor.pid")),
            25,
            "the lab's node services to stop",
        )
        self.progress(f"{what}: killing remaining processes")
        deadline = time.monotonic() + 30
        foreign_cgroups: set[Path] = set()
        while True:
            pids = _lab_processes(cfg, hosts)
            if not pids:
                break
            if time.monotonic() > deadline:
                raise LabError(
                    f"processes of the lab would not die: {sorted(pids)[:10]}",
                    "Check them with `ps -o pid,cmd -p ...` and kill them by hand.",
                )
            for pid in pids:
                foreign_cgroups.update(_foreign_cgroups(cfg, pid))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)
        # Cgroups of killed processes outside the node roots (containers made by `ctr run`, e.g.
        # /k8s.io/<id>): the leaf, then each parent that is left empty (rmdir fails on a busy cgroup).
        _wait(lambda: all(_try_rmdir(p) for p in foreign_cgroups), 10, "the foreign cgroups to empty")
        roots = {root for _, root, _ in cgroup_mounts()}
        for leaf in foreign_cgroups:
            parent = leaf.parent
            while parent not in roots and parent != parent.parent and _try_rmdir(parent):
                parent = parent.parent

    def _release_namespaces(self, names: list[str]) -> None:
        for name in names:
            for f in (self.cfg.mntns_file(name), self.cfg.utsns_file(name)):
                if _is_mountpoint(f):
                    run(["umount", str(f)], step="releasing a node namespace", check=False)

    def down(self) -> None:
        self.require_root()
        cfg = self.cfg
        self._stop_hosts(None, "lab")
        self.progress("lab: namespaces, network, cgroups, files")
        self._release_namespaces(cfg.node_names)
        if cfg.ns_dir.exists() and _is_mountpoint(cfg.ns_dir):
            run(["umount", str(cfg.ns_dir)], step="releasing the namespace directory", check=False)
        network.destroy(cfg)
        _remove_cgroups(cfg)
        shutil.rmtree(cfg.run_dir, ignore_errors=True)
        if cfg.state_dir.exists():
            _wait(lambda: _rmtree(cfg.state_dir), 20, f"{cfg.state_dir} to be removable")
            if cfg.state_dir.exists():
                raise LabError(f"cannot remove {cfg.state_dir}", "Check `grep kuberevive-lab /proc/mounts`.")
        if self.cfg is not self._base_cfg:  # forget nodes added with add_worker()
            self.cfg = self._base_cfg
            self.nodes = {n.name: Node(self.cfg, n) for n in self.cfg.nodes}


# --- process, cgroup and file helpers ------------------------------------------------------------


def _pod_state(pod: dict[str, Any]) -> str:
    phase: str = pod.get("status", {}).get("phase", "Unknown")
    if phase != "Running":
        return phase
    statuses = pod["status"].get("containerStatuses", [])
    return "Running" if statuses and all(s.get("ready") for s in statuses) else "NotReady"


def _service_active(node: Node, service: str) -> bool:
    return _pidfile_alive(node.run_dir / f"{service}.supervisor.pid") and _pidfile_alive(
        node.run_dir / f"{service}.pid"
    )


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _pidfile_alive(pidfile: Path) -> bool:
    pid = _read_pid(pidfile)
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _signal_pidfile(pidfile: Path, sig: int) -> None:
    pid = _read_pid(pidfile)
    if pid and _pidfile_alive(pidfile):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> bool:
    return poll_until(what, timeout, lambda: (cond(), "not yet"), 0.2, retry=()).ok or cond()


def _is_mountpoint(path: Path) -> bool:
    try:
        with open("/proc/self/mountinfo") as fh:
            return any(line.split()[4] == str(path) for line in fh)
    except OSError:
        return False


def _ns_inodes(cfg: LabConfig, hosts: list[str] | None = None) -> set[str]:
    """``net:[...]``-style identities of every lab namespace (of ``hosts`` only, when given) still mounted on
    the host."""
    ids = set()
    if hosts is None:
        candidates = [(cfg.netns_path(n), "net") for n in network.lab_netns(cfg)]
        names = cfg.node_names
    else:
        candidates = [(cfg.netns_path(cfg.netns_name(h)), "net") for h in hosts]
        names = hosts
    for name in names:
        candidates += [(cfg.mntns_file(name), "mnt"), (cfg.utsns_file(name), "uts")]
    for path, kind in candidates:
        if _is_mountpoint(path):
            with contextlib.suppress(OSError):
                ids.add(f"{kind}:[{os.stat(path).st_ino}]")
    return ids


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _lab_processes(cfg: LabConfig, hosts: list[str] | None = None) -> set[int]:
    """Every live process in a lab cgroup or a lab namespace (of ``hosts`` only, when given), and their
    descendants.

    Descendants matter for containers made outside the kubelet (e.g. ``ctr run`` in a test): they have
    their own namespaces and a cgroup outside the node's root, but their parent is a lab containerd shim.
    Never this process or its parents.
    """
    ns_ids = _ns_inodes(cfg, hosts)
    roots = (f"/{cfg.prefix}-",) if hosts is None else tuple(cfg.cgroup_root(h) for h in hosts)
    mine = _ancestors()
    found = set()
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid in mine:
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if stat[0] == "Z":
                continue
            children.setdefault(int(stat[1]), []).append(pid)
            cgroups = (entry / "cgroup").read_text()
            if any(
                _under(line.split(":", 2)[2], roots, hosts is None)
                for line in cgroups.splitlines()
                if line.count(":") >= 2
            ):
                found.add(pid)
                continue
            for kind in ("net", "mnt", "uts"):
                if os.readlink(entry / "ns" / kind) in ns_ids:
                    found.add(pid)
                    break
        except (OSError, IndexError, ValueError):
            continue
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _under(cgroup: str, roots: tuple[str, ...], prefix: bool) -> bool:
    """``cgroup`` is one of ``roots`` or below it (``prefix``: starts with one of them)."""
    if prefix:
        return cgroup.startswith(roots)
    return any(cgroup == r or cgroup.startswith(r + "/") for r in roots)


def _foreign_cgroups(cfg: LabConfig, pid: int) -> set[Path]:
    """The cgroup directories of ``pid`` that are not under a lab node root."""
    result: set[Path] = set()
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return result
    mounts = [(root, opts) for _, root, opts in cgroup_mounts()]
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3 or parts[2] in ("", "/") or parts[2].startswith(f"/{cfg.prefix}-"):
            continue
        wanted = set(parts[1].split(",")) if parts[1] else {""}
        for root, opts in mounts:
            if wanted <= opts:
                result.add(root / parts[2].lstrip("/"))
    return result


def _try_rmdir(path: Path) -> bool:
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def _lab_cgroups(cfg: LabConfig, hosts: list[str] | None = None) -> list[Path]:
    found = []
    for _, root, _ in cgroup_mounts():
        for host in cfg.service_hosts if hosts is None else hosts:
            p = root / cfg.cgroup_root(host).lstrip("/")
            if p.is_dir():
                found.append(p)
    return found


def _remove_cgroups(cfg: LabConfig, hosts: list[str] | None = None) -> None:
    def remove_all() -> bool:
        ok = True
        for top in _lab_cgroups(cfg, hosts):
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for d in [*dirs, top]:
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    ok = False
        return ok and not _lab_cgroups(cfg, hosts)

    if not _wait(remove_all, 15, "the lab cgroups to be removable"):
        raise LabError(
            f"cannot remove the lab cgroups: {[str(p) for p in _lab_cgroups(cfg, hosts)]}",
            "A process may still be in one; check its cgroup.procs.",
        )


def _rmtree(path: Path) -> bool:
    shutil.rmtree(path, ignore_errors=True)
    return not path.exists()
