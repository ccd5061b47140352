"""``kuberevive completion bash`` (issue 15): the script the real CLI prints, sourced into a real bash and driven the
way bash drives it (``COMP_WORDS``/``COMP_CWORD``, then ``_kuberevive`` fills ``COMPREPLY``), with an environment that
has no Python and no kuberevive on PATH: completing runs neither (static, offline)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BASH = shutil.which("bash") or "/bin/bash"


def _script(shell: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "kuberevive", "completion", shell],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "kuberevive.bash"
    path.write_text(_script("bash"))
    return path


def complete(script: Path, *words: str, cwd: Path | None = None) -> list[str]:
    """What bash offers for the command line ``words`` (the last one is the word being completed)."""
    program = (
        f'source "{script}" || exit 9\n'
        'COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=()\n'
        "_kuberevive\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", program, "bash", *words],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},  # no Python, no kuberevive needed
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    return [line for line in result.stdout.splitlines() if line]


def test_commands_and_options_complete(script: Path) -> None:
    assert complete(script, "kuberevive", "rec") == ["recover"]
    assert complete(script, "kuberevive", "recover", "--ap") == ["--apply"]
    assert complete(script, "kuberevive", "certs", "ch") == ["check"]
    assert complete(script, "kuberevive", "ca", "") == ["extend"]
    assert complete(script, "kuberevive", "--traceback", "diag") == ["diagnose"]  # a global option first
    assert complete(script, "kuberevive", "recover", "--config", "x.yaml", "--ap") == ["--apply"]  # value skipped
    assert complete(script, "kuberevive", "diagnose", "--expiry-warning-days", "") == []  # a number: nothing to offer
    assert complete(script, "kuberevive", "generate", "a") == ["all"]  # a positional's choices
    assert complete(script, "kuberevive", "diagnose", "-o", "y") == ["yaml"]
    assert complete(script, "kuberevive", "completion", "") == ["bash", "zsh"]
    assert set(complete(script, "kuberevive", "backup", "")) == {"create", "verify", "list", "prune", "restore"}


def test_lab_and_hidden_options_stay_hidden(script: Path) -> None:
    assert complete(script, "kuberevive", "l") == []
    assert "lab" not in complete(script, "kuberevive", "")
    assert complete(script, "kuberevive", "lab", "") == []
    options = complete(script, "kuberevive", "recover", "--")
    assert "--apply" in options and "--root" not in options  # recover's --root is for tests (help suppressed)


def test_files_and_directories_where_a_file_or_dir_is_asked_for(script: Path, tmp_path: Path) -> None:
    (tmp_path / "node-a").mkdir()
    (tmp_path / "node.yaml").write_text("")
    assert complete(script, "kuberevive", "diagnose", "--root", "no") == []
    assert complete(script, "kuberevive", "diagnose", "--root", "no", cwd=tmp_path) == ["node-a"]  # DIR: dirs only
    assert sorted(complete(script, "kuberevive", "generate", "all", "--config", "no", cwd=tmp_path)) == [
        "node-a",
        "node.yaml",
    ]
    assert sorted(complete(script, "kuberevive", "backup", "verify", f"{tmp_path}/no")) == [
        f"{tmp_path}/node-a",
        f"{tmp_path}/node.yaml",
    ]  # a FILE positional
    assert complete(script, "kuberevive", "backup", "list", f"{tmp_path}/no") == [f"{tmp_path}/node-a"]


def test_zsh_script_is_the_same_completion_through_bashcompinit(script: Path) -> None:
    """zsh is not installed on the test machines: the zsh script is checked to carry exactly the bash functions,
    behind zsh's own ``bashcompinit`` (zsh's documented way to run bash completion functions)."""
    text = _script("zsh")
    head, _, rest = text.partition("autoload -U +X bashcompinit && bashcompinit\n")
    assert head.startswith("#compdef kuberevive\n")
    assert rest == script.read_text().split("\n", 1)[1]
