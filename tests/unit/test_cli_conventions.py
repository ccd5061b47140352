"""Issue 15's conventions: an Examples block in every command's help, ``lab`` hidden from the production help,
``--rootfs`` beside ``--root``, ``-o json|yaml`` beside ``--json``, and a ``--help`` that imports no command."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys

import pytest
import yaml

from kuberevive.cli.app import build_parser, main
from kuberevive.cli.commands import COMMANDS
from kuberevive.cli.env import Environment
from kuberevive.model.document import VERSION, stamp


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found.extend(_parsers(sub))
    return found


def _main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), Environment(stdout=out, stderr=err, environ={}))
    return code, out.getvalue(), err.getvalue()


def test_every_command_help_has_examples(capsys: pytest.CaptureFixture[str]):
    parsers = _parsers(build_parser())
    assert len(parsers) >= 20
    for p in parsers:
        words = p.prog.split()[1:]
        code = main([*words, "--help"], Environment(stdout=io.StringIO(), stderr=io.StringIO(), environ={}))
        text = capsys.readouterr().out
        assert code == 0, p.prog
        examples = text.split("\nExamples:\n", 1)
        assert len(examples) == 2, f"{p.prog} --help has no Examples block"
        lines = examples[1].splitlines()
        assert lines and all(line.startswith(f"  {p.prog.split()[0]}") or "kuberevive" in line for line in lines)


def test_lab_is_hidden_from_the_help_but_works(capsys: pytest.CaptureFixture[str]):
    assert main(["--help"], Environment(stdout=io.StringIO(), stderr=io.StringIO(), environ={})) == 0
    text = capsys.readouterr().out
    for word in COMMANDS:
        listed = f"\n    {word} " in text or f"\n    {word}\n" in text  # a long name has its help on the next line
        assert listed is (word != "lab"), word
    code = main(["lab", "--help"], Environment(stdout=io.StringIO(), stderr=io.StringIO(), environ={}))
    assert code == 0 and "kuberevive lab up" in capsys.readouterr().out


def test_rootfs_is_root_and_output_is_json_everywhere(capsys: pytest.CaptureFixture[str]):
    parser = build_parser()
    with_root = [p for p in _parsers(parser) if "--root" in p._option_string_actions]
    assert {p.prog for p in with_root} >= {"kuberevive diagnose", "kuberevive generate", "kuberevive recover"}
    for p in with_root:
        assert p._option_string_actions["--rootfs"] is p._option_string_actions["--root"], p.prog
    assert parser.parse_args(["diagnose", "--rootfs", "/mnt/node"]).root == "/mnt/node"
    for p in _parsers(parser):
        if "--json" in p._option_string_actions:
            assert p._option_string_actions["-o"].choices == ("json", "yaml"), p.prog
    code, _out, _err = _main("diagnose", "-o", "xml")
    assert code == 64 and "invalid choice: 'xml'" in capsys.readouterr().err


def test_output_yaml_and_json_are_the_same_document(tmp_path):
    data = stamp(VERSION, {"ok": True, "files": ["/etc/a", "/etc/b"], "n": 3, "nested": {"at": None}})
    as_json, as_yaml = io.StringIO(), io.StringIO()
    Environment(stdout=as_json).json(data)
    Environment(stdout=as_yaml, output="yaml").json(data)
    assert json.loads(as_json.getvalue()) == yaml.safe_load(as_yaml.getvalue()) == data
    assert as_yaml.getvalue().startswith("schema: kuberevive.version/v1\nkind: Version\n")
    code, out, _ = _main("diagnose", "--root", str(tmp_path), "--offline", "-o", "yaml")  # reaches the Environment
    assert code == 3 and out.startswith("schema: kuberevive.diagnose/v2\nkind: DiagnoseReport\n"), out
    assert yaml.safe_load(out)["status"] == "not-kubeadm"


def test_only_a_stamped_document_is_printed():
    """One JSON contract: ``Environment.json`` refuses a dict no :func:`stamp` made, and ``stamp`` refuses a body
    that sets its own ``schema`` or ``kind``."""
    with pytest.raises(TypeError, match="stamped Document"):
        Environment(stdout=io.StringIO()).json({"schema": "kuberevive.version/v1", "kind": "Version"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        stamp(VERSION, {"kind": "Other"})


def test_help_and_version_import_no_command():
    """Lazy imports (issue 15): ``--help`` lists the commands from a table; no command module, no cryptography."""
    probe = (
        "import sys; from kuberevive.cli.app import main\n"
        "for argv in (['--help'], ['--version']):\n"
        "    main(argv)\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(('cryptography', 'yaml', 'kuberevive.cli.commands.',"
        " 'kuberevive.core.', 'kuberevive.io.', 'kuberevive.run.')) and m != 'kuberevive.core.redact')\n"
        "print('HEAVY', heavy)\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert r.stdout.strip().splitlines()[-1] == "HEAVY []", r.stdout
