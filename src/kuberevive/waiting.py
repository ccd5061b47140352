"""The one poll helper: wait for a condition, say every few seconds that it is still waiting and why.

:func:`poll_until` asks ``probe`` every ``interval`` seconds until it answers ``(True, ...)``, ``fail`` names a
reason to give up, or ``timeout`` seconds have passed; every :data:`HEARTBEAT` seconds it reports a heartbeat
(``waiting for etcd: 45 s of 180 s (last: connection refused)``) through ``progress`` (default: the run's log,
:func:`kuberevive.logs.progress`, which adds the timestamp). :func:`wait_for` is the same, raising one clear
sentence when the condition does not come. The clock and ``sleep`` are injectable, so tests run without waiting.

It does no node I/O of its own (only the probe does) and sits beside ``logs``, outside every layer, so ``io/`` modules
use it as well as the executors (``io/`` never imports ``run/``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict, Unpack

from kuberevive import logs
from kuberevive.errors import KubereviveError, PlanError

#: Seconds between two heartbeats.
HEARTBEAT = 5.0
#: Seconds between two looks at something on the recovery's critical path that is cheap to ask (etcd's /health, the
#: kubelet's /healthz, the API server's /readyz, one Node object): each wait ends at most this long after what it
#: waits for happened, where every fraction of a second adds to the time until the cluster is back.
QUICK = 0.2

Probe = Callable[[], tuple[bool, str]]


@dataclass(frozen=True)
class Waited:
    ok: bool
    last: str
    """The last probe's answer (or ``fail``'s reason)."""
    seconds: float


class PollOptions(TypedDict, total=False):
    """The optional settings of :func:`poll_until` and :func:`wait_for` (keyword arguments of both)."""

    clock: Callable[[], float]
    """Default :func:`time.monotonic`."""
    sleep: Callable[[float], None]
    """Default :func:`time.sleep`."""
    progress: Callable[[str], None] | None
    """Where heartbeats go; default (None) the run's log."""
    heartbeat: float
    """Seconds between two heartbeats; default :data:`HEARTBEAT`."""
    fail: Callable[[], str | None] | None
    """A reason to give up at once, or None."""
    retry: tuple[type[BaseException], ...]
    """Exceptions of ``probe`` that count as "not yet"; default :class:`KubereviveError`."""


def poll_until(
    what: str, timeout: float, probe: Probe, interval: float = 0.5, **options: Unpack[PollOptions]
) -> Waited:
    """Poll ``probe`` (see the module docstring); an exception in ``retry`` counts as "not yet" with its message."""
    clock = options.get("clock", time.monotonic)
    sleep = options.get("sleep", time.sleep)
    progress = options.get("progress")
    heartbeat = options.get("heartbeat", HEARTBEAT)
    fail = options.get("fail")
    retry = options.get("retry", (KubereviveError,))
    start = clock()
    beat = start + heartbeat
    while True:
        try:
            ok, last = probe()
        except retry as exc:
            ok, last = False, str(exc)
        now = clock()
        if ok:
            return Waited(True, last, now - start)
        stop = fail() if fail is not None else None
        if stop:
            return Waited(False, stop, now - start)
        if now - start >= timeout:
            return Waited(False, last, now - start)
        if now >= beat:
            text = f"waiting for {what}: {now - start:.0f} s of {timeout:.0f} s (last: {last[:200]})"
            if progress is not None:
                progress(text)
            else:
                logs.progress(text, waiting=what, elapsed_s=round(now - start, 1), timeout_s=timeout, last=last[:200])
            beat = now + heartbeat
        sleep(max(0.0, min(interval, start + timeout - now)))


def wait_for(
    what: str,
    timeout: float,
    probe: Probe,
    interval: float = 0.5,
    rerun: str = "kuberevive recover --apply",
    **options: Unpack[PollOptions],
) -> float:
    """:func:`poll_until` for a step of a recovery (``rerun``: the command that resumes it, named in the error);
    returns the seconds it took, or raises :class:`PlanError`."""
    waited = poll_until(what, timeout, probe, interval, **options)
    if not waited.ok:
        raise PlanError(
            f"{what} did not come up within {int(timeout)} s (last: {waited.last[:300]})",
            f"look at the kubelet's log and 'crictl ps -a', fix the cause, then run '{rerun}' again: it resumes "
            "where it stopped",
        )
    return waited.seconds
