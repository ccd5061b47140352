"""The lab's pure parts, without root or a cluster: unit files, image archives, configs, the shim."""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kuberevive.errors import LabError
from kuberevive.lab import kubeadm, loadbalancer, supervisor, workload
from kuberevive.lab.config import LabConfig, topology_nodes
from kuberevive.lab.images import Entry, ImageSpec, docker_archive
from tests.lab.conftest import ha_lab_instance


def test_expand_argv_like_systemd() -> None:
    env = {"A": "--x=1 --y=2", "EMPTY": ""}
    assert supervisor.expand_argv(["prog", "$A", "$EMPTY", "${A}", "$MISSING"], env) == [
        "prog",
        "--x=1",
        "--y=2",
        "--x=1 --y=2",
    ]


def test_cgroup_mounts_from_mountinfo() -> None:
    text = (
        "30 24 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory\n"
        "31 24 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct\n"
        "32 24 0:28 / /sys/fs/cgroup/unified rw,nosuid shared:14 - cgroup2 cgroup2 rw,nsdelegate\n"
        "33 24 0:29 / /proc rw,nosuid shared:15 - proc proc rw\n"
        "34 24 0:30 / /mnt/odd rw - cgroup\n"
    )
    assert supervisor.cgroup_mounts(text) == [
        ("cgroup", Path("/sys/fs/cgroup/memory"), {"rw", "memory"}),
        ("cgroup", Path("/sys/fs/cgroup/cpu,cpuacct"), {"rw", "cpu", "cpuacct"}),
        ("cgroup2", Path("/sys/fs/cgroup/unified"), {""}),
        ("cgroup", Path("/mnt/odd"), {""}),
    ]


def test_environment_file(tmp_path: Path) -> None:
    f = tmp_path / "kubeadm-flags.env"
    f.write_text('# comment\nKUBELET_KUBEADM_ARGS="--a=1 --b=2"\n\nX=y\n')
    assert supervisor.read_environment_file(str(f)) == {"KUBELET_KUBEADM_ARGS": "--a=1 --b=2", "X": "y"}
    assert supervisor.read_environment_file("-" + str(tmp_path / "missing")) is None


def test_docker_archive_layout(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF")
    data = docker_archive(
        ImageSpec("registry.k8s.io/pause:3.10", (Entry("/pause", src=binary),), entrypoint=("/pause",))
    )
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert manifest[0]["RepoTags"] == ["registry.k8s.io/pause:3.10"]
        config = json.loads(tar.extractfile(manifest[0]["Config"]).read())  # type: ignore[union-attr]
        assert config["config"]["Entrypoint"] == ["/pause"]
        layer = tar.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(layer)) as inner:
        assert inner.getnames() == ["pause"]
    assert docker_archive(ImageSpec("x:1", (Entry("/pause", src=binary),))) == docker_archive(
        ImageSpec("x:1", (Entry("/pause", src=binary),))
    )


def test_init_config_documents() -> None:
    text = kubeadm.dump(kubeadm.init_documents(LabConfig(), "abcdef.0123456789abcdef"))
    docs = {d["kind"]: d for d in yaml.safe_load_all(text)}
    assert docs["InitConfiguration"]["nodeRegistration"]["kubeletExtraArgs"][0] == {
        "name": "cgroup-root",
        "value": "/krlab-cp1",
    }
    assert docs["ClusterConfiguration"]["dns"] == {"disabled": True}
    assert docs["KubeletConfiguration"]["cgroupDriver"] == "cgroupfs"


def test_ca_cert_hash_is_spki_sha256() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    assert kubeadm.ca_cert_hash(cert.public_bytes(serialization.Encoding.PEM)) == "sha256:" + digest.finalize().hex()


def test_workload_spreads_over_nodes() -> None:
    items = workload.manifests(LabConfig())["items"]
    deploy = next(i for i in items if i["kind"] == "Deployment" and i["metadata"]["name"] == "labapp")
    spec = deploy["spec"]["template"]["spec"]
    assert deploy["spec"]["replicas"] == 2
    assert (
        spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"]
        == "kubernetes.io/hostname"
    )
    assert spec["tolerations"][0]["key"] == "node-role.kubernetes.io/control-plane"


def test_default_topology_keeps_the_two_node_addresses() -> None:
    for env, net in (({}, "172.30.0"), ({"KUBEREVIVE_LAB_INSTANCE": "2"}, "172.30.2")):
        cfg = LabConfig.from_env(env)
        assert [(n.name, n.ip, n.role) for n in cfg.nodes] == [
            ("cp1", f"{net}.11", "control-plane"),
            ("worker1", f"{net}.12", "worker"),
        ]
        assert (cfg.topology, cfg.ha, cfg.api_endpoint, cfg.service_hosts) == (
            (1, 1),
            False,
            f"{net}.11:6443",
            ["cp1", "worker1"],
        )


def test_ha_topology_from_the_environment_and_arguments() -> None:
    cfg = LabConfig.from_env({"KUBEREVIVE_LAB_INSTANCE": "3", "KUBEREVIVE_LAB_CONTROL_PLANES": "3"})
    assert [(n.name, n.ip) for n in cfg.nodes] == [
        ("cp1", "172.30.3.11"),
        ("cp2", "172.30.3.13"),
        ("cp3", "172.30.3.14"),
        ("worker1", "172.30.3.12"),
    ]
    assert (cfg.topology, cfg.ha, cfg.lb_ip, cfg.api_endpoint) == ((3, 1), True, "172.30.3.10", "172.30.3.10:6443")
    assert cfg.service_hosts == ["cp1", "cp2", "cp3", "worker1", "lb"]
    two = LabConfig.from_env({"KUBEREVIVE_LAB_CONTROL_PLANES": "3"}, control_planes=1, workers=2)
    assert [(n.name, n.ip) for n in two.nodes] == [
        ("cp1", "172.30.0.11"),
        ("worker1", "172.30.0.12"),
        ("worker2", "172.30.0.13"),
    ]
    assert two.with_topology(1, 2) is two
    assert two.with_topology(3, 1).nodes == topology_nodes("172.30.0.0/24", 3, 1)
    assert two.with_topology(3, 1).state_dir == two.state_dir


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KUBEREVIVE_LAB_CONTROL_PLANES": "2"}, "1 or 3 control-plane nodes, not 2"),
        ({"KUBEREVIVE_LAB_WORKERS": "9"}, "0 to 5 workers, not 9"),
        ({"KUBEREVIVE_LAB_WORKERS": "x"}, "KUBEREVIVE_LAB_WORKERS='x' is not a number"),
    ],
)
def test_bad_topology_is_one_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(LabError, match=re.escape(message)):
        LabConfig.from_env(env)


def test_ha_kubeadm_documents() -> None:
    cfg = LabConfig.from_env({"KUBEREVIVE_LAB_INSTANCE": "2"}, control_planes=3)
    key = kubeadm.new_certificate_key()
    assert re.fullmatch("[0-9a-f]{64}", key)
    docs = {d["kind"]: d for d in kubeadm.init_documents(cfg, "abcdef.0123456789abcdef", key)}
    assert docs["ClusterConfiguration"]["controlPlaneEndpoint"] == "172.30.2.10:6443"
    assert docs["InitConfiguration"]["certificateKey"] == key
    assert docs["InitConfiguration"]["localAPIEndpoint"]["advertiseAddress"] == "172.30.2.11"
    join = kubeadm.JoinCommand(cfg.api_endpoint, "abcdef.0123456789abcdef", "sha256:ab", key)
    (cp3,) = kubeadm.join_documents(cfg, cfg.node("cp3"), join)
    assert cp3["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "172.30.2.10:6443"
    assert cp3["controlPlane"] == {
        "localAPIEndpoint": {"advertiseAddress": "172.30.2.14", "bindPort": 6443},
        "certificateKey": key,
    }
    assert cp3["timeouts"] == {"etcdAPICall": "10m0s"}
    (worker,) = kubeadm.join_documents(cfg, cfg.node("worker1"), join)
    assert "controlPlane" not in worker and "timeouts" not in worker
    with pytest.raises(ValueError, match="certificate key"):
        kubeadm.join_documents(cfg, cfg.node("cp2"), dataclasses.replace(join, certificate_key=None))


def test_two_node_kubeadm_documents_have_no_ha_settings() -> None:
    cfg = LabConfig()
    docs = {d["kind"]: d for d in kubeadm.init_documents(cfg, "abcdef.0123456789abcdef", "ab" * 32)}
    assert "controlPlaneEndpoint" not in docs["ClusterConfiguration"]
    assert "certificateKey" not in docs["InitConfiguration"]
    join = kubeadm.JoinCommand(cfg.api_endpoint, "abcdef.0123456789abcdef", "sha256:ab")
    (worker,) = kubeadm.join_documents(cfg, cfg.workers[0], join)
    assert worker["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "172.30.0.11:6443"


def test_a_printed_join_command_is_read_back_as_kubeadm_would_use_it() -> None:
    h = "sha256:" + "ab" * 32
    worker = kubeadm.parse_join_command(
        f"kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash {h}"
    )
    assert worker == kubeadm.JoinCommand("10.0.0.1:6443", "abcdef.0123456789abcdef", h)
    cp = kubeadm.parse_join_command(
        f"kubeadm join lb:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash {h} "
        f"--control-plane --certificate-key {'c' * 64}"
    )
    assert cp.endpoint == "lb:6443" and cp.certificate_key == "c" * 64
    for bad in (
        "kubeadm init",
        f"kubeadm join --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash {h}",
        "kubeadm join lb:6443 --token abcdef.0123456789abcdef",
        f"kubeadm join lb:6443 --token x --discovery-token-ca-cert-hash {h}",
        f"kubeadm join lb:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash {h} --control-plane",
        f"kubeadm join lb:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash {h} --v=5",
    ):
        with pytest.raises(ValueError):
            kubeadm.parse_join_command(bad)


def test_haproxy_config_checks_every_api_server(tmp_path: Path) -> None:
    cfg = LabConfig.from_env({"KUBEREVIVE_LAB_INSTANCE": "2"}, control_planes=3)
    text = loadbalancer.haproxy_config(cfg, tmp_path / "haproxy.sock")
    assert "    bind 172.30.2.10:6443\n" in text
    assert "    mode tcp\n" in text and "    option httpchk GET /readyz\n" in text
    assert "    http-check expect status 200\n" in text and " check-ssl verify none" in text
    servers = [line.split() for line in text.splitlines() if line.strip().startswith("server ")]
    assert servers == [
        ["server", "cp1", "172.30.2.11:6443", "check"],
        ["server", "cp2", "172.30.2.13:6443", "check"],
        ["server", "cp3", "172.30.2.14:6443", "check"],
    ]
    if shutil.which("haproxy"):  # the real parser accepts it (installed by .ci/install)
        conf = tmp_path / "haproxy.cfg"
        conf.write_text(text)
        proc = subprocess.run(["haproxy", "-c", "-f", str(conf)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr


def test_workload_has_one_labapp_per_node_in_the_ha_lab() -> None:
    cfg = LabConfig.from_env({}, control_planes=3)
    items = workload.manifests(cfg)["items"]
    deploy = next(i for i in items if i["kind"] == "Deployment" and i["metadata"]["name"] == "labapp")
    assert deploy["spec"]["replicas"] == 4
    caller = next(i for i in items if i["kind"] == "Deployment" and i["metadata"]["name"] == "apicaller")
    assert caller["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "worker1"}


@pytest.mark.parametrize(
    ("env", "instance"),
    [
        ({}, 2),  # no xdist, nothing given: 2 (the 1+1 lab uses 0)
        ({"KUBEREVIVE_LAB_INSTANCE_GIVEN": "5"}, 5),  # no xdist, given explicitly: that one
        ({"PYTEST_XDIST_WORKER": "gw0", "PYTEST_XDIST_WORKER_COUNT": "2"}, 2),  # CI: 1+1 labs on 0 and 1
        ({"PYTEST_XDIST_WORKER": "gw1", "PYTEST_XDIST_WORKER_COUNT": "2"}, 3),
        ({"PYTEST_XDIST_WORKER": "gw1", "PYTEST_XDIST_WORKER_COUNT": "3", "KUBEREVIVE_LAB_INSTANCE_GIVEN": "1"}, 5),
        ({"PYTEST_XDIST_WORKER": "gw0", "KUBEREVIVE_HA_LAB_INSTANCE": "7"}, 7),
    ],
)
def test_ha_lab_instance_never_collides_with_the_two_node_labs(env: dict[str, str], instance: int) -> None:
    assert ha_lab_instance(env) == instance
