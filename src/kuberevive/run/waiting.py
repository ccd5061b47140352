"""Waiting for a condition during a recovery, with one clear sentence when it does not come."""

from __future__ import annotations

import time
from collections.abc import Callable

from kuberevive.errors import KubereviveError, PlanError


def wait_for(what: str, timeout: float, probe: Callable[[], tuple[bool, str]], interval: float = 0.5) -> float:
    start = time.monotonic()
    last = ""
    while True:
        try:
            ok, last = probe()
        except KubereviveError as exc:
            ok, last = False, str(exc)
        if ok:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise PlanError(
                f"{what} did not come up within {int(timeout)} s (last: {last[:300]})",
                "look at the kubelet's log and 'crictl ps -a', fix the cause, then run 'kuberevive recover --apply' "
                "again: it resumes where it stopped",
            )
        time.sleep(interval)
