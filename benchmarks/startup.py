"""How fast ``kuberevive --help`` and ``--version`` start (issue 15: under 0.3 s on a quiet machine).

    python benchmarks/startup.py [--runs N]

Runs each command N times (default 5) as a new process with this Python, prints the median, min and max wall
time,; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "--help": ["--help"],
    "--version": ["--version"],
    "diagnose --help": ["diagnose", "--help"],
}


def seconds(args: list[str]) -> float:
    return seconds_of([sys.executable, "-m", "kuberevive", *args])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    baseline = [seconds_of([sys.executable, "-c", "pass"]) for _ in range(runs)]
    result: dict[str, dict[str, float]] = {"python -c pass": _figures(baseline)}
    for name, args in COMMANDS.items():
        result[f"kuberevive {name}"] = _figures([seconds(args) for _ in range(runs)])
    for name, f in result.items():
        print(f"{name:<28} median {f['median_s']:.3f} s  (min {f['min_s']:.3f}, max {f['max_s']:.3f}, {runs} runs)")
    print(json.dumps({"benchmark": "startup", "runs": runs, "results": result}))


def seconds_of(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - started


def _figures(values: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(values), 4),
        "min_s": round(min(values), 4),
        "max_s": round(max(values), 4),
    }


if __name__ == "__main__":
    main()
