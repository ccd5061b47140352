"""The run's log: progress, warnings and errors as timestamped records (standard library ``logging``).

Everything a command says while it works goes through the ``kuberevive`` logger: :func:`progress` (info),
:func:`warning`, and the CLI's one-line errors. :func:`configure` sends it to stderr, as text (a UTC ``HH:MM:SS`` on
a terminal, RFC 3339 otherwise) or as JSON lines (``--log-format json``), and to a per-run log file (text, RFC
3339). Every record is passed through :func:`scrub` first: PEM blocks (also base64-encoded, as in a kubeconfig),
JWTs, bootstrap tokens, certificate keys (``--certificate-key``), URL credentials and the values :func:`hide` was
given never reach a handler.

Without :func:`configure` (a library call, a unit test) the logger has no handler and says nothing.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from kuberevive.core.redact import MASK, redact_urls

LOGGER = logging.getLogger("kuberevive")
LOGGER.propagate = False
LOGGER.setLevel(logging.INFO)

FORMATS = ("text", "json")

_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*-----.*?(?:-----END [A-Z0-9 ]*-----|\Z)", re.S)
_PEM_B64 = re.compile(r"LS0tLS1CRUdJT[A-Za-z0-9+/=]*")  # base64 of "-----BEGIN" (kubeconfig *-data fields)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BOOTSTRAP_TOKEN = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
_AGE_KEY = re.compile(r"AGE-SECRET-KEY-[0-9A-Z]+")
_CERTIFICATE_KEY = re.compile(r"(?<=--certificate-key[ =])[0-9a-f]{64}\b")
_hidden: set[str] = set()
_ours: list[logging.Handler] = []  # the handlers configure() added


def hide(value: str) -> None:
    """Never log ``value`` (a passphrase, a token read from a file); values shorter than 4 characters are ignored."""
    if len(value) >= 4:
        _hidden.add(value)


def scrub(text: str) -> str:
    """``text`` without the secrets it may carry (see the module docstring)."""
    text = _PEM.sub("[PEM block not logged]", text)
    text = _PEM_B64.sub(MASK, text)
    text = _JWT.sub(MASK, text)
    text = _BOOTSTRAP_TOKEN.sub(MASK, text)
    text = _AGE_KEY.sub(MASK, text)
    text = _CERTIFICATE_KEY.sub(MASK, text)
    text = redact_urls(text)
    for value in sorted(_hidden, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def progress(text: str, **fields: Any) -> None:
    """One progress line (``fields`` appear as keys of a JSON record)."""
    LOGGER.info(text, extra={"fields": fields})


def warning(text: str) -> None:
    LOGGER.warning(text)


def error(text: str) -> None:
    LOGGER.error(text)


def to_file(text: str) -> None:
    """A line for the run's log file only (what the command printed on stdout, how the run ended)."""
    LOGGER.info(text, extra={"file_only": True})


class Tee(io.TextIOBase):
    """``stream`` whose every written line also goes to the run's log file (:func:`to_file`)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream, self.partial = stream, ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            to_file(f"stdout: {line}")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()


def _not_file_only(record: logging.LogRecord) -> bool:
    return not getattr(record, "file_only", False)


def rfc3339(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Scrub(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = scrub(record.getMessage()), ()
        return True


LOGGER.addFilter(_Scrub())


#: Cuts a line to fit a terminal: ``fit(text, hang)`` gives the lines, the later ones starting with ``hang``.
Fit = Callable[[str, str], list[str]]


class TextFormatter(logging.Formatter):
    """Progress lines carry a UTC time; warnings and errors read ``warning: ...`` and ``kuberevive: error: ...``
    as they always have (``stamp_all`` also stamps those, with the level: the log file). ``fit`` wraps a record
    to the terminal's width, later lines indented under the text."""

    def __init__(self, clock_only: bool, stamp_all: bool = False, fit: Fit | None = None) -> None:
        super().__init__()
        self.clock_only, self.stamp_all, self.fit = clock_only, stamp_all, fit

    def format(self, record: logging.LogRecord) -> str:
        stamp = rfc3339(record.created)
        if self.clock_only:
            stamp = stamp[11:19]
        msg = record.getMessage().rstrip("\n")
        if self.stamp_all:  # one record, one line: later lines of a message are indented under it
            line = f"{stamp} {record.levelname.lower():<7} {msg}".replace("\n", "\n" + " " * (len(stamp) + 9))
        elif record.levelno >= logging.ERROR:
            line = f"kuberevive: error: {msg}"
        elif record.levelno >= logging.WARNING:
            line = f"warning: {msg}"
        else:
            line = f"{stamp} {msg}"
        if self.fit is None:
            return line
        return "\n".join(self.fit(line, " " * (len(stamp) + 1 if record.levelno < logging.WARNING else 4)))


CLEAR_LINE = "\r\033[K"


class StatusLine(logging.StreamHandler):  # type: ignore[type-arg]
    """On a terminal, the heartbeats of a wait (records with a ``waiting`` field) share one status line: each
    replaces the previous one (carriage return, erase line) instead of adding a line; any other record first
    clears it. Off a terminal every heartbeat stays a line of its own (a CI log, a file)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.showing = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if (getattr(record, "fields", None) or {}).get("waiting"):
                self.stream.write(CLEAR_LINE + text.split("\n", 1)[0])  # one row: \r only returns within it
                self.showing = True
            else:
                self.stream.write((CLEAR_LINE if self.showing else "") + text + "\n")
                self.showing = False
            self.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self.showing:
            self.stream.write(CLEAR_LINE)
            self.flush()
            self.showing = False
        super().close()


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (RFC 3339 UTC), ``level``, ``msg`` and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"time": rfc3339(record.created), "level": record.levelname.lower()}
        doc["msg"] = record.getMessage()
        doc.update(getattr(record, "fields", None) or {})
        return json.dumps(doc, sort_keys=False)


class _RunLog(logging.Handler):
    """The per-run log file, opened just before the run's first change to the node (:func:`node_changes`): a run
    refused before it changed anything leaves no file behind, and one that changed something always has its log,
    with everything said before. If the file cannot be opened the run goes on without it, and says so on stderr."""

    def __init__(self, opener: Callable[[], TextIO], path: str, header: str) -> None:
        super().__init__()
        self.opener, self.path, self.header = opener, path, header
        self.stream: TextIO | None = None
        self.pending: list[str] = []
        self.problem = ""

    def open(self) -> None:
        if self.stream is not None or self.problem:
            return
        try:
            self.stream = self.opener()
        except Exception as exc:  # a read-only or full disk must not stop a recovery
            self.problem, self.pending = str(exc) or type(exc).__name__, []
            warning(f"the run's log {self.path} cannot be written ({self.problem}); the run goes on without it")
            return
        lines, self.pending = [self.header, *self.pending], []
        self.stream.write("".join(f"{x}\n" for x in lines))

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        if self.stream is None:
            if not self.problem:
                self.pending.append(line)
            return
        self.stream.write(f"{line}\n")

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        super().close()


def node_changes() -> None:
    """Called by :class:`~kuberevive.io.noderoot.NodeRoot` before it changes a file of the node: opens the run's
    log file if this run keeps one."""
    for h in _ours:
        if isinstance(h, _RunLog):
            h.open()


def configure(
    stderr: TextIO,
    fmt: str = "text",
    tty: bool = False,
    *,
    fit: Fit | None = None,
    run_log: tuple[str, Callable[[], TextIO]] | None = None,
    header: str = "",
    secrets: Iterable[str] = (),
) -> Callable[[], None]:
    """Send the logger to ``stderr`` and, with ``run_log`` (its path and how to open it), to the run's log file;
    returns the function that undoes it (and closes the file)."""
    for value in secrets:
        hide(value)
    out = StatusLine(stderr) if tty and fmt != "json" else logging.StreamHandler(stderr)
    out.addFilter(_not_file_only)
    out.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(clock_only=tty, fit=fit))
    handlers: list[logging.Handler] = [out]
    if run_log is not None:
        to_file = _RunLog(run_log[1], run_log[0], header)
        to_file.setFormatter(TextFormatter(clock_only=False, stamp_all=True))
        handlers.append(to_file)
    for h in handlers:
        LOGGER.addHandler(h)
        _ours.append(h)

    def undo() -> None:
        for h in handlers:
            LOGGER.removeHandler(h)
            _ours.remove(h)
            h.flush()
            if h is not out or isinstance(h, StatusLine):
                h.close()  # the status line is cleared; stderr itself stays open (StreamHandler never closes it)
        _hidden.clear()

    return undo


def configured() -> bool:
    """Whether :func:`configure` is in effect (a test runner may add handlers of its own to every logger)."""
    return bool(_ours)


def log_file() -> str | None:
    """The path of this run's log file once it is open (a failure message names it), else None."""
    for h in _ours:
        if isinstance(h, _RunLog) and h.stream is not None:
            return h.path
    return None
