"""The one host:port splitter (core/netaddr.py) and its users: an IPv6 host in brackets (``[::1]:6443``,
``https://[fd00::10]:2380``) comes back without them, a port after the last colon of any other host."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from kuberevive.core import recover, replace, salvage
from kuberevive.core.netaddr import endpoint_port, join_host_port, split_endpoint, split_url, url_host
from kuberevive.errors import PlanError
from kuberevive.model.recover import RetrustOptions
from kuberevive.run import quorum
from kuberevive.run import replace as run_replace
from tests.unit.test_recover import evidence


@pytest.mark.parametrize(
    ("text", "split"),
    [
        ("[::1]:6443", ("::1", "6443")),
        ("[fd00::10]:6443", ("fd00::10", "6443")),
        ("[fd00::10]", ("fd00::10", "")),
        ("[fd00::10]:", ("fd00::10", "")),
        ("10.0.0.1:6443", ("10.0.0.1", "6443")),
        ("cp1.example:6443", ("cp1.example", "6443")),
        ("cp1.example", ("cp1.example", "")),
        ("[fd00::10", None),  # unclosed
        ("[fd00::10]x", None),  # something else after the bracket
        ("10.0.0.1:https", None),  # a port that is not digits
    ],
)
def test_split_endpoint(text: str, split: tuple[str, str] | None) -> None:
    assert split_endpoint(text) == split
    if split is not None and split[1]:
        assert join_host_port(*split) == text  # the inverse
        assert endpoint_port(text) == int(split[1])


@pytest.mark.parametrize(
    ("url", "split"),
    [
        ("https://[::1]:2379", ("https", "::1", "2379")),
        ("https://[fd00::10]:2380/path?q=1", ("https", "fd00::10", "2380")),
        ("http://user@[fd00::10]:2381", ("http", "fd00::10", "2381")),
        ("HTTPS://10.0.0.1:2379", ("https", "10.0.0.1", "2379")),
        ("https://cp1.example", ("https", "cp1.example", "")),
        ("unix:///run/containerd.sock", ("unix", "", "")),
        ("no-scheme", ("", "", "")),
        ("a:b/c", ("a", "", "")),
        ("https://[fd00::10", None),
        ("https://10.0.0.1:port", None),
    ],
)
def test_split_url(url: str, split: tuple[str, str, str] | None) -> None:
    assert split_url(url) == split
    assert url_host(url) == (split[1] if split else "")


def test_every_user_splits_ipv6_in_brackets() -> None:
    """salvage's peer endpoints and etcd-member peers, recover's identity check, replace's and quorum-restore's member
    addresses and API port: one splitter, brackets kept out of the host."""
    apiserver = (
        b"apiVersion: v1\nkind: Pod\nmetadata:\n  annotations:\n"
        b"    kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: '[fd00::50]:7443'\n"
    )
    etcd = (
        b"apiVersion: v1\nkind: Pod\nmetadata:\n  annotations:\n"
        b"    kubeadm.kubernetes.io/etcd.advertise-client-urls: https://[fd00::50]:2379\n"
    )
    endpoints = salvage.peer_endpoints("cp2", apiserver, etcd)
    assert (endpoints.api_host, endpoints.api_port, endpoints.api) == ("fd00::50", 7443, "[fd00::50]:7443")
    (peer,) = salvage.member_peers([("cp2", ["https://[fd00::50]:2380"]), ("cp1", ["https://[fd00::10]:2380"])], "cp1")
    assert peer.address == "fd00::50"

    ident = dataclasses.replace(recover.identify(evidence()), advertise_address="fd00::10")
    assert recover.refine_identity(ident, "[fd00::10]:7443", ["https://[fd00::10]:2380"]).bind_port == 7443
    with pytest.raises(PlanError, match=r"advertised fd00::9,"):
        recover.refine_identity(ident, "[fd00::9]:6443", [])
    with pytest.raises(PlanError, match="peer URL"):
        recover.refine_identity(ident, None, ["https://[fd00::9]:2380"])

    members = [replace.EtcdMember("1", "cp2", ("https://[fd00::50]:2380",))]
    assert run_replace.member_address("cp2", members) == "fd00::50"

    class Api:
        def get_or_none(self, path: str, **_q: Any) -> Any:
            annotation = "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"
            return {"metadata": {"annotations": {annotation: "[fd00::10]:7443"}}}

    assert run_replace._bind_port(Api(), "cp1") == 7443  # type: ignore[arg-type]


def test_a_replace_wait_that_times_out_names_replace_control_plane_not_recover() -> None:
    executor = object.__new__(run_replace.ReplaceExecutor)
    request = run_replace.Request("cp2", None, None, (), RetrustOptions())
    executor.p = type("P", (), {"request": request})()  # a plan of cp2's replacement
    with pytest.raises(PlanError) as err:
        executor._wait("node cp2 Ready", 0, lambda: (False, "not yet"), 0)
    assert "kuberevive replace-control-plane cp2 --apply" in err.value.hint and "recover" not in err.value.hint


def test_a_quorum_restore_wait_that_times_out_names_quorum_restore() -> None:
    with pytest.raises(PlanError) as err:
        quorum._wait_for("etcd on cp1 to be healthy", 0, lambda: (False, "not yet"), 0)
    assert "kuberevive quorum-restore --apply" in err.value.hint and "recover" not in err.value.hint
