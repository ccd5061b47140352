"""Every name, address and path of the lab, derived from a few roots (one place to read or change).

Layout on the host (``S`` = ``state_dir``, default ``/var/lib/kuberevive-lab``)::

    S/state.json                 what `lab up` built (nodes, addresses, token, duration, status)
    S/kubeadm-init.yaml          the kubeadm configuration given to `kubeadm init` (tests read it)
    S/kubeadm-join-<node>.yaml   the JoinConfiguration of each joining node (workers; cp2, cp3 in the HA lab)
    S/nodes/lb/{haproxy.cfg,haproxy.json,log,run}  the HA lab's load balancer (haproxy in netns krlab-lb)
    S/bin/                       the node PATH: links to the built binaries + the `systemctl` shim
    S/ssh/                       lab client key, known_hosts, ssh_config (`ssh -F S/ssh/config cp1`)
    S/nodes/<node>/upper/{etc,usr,var}   overlay upper dirs: the node's own /etc, /usr, /var
    S/nodes/<node>/{containerd,kubelet}  bind-mounted at /var/lib/containerd, /var/lib/kubelet
    S/nodes/<node>/log/          containerd.log, kubelet.log, sshd.log, kubeadm-*.log, setup.log
    S/nodes/<node>/run/          pid files of the node's supervisors and daemons
    /run/kuberevive-lab/ns/      persisted mount and UTS namespaces (<node>.mnt, <node>.uts)
    /run/netns/krlab-*           network namespaces (ip netns): krlab-net (the switch), one per node, krlab-lb
    /sys/fs/cgroup/*/krlab-<node>  each node's cgroup root (kubelet --cgroup-root, daemons; krlab-lb: haproxy)

Topology: ``control_planes`` (1 or 3) and ``workers`` (0-5) control-plane and worker nodes. ``cp1`` is
``.11`` and ``worker1`` ``.12`` as in the default 1+1 lab; further nodes take the next addresses in the
order cp2, cp3, worker2, ... With three control planes the load balancer (haproxy, no kubelet) is ``.10``
and is the cluster's ``controlPlaneEndpoint``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Role = Literal["control-plane", "worker"]

K8S_VERSION = "1.37.2"
ETCD_VERSION = "3.7.0"
#: The etcdctl/etcdutl build-binaries.sh builds beside each etcd server minor (the proxy serves no client tools at
#: some server patches, e.g. v3.5.24 or v3.7.0); a client of the server's own minor reads its snapshots.
ETCDCTL_VERSIONS = {"3.5": "3.5.33", "3.6": "3.6.17", "3.7": "3.7.4"}
#: The lab's default sandbox image (kubeadm v1.37's); another version's is :attr:`LabConfig.pause_image`.
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.2"
LABAPP_IMAGE = "kuberevive.invalid/labapp:lab"
WORKLOAD_NAMESPACE = "krlab"
#: Builds the lab's and the tests' binaries (shipped inside the package, so an installed kuberevive has it too).
BUILD_SCRIPT = Path(__file__).resolve().parent / "data" / "build-binaries.sh"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    ip: str
    role: Role

    @property
    def is_control_plane(self) -> bool:
        return self.role == "control-plane"


#: The lab topologies: 1 control plane (stacked etcd, no load balancer) or 3 (stacked etcd, haproxy in front).
CONTROL_PLANE_COUNTS = (1, 3)
MAX_WORKERS = 5
#: The load balancer's name (its directory under S/nodes, its network namespace, its cgroup root) and address.
LB_NAME = "lb"
LB_HOST = 10
#: Labs side by side: instance N (0..MAX_INSTANCE) on 172.30.N.0/24 (CI's three test workers use 0-5, developers 6-19).
MAX_INSTANCE = 19
API_PORT = 6443


def topology_nodes(network: str, control_planes: int = 1, workers: int = 1) -> tuple[NodeSpec, ...]:
    """cp1..cpN and worker1..workerM in ``network``: cp1 ``.11``, worker1 ``.12`` (the default lab's
    addresses), then ``.13`` onwards for cp2..cpN, worker2..workerM in that order."""
    from kuberevive.errors import LabError

    if control_planes not in CONTROL_PLANE_COUNTS:
        raise LabError(
            f"a lab has 1 or 3 control-plane nodes, not {control_planes}",
            "Use --control-planes 1 or --control-planes 3.",
        )
    if not 0 <= workers <= MAX_WORKERS:
        raise LabError(f"a lab has 0 to {MAX_WORKERS} workers, not {workers}", "Use a smaller --workers.")
    net = ipaddress.ip_network(network)
    nodes = [NodeSpec("cp1", str(net[11]), "control-plane")]
    if workers:
        nodes.append(NodeSpec("worker1", str(net[12]), "worker"))
    rest = [f"cp{i}" for i in range(2, control_planes + 1)] + [f"worker{i}" for i in range(2, workers + 1)]
    for i, name in enumerate(rest):
        nodes.append(NodeSpec(name, str(net[13 + i]), "control-plane" if name.startswith("cp") else "worker"))
    return tuple([n for n in nodes if n.is_control_plane] + [n for n in nodes if not n.is_control_plane])


def lab_versions(kubernetes_version: str) -> tuple[str, str]:
    """(Kubernetes, etcd server) versions of a lab of ``kubernetes_version`` (``1.37.2``, a leading ``v`` allowed):
    etcd is what that minor's kubeadm runs (:mod:`kuberevive.core.versions`). LabError outside the supported range."""
    from kuberevive.core import versions
    from kuberevive.errors import KubereviveError, LabError

    text = kubernetes_version.strip().removeprefix("v")
    if not re.fullmatch(r"1\.\d+\.\d+", text):
        raise LabError(f"{kubernetes_version!r} is not a Kubernetes version like 1.37.2", "Give MAJOR.MINOR.PATCH.")
    try:
        minor = versions.check_supported(text, "the lab's Kubernetes version")
    except KubereviveError as exc:
        raise LabError(exc.message, "Use a version the lab can build (see docs/lab.md).") from exc
    return text, versions.minor_profile(minor).etcd_image_tag.rsplit("-", 1)[0]


def _default_nodes() -> tuple[NodeSpec, ...]:
    return topology_nodes("172.30.0.0/24")


@dataclass(frozen=True)
class LabConfig:
    state_dir: Path = Path("/var/lib/kuberevive-lab")
    run_dir: Path = Path("/run/kuberevive-lab")
    cache_dir: Path = Path("/var/cache/kuberevive")
    k8s_version: str = K8S_VERSION
    etcd_version: str = ETCD_VERSION
    #: The lab network. The host side (``krlab0``) gets ``host_ip``; nodes get their NodeSpec ip.
    network: str = "172.30.0.0/24"
    host_ip: str = "172.30.0.1"
    nodes: tuple[NodeSpec, ...] = field(default_factory=_default_nodes)
    pod_subnet: str = "10.123.0.0/16"
    service_subnet: str = "10.96.0.0/12"
    cert_san: str = "kuberevive-lab.invalid"
    prefix: str = "krlab"
    #: ClusterConfiguration ``certificateValidityPeriod`` (e.g. ``6m``) when not kubeadm's default (one year):
    #: a lab whose leaf certificates expire within minutes, for the "one-year cliff" test of ``certs renew``.
    certificate_validity: str | None = None
    #: ClusterConfiguration ``caCertificateValidityPeriod`` when not kubeadm's default (ten years).
    ca_certificate_validity: str | None = None
    #: The controller-manager's ``--cluster-signing-duration`` (e.g. ``2m``) when not its default (one year): the
    #: kubelet client certificates it signs (the workers') expire within minutes too.
    cluster_signing_duration: str | None = None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        control_planes: int | None = None,
        workers: int | None = None,
        kubernetes_version: str | None = None,
    ) -> LabConfig:
        """The default lab, or instance N (``KUBEREVIVE_LAB_INSTANCE=N``, 1-19) with its own state dir,
        namespaces, cgroup roots and network ``172.30.N.0/24``, so several labs can run side by side.

        The topology: ``control_planes``/``workers`` when given, else ``KUBEREVIVE_LAB_CONTROL_PLANES`` /
        ``KUBEREVIVE_LAB_WORKERS``, else 1 and 1. The Kubernetes version: ``kubernetes_version`` when given, else
        ``KUBEREVIVE_LAB_KUBERNETES_VERSION``, else :data:`K8S_VERSION`."""
        env = os.environ if environ is None else environ
        cfg = cls._instance(env)
        version = kubernetes_version or env.get("KUBEREVIVE_LAB_KUBERNETES_VERSION", "")
        if version:
            cfg = cfg.with_version(version)
        cps = control_planes if control_planes is not None else _env_int(env, "KUBEREVIVE_LAB_CONTROL_PLANES", 1)
        wks = workers if workers is not None else _env_int(env, "KUBEREVIVE_LAB_WORKERS", 1)
        return cfg.with_topology(cps, wks)

    def with_version(self, kubernetes_version: str) -> LabConfig:
        """This lab with another Kubernetes version (and that minor's etcd)."""
        k8s, etcd = lab_versions(kubernetes_version)
        return dataclasses.replace(self, k8s_version=k8s, etcd_version=etcd)

    @property
    def pause_image(self) -> str:
        """The sandbox image this version's kubeadm lists (and the nodes' containerd is configured with)."""
        from kuberevive.core import versions

        return f"registry.k8s.io/pause:{versions.profile(self.k8s_version).pause_image_tag}"

    @property
    def build_command(self) -> str:
        """The command that builds this lab's binaries."""
        etcdctl = ETCDCTL_VERSIONS.get(self.etcd_version.rsplit(".", 1)[0], "")
        env = f"K8S_VERSION={self.k8s_version} ETCD_VERSION={self.etcd_version} ETCDCTL_VERSION={etcdctl} "
        return f"{'' if self.k8s_version == K8S_VERSION else env}bash {BUILD_SCRIPT}"

    def with_topology(self, control_planes: int, workers: int) -> LabConfig:
        """This lab with another topology (same instance, paths and settings)."""
        if (control_planes, workers) == self.topology:
            return self
        return dataclasses.replace(self, nodes=topology_nodes(self.network, control_planes, workers))

    @classmethod
    def _instance(cls, env: Mapping[str, str]) -> LabConfig:
        cache_dir = Path(env.get("KUBEREVIVE_CACHE", "/var/cache/kuberevive"))
        instance_text = env.get("KUBEREVIVE_LAB_INSTANCE", "0") or "0"
        if not instance_text.isdigit() or not 0 <= int(instance_text) <= MAX_INSTANCE:
            from kuberevive.errors import LabError

            raise LabError(
                f"KUBEREVIVE_LAB_INSTANCE={instance_text!r} is not a number from 0 to {MAX_INSTANCE}",
                "Unset it or fix it.",
            )
        n = int(instance_text)
        if n == 0:
            return cls(state_dir=Path(env.get("KUBEREVIVE_LAB_STATE", "/var/lib/kuberevive-lab")), cache_dir=cache_dir)
        return cls(
            state_dir=Path(env.get("KUBEREVIVE_LAB_STATE", f"/var/lib/kuberevive-lab-{n}")),
            run_dir=Path(f"/run/kuberevive-lab-{n}"),
            cache_dir=cache_dir,
            network=f"172.30.{n}.0/24",
            host_ip=f"172.30.{n}.1",
            nodes=topology_nodes(f"172.30.{n}.0/24"),
            prefix=f"krlab{n}",
        )

    # --- nodes -------------------------------------------------------------------------------
    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        from kuberevive.errors import LabError

        raise LabError(f"there is no lab node named {name!r}", f"Use one of: {', '.join(self.node_names)}.")

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    @property
    def control_plane(self) -> NodeSpec:
        """The first control-plane node (``cp1``): ``kubeadm init`` runs there."""
        return next(n for n in self.nodes if n.is_control_plane)

    @property
    def control_planes(self) -> list[NodeSpec]:
        return [n for n in self.nodes if n.is_control_plane]

    @property
    def topology(self) -> tuple[int, int]:
        """(control-plane nodes, workers)."""
        return len(self.control_planes), len(self.workers)

    @property
    def ha(self) -> bool:
        """Several control planes: stacked etcd members behind the load balancer."""
        return len(self.control_planes) > 1

    @property
    def lb_ip(self) -> str:
        return str(ipaddress.ip_network(self.network)[LB_HOST])

    @property
    def api_endpoint(self) -> str:
        """Where nodes and clients reach the API: the load balancer (HA) or cp1."""
        return f"{self.lb_ip if self.ha else self.control_plane.ip}:{API_PORT}"

    @property
    def service_hosts(self) -> list[str]:
        """Every name with supervised services, a run dir and a cgroup root: the nodes and, for HA, the LB."""
        return self.node_names + ([LB_NAME] if self.ha else [])

    @property
    def workers(self) -> list[NodeSpec]:
        return [n for n in self.nodes if not n.is_control_plane]

    @property
    def prefix_len(self) -> int:
        return ipaddress.ip_network(self.network).prefixlen

    # --- paths -------------------------------------------------------------------------------
    @property
    def bin_cache(self) -> Path:
        """Output of :data:`BUILD_SCRIPT` (keyed by version)."""
        return self.cache_dir / f"k8s-v{self.k8s_version}-etcd-v{self.etcd_version}" / "bin"

    @property
    def image_cache(self) -> Path:
        return self.cache_dir / "images"

    @property
    def lab_bin(self) -> Path:
        return self.state_dir / "bin"

    @property
    def ssh_dir(self) -> Path:
        return self.state_dir / "ssh"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def init_config_file(self) -> Path:
        return self.state_dir / "kubeadm-init.yaml"

    def join_config_file(self, node: str) -> Path:
        return self.state_dir / f"kubeadm-join-{node}.yaml"

    def node_dir(self, node: str) -> Path:
        return self.state_dir / "nodes" / node

    def log_dir(self, node: str) -> Path:
        return self.node_dir(node) / "log"

    def node_run_dir(self, node: str) -> Path:
        return self.node_dir(node) / "run"

    @property
    def ns_dir(self) -> Path:
        return self.run_dir / "ns"

    def mntns_file(self, node: str) -> Path:
        return self.ns_dir / f"{node}.mnt"

    def utsns_file(self, node: str) -> Path:
        return self.ns_dir / f"{node}.uts"

    def netns_name(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    @property
    def switch_netns(self) -> str:
        return f"{self.prefix}-net"

    def netns_path(self, netns: str) -> Path:
        return Path("/run/netns") / netns

    @property
    def host_if(self) -> str:
        return f"{self.prefix}0"

    def cgroup_root(self, node: str) -> str:
        """The node's cgroup root, relative to each hierarchy (kubelet ``--cgroup-root``)."""
        return f"/{self.prefix}-{node}"

    # --- programs ----------------------------------------------------------------------------
    @property
    def python(self) -> str:
        return sys.executable

    @property
    def python_scripts_dir(self) -> str:
        """Where the ``kuberevive`` console script lives, so nodes can run it."""
        return sysconfig.get_path("scripts")

    def node_path(self) -> str:
        return ":".join(
            [
                str(self.lab_bin),
                self.python_scripts_dir,
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
        )


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "") or str(default)
    if not text.isdigit():
        from kuberevive.errors import LabError

        raise LabError(f"{name}={text!r} is not a number", "Unset it or fix it.")
    return int(text)
