"""``ca extend --apply --all-nodes`` (run/caextend.py) on a live fake host, with a dict-backed fake API and other
nodes reached through fake SSH (each a fake host over its own temporary root): every step, the cluster objects that
must hold the extended CAs, the other nodes' kubelet.conf and clientCAFile rewritten and their kubelets
restarted, an unreachable node reported and done on the rerun, and the refusals. Issue 11's caextend coverage."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from kuberevive.core import pki
from kuberevive.errors import PlanError, TransportError
from kuberevive.io.noderoot import NodeRoot
from kuberevive.io.transport import Deadline, LocalTransport, Transport
from kuberevive.model import paths
from kuberevive.model.inventory import Inventory, InventoryNode
from kuberevive.model.recover import RetrustOptions
from kuberevive.run import caextend, renew
from kuberevive.run.journal import CaExtendJournal
from tests.unit.test_diagnose import PKI
from tests.unit.test_executor import FakeClock, FakeHost, Killed
from tests.unit.test_renew_executor import CONFIG, DAYS, NODE, control_plane, fake_effects
from tests.unit.test_retrust_in_place import KUBELET_YAML, Fleet, Worker

WORKERS = ("worker1", "worker2")
NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _ca_data(kubeconfig: bytes) -> bytes:
    return base64.b64decode(yaml.safe_load(kubeconfig)["clusters"][0]["cluster"]["certificate-authority-data"])


class Extension:
    """A control plane whose CAs are extended, its cluster, and two workers reached "over SSH"."""

    def __init__(self, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = control_plane(base)
        self.host = FakeHost(self.root)
        self.clock = FakeClock()
        self.api = Fleet(self.root, [NODE, *WORKERS], self.clock)
        self.ca = self.root.read_existing(PKI / "ca.crt")
        self._cluster_objects()
        self.workers = {w: Worker(self._worker_root(base, w), w) for w in WORKERS}
        self.down: set[str] = set()
        self.progress: list[str] = []
        nodes = [InventoryNode(n, f"192.0.2.{i}") for i, n in enumerate((NODE, *WORKERS), start=1)]
        self.options = RetrustOptions(inventory=Inventory(tuple(nodes)), node_timeout=5)
        monkeypatch.setattr(caextend, "connect", self._connect)
        # the executor's default remote host (run/renew.RenewExecutor.remote) is an SshHost over the transport
        monkeypatch.setattr(renew, "SshHost", lambda _t, name: self.workers[name])

    def _cluster_objects(self) -> None:
        """What kubeadm and the controller-manager made, holding the CAs before the extension."""
        front_proxy = self.root.read_existing(PKI / "front-proxy-ca.crt").decode()
        info = yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "",
                        "cluster": {
                            "server": "https://172.16.5.5:6443",
                            "certificate-authority-data": base64.b64encode(self.ca).decode(),
                        },
                    }
                ],
            }
        )
        objects = {
            ("kube-public", "cluster-info"): {"kubeconfig": info},
            ("kube-system", "extension-apiserver-authentication"): {
                "client-ca-file": self.ca.decode(),
                "requestheader-client-ca-file": front_proxy,
                "requestheader-allowed-names": '["front-proxy-client"]',
            },
        }
        objects |= {(ns, "kube-root-ca.crt"): {"ca.crt": self.ca.decode()} for ns in NAMESPACES}
        for (ns, name), data in objects.items():
            self.api.create(
                f"/api/v1/namespaces/{ns}/configmaps",
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data},
            )

    def _worker_root(self, base: Path, name: str) -> NodeRoot:
        (base / name).mkdir()
        root = NodeRoot(base / name)
        root.atomic_write(paths.KUBELET_CONFIG, KUBELET_YAML, 0o644)
        root.atomic_write(paths.CA_CRT, self.ca, 0o644)
        root.atomic_write(paths.KUBELET_CONF, self.root.read_existing(paths.KUBELET_CONF), 0o600)
        return root

    def _connect(self, _opts: RetrustOptions) -> Any:
        def to_node(node: InventoryNode, deadline: Deadline) -> Transport:
            if node.name in self.down:
                raise TransportError(f"ssh: connect to host {node.address} port 22: No route to host", "")
            return LocalTransport(node.name, deadline=deadline)  # never used: the fake host does the work

        return to_node

    def apply(self, options: RetrustOptions | None, after_step: int | None = None) -> caextend.ExtendResult:
        fx = fake_effects(self.api, self.clock, after_step)
        return caextend.apply(
            str(self.root.prefix),
            str(CONFIG),
            DAYS,
            [],
            True,
            options,
            self.progress.append,
            {},
            timedelta(days=3650),
            live=True,
            host=self.host,
            effects=fx,
        )

    def configmap(self, ns: str, name: str) -> dict[str, str]:
        return dict(self.api.objects[f"/api/v1/namespaces/{ns}/configmaps/{name}"]["data"])


@pytest.fixture
def ext(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Extension]:
    yield Extension(tmp_path, monkeypatch)


def test_every_step_runs_and_the_cluster_and_the_other_nodes_hold_the_extended_ca(ext: Extension) -> None:
    result = ext.apply(ext.options)
    assert result.applied == caextend.steps_for(True, True) and not result.resumed
    assert result.applied == ["files", "restart-control-plane", "api-ready", "other-nodes", "node-ready"]
    new_ca = ext.root.read_existing(PKI / "ca.crt")
    old, new = pki.load_certificate(ext.ca, "old"), pki.load_certificate(new_ca, "new")
    assert new.not_valid_after_utc > old.not_valid_after_utc and new.public_key() == old.public_key()
    # the control-plane containers that read a CA at start were stopped, the kubelet restarted
    stops = [c for c in ext.host.commands if c.startswith("crictl stop ")]
    assert stops == ["crictl stop kube-apiserver (grace 5 s)"] + [f"crictl stop {c}" for c in renew.STOP_ORDER[1:]]
    assert "systemctl restart kubelet" in ext.host.commands
    # the cluster objects hold the extended CAs
    assert _ca_data(ext.configmap("kube-public", "cluster-info")["kubeconfig"].encode()) == new_ca
    for ns in NAMESPACES:
        assert ext.configmap(ns, "kube-root-ca.crt")["ca.crt"].encode() == new_ca, ns
    auth = ext.configmap("kube-system", "extension-apiserver-authentication")
    assert auth["client-ca-file"].encode() == new_ca
    assert auth["requestheader-client-ca-file"].encode() == ext.root.read_existing(PKI / "front-proxy-ca.crt")
    # every other node: kubelet.conf and clientCAFile with the extended CA, old ones moved aside, kubelet restarted
    for name, w in ext.workers.items():
        assert w.root.read_existing(paths.CA_CRT) == new_ca, name
        assert _ca_data(w.root.read_existing(paths.KUBELET_CONF)) == new_ca, name
        assert w.restarts == ["kubelet"], name
        aside = [p for p in w.root.walk(paths.BACKUP_DIR) if p.name in ("ca.crt", "kubelet.conf")]
        assert {p.name for p in aside} == {"ca.crt", "kubelet.conf"}, name
        assert w.root.lstat(paths.KUBELET_CONF).st_mode & 0o777 == 0o600  # type: ignore[union-attr]
    assert f"{WORKERS[0]}: kubelet restarted" in result.messages
    journal = CaExtendJournal.load(ext.root, caextend.JOURNAL)
    assert journal is not None and journal.status == "done" and sorted(journal.nodes_done) == list(WORKERS)
    assert any("hold the CAs" in line for line in ext.progress)


def test_an_unreachable_node_is_reported_and_the_rerun_does_only_that_node(ext: Extension) -> None:
    ext.down = {"worker2"}
    with pytest.raises(PlanError, match=r"did not reach every node: worker2: .*No route to host") as err:
        ext.apply(ext.options)
    assert "it resumes" in err.value.hint
    journal = CaExtendJournal.load(ext.root, caextend.JOURNAL)
    assert journal is not None and journal.status == "running" and journal.nodes_done == ["worker1"]
    new_ca = ext.root.read_existing(PKI / "ca.crt")
    assert ext.workers["worker2"].root.read_existing(paths.CA_CRT) == ext.ca  # untouched
    ext.down = set()
    result = ext.apply(ext.options)
    assert result.resumed and result.applied == ["other-nodes", "node-ready"]
    assert ext.workers["worker1"].restarts == ["kubelet"]  # not again
    assert ext.workers["worker2"].restarts == ["kubelet"]
    assert ext.workers["worker2"].root.read_existing(paths.CA_CRT) == new_ca
    assert ext.root.read_existing(PKI / "ca.crt") == new_ca  # the same extended CA, made once


def test_a_node_that_already_holds_the_extended_ca_is_left_alone(ext: Extension) -> None:
    with pytest.raises(Killed):  # killed after api-ready: other-nodes is the next step
        ext.apply(ext.options, after_step=caextend.steps_for(True, True).index("api-ready") + 1)
    new_ca = ext.root.read_existing(PKI / "ca.crt")
    w = ext.workers["worker1"]
    conf = w.root.read_existing(paths.KUBELET_CONF)
    doc = yaml.safe_load(conf)
    doc["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(new_ca).decode()
    w.root.atomic_write(paths.KUBELET_CONF, yaml.safe_dump(doc).encode(), 0o600)
    w.root.atomic_write(paths.CA_CRT, new_ca, 0o644)
    result = ext.apply(ext.options)
    assert result.resumed and w.restarts == [] and ext.workers["worker2"].restarts == ["kubelet"]
    assert not any(m.startswith("worker1:") for m in result.messages)


def test_a_resumed_all_nodes_extension_without_the_ssh_options_is_refused(ext: Extension) -> None:
    with pytest.raises(Killed):
        ext.apply(ext.options, after_step=1)
    with pytest.raises(PlanError, match="started with --all-nodes") as err:
        ext.apply(None)
    assert "--ssh-key" in err.value.hint
    assert all(w.restarts == [] for w in ext.workers.values())


def test_without_all_nodes_the_other_nodes_are_not_touched(ext: Extension) -> None:
    result = ext.apply(None)
    assert "other-nodes" not in result.applied and result.applied[-1] == "node-ready"
    assert all(w.root.read_existing(paths.CA_CRT) == ext.ca for w in ext.workers.values())


def test_the_plan_lists_every_step_with_all_nodes_and_changes_nothing(ext: Extension) -> None:
    before = ext.root.read_existing(PKI / "ca.crt")
    plan = caextend.plan(str(ext.root.prefix), str(CONFIG), DAYS, [], True, True, live=True)
    assert plan.steps == caextend.steps_for(True, True) and plan.all_nodes  # no CA expired: no peer-repair
    assert plan.restarts[-1] == "kubelet" and "kube-apiserver" in plan.restarts
    assert ext.root.read_existing(PKI / "ca.crt") == before and ext.host.commands == []
    assert CaExtendJournal.load(ext.root, caextend.JOURNAL) is None
    assert PurePosixPath(caextend.JOURNAL).name == "journal.json"
