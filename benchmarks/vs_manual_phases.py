"""Where kuberevive's time went in a ``vs_manual.py`` output: its JSON line's per-trial figures as a Markdown table.

    python benchmarks/vs_manual_phases.py benchmarks/results/vs_manual-runs3-2026-12-05.txt

One column per kuberevive trial and one for their median: the benchmark's own times (API ready, all nodes Ready,
everything done, from the command's start), the command's wall time, the time before its first step, every step's
seconds (``report.phases_s`` of ``recover --json``) and the derived ``timings``. Nothing is typed by hand: this is
what docs/performance.md pastes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any


def _json_line(path: Path) -> dict[str, Any]:
    for line in reversed(path.read_text().splitlines()):
        if line.startswith("{") and '"benchmark": "vs_manual"' in line:
            return dict(json.loads(line))
    raise SystemExit(f"{path}: no vs_manual JSON line")


def rows(result: dict[str, Any], method: str = "kuberevive") -> list[tuple[str, list[float | None]]]:
    trials = result["trials"].get(method) or []
    out: list[tuple[str, list[float | None]]] = []
    for key in ("api_ready_s", "nodes_ready_s", "done_s"):
        out.append((key, [t.get(key) for t in trials]))
    runs = [t.get("run") or {} for t in trials]
    out.append(("procedure_s (the command's wall time)", [r.get("procedure_s") for r in runs]))
    before = []
    for r in runs:
        done = (r.get("timings") or {}).get("start_to_done_s")
        before.append(round(r["procedure_s"] - done, 1) if done is not None and "procedure_s" in r else None)
    out.append(("before the first step", before))
    phases: list[str] = []
    for r in runs:
        phases += [p for p in r.get("phases_s") or {} if p not in phases]
    for p in phases:
        out.append((f"step {p}", [(r.get("phases_s") or {}).get(p) for r in runs]))
    timings: list[str] = []
    for r in runs:
        timings += [k for k in r.get("timings") or {} if k not in timings]
    for k in timings:
        out.append((f"timings {k}", [(r.get("timings") or {}).get(k) for r in runs]))
    return out


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="a saved vs_manual.py output")
    parser.add_argument("--method", default="kuberevive")
    args = parser.parse_args()
    result = _json_line(args.output)
    table = rows(result, args.method)
    n = len(table[0][1]) if table else 0
    print("| seconds | " + " | ".join(f"trial {i + 1}" for i in range(n)) + " | median |")
    print("|---" * (n + 2) + "|")
    for name, values in table:
        known = [v for v in values if v is not None]
        median = statistics.median(known) if known else None
        print(f"| {name} | " + " | ".join(_cell(v) for v in values) + f" | {_cell(median)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
