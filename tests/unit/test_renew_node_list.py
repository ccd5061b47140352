"""``--all-nodes`` reads the node list through the API, trying again while the API servers restart."""

from __future__ import annotations

from typing import Any

import pytest

from kuberevive.errors import KubeApiError, PlanError
from kuberevive.model.recover import RetrustOptions
from kuberevive.run import renew

NODES: list[dict[str, Any]] = [
    {
        "metadata": {"name": "cp1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
        "status": {"addresses": [{"type": "InternalIP", "address": "172.30.0.11"}]},
    }
]


def test_the_node_list_is_read_again_after_a_failed_request(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[Exception | list[dict[str, Any]]] = [
        KubeApiError("SSL: UNEXPECTED_EOF_WHILE_READING"),
        KubeApiError("connection refused"),
        NODES,
    ]

    def node_objects(_root: object) -> list[dict[str, Any]]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(renew, "_node_objects", node_objects)
    monkeypatch.setattr(renew, "NODE_LIST_PAUSE", 0.0)
    inventory = renew.node_inventory(object(), RetrustOptions())  # type: ignore[arg-type]
    assert [(n.name, n.address) for n in inventory.nodes] == [("cp1", "172.30.0.11")]
    assert answers == []


def test_a_node_list_that_never_comes_names_the_last_error_and_inventory(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def node_objects(_root: object) -> list[dict[str, Any]]:
        calls.append(1)
        raise KubeApiError("connection refused")

    monkeypatch.setattr(renew, "_node_objects", node_objects)
    monkeypatch.setattr(renew, "NODE_LIST_PAUSE", 0.01)
    monkeypatch.setattr(renew, "NODE_LIST_WAIT", 0.05)
    with pytest.raises(PlanError) as err:
        renew.node_inventory(object(), RetrustOptions())  # type: ignore[arg-type]
    assert len(calls) >= 2
    assert "node list cannot be read from the API (connection refused" in str(err.value)
    assert "--inventory FILE" in str(err.value)
