"""The lab network: one switch namespace, one namespace per node, one veth to the host.

Design (why a switch *namespace* rather than a host bridge): the bridge ``br0`` lives in the network
namespace ``krlab-net`` that the lab creates, so bridged lab traffic never passes the host's
bridge-netfilter/iptables, and deleting that namespace removes the bridge and every veth at once.
The host only gets one interface, ``krlab0`` (``172.30.0.1/24``), so host-side tools and tests reach
the nodes' addresses as they would reach real machines; the host does not forward (ip_forward stays
as it is) and the nodes have **no default route**: traffic to anything outside the lab subnet, the
pod subnet or the service subnet fails locally ("network unreachable") instead of leaving the lab.

Per node namespace ``krlab-<node>``: ``lo``, ``eth0`` (the node address), ``net.ipv4.ip_forward=1``
(pods are routed), a route for the service subnet on ``eth0`` (so locally generated ClusterIP traffic
has a route before kube-proxy's DNAT), and a route to each other node's pod CIDR via that node
(set by :func:`set_pod_routes` once the controller-manager has allocated the CIDRs).

The HA lab adds ``krlab-lb`` (the load balancer, loadbalancer.py): ``lo`` and ``eth0`` with the lab's ``.10``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from kuberevive.lab._proc import run
from kuberevive.lab.config import LB_NAME, LabConfig, NodeSpec


def _ip(*args: str, step: str, check: bool = True) -> None:
    run(["ip", *args], step=step, check=check)


def netns_exists(cfg: LabConfig, name: str) -> bool:
    return cfg.netns_path(name).exists()


def lab_netns(cfg: LabConfig) -> list[str]:
    d = Path("/run/netns")
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.name.startswith(f"{cfg.prefix}-"))


def sysctl_in(netns: str, key: str, value: str) -> None:
    # nsenter, not `ip netns exec`: the latter remounts /sys, which is not needed for /proc/sys/net.
    run(
        ["nsenter", f"--net=/run/netns/{netns}", "--", "sysctl", "-qw", f"{key}={value}"],
        step=f"sysctl {key} in {netns}",
    )


def create(cfg: LabConfig) -> None:
    """Create the switch, the host link and every node's namespace and link (idempotent for a clean host)."""
    step = "creating the lab network"
    sw = cfg.switch_netns
    if not netns_exists(cfg, sw):
        _ip("netns", "add", sw, step=step)
    _ip("-n", sw, "link", "set", "lo", "up", step=step)
    _ip("-n", sw, "link", "add", "br0", "type", "bridge", step=step, check=False)
    _ip("-n", sw, "link", "set", "br0", "up", step=step)
    # host <-> switch
    if not Path(f"/sys/class/net/{cfg.host_if}").exists():
        _ip("link", "add", cfg.host_if, "type", "veth", "peer", "name", "to-host", "netns", sw, step=step)
    _ip("addr", "replace", f"{cfg.host_ip}/{cfg.prefix_len}", "dev", cfg.host_if, step=step)
    _ip("link", "set", cfg.host_if, "up", step=step)
    _ip("-n", sw, "link", "set", "to-host", "master", "br0", "up", step=step)
    for node in cfg.nodes:
        add_node(cfg, node)
    if cfg.ha:  # the load balancer: a namespace with only its address (no routes beyond the lab network)
        _add_host(cfg, LB_NAME, cfg.lb_ip, step)


def add_node(cfg: LabConfig, node: NodeSpec) -> None:
    """One node's namespace and link on the (existing) switch, its service route and sysctls (idempotent)."""
    step = f"creating the network of {node.name}"
    ns = _add_host(cfg, node.name, node.ip, step)
    _ip("-n", ns, "route", "replace", cfg.service_subnet, "dev", "eth0", "src", node.ip, step=step)
    sysctl_in(ns, "net.ipv4.ip_forward", "1")
    sysctl_in(ns, "net.bridge.bridge-nf-call-iptables", "1")


def remove_node(cfg: LabConfig, name: str) -> None:
    """Delete one node's network namespace (its veth pair and switch port go with it)."""
    if netns_exists(cfg, cfg.netns_name(name)):
        run(["ip", "netns", "delete", cfg.netns_name(name)], step=f"deleting the network of {name}", check=False)


def host_mac(cfg: LabConfig, name: str) -> str:
    """``eth0``'s MAC address, fixed by the lab and the host's name (locally administered, unicast): a machine
    destroyed and added again (re-imaged, same NIC) keeps it, so its peers' ARP caches stay right; a new MAC at a
    known address leaves them sending to the old one until their neighbour entries fail (seconds of timeouts)."""
    digest = hashlib.sha256(f"{cfg.prefix}-{name}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def _add_host(cfg: LabConfig, name: str, ip: str, step: str) -> str:
    """The namespace ``<prefix>-<name>`` with ``lo`` and ``eth0`` (``ip``) on a port ``to-<name>`` of the switch."""
    sw = cfg.switch_netns
    ns = cfg.netns_name(name)
    if not netns_exists(cfg, ns):
        _ip("netns", "add", ns, step=step)
    _ip("-n", ns, "link", "set", "lo", "up", step=step)
    port = f"to-{name}"
    if run(["ip", "-n", sw, "link", "show", port], step=step, check=False).returncode != 0:
        mac = host_mac(cfg, name)
        _ip(
            "-n",
            sw,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "address",
            mac,
            "netns",
            ns,
            step=step,
        )
    _ip("-n", sw, "link", "set", port, "master", "br0", "up", step=step)
    _ip("-n", ns, "addr", "replace", f"{ip}/{cfg.prefix_len}", "dev", "eth0", step=step)
    _ip("-n", ns, "link", "set", "eth0", "up", step=step)
    return ns


def set_pod_routes(cfg: LabConfig, pod_cidrs: dict[str, str]) -> None:
    """On each node (a destroyed one has no namespace), route every other node's pod CIDR via its address."""
    for node in cfg.nodes:
        if not netns_exists(cfg, cfg.netns_name(node.name)):
            continue
        for other in cfg.nodes:
            if other.name == node.name or other.name not in pod_cidrs:
                continue
            _ip(
                "-n",
                cfg.netns_name(node.name),
                "route",
                "replace",
                pod_cidrs[other.name],
                "via",
                other.ip,
                step=f"routing pods of {other.name} on {node.name}",
            )


def destroy(cfg: LabConfig) -> None:
    """Delete every lab namespace (node namespaces first) and the host link."""
    for ns in sorted(lab_netns(cfg), key=lambda n: n == cfg.switch_netns):
        run(["ip", "netns", "delete", ns], step="deleting a lab network namespace", check=False)
    if Path(f"/sys/class/net/{cfg.host_if}").exists():
        run(["ip", "link", "delete", cfg.host_if], step="deleting the host link", check=False)
