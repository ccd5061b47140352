"""Inventories: kuberevive's own YAML, kubespray-shaped Ansible INI/YAML, and Node objects.

The kubespray samples follow the shape of kubespray's ``inventory/sample/inventory.ini`` (groups
``kube_control_plane``, ``etcd``, ``kube_node``, ``calico_rr``, ``k8s_cluster:children``; host lines
``node1 ansible_host=95.54.0.12  # ip=10.3.0.1 etcd_member_name=etcd1``; an optional ``bastion``) and
of the YAML inventory its inventory builder writes (``all: hosts: ... children: ...``), including the
older hyphenated group names (``kube-master``, ``kube-node``, ``k8s-cluster``).
"""

from __future__ import annotations

from typing import Any

import pytest

from kuberevive.errors import ConfigError
from kuberevive.model.inventory import (
    CONTROL_PLANE,
    WORKER,
    InventoryNode,
    from_node_objects,
    load_inventory,
)

KUBESPRAY_INI = """\
# ## Configure 'ip' variable to bind kubernetes services on a
# ## different ip than the default iface
[all]
node1 ansible_host=95.54.0.12 ip=10.3.0.1 etcd_member_name=etcd1
node2 ansible_host=95.54.0.13 ip=10.3.0.2 etcd_member_name=etcd2
node3 ansible_host=95.54.0.14 ip=10.3.0.3 etcd_member_name=etcd3
node4 ansible_host=95.54.0.15  # ip=10.3.0.4
bastion ansible_host=203.0.113.9 ansible_user=jump

[bastion]
bastion

[kube_control_plane]
node1
node2
node3

[etcd]
node1
node2
node3

[kube_node]
node2
node3
node4

[calico_rr]

[k8s_cluster:children]
kube_control_plane
kube_node
calico_rr

[all:vars]
ansible_user=ubuntu
ansible_ssh_private_key_file=~/.ssh/cluster_ed25519

[kube_node:vars]
ansible_port=2222
"""

KUBESPRAY_YAML = """\
all:
  hosts:
    node1:
      ansible_host: 10.10.1.3
      ip: 10.10.1.3
      access_ip: 10.10.1.3
    node2:
      ansible_host: 10.10.1.4
      ip: 10.10.1.4
      access_ip: 10.10.1.4
      ansible_user: admin
    etcd4:
      ansible_host: 10.10.1.9
  vars:
    ansible_user: root
  children:
    kube_control_plane:
      hosts:
        node1:
    kube_node:
      hosts:
        node1:
        node2:
      vars:
        ansible_port: 2200
    etcd:
      hosts:
        node1:
        etcd4:
    k8s_cluster:
      children:
        kube_control_plane:
        kube_node:
    calico_rr:
      hosts: {}
"""

OLD_KUBESPRAY_YAML = """\
---
kube-master:
  node1:
    ip: 10.3.0.1
kube-node:
  node1:
    ip: 10.3.0.1
  node2:
    ip: 10.3.0.2
    ansible_ssh_host: 95.54.0.13
etcd:
  node1:
    ip: 10.3.0.1
    ansible_ssh_host: 95.54.0.12
"""

OWN = """\
apiVersion: kuberevive.io/v1alpha1
kind: Inventory
defaults:
  user: root
  identityFile: /root/.ssh/id_ed25519
nodes:
  - name: cp1
    address: 172.30.0.11
    roles: [control-plane]
  - name: worker1
    address: 172.30.0.12
    port: 2222
    user: admin
    nodeIP: 10.0.0.12
"""


def test_kubespray_ini():
    inv = load_inventory(KUBESPRAY_INI, "inventory.ini")
    assert inv.names() == ["node1", "node2", "node3", "node4"]
    assert inv.get("node1") == InventoryNode(
        "node1", "95.54.0.12", 22, "ubuntu", "~/.ssh/cluster_ed25519", "10.3.0.1", frozenset({CONTROL_PLANE})
    )
    assert inv.get("node2") == InventoryNode(
        "node2", "95.54.0.13", 2222, "ubuntu", "~/.ssh/cluster_ed25519", "10.3.0.2", frozenset({CONTROL_PLANE, WORKER})
    )
    node4 = inv.get("node4")
    assert node4 is not None and node4.node_ip is None and node4.roles == {WORKER}  # "# ip=" is a comment
    assert inv.skipped == (("bastion", "not in a control-plane or node group (groups: bastion)"),)


def test_kubespray_yaml_with_group_vars_and_host_override():
    inv = load_inventory(KUBESPRAY_YAML, "hosts.yaml")
    assert inv.names() == ["node1", "node2"]
    n1, n2 = inv.nodes
    assert (n1.address, n1.port, n1.user, n1.node_ip, n1.roles) == (
        "10.10.1.3",
        2200,
        "root",
        "10.10.1.3",
        frozenset({CONTROL_PLANE, WORKER}),
    )
    assert (n2.address, n2.port, n2.user, n2.roles) == ("10.10.1.4", 2200, "admin", frozenset({WORKER}))
    assert inv.skipped == (("etcd4", "not in a control-plane or node group (groups: etcd)"),)


def test_old_kubespray_yaml_with_hyphenated_groups():
    inv = load_inventory(OLD_KUBESPRAY_YAML, "hosts.yaml")
    assert [(n.name, n.address, n.node_ip, sorted(n.roles)) for n in inv.nodes] == [
        ("node1", "95.54.0.12", "10.3.0.1", [CONTROL_PLANE, WORKER]),
        ("node2", "95.54.0.13", "10.3.0.2", [WORKER]),
    ]


def test_old_ini_group_names_ranges_and_quoted_values():
    text = """\
[kube-master]
master[1:2].example.com ansible_ssh_user="ops user"

[kube-node]
worker[01:03] ansible_ssh_port=22022

[k8s-cluster:children]
kube-master
kube-node
"""
    inv = load_inventory(text)
    assert inv.names() == ["master1.example.com", "master2.example.com", "worker01", "worker02", "worker03"]
    assert inv.nodes[0].user == "ops user" and inv.nodes[0].address == "master1.example.com"
    assert {n.port for n in inv.nodes[2:]} == {22022}


def test_own_format():
    inv = load_inventory(OWN, "inventory.yaml")
    assert inv.nodes == (
        InventoryNode("cp1", "172.30.0.11", 22, "root", "/root/.ssh/id_ed25519", None, frozenset({CONTROL_PLANE})),
        InventoryNode(
            "worker1", "172.30.0.12", 2222, "admin", "/root/.ssh/id_ed25519", "10.0.0.12", frozenset({WORKER})
        ),
    )
    assert inv.nodes[0].is_control_plane and not inv.nodes[1].is_control_plane


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: v9\nkind: Inventory\nnodes: []\n", "apiVersion must be one of kuberevive.io/v1alpha1"),
        ("apiVersion: kuberevive.io/v1alpha1\nkind: Inventory\nnodes: []\n", "nodes must be a non-empty list"),
        (
            "apiVersion: kuberevive.io/v1alpha1\nkind: Inventory\nnodes: [{name: a, adress: x}]\n",
            "nodes[0] has unknown field 'adress'",
        ),
        (
            "apiVersion: kuberevive.io/v1alpha1\nkind: Inventory\nnodes: [{name: a, roles: [master]}]\n",
            "node a roles must be a list of control-plane, worker",
        ),
        (
            "apiVersion: kuberevive.io/v1alpha1\nkind: Inventory\nnodes: [{name: a}, {name: a}]\n",
            "node a is listed twice",
        ),
        (
            "apiVersion: kuberevive.io/v1alpha1\nkind: Inventory\nnodes: [{name: a, port: 70000}]\n",
            "host a has port 70000, outside 1-65535",
        ),
        ("[kube_node]\nn1 ansible_port=ssh\n", "host n1 has port 'ssh', not a number"),
        ("[etcd]\ne1\n", "no host is in a control-plane group (kube_control_plane) or node group (kube_node)"),
        ("[kube_node\nn1\n", "line 1: section header '[kube_node' has no closing ]"),
        ("[kube_node]\nn1 ansible_host\n", "line 2: host variable 'ansible_host' is not key=value"),
        ("[a:children]\nb\n[b:children]\na\n[kube_node]\nn\n[a]\nn\n", "is its own ancestor"),
    ],
)
def test_bad_inventories_are_one_sentence_with_a_hint(text, message):
    with pytest.raises(ConfigError) as err:
        load_inventory(text, "inv")
    assert message in str(err.value)
    assert str(err.value).startswith("inventory inv: ")
    assert str(err.value).endswith("Fix the inventory file (format: docs/inventory.md).")


def test_nodes_from_node_objects():
    nodes: list[dict[str, Any]] = [
        {
            "metadata": {"name": "cp1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "status": {
                "addresses": [{"type": "Hostname", "address": "cp1"}, {"type": "InternalIP", "address": "172.30.0.11"}]
            },
        },
        {
            "metadata": {"name": "worker1", "labels": {}},
            "status": {"addresses": [{"type": "InternalIP", "address": "172.30.0.12"}]},
        },
        {"metadata": {"name": "edge"}, "status": {"addresses": [{"type": "ExternalIP", "address": "198.51.100.7"}]}},
        {"metadata": {"name": "ghost"}, "status": {}},
    ]
    inv = from_node_objects(nodes, user="root")
    assert [(n.name, n.address, n.node_ip, sorted(n.roles), n.user) for n in inv.nodes] == [
        ("cp1", "172.30.0.11", "172.30.0.11", [CONTROL_PLANE], "root"),
        ("worker1", "172.30.0.12", "172.30.0.12", [WORKER], "root"),
        ("edge", "198.51.100.7", None, [WORKER], "root"),
    ]
    assert inv.skipped == (("ghost", "the Node object lists no address"),)
