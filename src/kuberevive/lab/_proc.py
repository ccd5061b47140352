"""Running programs and waiting for conditions, with failures turned into LabError once, here."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from kuberevive.errors import LabError
from kuberevive.waiting import poll_until

T = TypeVar("T")


def _tail(text: str, lines: int = 3) -> str:
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept)


def run(
    argv: Sequence[str],
    *,
    step: str,
    check: bool = True,
    input: str | bytes | None = None,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    hint: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; stdout/stderr captured as text (and appended to ``log`` when given)."""
    data = input.decode() if isinstance(input, bytes) else input
    try:
        proc = subprocess.run(
            list(argv),
            input=data,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(
            f"{step}: `{' '.join(argv)}` did not finish within {timeout:.0f}s",
            hint or (f"Read {log}." if log else "Run `kuberevive lab status` and retry."),
        ) from exc
    except FileNotFoundError as exc:
        raise LabError(f"{step}: program {argv[0]!r} not found", "Install it (see docs/lab.md).") from exc
    if log is not None:
        with log.open("a") as fh:
            fh.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}[exit {proc.returncode}]\n")
    if check and proc.returncode != 0:
        where = f" Read {log}." if log else ""
        raise LabError(
            f"{step}: `{' '.join(argv[:6])}{' ...' if len(argv) > 6 else ''}` exited {proc.returncode}: "
            f"{_tail(proc.stderr or proc.stdout)}",
            (hint + where).strip() or "Run `kuberevive lab down` and `kuberevive lab up` again.",
        )
    return proc


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 1.0,
    hint: str = "",
) -> T:
    """Call ``probe`` until it returns something other than None/False; LabError after ``timeout``."""
    found: list[T] = []

    def ready() -> tuple[bool, str]:
        result = probe()
        if result is not None and result is not False:
            found.append(result)
            return True, ""
        return False, "not yet"

    waited = poll_until(what, timeout, ready, interval, retry=(LabError,))
    if not waited.ok:
        detail = f" (last error: {waited.last})" if waited.last != "not yet" else ""
        raise LabError(f"timed out after {timeout:.0f}s waiting for {what}{detail}", hint or "Read the node logs.")
    return found[0]
