"""Every name, address and path of the lab, derived from a few roots (one place to read or change).

Layout on the host (``S`` = ``state_dir``, default ``/var/lib/kuberevive-lab``)::

    S/state.json                 what `lab up` built (nodes, addresses, token, duration, status)
    S/kubeadm-init.yaml          the kubeadm configuration given to `kubeadm init` (tests read it)
    S/kubeadm-join-<node>.yaml   the JoinConfiguration of each worker
    S/bin/                       the node PATH: links to the built binaries + the `systemctl` shim
    S/ssh/                       lab client key, known_hosts, ssh_config (`ssh -F S/ssh/config cp1`)
    S/nodes/<node>/upper/{etc,usr,var}   overlay upper dirs: the node's own /etc, /usr, /var
    S/nodes/<node>/{containerd,kubelet}  bind-mounted at /var/lib/containerd, /var/lib/kubelet
    S/nodes/<node>/log/          containerd.log, kubelet.log, sshd.log, kubeadm-*.log, setup.log
    S/nodes/<node>/run/          pid files of the node's supervisors and daemons
    /run/kuberevive-lab/ns/      persisted mount and UTS namespaces (<node>.mnt, <node>.uts)
    /run/netns/krlab-*           network namespaces (ip netns): krlab-net (the switch) and one per node
    /sys/fs/cgroup/*/krlab-<node>  each node's cgroup root (kubelet --cgroup-root, daemons)
"""

from __future__ import annotations

import ipaddress
import os
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Role = Literal["control-plane", "worker"]

K8S_VERSION = "1.33.13"
ETCD_VERSION = "3.5.24"
#: Names kubeadm's static pods and addons use; checked at `lab up` against `kubeadm config images list`.
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
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


def _default_nodes() -> tuple[NodeSpec, ...]:
    return (NodeSpec("cp1", "172.30.0.11", "control-plane"), NodeSpec("worker1", "172.30.0.12", "worker"))


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
    def from_env(cls, environ: dict[str, str] | None = None) -> LabConfig:
        """The default lab, or instance N (``KUBEREVIVE_LAB_INSTANCE=N``, 1-9) with its own state dir,
        namespaces, cgroup roots and network ``172.30.N.0/24``, so several labs can run side by side."""
        env = os.environ if environ is None else environ
        cache_dir = Path(env.get("KUBEREVIVE_CACHE", "/var/cache/kuberevive"))
        instance_text = env.get("KUBEREVIVE_LAB_INSTANCE", "0") or "0"
        if not instance_text.isdigit() or not 0 <= int(instance_text) <= 9:
            from kuberevive.errors import LabError

            raise LabError(
                f"KUBEREVIVE_LAB_INSTANCE={instance_text!r} is not a number from 0 to 9", "Unset it or fix it."
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
            nodes=tuple(
                NodeSpec(spec.name, f"172.30.{n}.{spec.ip.rsplit('.', 1)[1]}", spec.role) for spec in _default_nodes()
            ),
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
        return next(n for n in self.nodes if n.is_control_plane)

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
