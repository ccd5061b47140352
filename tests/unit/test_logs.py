"""logs.py: what reaches stderr and the run's log file, and what never does (secrets)."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import TextIO

from kuberevive import logs

PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJl"
BOOTSTRAP = "abcdef.0123456789abcdef"
PASSPHRASE = "correct horse battery staple"


def test_scrub_removes_every_kind_of_secret():
    logs.hide(PASSPHRASE)
    try:
        text = logs.scrub(
            f"key {PEM} data {base64.b64encode(PEM.encode()).decode()} token {JWT} join --token {BOOTSTRAP} "
            f"url https://admin:pw@10.0.0.1:6443/?token=abc pass {PASSPHRASE} age AGE-SECRET-KEY-1QQQQQQQQ"
        )
    finally:
        logs._hidden.clear()
    for secret in ("BEGIN", "MIIEvQ", "LS0tLS1CRUdJT", JWT, BOOTSTRAP, ":pw@", "abc", PASSPHRASE, "AGE-SECRET-KEY-1"):
        assert secret not in text, (secret, text)
    assert "https://***@10.0.0.1:6443/" in text and "join --token ***" in text


def test_the_run_log_opens_at_the_first_change_with_what_was_said_before(tmp_path: Path):
    path = tmp_path / "run.log"
    err = io.StringIO()
    undo = logs.configure(
        err, run_log=(str(path), lambda: path.open("a")), header="kuberevive test", secrets=[PASSPHRASE]
    )
    try:
        logs.progress("reading the node")
        logs.warning(f"the passphrase {PASSPHRASE} and a key {PEM}")
        assert not path.exists() and logs.log_file() is None  # nothing changed yet: no file
        logs.node_changes()
        logs.progress("writing")
        assert logs.log_file() == str(path)
    finally:
        undo()
    lines = path.read_text().splitlines()
    assert lines[0] == "kuberevive test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info    reading the node", lines[1]), lines
    assert lines[2].endswith("warning the passphrase *** and a key [PEM block not logged]"), lines
    assert lines[3].endswith("info    writing") and len(lines) == 4
    for text in (path.read_text(), err.getvalue()):
        assert PASSPHRASE not in text and "BEGIN" not in text
    assert not logs.configured(), logs.LOGGER.handlers  # undone


def test_a_refused_run_leaves_no_log_and_json_lines_parse(tmp_path: Path):
    path = tmp_path / "run.log"
    err = io.StringIO()
    undo = logs.configure(err, "json", run_log=(str(path), lambda: path.open("a")))
    try:
        logs.progress("checking", step=1)
        logs.error("refused; nothing was written")
    finally:
        undo()
    assert not path.exists()
    docs = [json.loads(line) for line in err.getvalue().splitlines()]
    assert [(d["level"], d["msg"]) for d in docs] == [("info", "checking"), ("error", "refused; nothing was written")]
    assert docs[0]["step"] == 1


def test_an_unopenable_log_does_not_stop_the_run():
    err = io.StringIO()

    def opener() -> TextIO:
        raise OSError(30, "Read-only file system")

    undo = logs.configure(err, run_log=("/ro/x.log", opener))
    try:
        logs.node_changes()
        logs.progress("still going")
        assert logs.log_file() is None
    finally:
        undo()
    assert err.getvalue().endswith(" still going\n")
    # and it says so, once, naming the file and why
    said = [line for line in err.getvalue().splitlines() if "/ro/x.log" in line]
    assert len(said) == 1 and "Read-only file system" in said[0] and "goes on without it" in said[0], said


def test_on_a_terminal_heartbeats_share_one_status_line_and_off_it_each_is_a_line():
    from kuberevive.run.waiting import poll_until

    def wait(tty: bool) -> str:
        err = io.StringIO()
        undo = logs.configure(err, tty=tty)
        now = [0.0]
        answers = iter([(False, "refused")] * 30 + [(True, "ok")])
        try:
            logs.progress("[1/2] start etcd")
            poll_until(
                "etcd",
                60,
                lambda: next(answers),
                1.0,
                clock=lambda: now[0],
                sleep=lambda s: now.__setitem__(0, now[0] + s),
            )
            logs.progress("[2/2] etcd is up")
        finally:
            undo()
        return err.getvalue()

    shown = wait(tty=True)
    assert shown.count(logs.CLEAR_LINE) >= 6 and shown.count("waiting for etcd") >= 5
    lines = shown.split("\n")
    assert lines[0].endswith("[1/2] start etcd")
    # every heartbeat is on the second row, each after a carriage return that erases the previous one
    assert all(part.startswith("\033[K") for part in lines[1].split("\r")[1:]) and "waiting for etcd: 25 s" in lines[1]
    # the next line clears the status line first, and then there is no status line left
    assert len(lines) == 3 and lines[2] == ""
    assert lines[1].rsplit("(last: refused)", 1)[1].startswith(logs.CLEAR_LINE) and "[2/2] etcd is up" in lines[1]
    plain = wait(tty=False)
    assert "\r" not in plain and sum(1 for line in plain.splitlines() if "waiting for etcd" in line) >= 5
