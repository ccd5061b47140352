"""A simulated fleet for ``benchmarks/fleet.py``: a real API server and N nodes that are real SSH endpoints.

Everything lives in a private network and mount namespace that the benchmark enters first (``unshare``),
so its ports, addresses and mounts never meet the host's or a lab's:

* **control plane**: the real ``etcd`` and ``kube-apiserver`` (v1.33 binaries of the lab's cache), run as
  plain processes with the PKI, kubeconfigs and manifests ``kuberevive generate`` writes for address
  :data:`API_ADDRESS` (the new CA), with an audit log (``Metadata`` level) to count every request;
* **nodes**: node ``i`` is ``127.1.x.y:22``, a real OpenSSH ``sshd`` in its own mount namespace where
  ``/etc``, ``/var`` and ``/usr/local/sbin`` are overlays with the node's own upper directories: its own
  ``/etc/kubernetes/{kubelet.conf,pki/ca.crt}`` and ``/var/lib/kubelet/{config.yaml,pki/...}`` from an
  OLD CA, as a kubelet has them after the control plane's CA was replaced. Its Node object is real
  (InternalIP = that address, Ready with an old heartbeat);
* **the kubelet**: there is none; ``systemctl restart kubelet`` on a node is a shim that does what a
  kubelet does first when it starts: post its Node status (Ready, heartbeat now) to the API server with
  the credentials in its ``kubelet.conf`` (``curl`` with the client certificate, checked by the server
  through the new CA, the Node authorizer and NodeRestriction). So a node becomes Ready exactly when its
  re-trust worked. Not kwok: kwok keeps heartbeats itself, whatever the node's files say.

Unreachable nodes get no sshd (connection refused); slow nodes take ``slow_seconds`` in their "kubelet
restart". Processes are stopped by their pids in :meth:`Fleet.stop`.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from kuberevive.core import pki
from kuberevive.core.generate import Target, generate
from kuberevive.errors import KubeApiError, LabError
from kuberevive.io.kubeapi import KubeApi
from kuberevive.io.noderoot import NodeRoot
from kuberevive.lab.config import LabConfig
from kuberevive.model import paths
from kuberevive.model.config import EncryptionAlgorithm, KubeadmConfig, NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config

API_ADDRESS = "10.77.0.1"
CONFIG = f"""
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint: {{advertiseAddress: {API_ADDRESS}}}
nodeRegistration: {{name: fleet-cp}}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.33.13
encryptionAlgorithm: ECDSA-P256
"""
AUDIT_POLICY = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n"

#: ``systemctl restart kubelet`` on a simulated node: post the Node's status with the node's credentials.
SYSTEMCTL = r"""#!/bin/sh
[ "$1" = restart ] && [ "$2" = kubelet ] || exit 0
name=$(cat /etc/kuberevive-fleet-node)
[ -f /etc/kuberevive-fleet-slow ] && sleep "$(cat /etc/kuberevive-fleet-slow)"
conf=@KUBELET_CONF@
server=$(sed -n 's/^ *server: *//p' "$conf" | head -1)
pem=$(sed -n 's/^ *client-certificate: *//p' "$conf" | head -1)
ca=$(mktemp)
trap 'rm -f "$ca"' EXIT
sed -n 's/^ *certificate-authority-data: *//p' "$conf" | head -1 | base64 -d > "$ca"
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
body='{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady",'
body="$body\"message\":\"simulated kubelet\",\"lastHeartbeatTime\":\"$now\",\"lastTransitionTime\":\"$now\"}]}}"
curl -sS --fail -o /dev/null --cacert "$ca" --cert "$pem" --key "$pem" -X PATCH \
  -H 'Content-Type: application/strategic-merge-patch+json' --data "$body" "$server/api/v1/nodes/$name/status"
""".replace("@KUBELET_CONF@", str(paths.KUBELET_CONF))


def _ready(api: KubeApi) -> bool:
    try:
        return api.readyz()[0]
    except KubeApiError:
        return False


OLD_CLIENT_PEM = paths.KUBELET_PKI / "kubelet-client-2025-01-01-00-00-00.pem"
"""Each simulated node's kubelet client certificate, of the fleet's old CA."""


def _rel(node_path: PurePosixPath) -> str:
    """A node path relative to the node's root (``etc/...``), as the simulated node's overlay lays it out."""
    return str(node_path.relative_to("/"))


def node_name(i: int) -> str:
    return f"fleet-{i:05d}"


def node_address(i: int) -> str:
    return f"127.1.{i // 250}.{i % 250 + 1}"


def _run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=kw.pop("timeout", 120), check=False, **kw)
    if proc.returncode != 0:
        raise LabError(f"{' '.join(argv[:4])} failed: {proc.stderr.strip()[-400:]}", "see the fleet's work directory")
    return proc


def _old_ca_and_client() -> tuple[bytes, bytes]:
    """An OLD cluster CA (not the API server's) and a kubelet client cert + key from it (one pem)."""
    now = datetime.now(UTC)
    ca_key = pki.generate_private_key(EncryptionAlgorithm.ECDSA_P256)
    ca = pki.new_self_signed_ca("kubernetes", ca_key, now - timedelta(days=1), now + timedelta(days=3650))
    key = pki.generate_private_key(EncryptionAlgorithm.ECDSA_P256)
    cert = pki.issue_certificate(
        common_name="system:node:old",
        organization=("system:nodes",),
        usages=(pki.KeyUsage.CLIENT_AUTH,),
        public_key=key.public_key(),
        ca_cert=ca,
        ca_key=ca_key,
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=365),
    )
    return pki.encode_certificate_pem(ca), pki.encode_certificate_pem(cert) + pki.encode_private_key_pem(key)


@dataclass
class Fleet:
    """See the module docstring. ``work`` must be on a file system overlayfs accepts as upper (not tmpfs-less)."""

    work: Path
    nodes: int
    unreachable: frozenset[int] = frozenset()
    slow: frozenset[int] = frozenset()
    slow_seconds: float = 15.0
    lab: LabConfig = field(default_factory=LabConfig)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # --- paths ---------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.work / "cp"

    @property
    def admin_conf(self) -> Path:
        return self.root / "etc/kubernetes/admin.conf"

    @property
    def ssh_key(self) -> Path:
        return self.work / "ssh/id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.work / "ssh/known_hosts"

    @property
    def audit_log(self) -> Path:
        return self.work / "audit.log"

    def kubeadm_config(self) -> KubeadmConfig:
        return load_kubeadm_config(CONFIG, NodeFacts(hostname="fleet-cp"))

    def api(self, conf: str = "admin.conf") -> KubeApi:
        """The tool's client (``admin.conf``, as recover uses); ``super-admin.conf`` sets the fleet up."""
        return KubeApi.from_kubeconfig((self.root / "etc/kubernetes" / conf).read_bytes())

    # --- setup ---------------------------------------------------------------------------------------
    @staticmethod
    def enter_namespaces() -> None:
        """In the private namespaces (see benchmarks/fleet.py): loopback up, the API address, a private /run."""
        _run(["ip", "link", "set", "lo", "up"])
        _run(["ip", "addr", "add", f"{API_ADDRESS}/32", "dev", "lo"])
        _run(["mount", "-t", "tmpfs", "tmpfs", "/run"])
        Path("/run/sshd").mkdir(mode=0o755)

    def start(self, progress: Any = print) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self._control_plane()
        progress(f"fleet: API server ready at https://{API_ADDRESS}:6443")
        t0 = time.monotonic()
        self._nodes()
        progress(
            f"fleet: {self.nodes} nodes ({len(self.unreachable)} unreachable, {len(self.slow)} slow) "
            f"in {time.monotonic() - t0:.0f} s"
        )

    def _control_plane(self) -> None:
        cfg = self.kubeadm_config()
        self.root.mkdir(parents=True, exist_ok=True)
        result = generate(Target.ALL, cfg, NodeFacts(hostname="fleet-cp"), datetime.now(UTC), {})
        NodeRoot(self.root).write_all(result.artifacts)
        (self.root / "var/lib/etcd").mkdir(parents=True, mode=0o700, exist_ok=True)
        policy = self.work / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        bindir = self.lab.bin_cache
        for component in ("etcd", "kube-apiserver"):
            manifest = yaml.safe_load((self.root / f"etc/kubernetes/manifests/{component}.yaml").read_text())
            argv = [self._rooted(a) for a in manifest["spec"]["containers"][0]["command"]]
            argv[0] = str(bindir / component)
            if component == "kube-apiserver":
                argv += [
                    f"--audit-policy-file={policy}",
                    f"--audit-log-path={self.audit_log}",
                    "--audit-log-maxsize=0",
                    "--max-requests-inflight=800",
                    "--max-mutating-requests-inflight=400",
                ]
            log = (self.work / f"{component}.log").open("wb")
            self.procs[component] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
            if component == "etcd":
                time.sleep(0.5)  # etcd needs no wait: the API server retries its connection
        deadline = time.monotonic() + 180
        api = self.api("super-admin.conf")
        while not _ready(api):
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise LabError(f"{name} exited {p.returncode}", f"read {self.work / (name + '.log')}")
            if time.monotonic() > deadline:
                raise LabError("the fleet's API server did not get ready in 180 s", f"read {self.work}/*.log")
            time.sleep(0.5)

    def _rooted(self, arg: str) -> str:
        for prefix in (str(paths.KUBERNETES_DIR), "/var/lib/etcd"):
            arg = arg.replace("=" + prefix, f"={self.root}{prefix}")
        return arg

    def _nodes(self) -> None:
        (self.work / "ssh").mkdir(mode=0o700, exist_ok=True)
        if not self.ssh_key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.ssh_key)])
        old_ca, old_pem = _old_ca_and_client()
        api = self.api("super-admin.conf")
        api.create(  # what kubeadm init makes for admin.conf's group
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "kubeadm:cluster-admins"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "kubeadm:cluster-admins"}
                ],
            },
        )
        server = f"https://{API_ADDRESS}:6443"
        kubelet_conf = yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "default-cluster",
                        "cluster": {
                            "server": server,
                            "certificate-authority-data": base64.b64encode(old_ca).decode(),
                        },
                    }
                ],
                "contexts": [{"name": "default", "context": {"cluster": "default-cluster", "user": "default"}}],
                "current-context": "default",
                "users": [
                    {
                        "name": "default",
                        "user": {
                            "client-certificate": str(paths.KUBELET_CLIENT_CURRENT),
                            "client-key": str(paths.KUBELET_CLIENT_CURRENT),
                        },
                    }
                ],
            }
        )
        kubelet_config = (
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
            f"authentication:\n  x509:\n    clientCAFile: {paths.CA_CRT}\n"
        )
        old_beat = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        known: list[str] = []
        for i in range(self.nodes):
            name, address = node_name(i), node_address(i)
            d = self.work / "nodes" / name
            files = {
                _rel(paths.KUBELET_CONF): (kubelet_conf.encode(), 0o600),
                _rel(paths.CA_CRT): (old_ca, 0o644),
                "etc/kuberevive-fleet-node": (name.encode(), 0o644),
                _rel(paths.KUBELET_CONFIG): (kubelet_config.encode(), 0o644),
                _rel(OLD_CLIENT_PEM): (old_pem, 0o600),
                "sbin/systemctl": (SYSTEMCTL.encode(), 0o755),
            }
            if i in self.slow:
                files["etc/kuberevive-fleet-slow"] = (f"{self.slow_seconds:g}".encode(), 0o644)
            for rel, (data, mode) in files.items():
                top, _, rest = rel.partition("/")
                p = d / f"{top}.up" / rest
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
                p.chmod(mode)
            top, _, rest = _rel(paths.KUBELET_CLIENT_CURRENT).partition("/")
            link = d / f"{top}.up" / rest
            if not link.is_symlink():
                link.symlink_to(OLD_CLIENT_PEM)
            for top in ("etc", "var", "sbin"):
                (d / f"{top}.work").mkdir(exist_ok=True)
            host_key = d / "ssh_host_ed25519_key"
            if not host_key.exists():
                _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)])
            known.append(
                f"{address} {host_key.with_suffix('.pub').read_text().split(' ')[0]} "
                f"{host_key.with_suffix('.pub').read_text().split(' ')[1]}"
            )
            api.create(
                "/api/v1/nodes",
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"fleet": "yes"}}},
            )
            api.patch(
                f"/api/v1/nodes/{name}/status",
                {
                    "status": {
                        "addresses": [
                            {"type": "InternalIP", "address": address},
                            {"type": "Hostname", "address": name},
                        ],
                        "conditions": [
                            {
                                "type": "Ready",
                                "status": "True",
                                "reason": "KubeletReady",
                                "lastHeartbeatTime": old_beat,
                                "lastTransitionTime": old_beat,
                            }
                        ],
                    }
                },
                "strategic",
            )
            if i not in self.unreachable:
                self._sshd(i, d, host_key)
        self.known_hosts.write_text("\n".join(known) + "\n")
        (self.work / "ssh/authorized_keys").write_text(self.ssh_key.with_suffix(".pub").read_text())

    def _sshd(self, i: int, d: Path, host_key: Path) -> None:
        config = d / "sshd_config"
        config.write_text(
            f"ListenAddress {node_address(i)}:22\nHostKey {host_key}\nPermitRootLogin prohibit-password\n"
            f"AuthorizedKeysFile {self.work}/ssh/authorized_keys\nPasswordAuthentication no\n"
            f"KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {d}/sshd.pid\n"
            "MaxStartups 200:30:400\nMaxSessions 50\nLogLevel ERROR\n"
        )
        mounts = " && ".join(
            f"mount -t overlay overlay -o lowerdir={target},upperdir={d}/{top}.up,workdir={d}/{top}.work {target}"
            # /var last: the upper directories may be under /var, and an overlay cannot be another's upper
            for top, target in (("sbin", "/usr/local/sbin"), ("etc", "/etc"), ("var", "/var"))
        )
        script = f"{mounts} && exec /usr/sbin/sshd -D -e -f {shlex.quote(str(config))}"
        log = (d / "sshd.log").open("wb")
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        self.procs[node_name(i)] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def wait_listening(self, timeout: float = 120) -> None:
        """Every reachable node's sshd accepts connections."""
        import socket

        deadline = time.monotonic() + timeout
        for i in range(self.nodes):
            if i in self.unreachable:
                continue
            while True:
                try:
                    socket.create_connection((node_address(i), 22), timeout=2).close()
                    break
                except OSError as exc:
                    p = self.procs[node_name(i)]
                    if p.poll() is not None or time.monotonic() > deadline:
                        log = (self.work / "nodes" / node_name(i) / "sshd.log").read_text()[-400:]
                        raise LabError(
                            f"{node_name(i)}: sshd does not listen: {exc} {log}", "see its sshd.log"
                        ) from None
                    time.sleep(0.1)

    # --- measuring -----------------------------------------------------------------------------------
    def audit_lines(self) -> int:
        with self.audit_log.open("rb") as fh:
            return sum(1 for _ in fh)

    def requests_since(self, line: int) -> dict[str, int]:
        """Audit events after ``line``, counted by user (``kubernetes-admin`` is the tool)."""
        counts: dict[str, int] = {}
        with self.audit_log.open("rb") as fh:
            for n, raw in enumerate(fh):
                if n < line:
                    continue
                user = json.loads(raw).get("user", {}).get("username", "?")
                key = "nodes" if user.startswith("system:node:") else user
                counts[key] = counts.get(key, 0) + 1
        return counts

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()


def in_private_namespaces() -> bool:
    return os.environ.get("KUBEREVIVE_FLEET_NS") == "1"
