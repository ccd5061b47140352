"""The kuberevive lab: a real two-node kubeadm cluster (``cp1`` + ``worker1``) on this machine.

Each node is a set of namespaces (network, mount, UTS) with its own /etc, /var, containerd, kubelet
and sshd; the control plane is made by the real ``kubeadm init``, the worker by ``kubeadm join``.
See docs/lab.md. Public surface: :class:`Lab` (up/down/status/exec), :class:`LabConfig`.
"""

from kuberevive.lab.cluster import Lab, NodeStatus
from kuberevive.lab.config import LabConfig, NodeSpec

__all__ = ["Lab", "LabConfig", "NodeSpec", "NodeStatus"]
