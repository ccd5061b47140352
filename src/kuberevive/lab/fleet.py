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
import queue
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
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
from kuberevive.lab.config import K8S_VERSION, LabConfig
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
kubernetesVersion: v{K8S_VERSION}
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


def _host_key(path: Path) -> None:
    """An Ed25519 SSH host key pair at ``path`` (0600) and ``path.pub``, as ``ssh-keygen -t ed25519`` writes them."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path.write_bytes(private)
    path.chmod(0o600)
    path.with_suffix(".pub").write_bytes(public + b" fleet\n")


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


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
    audit_max_mb: int = 100
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

    def api(self, conf: str = "admin.conf", timeout: float = 10.0, keep_alive: bool = False) -> KubeApi:
        """The tool's client (``admin.conf``, as recover uses: a connection per request); ``super-admin.conf`` sets
        the fleet up and runs the pod simulator (``keep_alive``: a connection per thread, as a kubelet keeps one)."""
        return KubeApi.from_kubeconfig(
            (self.root / "etc/kubernetes" / conf).read_bytes(), timeout=timeout, keep_alive=keep_alive
        )

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
        for component in ("etcd", "kube-apiserver"):
            extra = []
            if component == "kube-apiserver":
                extra = [
                    f"--audit-policy-file={policy}",
                    f"--audit-log-path={self.audit_log}",
                    # rotated at this size into audit-<time>.log (every backup kept): 0 is NOT "never" (the
                    # API server's log writer reads 0 as 100 MB), so the counting reads the backups too
                    f"--audit-log-maxsize={self.audit_max_mb}",
                    "--max-requests-inflight=800",
                    "--max-mutating-requests-inflight=400",
                ]
            if component == "etcd":  # the fleet's etcd is throwaway: no fsync wait on a disk the other labs share
                extra = ["--unsafe-no-fsync"]
            self._start(component, extra)
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

    def _start(self, component: str, extra: list[str]) -> None:
        """Run a control-plane component as a plain process with the flags of its generated static Pod manifest."""
        manifest = yaml.safe_load((self.root / f"etc/kubernetes/manifests/{component}.yaml").read_text())
        argv = [self._rooted(a) for a in manifest["spec"]["containers"][0]["command"]]
        argv[0] = str(self.lab.bin_cache / component)
        names = {a.split("=")[0] for a in extra}
        argv = [a for a in argv if a.split("=")[0] not in names] + extra
        log = (self.work / f"{component}.log").open("wb")
        self.procs[component] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def start_controller_manager(self, controllers: str, qps: int) -> None:
        """The real kube-controller-manager (kubeadm's flags, the fleet's ``sa.key``), only ``controllers``, with
        ``--kube-api-qps`` ``qps`` (burst twice that): the token controller re-mints legacy token Secrets and the
        workload controllers roll Deployments, StatefulSets and DaemonSets out as on a real cluster."""
        self._start(
            "kube-controller-manager",
            # one instance: no leader election, which it loses (and exits) when the loaded API server is slow
            [
                f"--controllers={controllers}",
                f"--kube-api-qps={qps}",
                f"--kube-api-burst={2 * qps}",
                "--leader-elect=false",
            ],
        )

    def _rooted(self, arg: str) -> str:
        for prefix in (str(paths.KUBERNETES_DIR), "/var/lib/etcd"):
            arg = arg.replace("=" + prefix, f"={self.root}{prefix}")
        return arg

    def _nodes(self) -> None:
        (self.work / "ssh").mkdir(mode=0o700, exist_ok=True)
        if not self.ssh_key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.ssh_key)])
        old_ca, old_pem = _old_ca_and_client()
        api = self.api("super-admin.conf", timeout=60)
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
        registrations: list[tuple[str, str]] = []

        def register(item: tuple[str, str]) -> None:
            self._register(api, item[0], item[1], old_beat)

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
                _host_key(host_key)  # in-process: 1,000 ssh-keygen runs take minutes on a loaded machine
            known.append(f"{address} {' '.join(host_key.with_suffix('.pub').read_text().split(' ')[:2])}")
            registrations.append((name, address))
        _parallel(register, registrations)  # the Node objects, 16 at a time
        for i in range(self.nodes):
            if i not in self.unreachable:
                self._sshd(
                    i, self.work / "nodes" / node_name(i), self.work / "nodes" / node_name(i) / "ssh_host_ed25519_key"
                )
        self.known_hosts.write_text("\n".join(known) + "\n")
        (self.work / "ssh/authorized_keys").write_text(self.ssh_key.with_suffix(".pub").read_text())

    def _register(self, api: KubeApi, name: str, address: str, old_beat: str) -> None:
        """The Node object of a simulated node: InternalIP its SSH address, Ready with an old heartbeat."""
        _create(
            api,
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

    def sshd_pss_mb(self) -> float:
        """The memory the nodes' sshd listeners hold (their proportional set size, shared pages divided)."""
        kb = 0
        for name, p in self.procs.items():
            if not name.startswith("fleet-"):
                continue
            for pid in [p.pid, *_children(p.pid)]:
                try:
                    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                        if line.startswith("Pss:"):
                            kb += int(line.split()[1])
                except OSError:
                    pass
        return round(kb / 1024, 1)

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
    def audit_files(self) -> list[Path]:
        """The audit log and its rotated backups (``audit-<time>.log``, see ``--audit-log-maxsize``)."""
        return [*sorted(self.work.glob("audit-*.log")), self.audit_log]

    @staticmethod
    def audit_mark() -> float:
        """A mark for :meth:`requests_since`: now, in seconds since the epoch (the API server's clock is this one)."""
        return time.time()

    def audit_events_since(self, mark: float) -> list[AuditEvent]:
        """Every audit event of a request received at ``mark`` or later, in the log or its rotated backups."""
        out: list[AuditEvent] = []
        for path in self.audit_files():
            try:
                if path.stat().st_mtime < mark:  # written to last before the mark: no event after it
                    continue
                with path.open("rb") as fh:
                    out.extend(audit_events(fh, mark))
            except FileNotFoundError:  # rotated away meanwhile: read as its backup
                continue
        return out

    def requests_since(self, mark: float) -> dict[str, int]:
        """Requests received at ``mark`` (:meth:`audit_mark`) or later, counted by user (``kubernetes-admin`` is the
        tool; ``nodes`` every ``system:node:*``)."""
        counts: dict[str, int] = {}
        for event in self.audit_events_since(mark):
            key = "nodes" if event.user.startswith("system:node:") else event.user
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


@dataclass(frozen=True)
class AuditEvent:
    """What the benchmarks count of one audit event: when the request was received (seconds since the epoch), by
    whom, with which client (``userAgent``)."""

    at: float
    user: str
    agent: str

    def client(self) -> str:
        """Who made the request, as the benchmarks name it: ``tool`` (``admin.conf``), ``pod simulator`` and set-up
        (``super-admin.conf``), ``kube-controller-manager/<controller>`` (its own credentials name the controller in
        the user agent, ``--use-service-account-credentials`` in the user), ``nodes``, or the user name."""
        if self.user == "kubernetes-admin":
            return "tool"
        if self.user == "kubernetes-super-admin":
            return "pod simulator"
        if self.user.startswith("system:node:"):
            return "nodes"
        if self.user.startswith(KCM_SERVICE_ACCOUNTS):
            return f"kube-controller-manager/{self.user.removeprefix(KCM_SERVICE_ACCOUNTS)}"
        if self.user == "system:kube-controller-manager":
            return f"kube-controller-manager/{self.agent.rpartition('/')[2] or '?'}"
        return self.user


KCM_SERVICE_ACCOUNTS = "system:serviceaccount:kube-system:"


def audit_events(lines: Iterable[bytes], mark: float) -> Iterator[AuditEvent]:
    """The events among ``lines`` (an audit log: one JSON event a line) of requests received at ``mark`` or later
    (``requestReceivedTimestamp``; the log is in completion order, so every line is read). A line cut short (the
    API server writing it now) is left out."""
    for raw in lines:
        try:
            event = json.loads(raw)
            at = datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if at >= mark:
            user = event.get("user") or {}
            yield AuditEvent(at, str(user.get("username", "?")), str(event.get("userAgent", "")))


def request_rate(times: Iterable[float], start: float, end: float) -> dict[str, float]:
    """The requests at ``times`` within ``[start, end)``: how many, their mean rate over the window and the busiest
    one-second window of it (a request rate to set against a client's QPS limit)."""
    inside = sorted(t for t in times if start <= t < end)
    peak, first = 0, 0
    for last, t in enumerate(inside):  # the most requests within any second: a sliding window
        while t - inside[first] >= 1.0:
            first += 1
        peak = max(peak, last - first + 1)
    span = end - start
    return {"requests": len(inside), "per_s": round(len(inside) / span, 1) if span > 0 else 0.0, "peak_per_s": peak}


def in_private_namespaces() -> bool:
    return os.environ.get("KUBEREVIVE_FLEET_NS") == "1"


def _pod_node(pod: dict[str, Any]) -> str | None:
    """The node a DaemonSet pod is pinned to (its required node affinity on ``metadata.name``), if any."""
    affinity = ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    for term in required.get("nodeSelectorTerms") or []:
        for match in term.get("matchFields") or []:
            if match.get("key") == "metadata.name" and match.get("values"):
                return str(match["values"][0])
    return None


class PodSimulator:
    """What kube-scheduler and the kubelets would do for pods on the fleet's Nodes, which run nothing: a pod
    without a node is bound (a DaemonSet pod to its node, others round robin), a bound pod is reported Running
    and Ready at once, a terminating pod is deleted for good (grace period 0, with its uid as a precondition).
    Driven by a watch of every pod, worked off by ``workers`` threads; everything it does goes through the real
    API server (the controllers see it as they would see kubelets). Not kwok (the Go proxy is not used here):
    the same three steps, in Python, with the super-admin credentials.

    A step whose request failed (other than 404/409: the pod is gone or moved on) is done again :data:`RETRY_S`
    later, from the pod as the API server then has it, as a kubelet's pod worker retries: a step done once and lost
    leaves a pod terminating or unbound for good, and its DaemonSet or ReplicaSet waits for it forever.
    ``counts["errors"]`` counts the failed requests (each one retried); :attr:`failures` keeps the first messages."""

    def __init__(self, api: KubeApi, nodes: list[str], workers: int = 8) -> None:
        self.api, self.nodes, self.workers = api, nodes, workers
        self.queue: queue.Queue[dict[str, Any] | tuple[str, str] | None] = queue.Queue()  # a pod, or (ns, name)
        self.failures: list[str] = []
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.seen: set[tuple[str, str]] = set()
        self.counts: dict[str, int] = {"bind": 0, "run": 0, "delete": 0, "errors": 0}
        self.next = 0
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        self.threads = [threading.Thread(target=self._watch, name="pods-watch", daemon=True)]
        self.threads += [
            threading.Thread(target=self._work, name=f"pods-{i}", daemon=True) for i in range(self.workers)
        ]
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopped.set()
        for _ in range(self.workers):
            self.queue.put(None)

    def _watch(self) -> None:
        while not self.stopped.is_set():
            try:
                rv = ""
                cont: str | None = None
                while True:
                    page = self.api.get("/api/v1/pods", limit=500, **({"continue": cont} if cont else {}))
                    for pod in page.get("items") or []:
                        self.queue.put(pod)
                    rv = rv or str(page["metadata"]["resourceVersion"])
                    cont = page["metadata"].get("continue")
                    if not cont:
                        break
                for event in self.api.watch("/api/v1/pods", rv, 120):
                    if self.stopped.is_set():
                        return
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self.queue.put(event["object"])
            except KubeApiError:
                time.sleep(0.5)

    def _work(self) -> None:
        while (item := self.queue.get()) is not None:
            if isinstance(item, tuple):  # a retry: the pod as the API server has it now
                try:
                    pod = self.api.get("/api/v1/namespaces/{}/pods/{}".format(*item))
                except KubeApiError as exc:
                    if exc.status != 404:  # 404: gone, nothing left to do
                        self._failed(item, None, exc)
                    continue
            else:
                pod = item
            step = self._step(pod)
            if step is None:
                continue
            stage, do = step
            try:
                do()
            except KubeApiError as exc:
                if exc.status not in (404, 409):  # gone, or moved on (bound, or a newer pod of that name)
                    meta = pod["metadata"]
                    self._failed((meta["namespace"], meta["name"]), (meta["uid"], stage), exc)

    def _failed(self, key: tuple[str, str], step: tuple[str, str] | None, exc: KubeApiError) -> None:
        """A request failed: count it, forget the step (so it is done again) and read the pod again in
        :data:`RETRY_S`."""
        with self.lock:
            self.counts["errors"] += 1
            if len(self.failures) < 10:
                self.failures.append(exc.message)
            if step is not None and step in self.seen:
                self.seen.discard(step)
                self.counts[step[1]] -= 1
        timer = threading.Timer(RETRY_S, self.queue.put, (key,))
        timer.daemon = True
        timer.start()

    def _once(self, uid: str, stage: str) -> bool:
        with self.lock:
            if (uid, stage) in self.seen:
                return False
            self.seen.add((uid, stage))
            self.counts[stage] += 1
            return True

    def _step(self, pod: dict[str, Any]) -> tuple[str, Callable[[], object]] | None:
        """What this pod needs next and has not had yet: ``(stage, the request that does it)``, or None."""
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        path = f"/api/v1/namespaces/{ns}/pods/{name}"
        if meta.get("deletionTimestamp"):
            if not self._once(uid, "delete"):
                return None
            options = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}
            return "delete", lambda: self.api.request("DELETE", path, options | {"preconditions": {"uid": uid}})
        if not spec.get("nodeName"):
            if not self._once(uid, "bind"):
                return None
            node = _pod_node(pod)
            if node is None:
                with self.lock:
                    node, self.next = self.nodes[self.next % len(self.nodes)], self.next + 1
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            }
            return "bind", lambda: self.api.create(f"{path}/binding", binding)
        if status.get("phase") == "Running" or not self._once(uid, "run"):
            return None
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        conditions = [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        containers = [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "containerID": f"fleet://{uid}/{c['name']}",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for c in spec.get("containers") or []
        ]
        body = {
            "status": {"phase": "Running", "startTime": now, "conditions": conditions, "containerStatuses": containers}
        }
        return "run", lambda: self.api.patch(f"{path}/status", body, "strategic")


RETRY_S = 1.0
"""How long the :class:`PodSimulator` waits before it does a failed step again (a kubelet's pod worker retries)."""

RETIRED_KID = "retired-sa-key"
SA_NAMESPACES = 20
#: The share of --pods each kind of owner has, and the pods of one owner (DaemonSets: one per node).
POD_SHARES = {"Deployment": (0.7, 50), "StatefulSet": (0.1, 10), "DaemonSet": (0.2, 0)}


def _parallel(fn: Any, items: list[Any], workers: int = 16) -> None:
    """``fn`` over ``items``, ``workers`` at a time; a call whose request timed out (a loaded machine) is tried again,
    up to 5 times (so every ``fn`` must be idempotent: see :func:`_create`)."""
    from concurrent.futures import ThreadPoolExecutor

    def patient(item: Any) -> None:
        for attempt in range(5):
            try:
                fn(item)
                return
            except KubeApiError as exc:
                if exc.status is not None or attempt == 4:
                    raise
                time.sleep(2)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(patient, items))


def _create(api: KubeApi, path: str, obj: dict[str, Any]) -> None:
    """Create ``obj``; one that exists already (a retried request that had gone through) is fine."""
    try:
        api.create(path, obj)
    except KubeApiError as exc:
        if exc.status != 409:
            raise


def sa_nodes(api: KubeApi, count: int) -> list[str]:
    """``count`` Node objects, Ready with a heartbeat now, for the simulated pods (no sshd, no re-trust)."""
    beat = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    names = [node_name(i) for i in range(count)]

    def one(name: str) -> None:
        _create(api, "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
        capacity = {"cpu": "64", "memory": "256Gi", "pods": "1000"}
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": beat}
        status = {"capacity": capacity, "allocatable": capacity, "conditions": [ready | {"lastTransitionTime": beat}]}
        api.patch(f"/api/v1/nodes/{name}/status", {"status": status}, "strategic")
        # the not-ready taint the API server put on the new Node (TaintNodesByCondition): no node-lifecycle
        # controller runs to take it off, and DaemonSet pods do not tolerate it
        api.patch(f"/api/v1/nodes/{name}", {"spec": {"taints": None}})

    _parallel(one, names)
    return names


def _jwt_with_kid(kid: str, subject: str) -> str:
    def b64(obj: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'RS256', 'kid': kid})}.{b64({'sub': subject})}.{b64({'sig': 'retired'})}"


def sa_objects(api: KubeApi, fleet: Fleet, secrets: int, pods: int, nodes: int, progress: Any = print) -> str:
    """``secrets`` legacy ServiceAccount token Secrets whose token names a retired key id (as after ``sa.key`` was
    replaced), over :data:`SA_NAMESPACES` namespaces and 10 ServiceAccounts each; about ``pods`` pods owned by
    Deployments, StatefulSets and DaemonSets (:data:`POD_SHARES`), made by the real controllers and run by the
    :class:`PodSimulator`; waits until every workload is available. Returns what was made, in words."""
    ca = (fleet.root / "etc/kubernetes/pki/ca.crt").read_bytes()
    namespaces = [f"sa-{i:02d}" for i in range(SA_NAMESPACES)]

    def namespace(ns: str) -> None:
        _create(api, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for sa in ["app", *(f"legacy-{k}" for k in range(10))]:
            _create(
                api,
                f"/api/v1/namespaces/{ns}/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}},
            )

    _parallel(namespace, namespaces)

    def secret(i: int) -> None:
        ns, sa, name = namespaces[i % SA_NAMESPACES], f"legacy-{(i // SA_NAMESPACES) % 10}", f"legacy-{i:05d}"
        data = {"token": _jwt_with_kid(RETIRED_KID, name).encode(), "ca.crt": ca, "namespace": ns.encode()}
        _create(
            api,
            f"/api/v1/namespaces/{ns}/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/service-account-token",
                "metadata": {"name": name, "annotations": {"kubernetes.io/service-account.name": sa}},
                "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
            },
        )

    t0 = time.monotonic()
    _parallel(secret, list(range(secrets)))
    progress(f"sa: {secrets} legacy token Secrets in {time.monotonic() - t0:.0f} s")

    owners: list[tuple[str, str, str, int]] = []  # kind, namespace, name, replicas
    for kind, (share, per) in POD_SHARES.items():
        want = round(pods * share)
        size = per or max(1, nodes)
        for k in range((want + size - 1) // size if want else 0):
            owners.append((kind, namespaces[k % SA_NAMESPACES], f"{kind.lower()}-{k:03d}", min(size, want - k * size)))
    template = {
        "spec": {
            "serviceAccountName": "app",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
        }
    }

    def owner(item: tuple[str, str, str, int]) -> None:
        kind, ns, name, replicas = item
        spec: dict[str, Any] = {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}} | template,
        }
        if kind == "Deployment":
            spec |= {"replicas": replicas}
        elif kind == "StatefulSet":
            spec |= {"replicas": replicas, "serviceName": name, "podManagementPolicy": "Parallel"}
        else:
            spec |= {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}}
        _create(
            api,
            f"/apis/apps/v1/namespaces/{ns}/{kind.lower()}s",
            {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec},
        )

    t0 = time.monotonic()
    _parallel(owner, owners, 4)
    expected = sum(r for _, _, _, r in owners)
    deadline = time.monotonic() + 1800
    while True:
        running = 0
        cont: str | None = None
        while True:
            page = api.get(
                "/api/v1/pods", limit=500, fieldSelector="status.phase=Running", **({"continue": cont} if cont else {})
            )
            running += len(page.get("items") or [])
            cont = page["metadata"].get("continue")
            if not cont:
                break
        if running >= expected:
            break
        if time.monotonic() > deadline:
            raise LabError(f"only {running} of {expected} pods run after 30 min", f"read {fleet.work}/*.log")
        time.sleep(5)
    kinds = {k: sum(1 for o in owners if o[0] == k) for k in POD_SHARES}
    progress(f"sa: {expected} pods of {kinds} running in {time.monotonic() - t0:.0f} s")
    return f"{secrets} Secrets, {expected} pods of {kinds}"
