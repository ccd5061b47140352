"""``ca extend --apply --all-nodes`` (run/caextend.py) on a live fake host, with a dict-backed fake API and other
nodes reached through fake SSH (each a fake host over its own temporary root): every step, the cluster objects that
must hold the extended CAs, the other nodes' kubelet.conf and clientCAFile rewritten and their kubelets
restarted, an unreachable node reported and done on the rerun, and the refusals. Issue 11's caextend coverage."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from kuberevive.core import pki
from kuberevive.core.restarts import RESTARTED_AT
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
DAEMONSET = "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy"
PODS = "/api/v1/namespaces/kube-system/pods"


class ProxyFleet(Fleet):
    """The fake API with kubeadm's kube-proxy DaemonSet, a pod on each node, and its controller: once the pod
    template changes (``kubectl rollout restart``), every pod is replaced by a new one (a new uid, created now) and
    the status says the rollout is done."""

    def __init__(self, node: NodeRoot, nodes: list[str], clock: FakeClock) -> None:
        super().__init__(node, nodes, clock)
        self.nodes = nodes
        self.objects[DAEMONSET] = {
            "kind": "DaemonSet",
            "metadata": {"name": "kube-proxy", "namespace": "kube-system", "generation": 1},
            "spec": {"updateStrategy": {"type": "RollingUpdate"}, "template": {"metadata": {}}},
        }
        self.template: Any = {}
        self._pods("2020-01-01T00:00:00Z")

    def _pods(self, created: str) -> None:
        for key in [k for k in self.objects if k.startswith(f"{PODS}/kube-proxy-")]:
            del self.objects[key]
        for n in self.nodes:
            self.objects[f"{PODS}/kube-proxy-{n}"] = {
                "kind": "Pod",
                "metadata": {
                    "name": f"kube-proxy-{n}",
                    "namespace": "kube-system",
                    "uid": f"{n}-{created}",
                    "creationTimestamp": created,
                    "labels": {"k8s-app": "kube-proxy"},
                    "ownerReferences": [{"kind": "DaemonSet", "name": "kube-proxy", "controller": True}],
                },
                "spec": {"nodeName": n, "serviceAccountName": "kube-proxy"},
                "status": {"phase": "Running"},
            }

    def _controllers(self) -> None:
        super()._controllers()
        ds = self.objects.get(DAEMONSET)
        if ds is None:
            return
        template = ds["spec"]["template"]["metadata"]
        if template != self.template:
            self.template = dict(template)
            ds["metadata"]["generation"] += 1
            self._pods(self.clock.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"))
        n = len(self.nodes)
        ds["status"] = {
            "observedGeneration": ds["metadata"]["generation"],
            "desiredNumberScheduled": n,
            "updatedNumberScheduled": n,
            "numberAvailable": n,
        }

    def proxies(self) -> dict[str, str]:
        """Node -> the uid of its kube-proxy pod."""
        return {o["spec"]["nodeName"]: o["metadata"]["uid"] for k, o in self.objects.items() if "/kube-proxy-" in k}


def _ca_data(kubeconfig: bytes) -> bytes:
    return base64.b64decode(yaml.safe_load(kubeconfig)["clusters"][0]["cluster"]["certificate-authority-data"])


class Extension:
    """A control plane whose CAs are extended, its cluster, and two workers reached "over SSH"."""

    def __init__(self, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = control_plane(base)
        self.host = FakeHost(self.root)
        self.clock = FakeClock()
        self.api = ProxyFleet(self.root, [NODE, *WORKERS], self.clock)
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
    assert result.applied == [
        "files",
        "restart-control-plane",
        "api-ready",
        "other-nodes",
        "node-ready",
        "restart-kube-proxy",
    ]
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
    assert result.resumed and result.applied == ["other-nodes", "node-ready", "restart-kube-proxy"]
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
    assert "other-nodes" not in result.applied and result.applied[-2:] == ["node-ready", "restart-kube-proxy"]
    assert all(w.root.read_existing(paths.CA_CRT) == ext.ca for w in ext.workers.values())


def test_the_plan_lists_every_step_with_all_nodes_and_changes_nothing(ext: Extension) -> None:
    before = ext.root.read_existing(PKI / "ca.crt")
    plan = caextend.plan(str(ext.root.prefix), str(CONFIG), DAYS, [], True, True, live=True)
    assert plan.steps == caextend.steps_for(True, True) and plan.all_nodes  # no CA expired: no peer-repair
    assert plan.restarts[-2:] == ["kubelet", caextend.KUBE_PROXY_RESTART] and "kube-apiserver" in plan.restarts
    assert ext.root.read_existing(PKI / "ca.crt") == before and ext.host.commands == []
    assert CaExtendJournal.load(ext.root, caextend.JOURNAL) is None
    assert PurePosixPath(caextend.JOURNAL).name == "journal.json"


def _expired(ext: Extension) -> None:
    """The fake clock past the CA's NotAfter: the extension is a repair."""
    ext.clock.now = pki.load_certificate(ext.ca, "ca").not_valid_after_utc.timestamp() + 60


def test_a_repair_restarts_kube_proxy_last_through_its_daemonset(ext: Extension) -> None:
    """kube-proxy read the expired CA from its ca.crt at start and keeps it: after a repair (the CA had expired) its
    DaemonSet is restarted through the API (``kubectl rollout restart``, recover's rollout code), last: once every
    node holds the extended CA and kube-root-ca.crt has it, so its new pods read it."""
    before = ext.api.proxies()
    _expired(ext)
    result = ext.apply(ext.options)
    assert result.applied[-2:] == ["node-ready", "restart-kube-proxy"], result.applied
    assert result.restarts[-1] == caextend.KUBE_PROXY_RESTART
    after = ext.api.proxies()
    assert sorted(after) == sorted(before) and all(after[n] != before[n] for n in before)  # every pod new
    template = ext.api.objects[DAEMONSET]["spec"]["template"]["metadata"]
    assert RESTARTED_AT in template["annotations"]
    requests = ext.api.requests
    patched = requests.index(f"PATCH {DAEMONSET}")
    root_ca = max(i for i, r in enumerate(requests) if not r.startswith("GET") and "kube-root-ca.crt" in r)
    assert root_ca < patched  # the new pods read the extended CA
    assert all(w.restarts == ["kubelet"] for w in ext.workers.values())  # every node holds it before
    assert any("rollout-restart DaemonSet kube-system/kube-proxy" in m and m.startswith("ok") for m in result.messages)
    old = pki.load_certificate(ext.ca, "ca").not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert any(f"holds the one that expired at {old}" in m for m in result.messages), result.messages
    assert any(m.startswith("not restarted by ca extend") and "restart them now" in m for m in result.messages)


def _old_not_after(ca: bytes) -> str:
    return pki.load_certificate(ca, "ca").not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("all_nodes", [True, False])
def test_an_extension_before_expiry_restarts_kube_proxy_and_names_the_old_not_after(
    ext: Extension, all_nodes: bool
) -> None:
    """Before expiry kube-proxy works, but it read the CA once at start (its projected ca.crt) and would fail at the
    old CA's NotAfter: its DaemonSet is restarted last, after kube-root-ca.crt holds the extended CA, with or without
    --all-nodes (the new pods read the CA from the ConfigMap; every kubelet still reaches the API server before
    expiry). The plan and the result say why, with the old NotAfter, and name the clients that are not restarted."""
    old = _old_not_after(ext.ca)
    plan = caextend.plan(str(ext.root.prefix), str(CONFIG), DAYS, [], True, all_nodes, live=True)
    assert plan.steps[-1] == "restart-kube-proxy" and plan.restarts[-1] == caextend.KUBE_PROXY_RESTART
    before = ext.api.proxies()
    result = ext.apply(ext.options if all_nodes else None)
    assert result.applied[-2:] == ["node-ready", "restart-kube-proxy"], result.applied
    after = ext.api.proxies()
    assert sorted(after) == sorted(before) and all(after[n] != before[n] for n in before)  # every pod new
    requests = ext.api.requests
    root_ca = max(i for i, r in enumerate(requests) if not r.startswith("GET") and "kube-root-ca.crt" in r)
    assert root_ca < requests.index(f"PATCH {DAEMONSET}")  # the new pods read the extended CA
    new_ca = ext.root.read_existing(PKI / "ca.crt")
    assert ext.configmap("kube-system", "kube-root-ca.crt")["ca.crt"].encode() == new_ca
    for doc in (plan, result):
        why = [m for m in doc.messages if m.startswith("kube-proxy is restarted last")]
        assert why and f"would fail to reach the API server at the old NotAfter {old}" in why[0], doc.messages
        others = [m for m in doc.messages if m.startswith("not restarted by ca extend")]
        assert len(others) == 1 and f"fail after {old}: restart them before" in others[0], doc.messages
        assert all(c in others[0] for c in ("CoreDNS", "Calico", "Cilium", "Flannel", "in-cluster configuration"))
    assert any("rollout-restart DaemonSet kube-system/kube-proxy" in m and m.startswith("ok") for m in result.messages)


def test_kube_root_ca_holding_the_old_ca_again_is_fixed_before_kube_proxy_is_restarted(ext: Extension) -> None:
    """On HA a controller-manager not restarted yet may publish the old CA into kube-root-ca.crt again: right before
    the rollout the step puts the extended CA back, so the new pods never read the old one."""
    with pytest.raises(Killed):  # killed after node-ready: restart-kube-proxy is the next step
        ext.apply(ext.options, after_step=caextend.steps_for(True, True).index("node-ready") + 1)
    path = "/api/v1/namespaces/kube-system/configmaps/kube-root-ca.crt"
    ext.api.objects[path]["data"]["ca.crt"] = ext.ca.decode()
    result = ext.apply(ext.options)
    assert result.resumed and result.applied == ["restart-kube-proxy"]
    new_ca = ext.root.read_existing(PKI / "ca.crt")
    assert ext.configmap("kube-system", "kube-root-ca.crt")["ca.crt"].encode() == new_ca
    requests = ext.api.requests
    fixed = max(i for i, r in enumerate(requests) if not r.startswith("GET") and r.endswith("kube-root-ca.crt"))
    assert fixed < requests.index(f"PATCH {DAEMONSET}")


def test_without_the_cluster_ca_kube_proxy_is_not_restarted(ext: Extension) -> None:
    """Pods read only the cluster CA (``ca``, kube-root-ca.crt): extending the front-proxy or etcd CA restarts no
    pod."""
    before = ext.api.proxies()
    fx = fake_effects(ext.api, ext.clock, None)
    result = caextend.apply(
        str(ext.root.prefix),
        str(CONFIG),
        DAYS,
        ["front-proxy-ca", "etcd-ca"],
        False,
        ext.options,
        ext.progress.append,
        {},
        timedelta(days=3650),
        live=True,
        host=ext.host,
        effects=fx,
    )
    assert sorted(c["name"] for c in result.cas) == ["etcd-ca", "front-proxy-ca"]
    assert "restart-kube-proxy" not in result.applied and ext.api.proxies() == before
    assert caextend.KUBE_PROXY_RESTART not in result.restarts
    assert not [m for m in result.messages if "kube-proxy" in m or "not restarted by" in m], result.messages


def test_a_repair_without_all_nodes_restarts_no_pod_and_says_what_to_do(ext: Extension) -> None:
    """Without --all-nodes the other nodes' kubelets still hold the expired CA (they could not start a new pod): the
    result says how to restart kube-proxy once they have it."""
    before = ext.api.proxies()
    _expired(ext)
    result = ext.apply(None)
    assert "restart-kube-proxy" not in result.applied and ext.api.proxies() == before
    assert caextend.KUBE_PROXY_HINT in result.messages


def test_without_validity_the_stored_cluster_configurations_ca_validity_is_taken(
    ext: Extension, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --validity (and without --config) the extended CAs get the stored ClusterConfiguration's
    caCertificateValidityPeriod (kube-system/kubeadm-config, read through admin.conf), as certs renew takes its
    leaves' certificateValidityPeriod; kubeadm's default (ten years) when it cannot be read (the API down)."""

    class StoredApi:
        def get(self, path: str, **query: Any) -> Any:
            assert path.endswith("/kube-system/configmaps/kubeadm-config")
            stored = {"kind": "ClusterConfiguration", "caCertificateValidityPeriod": "48h0m0s"}
            return {"data": {"ClusterConfiguration": yaml.safe_dump(stored)}}

    def extended_for(api: Any) -> tuple[timedelta, list[str]]:
        monkeypatch.setattr(renew, "admin_client", lambda _node, timeout=10: api())
        before = datetime.now(UTC).replace(microsecond=0)  # NotAfter is in whole seconds (the plan's may be 1 s on)
        plan = caextend.plan(str(ext.root.prefix), None, DAYS, ["ca"], False, False, live=False)
        (ca,) = plan.cas
        new_not_after = datetime.strptime(ca["new_not_after"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        return new_not_after - before, plan.messages

    took, messages = extended_for(StoredApi)
    assert timedelta(hours=48) - timedelta(seconds=5) < took <= timedelta(hours=48, seconds=1), took
    assert any("48h" in m and "stored ClusterConfiguration" in m for m in messages), messages

    def down() -> Any:
        raise PlanError("the API server does not answer", "")

    took, messages = extended_for(down)
    assert timedelta(days=3650) - timedelta(seconds=5) < took <= timedelta(days=3650, seconds=1), took
    assert any("kubeadm's default" in m for m in messages), messages
