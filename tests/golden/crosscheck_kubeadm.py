"""Compare kuberevive's static Pod manifests with the ones a real kubeadm binary writes.

For each kubeadm config file given, this runs

    kubeadm init phase control-plane all --config /config.yaml --rootfs <scratch root>
    kubeadm init phase etcd local        --config /config.yaml --rootfs <scratch root>

in a throw-away root (kubeadm chroots into it, so nothing is written outside; the host's
/etc/kubernetes is checked to be untouched afterwards). The scratch root holds exactly the host
directories named by ``--existing`` (default: the three CA directories of the golden NodeFacts), so
kubeadm's os.Stat checks for the optional CA volumes see what kuberevive's NodeFacts says.
kubeadm runs with an empty environment plus ``--env NAME=VALUE`` (for the proxy-variable rule).

Then every manifest kubeadm wrote is compared byte for byte with ``build_manifests`` for the same
config, and the file mode with 0600. Exit status 0 when all are identical, 1 otherwise (a unified
diff is printed), 2 on usage errors.

    python tests/golden/crosscheck_kubeadm.py tests/configs/*.yaml
    python tests/golden/crosscheck_kubeadm.py --env HTTPS_PROXY=http://p:3128 tests/configs/defaults.yaml
    python tests/golden/crosscheck_kubeadm.py --against-golden tests/configs/*.yaml   # also vs. goldens
"""

from __future__ import annotations

import argparse
import base64
import difflib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from kuberevive.core.manifests import build_manifests
from kuberevive.model.config import NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config

DEFAULT_KUBEADM = "/var/cache/kuberevive/k8s-v1.33.13-etcd-v3.5.24/bin/kubeadm"
GOLDEN_EXISTING = ("/etc/ssl/certs", "/etc/ca-certificates", "/usr/share/ca-certificates")
GOLDEN_ROOT = Path(__file__).resolve().parent / "v1.33"


def _host_kubernetes_state() -> str:
    p = Path("/etc/kubernetes")
    if not p.exists():
        return "absent"
    return "\n".join(sorted(f"{q} {q.stat().st_mtime_ns}" for q in p.rglob("*")))


def _node_name() -> str:
    # The facts' hostname only matters when nodeRegistration.name is missing; kubeadm would then use
    # the machine's hostname, so pass that (lower-cased) like kubeadm does.
    return os.uname().nodename.lower()


def run_kubeadm(
    kubeadm: str, config: Path, existing: tuple[str, ...], env: dict[str, str], external_ca: str = ""
) -> dict[str, tuple[str, int]]:
    """Run both phases in a scratch root; return file name -> (text, mode).

    ``external_ca``: path of a ca.crt to create (with openssl, no ca.key) before running kubeadm.
    """
    with tempfile.TemporaryDirectory(prefix="kr-kubeadm-") as tmp:
        root = Path(tmp) / "root"
        for d in existing:
            (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
        root.mkdir(exist_ok=True)
        if external_ca:
            ca = root / external_ca.lstrip("/")
            ca.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    str(Path(tmp) / "ca.key"),
                    "-out",
                    str(ca),
                    "-days",
                    "1",
                    "-subj",
                    "/CN=kubernetes",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign",
                ],
                check=True,
                capture_output=True,
            )
            # kubeadm also requires the leaves of that CA (UsingExternalCA / validateSignedCert).
            for leaf, eku in (("apiserver", "serverAuth"), ("apiserver-kubelet-client", "clientAuth")):
                key, csr, crt = (ca.parent / f"{leaf}.key", Path(tmp) / f"{leaf}.csr", ca.parent / f"{leaf}.crt")
                ext = Path(tmp) / f"{leaf}.ext"
                ext.write_text(f"extendedKeyUsage={eku}\nsubjectAltName=DNS:kubernetes,IP:10.96.0.1\n")
                subprocess.run(
                    [
                        "openssl",
                        "req",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-keyout",
                        str(key),
                        "-out",
                        str(csr),
                        "-subj",
                        f"/CN={leaf}",
                    ],
                    check=True,
                    capture_output=True,
                )
                subprocess.run(
                    [
                        "openssl",
                        "x509",
                        "-req",
                        "-in",
                        str(csr),
                        "-CA",
                        str(ca),
                        "-CAkey",
                        str(Path(tmp) / "ca.key"),
                        "-CAcreateserial",
                        "-out",
                        str(crt),
                        "-days",
                        "1",
                        "-extfile",
                        str(ext),
                    ],
                    check=True,
                    capture_output=True,
                )
            _write_external_ca_kubeconfigs(root, ca, Path(tmp))
        shutil.copyfile(config, root / "config.yaml")
        full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env}
        for phase in (["control-plane", "all"], ["etcd", "local"]):
            proc = subprocess.run(
                [kubeadm, "init", "phase", *phase, "--config", "/config.yaml", "--rootfs", str(root)],
                env=full_env,
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0 and not (phase[0] == "etcd" and "external etcd" in proc.stderr):
                raise SystemExit(f"kubeadm {' '.join(phase)} failed for {config}:\n{proc.stdout}{proc.stderr}")
        out: dict[str, tuple[str, int]] = {}
        mdir = root / "etc/kubernetes/manifests"
        for f in sorted(mdir.glob("*.yaml")) if mdir.is_dir() else []:
            out[f.name] = (f.read_text(), stat.S_IMODE(f.stat().st_mode))
        return out


def _write_external_ca_kubeconfigs(root: Path, ca: Path, tmp: Path) -> None:
    """External-CA mode also needs every kubeconfig, each with the CA and a client cert it signed."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    for name in ("admin", "super-admin", "kubelet", "controller-manager", "scheduler"):
        key, csr, crt = tmp / f"{name}-kc.key", tmp / f"{name}-kc.csr", tmp / f"{name}-kc.crt"
        ext = tmp / f"{name}-kc.ext"
        ext.write_text("extendedKeyUsage=clientAuth\n")
        subprocess.run(
            [
                "openssl",
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(csr),
                "-subj",
                f"/CN={name}",
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(ca),
                "-CAkey",
                str(tmp / "ca.key"),
                "-CAcreateserial",
                "-out",
                str(crt),
                "-days",
                "1",
                "-extfile",
                str(ext),
            ],
            check=True,
            capture_output=True,
        )
        (root / "etc/kubernetes" / f"{name}.conf").write_text(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kubernetes\n  cluster:\n"
            f"    certificate-authority-data: {b64(ca)}\n    server: https://127.0.0.1:6443\n"
            "contexts:\n- name: c\n  context:\n    cluster: kubernetes\n    user: u\n"
            "current-context: c\nusers:\n- name: u\n  user:\n"
            f"    client-certificate-data: {b64(crt)}\n    client-key-data: {b64(key)}\n"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+", type=Path)
    ap.add_argument("--kubeadm", default=DEFAULT_KUBEADM)
    ap.add_argument("--existing", action="append", help="host directory that exists (repeatable)")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE in kubeadm's environment")
    ap.add_argument(
        "--external-ca", action="store_true", help="put only <certificatesDir>/ca.crt (no ca.key) in the scratch root"
    )
    ap.add_argument("--against-golden", action="store_true", help="also compare with tests/golden/v1.33/<name>")
    args = ap.parse_args(argv)
    if not Path(args.kubeadm).is_file():
        print(f"kubeadm binary not found: {args.kubeadm}", file=sys.stderr)
        return 2
    existing = tuple(args.existing) if args.existing else GOLDEN_EXISTING
    env = dict(e.split("=", 1) for e in args.env)
    before = _host_kubernetes_state()
    failures = 0
    for config in args.configs:
        text = config.read_text()
        facts = NodeFacts(
            hostname=_node_name(),
            default_address=None,
            existing_paths=frozenset(existing),
            proxy_env=tuple(sorted(env.items())),
        )
        cfg = load_kubeadm_config(text, facts)
        ca_path = f"{cfg.cluster.certificates_dir.rstrip('/')}/ca.crt" if args.external_ca else ""
        if ca_path:
            facts = NodeFacts(
                hostname=facts.hostname,
                default_address=None,
                proxy_env=facts.proxy_env,
                existing_paths=facts.existing_paths | {ca_path},
            )
        ours = {a.path.name: (a.content.decode(), a.mode) for a in build_manifests(cfg, facts)}
        theirs = run_kubeadm(args.kubeadm, config, existing, env, ca_path)
        sides = [("kubeadm", theirs)]
        if args.against_golden:
            prefix = "crosscheck-" if config.resolve().parent.name == "crosscheck" else ""
            gdir = GOLDEN_ROOT / f"{prefix}{config.stem}" / "manifests"
            sides.append(("golden", {f.name: (f.read_text(), 0o600) for f in sorted(gdir.glob("*.yaml"))}))
        for label, other in sides:
            if sorted(other) != sorted(ours):
                failures += 1
                print(f"DIFF {config.name}: {label} files {sorted(other)} != kuberevive {sorted(ours)}")
            for name in sorted(set(other) & set(ours)):
                (t_text, t_mode), (o_text, o_mode) = other[name], ours[name]
                if t_text == o_text and t_mode == o_mode:
                    print(f"same {config.name} {name} ({label})")
                    continue
                failures += 1
                print(f"DIFF {config.name} {name} ({label}): mode {t_mode:o} vs ours {o_mode:o}")
                sys.stdout.writelines(
                    difflib.unified_diff(t_text.splitlines(True), o_text.splitlines(True), label, "kuberevive")
                )
    after = _host_kubernetes_state()
    if before != after:
        print("ERROR: the host's /etc/kubernetes changed during the run", file=sys.stderr)
        return 2
    print(f"host /etc/kubernetes: {after if after == 'absent' else 'unchanged'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
