"""The seed disaster and the zero-impact recovery on a lab of an older minor, v1.33.13, beside the default lab's
v1.37 (issue 13: every lab test runs on the default version; these two also on v1.33, where kubeadm writes no
``instance-config.yaml``, runs etcd 3.5 and ``ControlPlaneKubeletLocalMode`` is still beta).

The two tests are the very functions of ``test_zero_impact_lab.py`` and ``test_recover_lab.py``, collected again
here with this module's fixtures: a v1.33 lab of its own on the HA lab's instance (one module at a time uses it in
a test process), brought up once. The zero-impact recovery runs first; the seed disaster then runs on the cluster
it recovered (nothing to recover, then the disaster), so the lab is not rebuilt between them.
``KUBEREVIVE_HA_LAB_INSTANCE=N python -m pytest -n0 tests/lab/test_previous_minor_lab.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kuberevive.lab import Lab
from tests.lab import test_recover_lab, test_zero_impact_lab
from tests.lab.conftest import OnNode, ha_lab_instance, module_lab, node_runner

pytestmark = pytest.mark.lab

PREVIOUS = "1.33.13"

# collected in this order: the zero-impact recovery on the fresh lab, then the seed disaster
test_recover_with_new_ca_has_zero_impact = test_zero_impact_lab.test_recover_with_new_ca_has_zero_impact
test_recover_seed_disaster_then_join_a_new_node = test_recover_lab.test_recover_seed_disaster_then_join_a_new_node


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    for the_lab in module_lab(control_planes=1, workers=1, kubernetes_version=PREVIOUS):
        # the imported tests find the lab's SSH key and known_hosts through the instance in the environment
        # (tests/lab/test_recover_lab.ssh_args): this module's lab's, while its tests run
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("KUBEREVIVE_LAB_INSTANCE", str(ha_lab_instance()))
            yield the_lab


@pytest.fixture(scope="module")
def on_node(lab: Lab) -> OnNode:
    assert lab.cfg.k8s_version == PREVIOUS
    return node_runner(lab)


@pytest.fixture(scope="module")
def fresh_lab(lab: Lab) -> Lab:
    """The v1.33 lab as the zero-impact test left it: recovered, with every node Ready (it asserts so)."""
    return lab


@pytest.fixture
def rebuilt_lab(lab: Lab) -> Lab:
    """Not rebuilt afterwards: the seed disaster test after it starts from the cluster it recovered."""
    return lab
