"""The one way the product starts a program: :func:`run` (and :func:`try_run`).

Every child gets a scrubbed copy of the environment (:func:`scrubbed_environ`): the backup passphrase and any
variable whose name says it holds a secret are dropped, everything else (``PATH``, ``HOME``, ``LANG``, proxies,
``SSH_AUTH_SOCK``, ...) is kept. The program is looked up with :func:`shutil.which` on that environment's
``PATH``, never through a shell, its output is captured and its standard input is the ``input`` bytes or
``/dev/null`` (a child never reads the operator's terminal).

Errors keep :func:`subprocess.run`'s contract, so callers catch well-known types: :class:`OSError` when the
program cannot be started (:class:`FileNotFoundError` when it is not on ``PATH``), :class:`TimeoutExpired`
after ``timeout`` seconds (the child is killed), :class:`CalledProcessError` for a non-zero exit with
``check=True``; all but ``OSError`` are :class:`SubprocessError`. No other module of the product (``lab/`` aside)
imports :mod:`subprocess`.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from subprocess import CalledProcessError, SubprocessError, TimeoutExpired
from typing import Generic, Literal, TypeVar, overload

__all__ = [
    "SECRET_NAME_PARTS",
    "CalledProcessError",
    "Completed",
    "SubprocessError",
    "TimeoutExpired",
    "is_secret_name",
    "run",
    "scrubbed_environ",
    "start",
    "try_run",
]

#: A variable whose upper-cased name contains one of these is never passed to a child process.
SECRET_NAME_PARTS = ("PASSPHRASE", "PASSWORD", "SECRET", "TOKEN", "AGE_IDENTITY")

Out = TypeVar("Out", str, bytes)


def is_secret_name(name: str) -> bool:
    """Whether an environment variable called ``name`` may hold a secret (``KUBEREVIVE_PASSPHRASE``, ...)."""
    upper = name.upper()
    return any(part in upper for part in SECRET_NAME_PARTS)


def scrubbed_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default ``os.environ``) without the variables :func:`is_secret_name` matches."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not is_secret_name(k)}


@dataclass(frozen=True)
class Completed(Generic[Out]):
    """What a finished program did; ``returncode`` is negative when a signal ended it."""

    argv: tuple[str, ...]
    returncode: int
    stdout: Out
    stderr: Out


def _resolve(program: str, env: Mapping[str, str]) -> str:
    if "/" in program:
        return program  # a path: started as given, so the OSError is the real one (EACCES, ENOENT, ...)
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    return found


@overload
def run(
    argv: Sequence[str],
    *,
    timeout: float | None,
    input: bytes | None = ...,
    pass_fds: Sequence[int] = ...,
    text: Literal[False] = ...,
    check: bool = ...,
    environ: Mapping[str, str] | None = ...,
) -> Completed[bytes]: ...


@overload
def run(
    argv: Sequence[str],
    *,
    timeout: float | None,
    input: bytes | None = ...,
    pass_fds: Sequence[int] = ...,
    text: Literal[True],
    check: bool = ...,
    environ: Mapping[str, str] | None = ...,
) -> Completed[str]: ...


def run(
    argv: Sequence[str],
    *,
    timeout: float | None,
    input: bytes | None = None,
    pass_fds: Sequence[int] = (),
    text: bool = False,
    check: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Completed[bytes] | Completed[str]:
    """Run ``argv`` (no shell) with a scrubbed environment and wait at most ``timeout`` seconds (None: no limit).

    ``text=True`` decodes stdout and stderr (UTF-8, undecodable bytes replaced). ``pass_fds`` are inherited by
    the child (everything else is closed). See the module docstring for the errors.
    """
    if not argv:
        raise ValueError("run() needs a program to run")
    env = scrubbed_environ(environ)
    args = [_resolve(argv[0], env), *argv[1:]]
    proc = subprocess.run(
        args,
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        timeout=timeout,
        pass_fds=tuple(pass_fds),
        env=env,
        check=check,
        shell=False,
    )
    shown = tuple(argv)
    if text:
        return Completed(
            shown, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        )
    return Completed(shown, proc.returncode, proc.stdout, proc.stderr)


def try_run(argv: Sequence[str], *, timeout: float | None) -> Completed[str] | None:
    """:func:`run` with ``text=True``, or None when the program is missing, cannot start or times out."""
    try:
        return run(argv, timeout=timeout, text=True)
    except (OSError, SubprocessError):
        return None


def start(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` (no shell, the scrubbed environment) with its stdin, stdout and stderr as pipes, and return
    at once: for a command that keeps running while the caller works (a lock held by a child until its stdin
    closes). The caller owns the process: it closes stdin and waits for it."""
    if not argv:
        raise ValueError("start() needs a program to run")
    env = scrubbed_environ()
    args = [_resolve(argv[0], env), *argv[1:]]
    return subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, shell=False
    )
