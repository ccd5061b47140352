"""Which nodes exist and how to reach them: kuberevive's inventory, Ansible/kubespray inventories, Node objects.

Three sources, one result (:class:`Inventory` of :class:`InventoryNode`):

* kuberevive's own YAML (``kind: Inventory``; format in ``docs/inventory.md``);
* an Ansible inventory as kubespray uses it, INI or YAML: hosts with ``ansible_host`` /
  ``ansible_ssh_host``, ``ansible_port`` / ``ansible_ssh_port``, ``ansible_user`` / ``ansible_ssh_user``,
  ``ansible_ssh_private_key_file``, ``ip`` / ``access_ip``; groups ``kube_control_plane`` (also the old
  ``kube-master``, ``kube_master``, ``kube-controlplane``) and ``kube_node`` (``kube-node``), with
  ``:children`` and ``:vars`` sections; host ranges ``node[1:3]``. Only hosts in a control-plane or
  node group are Kubernetes nodes; the rest (``bastion``, external ``etcd``-only hosts, ``calico_rr``)
  are listed in ``Inventory.skipped`` with the reason;
* the cluster's Node objects (name, first ``InternalIP``, control-plane role label).

Pure: text or objects in, frozen dataclasses out. Variable precedence follows Ansible for what we
read: ``all`` vars < parent-group vars < child-group vars < host vars.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from kuberevive.errors import ConfigError
from kuberevive.model import yamlload

INVENTORY_KIND = "Inventory"
INVENTORY_API_VERSIONS = ("kuberevive.io/v1alpha1",)

CONTROL_PLANE = "control-plane"
WORKER = "worker"
ROLES = (CONTROL_PLANE, WORKER)

CONTROL_PLANE_GROUPS = frozenset({"kube_control_plane", "kube-master", "kube_master", "kube-controlplane", "masters"})
NODE_GROUPS = frozenset({"kube_node", "kube-node", "kube_nodes", "workers"})
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"


@dataclass(frozen=True)
class InventoryNode:
    """One Kubernetes node and how to reach it over SSH.

    ``address`` is where to connect (``ansible_host``); ``node_ip`` the address Kubernetes uses
    (``ip``), when known; ``roles`` ⊆ {control-plane, worker}.
    """

    name: str
    address: str
    port: int = 22
    user: str | None = None
    identity_file: str | None = None
    node_ip: str | None = None
    roles: frozenset[str] = frozenset()

    @property
    def is_control_plane(self) -> bool:
        return CONTROL_PLANE in self.roles


@dataclass(frozen=True)
class Inventory:
    nodes: tuple[InventoryNode, ...]
    #: (host, why it is not a node) for inventory hosts that are not Kubernetes nodes.
    skipped: tuple[tuple[str, str], ...] = ()
    source: str = ""

    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def get(self, name: str) -> InventoryNode | None:
        return next((n for n in self.nodes if n.name == name), None)


def _err(source: str, what: str) -> ConfigError:
    return ConfigError(f"inventory {source}: {what}", "fix the inventory file (format: docs/inventory.md)")


def _port(value: Any, source: str, host: str) -> int:
    try:
        port = int(str(value))
    except ValueError as exc:
        raise _err(source, f"host {host} has port {value!r}, not a number") from exc
    if not 0 < port < 65536:
        raise _err(source, f"host {host} has port {port}, outside 1-65535")
    return port


def _check_unique(nodes: list[InventoryNode], source: str) -> None:
    seen: set[str] = set()
    for n in nodes:
        if n.name in seen:
            raise _err(source, f"node {n.name} is listed twice")
        seen.add(n.name)


# -- kuberevive's own format ----------------------------------------------------------------------

_OWN_NODE_KEYS = {"name", "address", "port", "user", "identityFile", "nodeIP", "roles"}
_OWN_DEFAULT_KEYS = {"port", "user", "identityFile"}


def parse_kuberevive_inventory(doc: Mapping[str, Any], source: str = "<inventory>") -> Inventory:
    """kuberevive's ``kind: Inventory`` document (already loaded YAML)."""
    if doc.get("apiVersion") not in INVENTORY_API_VERSIONS:
        raise _err(source, f"apiVersion must be one of {', '.join(INVENTORY_API_VERSIONS)}")
    unknown = set(doc) - {"apiVersion", "kind", "defaults", "nodes"}
    if unknown:
        raise _err(source, f"unknown field {sorted(unknown)[0]!r}")
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - _OWN_DEFAULT_KEYS:
        raise _err(source, f"defaults may only set {', '.join(sorted(_OWN_DEFAULT_KEYS))}")
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise _err(source, "nodes must be a non-empty list")
    nodes: list[InventoryNode] = []
    for i, raw in enumerate(raw_nodes):
        if not isinstance(raw, dict):
            raise _err(source, f"nodes[{i}] is not a mapping")
        if extra := set(raw) - _OWN_NODE_KEYS:
            raise _err(source, f"nodes[{i}] has unknown field {sorted(extra)[0]!r}")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise _err(source, f"nodes[{i}] has no name")
        roles = raw.get("roles", [WORKER])
        if not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles):
            raise _err(source, f"node {name} roles must be a list of {', '.join(ROLES)}")
        merged = {**defaults, **raw}
        nodes.append(
            InventoryNode(
                name=name,
                address=str(raw.get("address") or name),
                port=_port(merged.get("port", 22), source, name),
                user=str(merged["user"]) if merged.get("user") else None,
                identity_file=str(merged["identityFile"]) if merged.get("identityFile") else None,
                node_ip=_ip_or_none(raw.get("nodeIP")),
                roles=frozenset(roles),
            )
        )
    _check_unique(nodes, source)
    return Inventory(tuple(nodes), (), source)


def _ip_or_none(value: Any) -> str | None:
    if value in (None, ""):
        return None
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        return None


# -- Ansible: a neutral group tree ---------------------------------------------------------------


@dataclass
class _Group:
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)


_RANGE = re.compile(r"^(?P<pre>[^\[\]]*)\[(?P<a>[0-9a-z]+):(?P<b>[0-9a-z]+)\](?P<post>[^\[\]]*)$")


def _expand(host: str, source: str) -> list[str]:
    """Ansible host ranges: ``node[01:03]`` (zero padding kept), ``node[a:c]``."""
    m = _RANGE.match(host)
    if not m:
        return [host]
    a, b = m["a"], m["b"]
    if a.isdigit() and b.isdigit():
        width = len(a) if a.startswith("0") else 0
        return [f"{m['pre']}{str(i).zfill(width)}{m['post']}" for i in range(int(a), int(b) + 1)]
    if len(a) == 1 and len(b) == 1 and a.isalpha() and b.isalpha():
        return [f"{m['pre']}{chr(c)}{m['post']}" for c in range(ord(a), ord(b) + 1)]
    raise _err(source, f"host range {host!r} is not supported")


def _ini_value(text: str) -> Any:
    """Ansible INI values are Python literals when they look like one; we need strings and ints."""
    if text.isdigit():
        return int(text)
    return text


def _parse_ini(text: str, source: str) -> dict[str, _Group]:
    groups: dict[str, _Group] = {"all": _Group(), "ungrouped": _Group()}
    section, kind = "ungrouped", "hosts"
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise _err(source, f"line {lineno}: section header {line!r} has no closing ]")
            header = line[1:-1].strip()
            section, _, kind = header.partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children"):
                raise _err(source, f"line {lineno}: unknown section kind {kind!r}")
            groups.setdefault(section, _Group())
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:
            raise _err(source, f"line {lineno}: {exc}") from exc
        if not tokens:
            continue
        group = groups[section]
        if kind == "children":
            group.children.append(tokens[0])
            groups.setdefault(tokens[0], _Group())
        elif kind == "vars":
            key, eq, value = line.partition("=")
            if not eq:
                raise _err(source, f"line {lineno}: expected key=value in [{section}:vars]")
            group.vars[key.strip()] = _ini_value(shlex.split(value, comments=True)[0] if value.strip() else "")
        else:
            hostvars: dict[str, Any] = {}
            for tok in tokens[1:]:
                key, eq, value = tok.partition("=")
                if not eq:
                    raise _err(source, f"line {lineno}: host variable {tok!r} is not key=value")
                hostvars[key] = _ini_value(value)
            for host in _expand(tokens[0], source):
                group.hosts.setdefault(host, {}).update(hostvars)
    return groups


def _parse_yaml_groups(doc: Mapping[str, Any], source: str) -> dict[str, _Group]:
    groups: dict[str, _Group] = {"all": _Group()}

    def walk(name: str, body: Any) -> None:
        group = groups.setdefault(name, _Group())
        if body is None:
            return
        if not isinstance(body, dict):
            raise _err(source, f"group {name} is not a mapping")
        # Old kubespray samples put hosts directly under the group name.
        keys = set(body)
        if not keys & {"hosts", "vars", "children"}:
            body = {"hosts": body}
        for host, hv in (body.get("hosts") or {}).items():
            if hv is not None and not isinstance(hv, dict):
                raise _err(source, f"host {host} in group {name} has variables that are not a mapping")
            for h in _expand(str(host), source):
                group.hosts.setdefault(h, {}).update(hv or {})
        group.vars.update(body.get("vars") or {})
        for child, child_body in (body.get("children") or {}).items():
            group.children.append(str(child))
            walk(str(child), child_body)

    for name, body in doc.items():
        walk(str(name), body)
    return groups


def _resolve(groups: dict[str, _Group], source: str) -> tuple[dict[str, dict[str, Any]], dict[str, set[str]]]:
    """(host -> merged vars, host -> every group it is in, transitively)."""
    parents: dict[str, set[str]] = {g: set() for g in groups}
    for name, g in groups.items():
        for child in g.children:
            parents.setdefault(child, set()).add(name)

    def ancestors(name: str, seen: tuple[str, ...] = ()) -> list[str]:
        if name in seen:
            raise _err(source, f"group {name} is its own ancestor")
        out: list[str] = []
        for p in sorted(parents.get(name, ())):
            out += [a for a in ancestors(p, (*seen, name)) if a not in out]
            if p not in out:
                out.append(p)
        return out

    membership: dict[str, set[str]] = {}
    order: dict[str, list[str]] = {}  # host -> groups, outermost first
    for name, g in groups.items():
        for host in g.hosts:
            chain = [*ancestors(name), name]
            membership.setdefault(host, set()).update(chain)
            known = order.setdefault(host, [])
            for c in chain:
                if c not in known:
                    known.append(c)
    merged: dict[str, dict[str, Any]] = {}
    for host, chain in order.items():
        values: dict[str, Any] = dict(groups["all"].vars)
        for gname in sorted(chain, key=lambda n: (len(ancestors(n)), n)):
            if gname != "all":
                values.update(groups[gname].vars)
        for gname in chain:
            values.update(groups[gname].hosts.get(host, {}))
        membership[host].add("all")
        merged[host] = values
    return merged, membership


def _ansible_inventory(groups: dict[str, _Group], source: str) -> Inventory:
    merged, membership = _resolve(groups, source)
    nodes: list[InventoryNode] = []
    skipped: list[tuple[str, str]] = []
    for host in merged:  # input order
        v = merged[host]
        member = membership[host]
        roles = set()
        if member & CONTROL_PLANE_GROUPS:
            roles.add(CONTROL_PLANE)
        if member & NODE_GROUPS:
            roles.add(WORKER)
        if not roles:
            others = sorted(member - {"all", "ungrouped", "k8s_cluster", "k8s-cluster"})
            skipped.append((host, f"not in a control-plane or node group (groups: {', '.join(others) or 'none'})"))
            continue
        address = v.get("ansible_host") or v.get("ansible_ssh_host") or host
        user = v.get("ansible_user") or v.get("ansible_ssh_user")
        key = v.get("ansible_ssh_private_key_file") or v.get("ansible_private_key_file")
        nodes.append(
            InventoryNode(
                name=host,
                address=str(address),
                port=_port(v.get("ansible_port") or v.get("ansible_ssh_port") or 22, source, host),
                user=str(user) if user else None,
                identity_file=str(key) if key else None,
                node_ip=_ip_or_none(v.get("ip")) or _ip_or_none(v.get("access_ip")),
                roles=frozenset(roles),
            )
        )
    if not nodes:
        raise _err(source, "no host is in a control-plane group (kube_control_plane) or node group (kube_node)")
    return Inventory(tuple(nodes), tuple(skipped), source)


def parse_ansible_ini(text: str, source: str = "<inventory>") -> Inventory:
    return _ansible_inventory(_parse_ini(text, source), source)


def parse_ansible_yaml(doc: Mapping[str, Any], source: str = "<inventory>") -> Inventory:
    return _ansible_inventory(_parse_yaml_groups(doc, source), source)


_INI_HEADER = re.compile(r"^\[[A-Za-z0-9_.-]+(:[a-z]+)?(\]|$)")


def load_inventory(text: str, source: str = "<inventory>") -> Inventory:
    """Any supported inventory, recognised by its content: ``kind: Inventory`` YAML, Ansible YAML, or INI."""
    first = next((ln.strip() for ln in text.splitlines() if ln.strip() and ln.strip()[0] not in "#;"), "")
    if _INI_HEADER.match(first):
        return parse_ansible_ini(text, source)
    try:
        doc = yamlload.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise _err(source, f"is neither YAML nor an Ansible INI inventory ({problem}{where})") from exc
    if not isinstance(doc, dict):
        if isinstance(doc, str) or doc is None:
            return parse_ansible_ini(text, source)  # bare host lines
        raise _err(source, "the top level is not a mapping")
    if doc.get("kind") == INVENTORY_KIND:
        return parse_kuberevive_inventory(doc, source)
    return parse_ansible_yaml(doc, source)


# -- Node objects -----------------------------------------------------------------------------------


def from_node_objects(nodes: Iterable[Mapping[str, Any]], user: str | None = None, port: int = 22) -> Inventory:
    """Nodes as the cluster lists them: address = first InternalIP (else ExternalIP, else Hostname)."""
    out: list[InventoryNode] = []
    skipped: list[tuple[str, str]] = []
    for node in nodes:
        meta = node.get("metadata") or {}
        name = str(meta.get("name", ""))
        by_type: dict[str, list[str]] = {}
        for a in (node.get("status") or {}).get("addresses") or []:
            by_type.setdefault(str(a.get("type")), []).append(str(a.get("address", "")))
        internal = by_type.get("InternalIP", [])
        candidates = internal or by_type.get("ExternalIP") or by_type.get("Hostname") or [""]
        address = candidates[0]
        if not address:
            skipped.append((name, "the Node object lists no address"))
            continue
        labels = meta.get("labels") or {}
        roles = {CONTROL_PLANE} if CONTROL_PLANE_LABEL in labels else {WORKER}
        out.append(
            InventoryNode(
                name=name,
                address=address,
                port=port,
                user=user,
                node_ip=_ip_or_none(internal[0]) if internal else None,
                roles=frozenset(roles),
            )
        )
    return Inventory(tuple(out), tuple(skipped), "Node objects")
