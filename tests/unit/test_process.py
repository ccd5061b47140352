"""kuberevive.io.process: the one subprocess wrapper (scrubbed environment, no shell, PATH lookup, errors), and
that nothing else in the product starts a program or imports asyncssh before an SSH connection (F10)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kuberevive.io import process

SRC = Path(__file__).resolve().parents[2] / "src" / "kuberevive"
SECRET = "unit-secret-7d1c"


def test_scrubbed_environ_drops_secrets_and_keeps_the_rest():
    environ = {
        "KUBEREVIVE_PASSPHRASE": SECRET,
        "OTHER_PASSPHRASE": SECRET,
        "DB_PASSWORD": SECRET,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": SECRET,
        "github_token": SECRET,
        "SOPS_AGE_IDENTITY": SECRET,
        "KUBEREVIVE_AGE_IDENTITY_FILE": SECRET,
        "PATH": "/usr/sbin:/usr/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "http_proxy": "http://proxy:3128",
        "HTTPS_PROXY": "http://proxy:3128",
        "NO_PROXY": "10.0.0.0/8",
        "SSH_AUTH_SOCK": "/run/agent.sock",
        "KUBECONFIG": "/etc/kubernetes/admin.conf",
        "TERM": "xterm",
    }
    kept = process.scrubbed_environ(environ)
    assert SECRET not in kept.values()
    assert kept == {k: v for k, v in environ.items() if v != SECRET}
    assert "KUBEREVIVE_PASSPHRASE" in environ  # the input is not changed


def test_scrubbed_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KUBEREVIVE_PASSPHRASE", SECRET)
    monkeypatch.setenv("KUBEREVIVE_UNIT_KEEP", "kept")
    env = process.scrubbed_environ()
    assert "KUBEREVIVE_PASSPHRASE" not in env and env["KUBEREVIVE_UNIT_KEEP"] == "kept"
    assert os.environ["KUBEREVIVE_PASSPHRASE"] == SECRET


def test_child_never_sees_a_secret_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KUBEREVIVE_PASSPHRASE", SECRET)
    monkeypatch.setenv("SOME_API_TOKEN", SECRET)
    monkeypatch.setenv("KUBEREVIVE_UNIT_KEEP", "kept")
    done = process.run(["env"], timeout=10, text=True)
    assert done.returncode == 0
    assert SECRET not in done.stdout
    assert "KUBEREVIVE_UNIT_KEEP=kept" in done.stdout.splitlines()
    assert f"PATH={os.environ['PATH']}" in done.stdout.splitlines()
    # an explicit environment is scrubbed too
    explicit = process.run(["env"], timeout=10, environ={"PATH": os.environ["PATH"], "X_PASSWORD": SECRET})
    assert SECRET.encode() not in explicit.stdout


def test_run_is_found_on_path_without_a_shell_and_captures_bytes_or_text(tmp_path: Path):
    done = process.run(["sh", "-c", "cat; printf 'e\\377' >&2; exit 3"], timeout=10, input=b"in")
    assert (done.returncode, done.stdout, done.stderr) == (3, b"in", b"e\xff")
    assert done.argv == ("sh", "-c", "cat; printf 'e\\377' >&2; exit 3")
    text = process.run(["printf", "a\\377b"], timeout=10, text=True)
    assert text.stdout == "a\ufffdb"  # undecodable output does not raise
    # no shell: metacharacters are plain arguments
    echoed = process.run(["echo", "$HOME;", "`id`"], timeout=10, text=True)
    assert echoed.stdout == "$HOME; `id`\n"
    # stdin is /dev/null unless input is given (a child never reads the terminal)
    assert process.run(["cat"], timeout=10).stdout == b""


def test_run_passes_only_the_given_fds(tmp_path: Path):
    r, w = os.pipe()
    try:
        os.write(w, b"through the fd")
        os.close(w)
        done = process.run(["cat", f"/proc/self/fd/{r}"], timeout=10, pass_fds=(r,))
        assert done.stdout == b"through the fd"
        w2r, w2 = os.pipe()
        os.close(w2)
        closed = process.run(["sh", "-c", f"test -e /proc/self/fd/{w2r}"], timeout=10)
        os.close(w2r)
        assert closed.returncode != 0  # not passed, so not inherited
    finally:
        os.close(r)


def test_errors_keep_subprocess_contract():
    with pytest.raises(FileNotFoundError, match="No such file or directory"):
        process.run(["kuberevive-no-such-program"], timeout=5)
    with pytest.raises(FileNotFoundError):
        process.run(["/no/such/program"], timeout=5)
    with pytest.raises(process.TimeoutExpired):
        process.run(["sleep", "5"], timeout=0.2)
    with pytest.raises(process.CalledProcessError):
        process.run(["false"], timeout=5, check=True)
    with pytest.raises(ValueError):
        process.run([], timeout=5)
    assert issubclass(process.TimeoutExpired, process.SubprocessError)


def test_try_run_is_none_when_the_program_cannot_answer():
    assert process.try_run(["kuberevive-no-such-program"], timeout=5) is None
    assert process.try_run(["sleep", "5"], timeout=0.2) is None
    done = process.try_run(["sh", "-c", "echo out; exit 4"], timeout=5)
    assert done is not None and (done.returncode, done.stdout) == (4, "out\n")


# ------------------------------------------------------------------------------ the rest of the product

_EXEC_CALLS = {
    ("os", "system"),
    ("os", "popen"),
    ("os", "fork"),
    ("os", "forkpty"),
    ("os", "posix_spawn"),
    ("os", "posix_spawnp"),
    ("pty", "spawn"),
    ("asyncio", "create_subprocess_exec"),
    ("asyncio", "create_subprocess_shell"),
}


def _product_modules() -> list[Path]:
    return [
        p
        for p in sorted(SRC.rglob("*.py"))
        if p.relative_to(SRC).parts[0] != "lab" and p.relative_to(SRC) != Path("io/process.py")
    ]


def test_only_the_wrapper_starts_programs():
    offenders = []
    for path in _product_modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import) and any(a.name == "subprocess" for a in node.names):
                offenders.append(f"{path}:{node.lineno}: import subprocess")
            elif isinstance(node, ast.ImportFrom) and node.module == "subprocess":
                offenders.append(f"{path}:{node.lineno}: from subprocess import")
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                name = (node.value.id, node.attr)
                if name in _EXEC_CALLS or (name[0] == "os" and name[1].startswith(("exec", "spawn"))):
                    offenders.append(f"{path}:{node.lineno}: {name[0]}.{name[1]}")
    assert offenders == [], "start programs through kuberevive.io.process.run:\n" + "\n".join(offenders)


def test_asyncssh_is_not_imported_before_an_ssh_connection():
    """B-C3b: asyncssh's import runs ldconfig, gcc and ld (ctypes.util.find_library) with our environment."""
    code = (
        "import sys\n"
        "from kuberevive.cli.app import build_parser\n"
        "import kuberevive.io.transport, kuberevive.run.recover, kuberevive.run.retrust\n"
        "build_parser()\n"
        "print('asyncssh' in sys.modules, 'ctypes.util' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout
