"""Local container images for the lab, built from static binaries without any registry.

Each image is one layer written as a *docker-archive* tar (``manifest.json`` with ``RepoTags``, a
config JSON whose ``rootfs.diff_ids`` names the layer, and ``<digest>/layer.tar``), the format
``ctr images import`` reads. Images are named exactly as kubeadm expects them
(``kubeadm config images list --config ...``), imported into each node's own containerd in the
``k8s.io`` namespace, and used with ``imagePullPolicy: Never``/``IfNotPresent``, so nothing is pulled.

* control plane (kube-apiserver, kube-controller-manager, kube-scheduler, etcd): the static binary at
  ``/usr/local/bin/<name>`` plus an empty ``/tmp``; kubeadm's manifests call the binary by name.
* pause: the lab's own static C program (``data/pause.c``, ``gcc -Os -static``).
* kube-proxy: the static kube-proxy plus Debian's iptables (nft backend, ``xtables-nft-multi`` and its
  extension modules) and conntrack with the shared libraries ``ldd`` lists, copied from this host.
* labapp: the lab workload (``kuberevive/lab/data/labapp``).

Archives are cached under ``<cache>/images/<key>/`` where the key covers every input file (path,
size, mtime), so a second ``lab up`` builds nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from kuberevive.errors import LabError
from kuberevive.lab.config import LABAPP_IMAGE, LabConfig

FORMAT_VERSION = "1"
UNUSED_FOR = 7 * 24 * 3600  # prune_cache removes an archive no lab has used for a week
PAUSE_SOURCE = Path(__file__).parent / "data" / "pause.c"
XTABLES_DIR = Path("/usr/lib/x86_64-linux-gnu/xtables")


@dataclass(frozen=True)
class Entry:
    """One entry of the image layer: a file copied from ``src``, a directory, or a symlink."""

    dest: str
    src: Path | None = None
    mode: int = 0o755
    link: str | None = None
    is_dir: bool = False


@dataclass(frozen=True)
class ImageSpec:
    ref: str
    entries: tuple[Entry, ...]
    entrypoint: tuple[str, ...] = ()
    env: tuple[str, ...] = ("PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", self.ref) + ".tar"

    def cache_key(self) -> str:
        h = hashlib.sha256(FORMAT_VERSION.encode())
        h.update(json.dumps([self.ref, list(self.entrypoint), list(self.env)]).encode())
        for e in self.entries:
            h.update(f"{e.dest}|{e.mode}|{e.link}|{e.is_dir}".encode())
            if e.src is not None:
                st = e.src.stat()
                h.update(f"{e.src}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]


# --- the docker-archive writer (pure: bytes out) ----------------------------------------------


def _tarinfo(name: str, *, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, size: int = 0) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.mtime, ti.uid, ti.gid = kind, mode, size, 0, 0, 0
    return ti


def layer_tar(entries: tuple[Entry, ...]) -> bytes:
    """A deterministic layer tar; parent directories are created as needed (0755)."""
    buf = io.BytesIO()
    seen: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add_dirs(path: str) -> None:
            parts = path.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in seen:
                    seen.add(d)
                    tar.addfile(_tarinfo(d, kind=tarfile.DIRTYPE, mode=0o755))

        for e in sorted(entries, key=lambda x: x.dest):
            name = e.dest.strip("/")
            add_dirs(name)
            if name in seen:
                continue
            seen.add(name)
            if e.is_dir:
                tar.addfile(_tarinfo(name, kind=tarfile.DIRTYPE, mode=e.mode))
            elif e.link is not None:
                ti = _tarinfo(name, kind=tarfile.SYMTYPE, mode=0o777)
                ti.linkname = e.link
                tar.addfile(ti)
            else:
                assert e.src is not None
                data = e.src.read_bytes()
                tar.addfile(_tarinfo(name, mode=e.mode, size=len(data)), io.BytesIO(data))
    return buf.getvalue()


def docker_archive(spec: ImageSpec) -> bytes:
    layer = layer_tar(spec.entries)
    diff_id = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": list(spec.env),
            "Entrypoint": list(spec.entrypoint) or None,
            "Labels": spec.labels or None,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "kuberevive lab"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [spec.ref], "Layers": [f"{diff_id}/layer.tar"]}]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in (
            (config_name, config_bytes),
            (f"{diff_id}/layer.tar", layer),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            tar.addfile(_tarinfo(name, size=len(data)), io.BytesIO(data))
    return out.getvalue()


# --- image specs ------------------------------------------------------------------------------


def _tmp() -> Entry:
    return Entry("/tmp", is_dir=True, mode=0o1777)


def binary_image(ref: str, binaries: list[Path]) -> ImageSpec:
    entries = [Entry(f"/usr/local/bin/{b.name}", src=b) for b in binaries]
    return ImageSpec(ref, (*entries, _tmp()))


_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def shared_libraries(binary: Path) -> list[Path]:
    """The shared objects ``ldd`` resolves for ``binary`` (including the dynamic loader)."""
    try:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise LabError(f"cannot list the shared libraries of {binary}", "Install libc-bin (ldd).") from exc
    return [Path(m.group(1)) for m in map(_LDD_LINE.search, out.splitlines()) if m]


def kube_proxy_image(ref: str, kube_proxy: Path) -> ImageSpec:
    xt = Path("/usr/sbin/xtables-nft-multi")
    conntrack = Path("/usr/sbin/conntrack")
    for needed in (xt, conntrack, XTABLES_DIR):
        if not needed.exists():
            raise LabError(
                f"{needed} is missing; the kube-proxy image copies iptables from this host",
                "apt-get install iptables conntrack",
            )
    libs: dict[str, Path] = {}
    objects = [xt, conntrack, *sorted(XTABLES_DIR.glob("*.so"))]
    for obj in objects:
        for lib in shared_libraries(obj):
            libs.setdefault(str(lib), lib)
    entries: list[Entry] = [
        Entry("/usr/local/bin/kube-proxy", src=kube_proxy),
        Entry("/usr/sbin/xtables-nft-multi", src=xt),
        Entry("/usr/sbin/conntrack", src=conntrack),
        _tmp(),
        Entry("/run", is_dir=True),
        Entry("/var/lib/kube-proxy", is_dir=True),
    ]
    for name in (
        "iptables",
        "iptables-save",
        "iptables-restore",
        "ip6tables",
        "ip6tables-save",
        "ip6tables-restore",
        "iptables-nft",
        "iptables-nft-save",
        "iptables-nft-restore",
        "ip6tables-nft",
        "ip6tables-nft-save",
        "ip6tables-nft-restore",
    ):
        entries.append(Entry(f"/usr/sbin/{name}", link="xtables-nft-multi"))
    for so in sorted(XTABLES_DIR.glob("*.so")):
        entries.append(Entry(str(so), src=so.resolve(), mode=0o644))
    for path, lib in sorted(libs.items()):
        entries.append(Entry(path, src=lib.resolve(), mode=0o755))
    for etc in ("/etc/protocols", "/etc/services", "/etc/ethertypes"):
        if Path(etc).exists():
            entries.append(Entry(etc, src=Path(etc), mode=0o644))
    return ImageSpec(ref, tuple(entries))


def build_pause(out: Path) -> Path:
    """Compile the static pause program (cached next to the images), once per content of its source: a fresh
    checkout (a CI clone, a worktree) has a new source mtime, and a rebuilt binary would change the image's cache
    key under a lab that is importing the old one."""
    binary = out / f"pause-{hashlib.sha256(PAUSE_SOURCE.read_bytes()).hexdigest()[:16]}"
    if binary.exists():
        return binary
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"pause.{os.getpid()}.tmp"  # two labs (test workers) may build it at the same time
    try:
        subprocess.run(
            ["gcc", "-Os", "-static", "-o", str(tmp), str(PAUSE_SOURCE)], check=True, capture_output=True, text=True
        )
        subprocess.run(["strip", str(tmp)], check=False, capture_output=True)
    except FileNotFoundError as exc:
        raise LabError("gcc is needed to build the lab's pause image", "apt-get install gcc libc6-dev") from exc
    except subprocess.CalledProcessError as exc:
        raise LabError(f"building pause failed: {exc.stderr.strip()}", "apt-get install gcc libc6-dev") from exc
    os.replace(tmp, binary)
    return binary


@dataclass(frozen=True)
class LabImages:
    """Image name -> spec, for the names kubeadm asks for plus the lab's own."""

    specs: dict[str, ImageSpec]

    def refs_for(self, control_plane: bool) -> list[str]:
        workers_need = ("/pause:", "/kube-proxy:", "/labapp:")
        return [r for r in self.specs if control_plane or any(w in r for w in workers_need)]


def lab_images(cfg: LabConfig, kubeadm_refs: list[str]) -> LabImages:
    """Specs for every image kubeadm lists (CoreDNS excluded: the lab disables that addon)."""
    b = cfg.bin_cache
    specs: dict[str, ImageSpec] = {}
    pause = build_pause(cfg.image_cache / "pause-bin")
    for ref in kubeadm_refs:
        name = ref.rsplit("/", 1)[-1].split(":", 1)[0]
        if name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            specs[ref] = binary_image(ref, [b / name])
        elif name == "etcd":
            specs[ref] = binary_image(ref, [b / "etcd", b / "etcdctl", b / "etcdutl"])
        elif name == "kube-proxy":
            specs[ref] = kube_proxy_image(ref, b / "kube-proxy")
        elif name == "pause":
            if ref != cfg.pause_image:
                raise LabError(
                    f"kubeadm wants the sandbox image {ref}, the lab configures {cfg.pause_image}",
                    "Update pause_image_tag in kuberevive/core/versions.py.",
                )
            specs[ref] = ImageSpec(ref, (Entry("/pause", src=pause),), entrypoint=("/pause",))
        elif name == "coredns":
            continue
        else:
            raise LabError(
                f"kubeadm lists an image the lab cannot build: {ref}", "Teach kuberevive/lab/images.py how to build it."
            )
    specs[LABAPP_IMAGE] = ImageSpec(
        LABAPP_IMAGE, (Entry("/usr/local/bin/labapp", src=b / "labapp"), _tmp()), entrypoint=("/usr/local/bin/labapp",)
    )
    return LabImages(specs)


def ensure_archive(cfg: LabConfig, spec: ImageSpec) -> Path:
    """Build the archive of ``spec`` unless the cache already holds it; returns its path."""
    d = cfg.image_cache / spec.cache_key()
    path = d / spec.file_name
    if path.exists():
        os.utime(d)  # in use: prune_cache keeps it
        return path
    d.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two labs (test workers) may build it at the same time
    tmp.write_bytes(docker_archive(spec))
    os.replace(tmp, path)
    return path


def prune_cache(cfg: LabConfig, keep: list[Path], now: float | None = None) -> None:
    """Remove cached archives that no current spec uses and that no lab has used for ``UNUSED_FOR`` seconds.

    The cache is shared by every lab instance (CI's two test workers, labs of other Kubernetes versions): an
    archive another running lab still imports must survive this lab's prune, so age decides, not this lab's specs
    alone (``ensure_archive`` refreshes a directory's mtime each time a lab uses it)."""
    keep_dirs = {p.parent for p in keep}
    if not cfg.image_cache.is_dir():
        return
    cutoff = (time.time() if now is None else now) - UNUSED_FOR
    for d in cfg.image_cache.iterdir():
        if d.is_dir() and d.name != "pause-bin" and d not in keep_dirs and d.stat().st_mtime < cutoff:
            shutil.rmtree(d, ignore_errors=True)
