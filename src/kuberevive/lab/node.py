"""One lab node: its own network, mount and UTS namespaces, file system view, daemons and shell.

What a node sees (its private mount namespace, persisted at ``/run/kuberevive-lab/ns/<node>.mnt``):

* ``/etc``, ``/usr``, ``/var``: overlays of the host's directories with a per-node upper directory
  (``S/nodes/<node>/upper/...``). Everything a node writes there (``/etc/kubernetes``,
  ``/var/lib/etcd``, ``/etc/cni/net.d``, ``/var/log/pods``, ``/usr/lib/modules``...) stays in its own
  upper directory: the host's real ``/etc/kubernetes`` is never created or touched, and
  ``rm -rf /etc/kubernetes`` on a node works as on a real machine (no mount point in the way).
  ``/var/lib/etcd`` starts as an opaque (empty) directory, hiding the host's Debian etcd data dir.
* ``/var/lib/containerd`` and ``/var/lib/kubelet``: bind mounts of plain per-node directories
  (containerd's overlayfs snapshotter cannot put its upper dirs on an overlay).
* ``/var/lib/kuberevive-lab``: the real lab state directory again (bound over the overlay view), so
  pid files and logs written by node daemons are visible on the host.
* ``/run``: a fresh tmpfs (its own containerd socket, ``/run/netns`` for pod namespaces, ``/run/sshd``).
* ``/proc/sys/{vm/overcommit_memory,vm/panic_on_oom,kernel/panic,kernel/panic_on_oops,...}``: small
  files holding the values the kubelet insists on. These sysctls are global to the host (not per
  namespace); the kubelet rewrites them unless they already have its values
  (``setupKernelTunables`` in pkg/kubelet/cm/container_manager_linux.go). Showing it its values
  leaves the host's settings alone.
* hostname ``<node>`` (own UTS namespace); ``/etc/hosts`` lists every lab node.

Daemons (containerd, kubelet, sshd) are run by per-service supervisors through the node's
``systemctl`` shim; see supervisor.py and systemctl.py.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

from kuberevive.lab import supervisor as supervisor_module
from kuberevive.lab import systemctl as systemctl_module
from kuberevive.lab._proc import run
from kuberevive.lab.config import LabConfig, NodeSpec

#: The values the kubelet wants (pkg/util/sysctl): shown to it through bind mounts, see the module doc.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}

#: The flags of kubeadm's systemd drop-in (10-kubeadm.conf), used verbatim by the kubelet unit.
KUBELET_KUBECONFIG_ARGS = (
    "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
)
KUBELET_CONFIG_ARGS = "--config=/var/lib/kubelet/config.yaml"

CONTAINERD_CONFIG = """\
# containerd for one kuberevive lab node (Debian's containerd 1.6, run by the node's supervisor).
# Standard paths: they are the node's own through its mount namespace.
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  enable_selinux = false
  # The lab host withholds CAP_SYS_RESOURCE from root: runc cannot lower oom_score_adj (the CRI asks
  # -998 for sandboxes), so clamp container OOM scores to containerd's own, as for rootless setups.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
"""

CRICTL_YAML = """\
runtime-endpoint: unix:///run/containerd/containerd.sock
image-endpoint: unix:///run/containerd/containerd.sock
timeout: 10
"""


class Node:
    def __init__(self, cfg: LabConfig, spec: NodeSpec) -> None:
        self.cfg = cfg
        self.spec = spec
        self.name = spec.name
        self.dir = cfg.node_dir(spec.name)
        self.upper = self.dir / "upper"
        self.work = self.dir / "work"
        self.log_dir = cfg.log_dir(spec.name)
        self.run_dir = cfg.node_run_dir(spec.name)
        self.netns = cfg.netns_path(cfg.netns_name(spec.name))
        self.mntns = cfg.mntns_file(spec.name)
        self.utsns = cfg.utsns_file(spec.name)

    # --- entering the node ---------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {
            "PATH": self.cfg.node_path(),
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "TERM": os.environ.get("TERM", "dumb"),
            "KUBEREVIVE_LAB_NODE": self.name,
        }
        if self.spec.is_control_plane:
            env["KUBECONFIG"] = "/etc/kubernetes/admin.conf"
        return env

    def nsenter(self, argv: Sequence[str]) -> list[str]:
        return [
            "nsenter",
            f"--net={self.netns}",
            f"--mount={self.mntns}",
            f"--uts={self.utsns}",
            "--",
            "env",
            "-i",
            *[f"{k}={v}" for k, v in self.env().items()],
            *argv,
        ]

    def is_up(self) -> bool:
        return self.netns.exists() and self.mntns.exists() and _is_nsfs(self.mntns)

    def run(
        self,
        argv: Sequence[str],
        *,
        step: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120,
        log: Path | None = None,
        hint: str = "",
    ) -> subprocess.CompletedProcess[str]:
        return run(
            self.nsenter(argv),
            step=f"{step} on {self.name}",
            check=check,
            input=input,
            timeout=timeout,
            log=log,
            hint=hint,
        )

    def sh(
        self, script: str, *, step: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.run(["/bin/sh", "-c", script], step=step, check=check, timeout=timeout, input=input)

    def write_file(self, path: str, content: str, mode: int = 0o644) -> None:
        self.run(
            [
                "/bin/sh",
                "-c",
                f"mkdir -p {shlex.quote(str(Path(path).parent))} && "
                f"cat > {shlex.quote(path)}.tmp && chmod {mode:o} {shlex.quote(path)}.tmp && "
                f"mv {shlex.quote(path)}.tmp {shlex.quote(path)}",
            ],
            step=f"writing {path}",
            input=content,
        )

    def read_file(self, path: str) -> str:
        return self.run(["cat", path], step=f"reading {path}").stdout

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", *args], step=f"systemctl {' '.join(args)}", check=check, timeout=90)

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            ["kubectl", *args], step=f"kubectl {' '.join(args[:3])}", check=check, input=input, timeout=timeout
        )

    # --- building the node ---------------------------------------------------------------------
    def prepare_fs(self, ssh_pubkey_path: Path) -> None:
        """Create the node's directories and pre-populate its /etc (before the overlays are mounted)."""
        for d in (self.log_dir, self.run_dir, self.dir / "containerd", self.dir / "kubelet", self.dir / "sysctl"):
            d.mkdir(parents=True, exist_ok=True)
        for top in ("etc", "usr", "var"):
            (self.upper / top).mkdir(parents=True, exist_ok=True)
            (self.work / top).mkdir(parents=True, exist_ok=True)
        etc = self.upper / "etc"
        cfg = self.cfg
        (etc / "hostname").write_text(f"{self.name}\n")
        hosts = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
        hosts += "".join(f"{n.ip} {n.name}\n" for n in cfg.nodes)
        (etc / "hosts").write_text(hosts)
        # No resolver outside the lab: names that are not in /etc/hosts fail locally.
        (etc / "resolv.conf").unlink(missing_ok=True)
        (etc / "resolv.conf").write_text(
            "# kuberevive lab node: no DNS outside the lab\nnameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
        )
        (etc / "containerd").mkdir(exist_ok=True)
        (etc / "containerd" / "config.toml").write_text(CONTAINERD_CONFIG.format(pause_image=cfg.pause_image))
        (etc / "crictl.yaml").write_text(CRICTL_YAML)
        (etc / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
        self._prepare_ssh(etc / "ssh", ssh_pubkey_path)
        self._prepare_units(etc / "kuberevive-lab")
        # /var/lib/etcd: opaque, so the host's (Debian etcd-server) directory does not show through.
        etcd = self.upper / "var" / "lib" / "etcd"
        etcd.mkdir(parents=True, exist_ok=True)
        os.setxattr(etcd, "trusted.overlay.opaque", b"y")
        etcd.chmod(0o700)
        for mp in ("containerd", "kubelet"):
            (self.upper / "var" / "lib" / mp).mkdir(parents=True, exist_ok=True)
        # kube-proxy's DaemonSet mounts hostPath /lib/modules (= /usr/lib/modules here); the host has none.
        (self.upper / "usr" / "lib" / "modules").mkdir(parents=True, exist_ok=True)
        for key, value in KUBELET_SYSCTLS.items():
            (self.dir / "sysctl" / key.replace("/", ".")).write_text(value + "\n")

    def _prepare_ssh(self, ssh_etc: Path, pubkey: Path) -> None:
        ssh_etc.mkdir(parents=True, exist_ok=True)
        key = ssh_etc / "ssh_host_ed25519_key"
        if not key.exists():
            run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{self.name}", "-f", str(key)],
                step=f"generating the SSH host key of {self.name}",
            )
        # Hide the host's other host keys (overlay whiteouts): the node has only its own key.
        for other in ("ssh_host_rsa_key", "ssh_host_ecdsa_key", "ssh_host_dsa_key"):
            for name in (other, other + ".pub"):
                p = ssh_etc / name
                if not p.exists() and not p.is_symlink() and (Path("/etc/ssh") / name).exists():
                    os.mknod(p, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        cfg = self.cfg
        env_line = f"SetEnv PATH={cfg.node_path()} KUBEREVIVE_LAB_NODE={self.name}"
        if self.spec.is_control_plane:
            env_line += " KUBECONFIG=/etc/kubernetes/admin.conf"
        (ssh_etc / "sshd_config").write_text(
            f"# sshd of the kuberevive lab node {self.name}\n"
            f"ListenAddress {self.spec.ip}\nPort 22\n"
            "HostKey /etc/ssh/ssh_host_ed25519_key\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\n"
            f"AuthorizedKeysFile {pubkey}\n"
            "PidFile /run/sshd.pid\nPrintMotd no\nAcceptEnv LANG LC_*\n"
            "Subsystem sftp /usr/lib/openssh/sftp-server\n"
            f"{env_line}\n"
        )

    def has_host_key(self) -> bool:
        """False for a destroyed machine (nothing of it is left)."""
        return (self.upper / "etc" / "ssh" / "ssh_host_ed25519_key.pub").is_file()

    def host_public_key(self) -> str:
        return (self.upper / "etc" / "ssh" / "ssh_host_ed25519_key.pub").read_text().strip()

    def _unit(self, name: str, argv: list[str], **extra: object) -> dict[str, object]:
        unit: dict[str, object] = {
            "name": name,
            "exec": argv,
            "environment": {},
            "environment_files": [],
            "restart_sec": 2,
            "stop_timeout": 20,
            "log": str(self.log_dir / f"{name}.log"),
            "run_dir": str(self.run_dir),
            "cgroup": f"{self.cfg.cgroup_root(self.name)}/system.slice/{name}.service",
            "path": self.cfg.node_path(),
            "runtime_directories": [],
        }
        unit.update(extra)
        return unit

    def _prepare_units(self, d: Path) -> None:
        units = d / "units"
        units.mkdir(parents=True, exist_ok=True)
        specs = [
            self._unit("containerd", ["/usr/bin/containerd", "--config", "/etc/containerd/config.toml"]),
            # kubelet.service + kubeadm's 10-kubeadm.conf drop-in: Restart=always; the kubeadm flags file is
            # re-read at every start. RestartSec is 2s here (10s in kubeadm's unit) to keep the lab fast.
            self._unit(
                "kubelet",
                [
                    str(self.cfg.lab_bin / "kubelet"),
                    "$KUBELET_KUBECONFIG_ARGS",
                    "$KUBELET_CONFIG_ARGS",
                    "$KUBELET_KUBEADM_ARGS",
                    "$KUBELET_EXTRA_ARGS",
                ],
                environment={
                    "KUBELET_KUBECONFIG_ARGS": KUBELET_KUBECONFIG_ARGS,
                    "KUBELET_CONFIG_ARGS": KUBELET_CONFIG_ARGS,
                },
                environment_files=["-/var/lib/kubelet/kubeadm-flags.env", "-/etc/default/kubelet"],
            ),
            self._unit("sshd", ["/usr/sbin/sshd", "-D", "-e"], runtime_directories=["/run/sshd"]),
        ]
        for unit in specs:
            (units / f"{unit['name']}.json").write_text(json.dumps(unit, indent=2) + "\n")
            (units / f"{unit['name']}.enabled").touch()
        (d / "node.json").write_text(
            json.dumps(
                {
                    "node": self.name,
                    "units_dir": "/etc/kuberevive-lab/units",
                    "run_dir": str(self.run_dir),
                    "python": self.cfg.python,
                    "supervisor": str(Path(supervisor_module.__file__).resolve()),
                },
                indent=2,
            )
            + "\n"
        )

    def setup_script(self) -> str:
        """Runs inside the new mount/UTS namespace: hostname, overlays, binds, tmpfs /run, sysctl views."""
        q = shlex.quote
        s = self.cfg.state_dir
        lines = [
            "set -eu",
            f"exec 3<{q(str(s))}",
            f"hostname {q(self.name)}",
            # Drop this namespace's copies of other namespaces' mounts (they would pin those namespaces).
            f"umount -l {q(str(self.cfg.ns_dir))} 2>/dev/null || true",
            "umount -l /run/netns 2>/dev/null || true",
        ]
        for top in ("etc", "usr", "var"):  # /var last: the upper dirs live under /var
            lines.append(
                f"mount -t overlay overlay -o lowerdir=/{top},upperdir={q(str(self.upper / top))},"
                f"workdir={q(str(self.work / top))} /{top}"
            )
        lines += [
            # --no-canonicalize: mount(8) would otherwise resolve the fd link to a path, i.e. the overlay view.
            f"mount --no-canonicalize --bind /proc/self/fd/3 {q(str(s))}",
            "exec 3<&-",
            f"mount --bind {q(str(self.dir / 'containerd'))} /var/lib/containerd",
            f"mount --bind {q(str(self.dir / 'kubelet'))} /var/lib/kubelet",
            "mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run",
            "mkdir -p /run/lock /run/netns /run/sshd /run/containerd",
            # bash sources root's ~/.bashrc for every command run over SSH; a developer machine's (pyenv init: a
            # rehash under a lock at each login) made each SSH command of the tool take seconds under load. A lab
            # node is a plain machine: its root has an empty one.
            f": > {q(str(self.dir / 'bashrc'))}",
            f"if [ -f /root/.bashrc ]; then mount --bind {q(str(self.dir / 'bashrc'))} /root/.bashrc; fi",
        ]
        for key in KUBELET_SYSCTLS:
            lines.append(f"mount --bind {q(str(self.dir / 'sysctl' / key.replace('/', '.')))} /proc/sys/{key}")
        return "\n".join(lines) + "\n"

    def create_namespaces(self) -> None:
        for f in (self.mntns, self.utsns):
            f.touch()
        log = self.log_dir / "setup.log"
        run(
            [
                "nsenter",
                f"--net={self.netns}",
                "--",
                "unshare",
                f"--mount={self.mntns}",
                f"--uts={self.utsns}",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                self.setup_script(),
            ],
            step=f"creating the mount namespace of {self.name}",
            log=log,
        )

    def install_shims(self) -> None:
        """The node PATH directory (shared by all nodes): links to the binaries and the systemctl shim."""
        b = self.cfg.lab_bin
        b.mkdir(parents=True, exist_ok=True)
        for prog in ("kubelet", "kubeadm", "kubectl", "crictl", "etcdctl", "etcdutl", "kube-proxy"):
            link = b / prog
            target = self.cfg.bin_cache / prog
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)
        shim = b / "systemctl"
        shim.write_text(
            "#!/bin/sh\n# kuberevive lab: systemctl for lab nodes (see kuberevive/lab/systemctl.py)\n"
            f"exec {shlex.quote(self.cfg.python)} -I -S "
            f'{shlex.quote(str(Path(systemctl_module.__file__).resolve()))} "$@"\n'
        )
        shim.chmod(0o755)


def _is_nsfs(path: Path) -> bool:
    try:
        with open("/proc/self/mountinfo") as fh:
            return any(line.split()[4] == str(path) for line in fh)
    except OSError:
        return False
