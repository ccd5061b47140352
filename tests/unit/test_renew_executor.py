"""``certs renew`` and ``ca extend``'s executors without root or a cluster: their checked step tables, and renewals
run against a fake host (the node's files under a temporary root, systemctl/crictl recorded) and a fake API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kuberevive.run import caextend, renew
from kuberevive.run.context import check_table

SRC = Path(renew.__file__).resolve().parents[1]


def test_renew_and_ca_extend_run_their_steps_through_checked_tables() -> None:
    assert list(renew.RENEW_STEPS) == list(renew.STEP_TITLES)
    assert list(caextend.CA_EXTEND_STEPS) == list(caextend.STEP_TITLES)
    every = ["kubelet-client", "apiserver", "admin.conf"]
    assert set(renew.steps_for(every, live=True)) <= set(renew.RENEW_STEPS)
    assert set(caextend.steps_for(True, True)) == set(caextend.CA_EXTEND_STEPS)
    without = {k: v for k, v in renew.RENEW_STEPS.items() if k != "leaves"}
    with pytest.raises(ImportError, match=r"kuberevive.run.renew: .*no handler: \['leaves'\]"):
        check_table(without, tuple(renew.STEP_TITLES), "kuberevive.run.renew")
    swapped = dict(reversed(list(caextend.CA_EXTEND_STEPS.items())))
    with pytest.raises(ImportError, match="another order"):
        check_table(swapped, tuple(caextend.STEP_TITLES))


def test_no_executor_finds_a_step_by_its_name() -> None:
    """Every executor dispatches through a table: no ``"step_" + sid`` and no getattr of a step method."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"""["']step_["']\s*\+|getattr\([^)]*["']step_""", line):
                found.append(f"{path.relative_to(SRC)}:{n}: {line.strip()}")
    assert not found, found
