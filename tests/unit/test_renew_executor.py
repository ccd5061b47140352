"""``certs renew`` and ``ca extend``'s executors without root or a cluster: their checked step tables, and renewals
run against a fake host (the node's files under a temporary root, systemctl/crictl recorded) and a fake API."""

from __future__ import annotations

import base64
import re
import stat
from pathlib import Path, PurePosixPath

import pytest
import yaml

from kuberevive.core import retrust
from kuberevive.core.generate import Target, generate
from kuberevive.io.host import LocalHost
from kuberevive.io.kubeapi import KubeApi
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model import paths
from kuberevive.model.config import KubeadmConfig, NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config
from kuberevive.run import caextend, renew
from kuberevive.run.context import Effects, Faults, check_table
from kuberevive.run.journal import CaExtendJournal, RenewJournal
from tests.unit.test_diagnose import K8S, KUBELET_CONFIG, NOW, PKI
from tests.unit.test_executor import FakeClock, FakeHost, Killed, _kill
from tests.unit.test_retrust_in_place import Fleet

SRC = Path(renew.__file__).resolve().parents[1]


#: Every step but those only --all-nodes plans (tests/unit/test_renew_nodes.py and test_renew_ha.py cover those).
LOCAL_STEPS = [s for s in renew.RENEW_STEPS if s not in ("peer-certificates", "peer-restarts", "other-kubelets")]


def test_renew_and_ca_extend_run_their_steps_through_checked_tables() -> None:
    assert list(renew.RENEW_STEPS) == list(renew.STEP_TITLES)
    assert list(caextend.CA_EXTEND_STEPS) == list(caextend.STEP_TITLES)
    every = ["kubelet-client", "apiserver", "admin.conf"]
    assert set(renew.steps_for(every, live=True)) <= set(renew.RENEW_STEPS)
    every_extend = set(caextend.steps_for(True, True, repair=True)) | set(caextend.steps_for(True, False))
    assert every_extend == set(caextend.CA_EXTEND_STEPS)
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


# -- renewals against a fake host and a fake API ---------------------------------------------------------------

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ecdsa-validity.yaml"  # fast keys, 30-day leaves
NODE = "cp-ecdsa"
DAYS = 7
RENEWED = (paths.KUBERNETES_DIR, paths.KUBELET_PKI)


def _config() -> KubeadmConfig:
    return load_kubeadm_config(CONFIG.read_text(), NodeFacts(hostname=NODE))


def control_plane(base: Path) -> NodeRoot:
    """What ``kubeadm init`` left on cp-ecdsa on 1 March 2026 (``generate all`` plus the kubelet's client pem and
    link): by now every 30-day leaf has expired, the CAs (5 years) have not."""
    cfg = _config()
    root = NodeRoot(base / "node")
    (base / "node").mkdir()
    root.write_all(generate(Target.ALL, cfg, NodeFacts(hostname=NODE), NOW, {}).artifacts)
    root.atomic_write(paths.KUBELET_CONFIG, KUBELET_CONFIG, 0o644)
    pki = root.read_tree(cfg.cluster.certificates_dir)
    ca, key = pki[PKI / "ca.crt"], pki[PKI / "ca.key"]
    t = retrust.node_trust_files(cfg, ca, key, NODE, "https://172.16.5.5:6443", str(PKI / "ca.crt"), NOW, "s")
    root.atomic_write(PurePosixPath(t.pem_path), t.pem, 0o600)
    root.replace_symlink(paths.KUBELET_CLIENT_CURRENT, t.pem_path)
    root.atomic_write(paths.KUBELET_CONF, t.kubeconfig, 0o600)
    return root


def fake_effects(api: KubeApi, clock: FakeClock, after_step: int | None = None) -> Effects:
    """The effects of a renewal or an extension on the fakes: ``api`` for admin.conf and for this node's own API
    server (admin.conf's credentials, another server), the fake clock, the kill hook."""
    c = clock
    return Effects(
        lambda _r: api,
        kubeconfig_api=lambda _r, _kubeconfig: api,
        clock=c.time,
        utcnow=c.utcnow,
        monotonic=c.time,
        sleep=c.sleep,
        faults=Faults(after_step=after_step, kill=_kill),
    )


class Renewal:
    """One node and its cluster, and how to run ``certs renew --all --apply`` on it."""

    def __init__(self, base: Path) -> None:
        self.root = control_plane(base)
        self.host = FakeHost(self.root)
        self.clock = FakeClock()
        self.api = Fleet(self.root, [NODE], self.clock)
        self.progress: list[str] = []

    def apply(self, after_step: int | None = None) -> renew.RenewResult:
        fx = fake_effects(self.api, self.clock, after_step)
        root = str(self.root.prefix)
        return renew.apply(
            root, str(CONFIG), DAYS, False, self.progress.append, {}, live=True, host=self.host, effects=fx
        )

    def files(self) -> dict[str, bytes | str]:
        out: dict[str, bytes | str] = {}
        for top in RENEWED:
            for p in self.root.walk(top):
                st = self.root.lstat(p)
                if st is not None and stat.S_ISLNK(st.st_mode):
                    out[str(p)] = self.root.readlink(p) or ""
                elif st is not None and stat.S_ISREG(st.st_mode):
                    out[str(p)] = self.root.read_existing(p)
        return out


def test_a_whole_renewal_renews_every_credential_and_restarts_through_the_host(tmp_path: Path) -> None:
    r = Renewal(tmp_path)
    before = r.files()
    plan = renew.plan(str(r.root.prefix), str(CONFIG), DAYS, False, live=True)
    assert plan.steps == LOCAL_STEPS and r.files() == before  # the plan changes nothing
    result = r.apply()
    assert result.applied == LOCAL_STEPS and not result.resumed
    after = r.files()
    changed = {p for p in before if before[p] != after.get(p)}
    assert {str(PKI / f"{n}.crt") for n in ("apiserver", "front-proxy-client", "etcd/server")} <= changed
    assert {str(K8S / n) for n in ("admin.conf", "scheduler.conf", "controller-manager.conf")} <= changed
    assert str(PKI / "ca.crt") not in changed and str(PKI / "ca.key") not in changed  # CAs are never renewed
    new_pem = after[str(paths.KUBELET_CLIENT_CURRENT)]
    assert isinstance(new_pem, str) and new_pem != before[str(paths.KUBELET_CLIENT_CURRENT)]
    assert any(f"{paths.KUBELET_CLIENT_CURRENT} moved aside to" in m for m in result.messages)
    assert r.host.commands.count("systemctl restart kubelet") == 2  # after the client, after the stops
    # one after the other, the API server first (it drains while its etcd answers), then etcd, then the others; the
    # API server (kubeadm's manifest: no shutdown delay) SIGKILLed 5 s after SIGTERM, the others after the Pod's 30 s
    stops = [c for c in r.host.commands if c.startswith("crictl stop ")]
    assert stops == ["crictl stop kube-apiserver (grace 5 s)"] + [f"crictl stop {c}" for c in renew.STOP_ORDER[1:]]
    last_restart = max(i for i, c in enumerate(r.host.commands) if c == "systemctl restart kubelet")
    assert r.host.commands.index(stops[-1]) < last_restart  # then the kubelet, which starts them again
    report, _cfg_read = renew.read_report(str(r.root.prefix), str(CONFIG), DAYS, live=False)
    renewed = {i.name: i.status.value for i in report.items if i.name in {t["name"] for t in result.targets}}
    assert set(renewed.values()) == {"ok"}, renewed
    again = r.apply()  # nothing expires within 7 days now
    assert again.steps == [] and r.files() == after


@pytest.mark.parametrize("index", range(1, len(LOCAL_STEPS) + 1), ids=LOCAL_STEPS)
def test_a_renewal_killed_after_each_step_resumes_and_writes_the_same_files(tmp_path: Path, index: int) -> None:
    r = Renewal(tmp_path)
    before = r.files()
    with pytest.raises(Killed):
        r.apply(after_step=index)
    killed = r.files()
    journal = RenewJournal.load(r.root, renew.JOURNAL)
    assert journal is not None and journal.status == "running"
    assert [s for s in renew.RENEW_STEPS if journal.step_done(s)] == LOCAL_STEPS[:index]
    plan = renew.plan(str(r.root.prefix), str(CONFIG), DAYS, False, live=True)
    assert plan.resumed and plan.steps == LOCAL_STEPS[index:]
    result = r.apply()
    assert result.resumed and result.applied == LOCAL_STEPS[index:]
    assert any("resuming the renewal" in line for line in r.progress)
    after = r.files()
    written = {p for p in killed if killed[p] != before.get(p)}
    assert written, "the steps done before the kill wrote files"
    assert {p: after[p] for p in written} == {p: killed[p] for p in written}  # kept, not issued again
    report, _ = renew.read_report(str(r.root.prefix), str(CONFIG), DAYS, live=False)
    assert {i.name: i.status.value for i in report.items if i.name in {t["name"] for t in result.targets}} == {
        t["name"]: "ok" for t in result.targets
    }
    done = RenewJournal.load(r.root, renew.JOURNAL)
    assert done is not None and done.status == "done"


def test_another_root_writes_the_files_and_restarts_nothing(tmp_path: Path) -> None:
    root = control_plane(tmp_path)
    host = FakeHost(root)
    lines: list[str] = []
    result = renew.apply(
        str(root.prefix), str(CONFIG), DAYS, False, lines.append, {}, live=False, host=LocalHost(root, live=False)
    )
    assert result.steps == ["kubelet-client", "leaves", "kubeconfigs"] and result.applied == result.steps
    assert any("nothing was restarted" in m for m in result.messages) and host.commands == []


def test_ca_extend_killed_after_its_files_resumes_with_the_same_certificates_and_restarts_nothing_elsewhere(
    tmp_path: Path,
) -> None:
    """``ca extend --all`` under another root: only the files step; a run killed after it resumes to a finished
    journal, the extended CAs keep their keys, and every kubeconfig holds the new CA."""
    root = control_plane(tmp_path)
    host = LocalHost(root, live=False)
    before = {n: root.read_existing(PKI / n) for n in ("ca.crt", "ca.key", "front-proxy-ca.crt", "etcd/ca.crt")}
    plan = caextend.plan(str(root.prefix), str(CONFIG), DAYS, [], True, False, live=False)
    assert plan.steps == ["files"] and {c["name"] for c in plan.cas} == {"ca", "front-proxy-ca", "etcd-ca"}
    assert root.read_existing(PKI / "ca.crt") == before["ca.crt"]  # the plan changes nothing
    clock = FakeClock()

    def run(after_step: int | None = None) -> caextend.ExtendResult:
        fx = Effects(utcnow=clock.utcnow, monotonic=clock.time, faults=Faults(after_step=after_step, kill=_kill))
        return caextend.apply(
            str(root.prefix), str(CONFIG), DAYS, [], True, None, print, {}, live=False, host=host, effects=fx
        )

    with pytest.raises(Killed):
        run(after_step=1)
    written = root.read_existing(PKI / "ca.crt")
    assert written != before["ca.crt"] and root.read_existing(PKI / "ca.key") == before["ca.key"]
    again = caextend.plan(str(root.prefix), str(CONFIG), DAYS, [], True, False, live=False)
    assert again.resumed and again.steps == []
    result = run()
    assert result.resumed and result.applied == [] and root.read_existing(PKI / "ca.crt") == written
    journal = CaExtendJournal.load(root, caextend.JOURNAL)
    assert journal is not None and journal.status == "done"
    for name in ("admin.conf", "scheduler.conf"):
        conf = yaml.safe_load(root.read_existing(K8S / name))
        assert base64.b64decode(conf["clusters"][0]["cluster"]["certificate-authority-data"]) == written
    assert result.as_dict()["restarts"] == [] and [s["id"] for s in result.as_dict()["steps"]] == ["files"]
