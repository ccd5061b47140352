"""The command-line parsers (F10, B-C4): no abbreviations anywhere and usage errors that show option names only."""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import pytest

from kuberevive.cli.app import Parser, build_parser, main, shown_arguments
from kuberevive.cli.env import Environment

SECRET = "hunter2-SECRET"


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.extend(_parsers(sub))
    return found


def test_every_parser_refuses_abbreviations():
    parsers = _parsers(build_parser())
    assert len(parsers) >= 16  # kuberevive, its 6 commands, backup's 5 and lab's 5 actions
    for p in parsers:
        assert isinstance(p, Parser), p.prog
        assert p.allow_abbrev is False, p.prog


@pytest.mark.parametrize(
    ("extras", "shown"),
    [
        (["--passphrase", SECRET], "--passphrase (values not shown)"),
        ([f"--passphrase={SECRET}"], "--passphrase (values not shown)"),
        (["--passphrase"], "--passphrase"),
        (["-x", "--no-such", "--no-such"], "-x --no-such"),
        ([SECRET], "(values not shown)"),
        ([f"-{SECRET}"], "(values not shown)"),
        (["--pass phrase"], "(values not shown)"),
    ],
)
def test_shown_arguments(extras: list[str], shown: str):
    assert shown_arguments(extras) == shown


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), Environment(stdout=out, stderr=err, environ={}))
    captured = capsys.readouterr()
    return code, out.getvalue() + err.getvalue() + captured.out + captured.err


@pytest.mark.parametrize(
    "argv",
    [
        ["backup", "create", "--root", "/nonexistent", "--out", "/nonexistent/x.age", "--passphrase", SECRET],
        ["backup", "create", "--root", "/nonexistent", "--out", "/nonexistent/x.age", f"--passphrase={SECRET}"],
        ["backup", "verify", "/nonexistent/x.age", "--passphrase", SECRET],
        ["restore-etcd", "--snapshot", "/nonexistent/x.age", "--passphrase", SECRET],
        ["recover", "--root", "/nonexistent", "--passphrase", SECRET],
        ["recover", "--root", "/nonexistent", "--from-backup", "/nonexistent/b.age", f"--passphrase={SECRET}"],
        ["diagnose", "--root", "/nonexistent", "--token", SECRET],
        ["--passphrase", SECRET, "backup", "list", "/nonexistent"],
        ["backup", "--passphrase", SECRET, "create", "--root", "/nonexistent", "--out", "/nonexistent/x.age"],
    ],
)
def test_B_C4_usage_error_shows_no_value(capsys: pytest.CaptureFixture[str], argv: list[str]):
    code, output = _main(capsys, *argv)
    assert code == 64, output
    assert SECRET not in output
    assert "unrecognized arguments: --" in output or "invalid choice: (value not shown)" in output, output


def test_other_usage_errors_keep_argparse_messages(capsys: pytest.CaptureFixture[str]):
    code, output = _main(capsys, "backup", "create", "--root", "/nonexistent")
    assert code == 64 and "the following arguments are required: --out" in output
    code, output = _main(capsys, "backup", "prune", "/nonexistent", "--keep", "many")
    assert code == 64 and "argument --keep: invalid int value: 'many'" in output
    code, output = _main(capsys, "diagnos", "--root", "/nonexistent")
    assert code == 64 and "invalid choice: 'diagnos'" in output  # a mistyped command is still shown
    code, output = _main(capsys, "generate", "everything", "--config", "c.yaml")
    assert code == 64 and "invalid choice: 'everything'" in output
    code, output = _main(capsys, "--version")
    assert code == 0 and "kuberevive" in output


def test_main_drops_the_passphrase_from_os_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("KUBEREVIVE_PASSPHRASE", SECRET)
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
    assert env.environ["KUBEREVIVE_PASSPHRASE"] == SECRET
    assert main(["backup", "list", str(tmp_path)], env) == 0, env.stderr
    assert "KUBEREVIVE_PASSPHRASE" not in os.environ
    assert env.environ["KUBEREVIVE_PASSPHRASE"] == SECRET  # the commands still read it from their Environment
    # the default Environment is built before the variable goes
    monkeypatch.setenv("KUBEREVIVE_PASSPHRASE", SECRET)
    assert main(["--version"]) == 0
    assert "KUBEREVIVE_PASSPHRASE" not in os.environ


@pytest.mark.parametrize(
    "argv",
    [
        ["diagnose", "--bogus"],
        ["diagnose", "--expiry-warning-days", "soon"],
        ["generate", "all"],
        ["recover", "--bogus"],
        ["backup", "verify"],
        ["restore-etcd"],
        ["lab", "nothing"],
        ["nothing"],
        [],
    ],
)
def test_usage_error_exit_code_is_64_for_every_command(capsys: pytest.CaptureFixture[str], argv: list[str]):
    """ux (issue 18): a usage error is 64 (EX_USAGE), never diagnose's 2 ("errors found") nor any findings code."""
    code, output = _main(capsys, *argv)
    assert code == 64, output
    assert "usage: kuberevive" in output
