"""``KubeApi.ensure_configmap_data`` against the dict-backed fake API server of test_executor: created when
missing, left alone when it holds the data, merge-patched otherwise (its other keys kept)."""

from __future__ import annotations

from pathlib import Path

from kuberevive.io.noderoot import NodeRoot
from tests.unit.test_executor import FakeApi, FakeClock

PATH = "/api/v1/namespaces/kube-public/configmaps/cluster-info"


def test_a_configmap_is_created_left_alone_or_patched_keeping_its_other_keys(tmp_path: Path) -> None:
    api = FakeApi(FakeClock(), NodeRoot(tmp_path))
    assert api.ensure_configmap_data("kube-public", "cluster-info", {"kubeconfig": "one"}) == "created"
    assert api.objects[PATH]["data"] == {"kubeconfig": "one"} and api.objects[PATH]["kind"] == "ConfigMap"
    api.objects[PATH]["data"]["jws-kubeconfig-abcdef"] = "signature"
    before = list(api.requests)
    assert api.ensure_configmap_data("kube-public", "cluster-info", {"kubeconfig": "one"}) == "unchanged"
    assert api.requests[len(before) :] == [f"GET {PATH}"]  # nothing written
    assert api.ensure_configmap_data("kube-public", "cluster-info", {"kubeconfig": "two"}) == "updated"
    assert api.objects[PATH]["data"] == {"kubeconfig": "two", "jws-kubeconfig-abcdef": "signature"}
    assert api.requests[-1] == f"PATCH {PATH}"
