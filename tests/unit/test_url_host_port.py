"""One reader of a host and port out of a URL or a ``host:port`` endpoint (kuberevive.core._netaddr.url_host_port),
used wherever recover, diagnose, salvage, quorum-restore and replace-control-plane read what etcd, kubeadm's
annotations or a kubeconfig recorded; IPv6 addresses in brackets."""

from __future__ import annotations

import dataclasses

import pytest

from kuberevive.core import recover as core
from kuberevive.core import salvage
from kuberevive.core._netaddr import url_host_port
from kuberevive.core.recover import refine_identity
from kuberevive.errors import PlanError
from tests.unit.test_recover import evidence


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("https://[fd00:30::11]:2380", "fd00:30::11", "2380"),
        ("[fd00:30::11]:6443", "fd00:30::11", "6443"),
        ("https://[::1]", "::1", ""),
        ("https://10.0.0.1:2379/health", "10.0.0.1", "2379"),
        ("10.0.0.1:6443", "10.0.0.1", "6443"),
        ("https://cp1.example:6443", "cp1.example", "6443"),
        ("cp1", "cp1", ""),
        ("fd00::1", "", ""),  # a bare IPv6 address is not host:port: neither is guessed
        ("https://a.b:x", "", ""),
        ("unix:///run/containerd/containerd.sock", "", ""),
        ("", "", ""),
    ],
)
def test_host_and_port(text: str, host: str, port: str) -> None:
    assert url_host_port(text) == (host, port)


def test_the_peers_api_endpoint_annotation_may_be_ipv6() -> None:
    assert salvage._split_host_port("[fd00:30::11]:6443") == ("fd00:30::11", 6443)
    with pytest.raises(ValueError):
        salvage._split_host_port("fd00:30::11")  # no port: refused, not split inside the address


def test_etcds_memory_of_an_ipv6_nodes_address_is_read_from_its_urls() -> None:
    ident = dataclasses.replace(core.identify(evidence()), advertise_address="fd00:30::11")
    assert refine_identity(ident, "[fd00:30::11]:7443", ["https://[fd00:30::11]:2380"]).bind_port == 7443
    with pytest.raises(PlanError, match="peer URL"):
        refine_identity(ident, None, ["https://[fd00:30::99]:2380"])
