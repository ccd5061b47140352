"""benchmarks/vs_manual_phases.py cannot rot: it turns a saved vs_manual.py output into the table docs/performance.md
pastes (one column per kuberevive trial, their median)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def test_the_phases_table_of_a_saved_three_trial_output() -> None:
    script = RESULTS.parent / "vs_manual_phases.py"
    out = subprocess.run(
        [sys.executable, str(script), str(RESULTS / "vs_manual-runs3.txt")], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "| seconds | trial 1 | trial 2 | trial 3 | median |"
    assert "| api_ready_s | 40.1 | 15.1 | 21.1 | 21.1 |" in out
    assert "| step remove-guard | 32.3 | 32.3 | 36.4 | 32.3 |" in out
    assert "| before the first step | 3.4 | 1.3 | 2.5 | 2.5 |" in out
