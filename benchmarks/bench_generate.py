"""How long generating the full kubeadm artifact set takes (certs, kubeconfigs, manifests).

    python benchmarks/bench_generate.py [--runs N] [--algorithms RSA-2048,ECDSA-P256,...]

Prints, per key algorithm, the median (and min/max) of N runs of the pure core and of the same
plus writing every file to a fresh temporary root.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from kuberevive.core.generate import Target, generate
from kuberevive.io.noderoot import NodeRoot
from kuberevive.model.config import NodeFacts
from kuberevive.model.kubeadm_yaml import load_kubeadm_config

CONFIG = """
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint: {{advertiseAddress: 10.0.0.10}}
nodeRegistration: {{name: bench}}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.33.13
encryptionAlgorithm: {algorithm}
"""
FACTS = NodeFacts(hostname="bench", existing_paths=frozenset({"/etc/ssl/certs"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--algorithms", default="RSA-2048,ECDSA-P256")
    args = parser.parse_args()
    print(f"full artifact set (22 PKI files, 5 kubeconfigs, 4 manifests), {args.runs} runs each")
    print(f"{'algorithm':<12} {'stage':<18} {'median':>9} {'min':>9} {'max':>9}")
    for algorithm in args.algorithms.split(","):
        cfg = load_kubeadm_config(CONFIG.format(algorithm=algorithm), FACTS)
        core: list[float] = []
        written: list[float] = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            result = generate(Target.ALL, cfg, FACTS, datetime.now(UTC), {})
            core.append(time.perf_counter() - t0)
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                result = generate(Target.ALL, cfg, FACTS, datetime.now(UTC), {})
                NodeRoot(Path(tmp)).write_all(result.artifacts)
                written.append(time.perf_counter() - t0)
        for stage, values in (("core (in memory)", core), ("core + write", written)):
            print(
                f"{algorithm:<12} {stage:<18} {statistics.median(values) * 1000:>7.0f}ms"
                f" {min(values) * 1000:>7.0f}ms {max(values) * 1000:>7.0f}ms"
            )


if __name__ == "__main__":
    main()
