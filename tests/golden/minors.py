"""The per-minor golden files: which minors have them, the configuration each was made from, and the one script
that makes (and re-checks) them all with each minor's real kubeadm.

For a minor v1.X the reference configuration ``tests/configs/<name>.yaml`` is used with ``kubernetesVersion`` set to
the patch release whose kubeadm made the goldens (:data:`kuberevive.core.versions.CHECKED_PATCH`); a minor that reads
no v1beta4 (v1.30) uses the v1beta3 form in ``tests/configs/v1beta3/<name>.yaml`` instead.

    python -m tests.golden.minors            # as root: every minor whose kubeadm is built, (re)writes the goldens
    python -m tests.golden.minors --check    # as root: compare instead of writing; exit 1 on any difference

kubeadm runs ``init phase certs ca``, ``kubeconfig all``, ``control-plane all`` and ``etcd local`` with ``--rootfs``
in a scratch root that holds only the configuration and the three CA directories of the golden NodeFacts, with an
empty environment; its manifests are stored as they are, its kubeconfigs normalised (kubeconfig_normalise.py).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from kuberevive.core.versions import CHECKED_PATCH, minor_profile
from kuberevive.lab.config import ETCD_VERSION as LAB_ETCD_VERSION
from kuberevive.lab.config import K8S_VERSION as LAB_K8S_VERSION

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs"
CACHE = Path(os.environ.get("KUBEREVIVE_CACHE", "/var/cache/kuberevive"))
CONFIG_NAMES = ("defaults", "endpoint-sans", "ecdsa-validity")
KUBECONFIG_NAMES = ("admin.conf", "super-admin.conf", "kubelet.conf", "controller-manager.conf", "scheduler.conf")
#: Host CA directories of the golden NodeFacts, created in the scratch root.
CA_DIRS = ("/etc/ssl/certs", "/etc/ca-certificates", "/usr/share/ca-certificates")
PHASES = (("certs", "ca"), ("kubeconfig", "all"), ("control-plane", "all"), ("etcd", "local"))
VERSION_LINE = re.compile(r"^kubernetesVersion: .*$", re.M)


def golden_dir(minor: int) -> Path:
    return HERE / f"v1.{minor}"


def golden_minors() -> list[int]:
    """Every minor that has a golden directory."""
    return sorted(m for m in CHECKED_PATCH if golden_dir(m).is_dir())


def config_text(name: str, minor: int) -> str:
    """The reference configuration ``name`` as given to kubeadm v1.<minor>."""
    form = "v1beta4" if "v1beta4" in minor_profile(minor).config_api_versions else "v1beta3"
    path = CONFIGS / f"{name}.yaml" if form == "v1beta4" else CONFIGS / "v1beta3" / f"{name}.yaml"
    text = path.read_text()
    if not VERSION_LINE.search(text):
        raise ValueError(f"{path} has no kubernetesVersion line")
    return VERSION_LINE.sub(f"kubernetesVersion: {CHECKED_PATCH[minor]}", text)


def kubeadm_path(minor: int) -> Path:
    """Where build-kubeadm.sh (or, for v1.33 and the lab's version, build-binaries.sh) puts kubeadm of the minor's
    checked patch."""
    version = CHECKED_PATCH[minor].removeprefix("v")
    if minor == 33:
        return CACHE / f"k8s-v{version}-etcd-v3.5.24" / "bin" / "kubeadm"
    if version == LAB_K8S_VERSION:  # the lab's own set (build-binaries.sh) holds it: not built twice
        return CACHE / f"k8s-v{version}-etcd-v{LAB_ETCD_VERSION}" / "bin" / "kubeadm"
    return CACHE / f"kubeadm-v{version}" / "kubeadm"


def kubeadm_versions_to_build() -> list[str]:
    """The checked patches (without the "v") whose kubeadm only build-kubeadm.sh builds: .ci/install builds them."""
    return [
        CHECKED_PATCH[m].removeprefix("v") for m in CHECKED_PATCH if kubeadm_path(m).parent.name.startswith("kubeadm-")
    ]


def run_kubeadm(kubeadm: Path, config: str, root: Path) -> None:
    """The four phases in ``root`` (kubeadm chroots there); raises RuntimeError with kubeadm's stderr."""
    for d in CA_DIRS:
        (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    (root / "kubeadm.yaml").write_text(config)
    for phase, sub in PHASES:
        run = subprocess.run(
            [str(kubeadm), "init", "phase", phase, sub, "--config", "/kubeadm.yaml", "--rootfs", str(root)],
            capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin"}, check=False,
        )  # fmt: skip
        if run.returncode != 0:
            raise RuntimeError(f"{kubeadm} init phase {phase} {sub}: {run.stderr.strip()}")


def kubeadm_output(kubeadm: Path, config: str) -> dict[str, str]:
    """Relative golden path (``manifests/etcd.yaml``, ``kubeconfigs/admin.conf``) -> what kubeadm wrote."""
    from tests.golden.kubeconfig_normalise import normalise

    with tempfile.TemporaryDirectory(prefix="kr-minor-") as tmp:
        root = Path(tmp)
        run_kubeadm(kubeadm, config, root)
        k = root / "etc/kubernetes"
        out = {f"manifests/{p.name}": p.read_text() for p in sorted((k / "manifests").glob("*.yaml"))}
        for p in sorted((k / "manifests").glob("*.yaml")):
            if p.stat().st_mode & 0o777 != 0o600:
                raise RuntimeError(f"kubeadm wrote {p.name} with mode {p.stat().st_mode & 0o777:o}, not 600")
        for name in KUBECONFIG_NAMES:
            out[f"kubeconfigs/{name}"] = normalise((k / name).read_text())
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the stored goldens, write nothing")
    parser.add_argument("minors", nargs="*", type=int, help="minors (e.g. 34 35); default: every built kubeadm")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("minors: kubeadm --rootfs needs root (chroot)", file=sys.stderr)
        return 2
    minors = args.minors or [m for m in CHECKED_PATCH if kubeadm_path(m).exists()]
    failed = 0
    for minor in minors:
        kubeadm = kubeadm_path(minor)
        if not kubeadm.exists():
            print(f"v1.{minor}: {kubeadm} is not built (lab/data/build-kubeadm.sh {CHECKED_PATCH[minor][1:]})")
            failed += 1
            continue
        for name in CONFIG_NAMES:
            files = kubeadm_output(kubeadm, config_text(name, minor))
            base = golden_dir(minor) / name
            for rel, text in files.items():
                path = base / rel
                if args.check:
                    if not path.exists() or path.read_text() != text:
                        print(f"DIFFERS: {path} (kubeadm {CHECKED_PATCH[minor]})")
                        failed += 1
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text)
            print(f"v1.{minor} {name}: {len(files)} files {'checked' if args.check else 'written'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
