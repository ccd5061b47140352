"""A seed recovery whose configuration is read from etcd's data files before etcd runs (``early_config``): every file
is written first and one kubelet restart starts etcd and the API server together; read-config then checks what the
live etcd serves. The fakes of :mod:`tests.unit.test_executor`; the data files' reading itself is tested against
real etcd in ``tests/integration/test_etcd_stored_values.py``, the whole recovery on the lab."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from kuberevive.core import recover as core
from kuberevive.core.etcdsafety import Member
from kuberevive.core.k8sproto import encode_configmap
from kuberevive.errors import PlanError
from kuberevive.io import etcdprobe
from kuberevive.io.host import Container
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model import paths
from kuberevive.run.context import Faults
from kuberevive.run.journal import JOURNAL
from kuberevive.run.recover import plan_recovery
from tests.unit.test_executor import (
    ADDRESS,
    KCM,
    START,
    Cluster,
    FakeHost,
    Killed,
    _kill,
    _progress_lines,
    assert_recovered,
)
from tests.unit.test_recover import STORED

MANIFESTS = tuple(str(paths.MANIFESTS_DIR / f"{c}.yaml") for c in ("etcd", "kube-apiserver"))


class StoppedEtcdHost(FakeHost):
    """No etcd runs until the kubelet is restarted; a kube-apiserver container from before the loss runs until it
    is stopped. Records which manifests were on the node at each kubelet restart."""

    def __init__(self, root: NodeRoot) -> None:
        super().__init__(root)
        self.restarted = False
        self.old_apiserver = True
        self.manifests_at_restart: list[tuple[str, ...]] = []

    def restart_unit(self, unit: str) -> None:
        super().restart_unit(unit)
        self.restarted = True
        self.manifests_at_restart.append(tuple(m for m in MANIFESTS if self.root.exists(m)))

    def containers(self, name: str | None = None, cri_socket: str | None = None) -> list[Container]:
        self.commands.append(f"crictl ps {name}")
        if name == "etcd" and not self.restarted:
            return []
        if name == "kube-apiserver" and not self.restarted:
            return [Container("old", name, "CONTAINER_RUNNING", START - 600)] if self.old_apiserver else []
        return [Container(f"id-{name}", name or "", "CONTAINER_RUNNING", START + 60)]

    def stop_containers(self, name: str, cri_socket: str | None = None, grace: int = 30) -> int:
        if name == "kube-apiserver" and not self.restarted:
            self.old_apiserver = False
        return super().stop_containers(name, cri_socket, grace)


def early_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file_yaml: str = STORED) -> Cluster:
    """A node whose etcd data files hold ``file_yaml`` as the ClusterConfiguration (the live etcd: STORED)."""
    c = Cluster(tmp_path)
    c.host = StoppedEtcdHost(c.root)
    in_file = dict(c.etcd.data)
    in_file[core.KUBEADM_CONFIG_KEY] = encode_configmap(
        "kubeadm-config", "kube-system", {"ClusterConfiguration": file_yaml}
    )

    def values(root: NodeRoot, data: PurePosixPath, keys: Sequence[str], *a: Any) -> Mapping[str, bytes]:
        assert data == PurePosixPath("/var/lib/etcd")
        return {k: in_file[k] for k in keys if k in in_file}

    def members(root: NodeRoot, db: PurePosixPath) -> tuple[Member, ...]:
        return (Member("1", "cp1", (f"https://{ADDRESS}:2380",)),)

    monkeypatch.setattr(etcdprobe, "stored_values", values)
    monkeypatch.setattr(etcdprobe, "stored_members", members)
    return c


def test_every_file_is_written_before_one_kubelet_restart_starts_etcd_and_the_api_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = early_cluster(tmp_path, monkeypatch)
    result = c.recover()
    assert_recovered(c, result)
    assert [s.id for s in result.plan.steps] == list(core.EARLY_STEP_IDS)
    assert result.applied == list(core.EARLY_STEP_IDS)
    host = c.host
    assert isinstance(host, StoppedEtcdHost)
    # one restart, with etcd's and the API server's manifests both there (the old code: two, the first with etcd's
    # manifest only)
    assert host.manifests_at_restart == [MANIFESTS]
    restart = host.commands.index("systemctl restart kubelet")
    assert host.commands.index("crictl stop kube-apiserver (grace 0 s)") < restart  # the pre-loss one, first
    j = c.journal()
    assert j.early_config and j.config is not None and j.config.cluster == STORED
    assert "kubelet-start" not in j.artifact_records  # nothing provisional
    assert "      etcd serves the configuration read from its data file: nothing to change" in c.progress


def test_the_dry_run_plan_says_the_configuration_came_from_the_data_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = early_cluster(tmp_path, monkeypatch)
    plan = plan_recovery(c.host, {}, None, environ={}, effects=c.effects())
    assert [s.id for s in plan.steps] == list(core.EARLY_STEP_IDS)
    assert any("read from etcd's data file" in n for n in plan.notes)
    titles = {s.id: s.title for s in plan.steps}
    assert titles["read-config"] == "check the configuration read from etcd's data file against etcd"
    assert not c.root.exists(JOURNAL) and c.files() == {}  # planning writes nothing


def test_without_a_sure_read_of_the_data_files_the_run_reads_etcd_first_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = early_cluster(tmp_path, monkeypatch)
    monkeypatch.setattr(etcdprobe, "stored_values", lambda *a, **k: None)  # unreadable, torn, or a later entry
    result = c.recover()
    assert_recovered(c, result)
    assert result.applied == list(core.SEED_STEP_IDS)
    assert not c.journal().early_config


def test_no_early_read_while_etcd_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = early_cluster(tmp_path, monkeypatch)
    c.host = FakeHost(c.root)  # every container runs, etcd's too: its files are being written
    result = c.recover()
    assert result.applied == list(core.SEED_STEP_IDS)


@pytest.mark.parametrize("index", range(1, len(core.EARLY_STEP_IDS) + 1), ids=list(core.EARLY_STEP_IDS))
def test_an_early_recovery_killed_after_each_step_resumes_to_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: int
) -> None:
    c = early_cluster(tmp_path, monkeypatch)
    with pytest.raises(Killed):
        c.recover(Faults(after_step=index, kill=_kill))
    written = c.files()
    # a resumed run does not read the data files again (etcd may run and write them now)
    monkeypatch.setattr(etcdprobe, "stored_values", lambda *a, **k: pytest.fail("read again"))
    result = c.recover()
    assert result.applied == list(core.EARLY_STEP_IDS[index:])
    assert [line.endswith(": done before") for line in _progress_lines(c)][-len(core.EARLY_STEP_IDS) :] == [
        i < index for i in range(len(core.EARLY_STEP_IDS))
    ]
    assert_recovered(c, result)
    final = c.files()
    assert {p for p, v in written.items() if final.get(p) != v} <= {str(KCM)}
    host = c.host
    assert isinstance(host, StoppedEtcdHost)
    assert host.commands.count("systemctl restart kubelet") == 1  # never again once it has its credentials


def test_an_etcd_that_serves_another_configuration_stops_the_api_server_and_the_files_are_moved_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = early_cluster(tmp_path, monkeypatch, file_yaml=STORED.replace("10.96.0.0/12", "10.97.0.0/16"))
    assert "10.96.0.0/12" in STORED  # so the file's service subnet differs from etcd's
    with pytest.raises(PlanError, match=r"etcd serves another configuration .* the API server was stopped"):
        c.recover()
    host = c.host
    assert isinstance(host, StoppedEtcdHost)
    read_at = host.commands.index(
        "crictl stop kube-apiserver (grace 0 s)", host.commands.index("systemctl restart kubelet")
    )
    assert read_at > 0  # stopped after the restart that started it
    assert c.files() == {}  # the API server's manifest and every other file this run wrote: moved aside
    assert not c.root.exists(JOURNAL)
    # the next run reads the running etcd (its data files are etcd's now): the stored configuration
    result = c.recover()
    assert_recovered(c, result)
    assert result.applied == list(core.SEED_STEP_IDS)
    served = [line for line in c.progress if "service subnet" in line]
    assert served and "service subnet 10.96.0.0/12" in served[-1]


def test_etcds_files_are_read_once_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The member scan of etcd's db and WAL files (0.1-0.7 s: every WAL file is 64 MB) and the early read of its
    values: once per run, not once for the plan before the lock and again under it."""
    from kuberevive.run import recover as run_recover

    c = early_cluster(tmp_path, monkeypatch)
    scans: list[str] = []
    real_peers, real_values = run_recover._etcd_peers, etcdprobe.stored_values

    def peers(*a: Any) -> Any:
        scans.append("members")
        return real_peers(*a)

    def values(*a: Any, **k: Any) -> Any:
        scans.append("values")
        return real_values(*a, **k)

    monkeypatch.setattr(run_recover, "_etcd_peers", peers)
    monkeypatch.setattr(etcdprobe, "stored_values", values)
    assert_recovered(c, c.recover())
    assert scans == ["members", "values"]


def test_a_fresh_run_plans_once_and_again_only_when_the_journal_changed_while_it_waited_for_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan made before the lock is used under it (planning was about half a second of CPU before the first
    step), unless another run wrote the journal meanwhile: then that journal is what counts."""
    import contextlib
    from collections.abc import Iterator

    from kuberevive.run import recover as run_recover

    c = early_cluster(tmp_path, monkeypatch)
    calls: list[int] = []
    real_prepare = run_recover._prepare

    def prepare(*a: Any, **k: Any) -> Any:
        calls.append(1)
        return real_prepare(*a, **k)

    monkeypatch.setattr(run_recover, "_prepare", prepare)
    assert_recovered(c, c.recover())
    assert len(calls) == 1

    d = early_cluster(tmp_path / "other", monkeypatch)
    from kuberevive.run.journal import recovery_lock as real_lock

    @contextlib.contextmanager
    def lock_taken_after_another_run(host: Any) -> Iterator[None]:
        with real_lock(host):
            d.root.atomic_write(JOURNAL, b"written by another run\n", 0o600)
            yield

    monkeypatch.setattr(run_recover, "recovery_lock", lock_taken_after_another_run)
    calls.clear()
    with pytest.raises(PlanError, match="is not valid JSON"):
        d.recover()
    assert len(calls) == 2
    assert not d.root.exists(paths.ETCD_MANIFEST)  # nothing written from the stale plan


def test_the_stored_configuration_is_parsed_once_not_at_every_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every step asks for the configuration (ctx.final_cfg()); parsing the YAML again each time cost ~20 ms a call,
    17 calls a run, most before the API server starts."""
    c = early_cluster(tmp_path, monkeypatch)
    assert_recovered(c, c.recover())
    j = c.journal()
    assert j.identity is not None and j.config is not None
    first = core.final_config(j.identity, j.config.cluster, j.config.kubelet)
    assert core.final_config(j.identity, j.config.cluster, j.config.kubelet) is first


def test_the_keys_made_ahead_are_of_the_stored_configurations_algorithm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read from etcd's data file, the stored configuration (here ECDSA-P256) decides the keys made ahead; the
    bootstrap configuration's RSA keys would all be dropped and every key made on demand."""
    from kuberevive.core import pki
    from kuberevive.model.config import EncryptionAlgorithm

    c = early_cluster(tmp_path, monkeypatch)
    asked: list[EncryptionAlgorithm] = []
    dropped: list[int] = []
    real_drop = pki.drop_spare_keys

    def drop() -> int:
        dropped.append(len(asked))
        return real_drop()

    monkeypatch.setattr(pki, "drop_spare_keys", drop)

    def background(work: Callable[[], None]) -> None:
        if isinstance(work, functools.partial) and work.func is pki.make_reserved_keys:  # not the kubelet's stop
            asked.append(work.args[0])

    c.background = background
    assert_recovered(c, c.recover())
    # kubeadm's default from the start, while the run plans; dropped once the plan named ECDSA, which is made then
    rsa, ecdsa = EncryptionAlgorithm.RSA_2048, EncryptionAlgorithm.ECDSA_P256
    assert asked == [rsa, rsa, ecdsa, ecdsa] and dropped[0] == 2
    assert real_drop() == 0


def test_components_alone_counts_etcd_and_the_api_server_starting_together_once() -> None:
    from kuberevive.run.recover import result_timings

    t = {"started": 0.0, "etcd_manifest_written": 1.0, "control_plane_manifests_written": 1.1, "etcd_ready": 3.0}
    early = result_timings({**t, "api_ready": 5.5}, 40.0)
    assert early["etcd_start_s"] == 2.0 and early["apiserver_start_s"] == 4.4
    assert early["components_alone_s"] == 4.5  # from the first manifest to API ready (the sum said 6.4)
    after = {"started": 0.0, "etcd_manifest_written": 1.0, "etcd_ready": 3.0, "control_plane_manifests_written": 4.0}
    assert result_timings({**after, "api_ready": 6.5}, 40.0)["components_alone_s"] == 4.5  # 2.0 + 2.5, one after other


def _run_the_kubelet_stop_only(c: Cluster) -> None:
    """Background work done at once, keys made ahead left out (made on demand): the kubelet's stop ahead."""

    def background(work: Callable[[], None]) -> None:
        if not isinstance(work, functools.partial):
            work()

    c.background = background


def test_the_kubelet_is_stopped_at_the_runs_start_and_started_once_every_file_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = early_cluster(tmp_path, monkeypatch)
    _run_the_kubelet_stop_only(c)
    assert_recovered(c, c.recover())
    host = c.host
    assert isinstance(host, StoppedEtcdHost)
    stop, restart = host.commands.index("systemctl stop kubelet"), host.commands.index("systemctl restart kubelet")
    assert stop < restart and host.commands.count("systemctl stop kubelet") == 1
    assert host.manifests_at_restart == [MANIFESTS]  # still one start, with every file there
    assert any("the kubelet was stopped at the run's start: (re)starting it" in line for line in c.progress)


def test_a_run_that_fails_before_kubelet_start_starts_the_kubelet_it_stopped_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kuberevive.run import steps

    c = early_cluster(tmp_path, monkeypatch)
    _run_the_kubelet_stop_only(c)

    def broken(ctx: object, i: int) -> None:
        raise PlanError("the kubeconfigs cannot be written", "fix it")

    monkeypatch.setitem(steps.STEPS, "kubeconfigs", broken)
    with pytest.raises(PlanError, match="kubeconfigs cannot be written"):
        c.recover()
    host = c.host
    assert isinstance(host, StoppedEtcdHost)
    assert host.commands.index("systemctl stop kubelet") < host.commands.index("systemctl restart kubelet")
    assert "      the kubelet stopped at the run's start was started again" in c.progress


def test_without_the_background_stop_the_step_restarts_the_kubelet_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = early_cluster(tmp_path, monkeypatch)  # background work never runs: the stop is called off by the step
    assert_recovered(c, c.recover())
    host = c.host
    assert isinstance(host, StoppedEtcdHost)
    assert "systemctl stop kubelet" not in host.commands and host.commands.count("systemctl restart kubelet") == 1


def test_a_stop_ahead_called_off_before_it_began_does_nothing() -> None:
    from kuberevive.run.context import AheadStop

    stopped: list[str] = []
    ahead = AheadStop("kubelet")
    assert ahead.settle(1.0) == "called off"
    ahead.run(stopped.append)
    assert stopped == [] and ahead.state == "called off"
    failing = AheadStop("kubelet")

    def refuse(unit: str) -> None:
        raise PlanError(f"'systemctl stop {unit}' failed: no such unit", "look")

    failing.run(refuse)
    assert failing.settle(1.0).startswith("failed: 'systemctl stop kubelet' failed")
