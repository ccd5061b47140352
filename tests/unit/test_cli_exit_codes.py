"""Exit codes scripts can tell apart (issue 15, README "Exit codes"): a usage error is 64 for every parser there is
(walked from the real parser tree, so a new command or subcommand is covered without a list), never a code a
command uses for its findings; diagnose's failures are 3 ("could not run"), never its 1 ("warnings"); an
unexpected error is 70 and an interrupt 130; the README's table has exactly these codes."""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path

import pytest

from kuberevive.cli.app import build_parser, main
from kuberevive.cli.commands import diagnose as diagnose_cmd
from kuberevive.cli.commands import version as version_cmd
from kuberevive.cli.env import Environment, ExitStatus
from kuberevive.core import certs
from kuberevive.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"
#: The codes that report findings: diagnose (healthy, warnings, errors, could not run) and certs check.
DIAGNOSE_CODES = {0, 1, 2, 3}
CERTS_CHECK_CODES = {certs.EXIT_OK, certs.EXIT_EXPIRING, certs.EXIT_EXPIRED}


def _main(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), Environment(stdout=out, stderr=err, environ={}))
    return code, out.getvalue() + err.getvalue()


def _command_lines(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The words of every command and subcommand (``("certs", "check")``), from the parser itself."""
    found = [words] if words else []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _command_lines(sub, (*words, name))
    return found


COMMAND_LINES = _command_lines(build_parser())


def test_the_parser_tree_is_walked() -> None:
    assert {("diagnose",), ("certs", "check"), ("backup", "restore"), ("version",), ("lab", "up")} <= set(COMMAND_LINES)


@pytest.mark.parametrize("words", COMMAND_LINES, ids=" ".join)
def test_a_usage_error_is_64_for_every_command(words: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = _main(*words, "--no-such-option")
    err = capsys.readouterr().err
    assert code == int(ExitStatus.USAGE) == 64, err
    assert "usage: kuberevive" in err


def test_usage_is_apart_from_every_findings_code_and_the_other_statuses() -> None:
    statuses = {s.value for s in ExitStatus}
    assert len(statuses) == len(ExitStatus)  # no two meanings share a code
    for findings in (DIAGNOSE_CODES, CERTS_CHECK_CODES):
        assert not findings & {ExitStatus.USAGE, ExitStatus.UNEXPECTED, ExitStatus.INTERRUPTED}


def test_diagnose_failures_are_3_never_its_warnings_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _main("diagnose", "--root", str(tmp_path / "nowhere"))[0] == 3
    assert _main("diagnose", "--root", str(tmp_path), "--config", str(tmp_path / "missing.yaml"))[0] == 3
    assert _main("diagnose", "--root", str(tmp_path), "--offline")[0] == 3  # nothing of kubeadm: not-kubeadm

    def failing_collect(*_args: object, **_kwargs: object) -> None:
        raise ConfigError("the configuration cannot be reconstructed", "pass --config")

    monkeypatch.setattr(diagnose_cmd, "collect", failing_collect)
    code, output = _main("diagnose", "--root", str(tmp_path))
    assert code == 3, output  # a KubereviveError (exit 1 elsewhere) is "could not run" here, not "warnings"
    assert output.startswith("kuberevive: error: the configuration cannot be reconstructed")


def test_certs_check_could_not_run_is_1_apart_from_its_findings(tmp_path: Path) -> None:
    code, output = _main("certs", "check", "--root", str(tmp_path / "nowhere"))
    assert code == ExitStatus.ERROR and code not in CERTS_CHECK_CODES, output


def test_unexpected_error_is_70_and_interrupt_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(_args: argparse.Namespace, _env: Environment) -> int:
        raise RuntimeError("a bug")

    def interrupted(_args: argparse.Namespace, _env: Environment) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(version_cmd, "run", boom)  # register() sets it as the command's func at each main()
    code, output = _main("version")
    assert code == int(ExitStatus.UNEXPECTED) == 70 and "unexpected error: RuntimeError: a bug" in output
    monkeypatch.setattr(version_cmd, "run", interrupted)
    assert _main("version")[0] == int(ExitStatus.INTERRUPTED) == 130


def test_the_readme_table_has_exactly_these_codes() -> None:
    text = README.read_text()
    section = text[text.index("### Exit codes") :]
    section = section[: section.index("\n## ")]
    codes = {int(m) for m in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)}
    assert codes == {s.value for s in ExitStatus} | DIAGNOSE_CODES | CERTS_CHECK_CODES
