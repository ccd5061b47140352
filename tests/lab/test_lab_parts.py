"""The lab's pure parts, without root or a cluster: unit files, image archives, configs, the shim."""

from __future__ import annotations

import datetime
import io
import json
import tarfile
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kuberevive.lab import kubeadm, supervisor, workload
from kuberevive.lab.config import LabConfig
from kuberevive.lab.images import Entry, ImageSpec, docker_archive


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
