"""SshTransport against an in-process asyncssh server: the lazily imported asyncssh and the pinning client work
(a pinned host key is accepted, another one is refused before authentication). The full SSH behaviour against
OpenSSH is covered by tests/lab/test_transport_lab.py."""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Iterator
from typing import Any

import pytest

from kuberevive.cli.app import build_parser
from kuberevive.errors import HostKeyError
from kuberevive.io.sshlib import asyncssh
from kuberevive.io.transport import SshTarget, SshTransport, _Loop


class _NoAuthServer(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # no authentication needed


@contextlib.contextmanager
def _hello_server(key: asyncssh.SSHKey) -> Iterator[int]:
    """An asyncssh server on a free loopback port with host key ``key``, no authentication, answering any command
    with "hello"; its port."""

    async def start() -> Any:
        return await asyncssh.create_server(
            _NoAuthServer,
            "127.0.0.1",
            0,
            server_host_keys=[key],
            process_factory=lambda proc: (proc.stdout.write("hello\n"), proc.exit(0)),
        )

    server = _Loop.call(start(), 10)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        _Loop.call(stop(), 10)


@pytest.fixture
def ssh_server() -> Iterator[tuple[int, str]]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    with _hello_server(key) as port:
        yield port, key.get_fingerprint("sha256")


def test_pinned_host_key_is_accepted_and_another_refused(ssh_server: tuple[int, str]):
    port, fingerprint = ssh_server
    target = SshTarget("n1", "127.0.0.1", port=port, user="test", pin_fingerprint=fingerprint, use_agent=False)
    with SshTransport(target) as t:
        result = t.run(["echo", "ignored"], timeout=10)
    assert (result.exit_code, result.stdout) == (0, b"hello\n")
    wrong = SshTarget("n1", "127.0.0.1", port=port, user="test", pin_fingerprint="SHA256:" + "A" * 43)
    expected = f"does not match the pinned fingerprint .*it presented {re.escape(fingerprint)}"
    with pytest.raises(HostKeyError, match=expected):
        SshTransport(wrong).connect()


def test_a_missing_known_hosts_file_is_refused_with_a_hint_that_names_real_flags(ssh_server, tmp_path):
    port, _ = ssh_server
    missing = str(tmp_path / "no-such-known_hosts")
    target = SshTarget("n1", "127.0.0.1", port=port, user="test", known_hosts=(missing,), use_agent=False)
    with pytest.raises(HostKeyError, match=re.escape(missing)) as caught:
        SshTransport(target).connect()
    # every flag the hint names exists on `recover`, the command that reaches nodes over SSH
    named = set(re.findall(r"--[a-z][a-z-]+", caught.value.hint))
    assert named, caught.value.hint
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    known = {s for action in commands.choices["recover"]._actions for s in action.option_strings}
    assert named <= known, named - known


def test_known_hosts_is_parsed_once_while_unchanged_and_read_again_when_it_changes(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: asyncssh parses a known_hosts file at every connection, N lines for each of N nodes; the transport
    parses it once for the process, and again when the file changes (a removed key is refused at once)."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    parsed: list[object] = []
    real = asyncssh.read_known_hosts

    def counted(files: Any) -> Any:
        parsed.append(files)
        return real(files)

    monkeypatch.setattr(asyncssh, "read_known_hosts", counted)
    with _hello_server(key) as port:
        known = tmp_path / "known_hosts"
        other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
        known.write_text(f"[127.0.0.1]:{port} {other}\n[127.0.0.1]:{port} {key.export_public_key().decode().strip()}\n")
        target = SshTarget("n1", "127.0.0.1", port=port, user="test", known_hosts=(str(known),), use_agent=False)
        for _ in range(3):
            with SshTransport(target) as t:
                assert t.run(["true"], timeout=10).stdout == b"hello\n"
        assert len(parsed) == 1
        known.write_text(f"[127.0.0.1]:{port} {other}\n")  # the node's key removed: refused, not served from a cache
        with pytest.raises(HostKeyError, match="does not match known_hosts"):
            SshTransport(target).connect()
        assert len(parsed) == 2


def test_importing_asyncssh_through_kuberevive_prints_no_dsa_deprecation_warning() -> None:
    """cryptography 51 warns when the DSA classes are named, which asyncssh does at import: a command that opened an
    SSH connection printed that warning on every run. In a fresh interpreter, with every warning an error, the
    import through kuberevive.io.sshlib succeeds; asyncssh imported straight is what warns (so this test can fail)."""
    import subprocess
    import sys

    ours = subprocess.run(
        [sys.executable, "-W", "error", "-c", "from kuberevive.io.sshlib import asyncssh; print(asyncssh.__name__)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ours.returncode == 0 and ours.stdout.strip() == "asyncssh" and ours.stderr == "", ours.stderr
    from cryptography import __version__ as cryptography_version

    if int(cryptography_version.split(".")[0]) >= 51:
        straight = subprocess.run(
            [sys.executable, "-W", "error", "-c", "import asyncssh"], capture_output=True, text=True, timeout=60
        )
        assert straight.returncode != 0 and "DSA is deprecated" in straight.stderr
