"""The keys ``recover --apply`` makes ahead (kuberevive.run.keys): started by the command line itself, before the
command's modules are imported, once per run, and dropped when not used."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from kuberevive.cli import app
from kuberevive.core import pki
from kuberevive.model.config import EncryptionAlgorithm
from kuberevive.run import keys


@pytest.fixture()
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Callable[[], None]]]:
    """The work handed to threads, recorded and not run (so the pool's state is only what was asked)."""
    pki.drop_spare_keys()
    works: list[Callable[[], None]] = []
    monkeypatch.setattr(keys, "in_thread", works.append)
    yield works
    pki.drop_spare_keys()


@pytest.mark.parametrize(
    ("words", "wanted"),
    [
        (["recover", "--apply"], True),
        (["--root", "/x", "recover", "--apply", "--json"], True),
        (["recover"], False),  # a plan makes no key
        (["recover", "--apply", "--help"], False),
        (["diagnose", "--apply"], False),
    ],
)
def test_the_command_line_of_recover_apply_starts_the_keys(
    started: list[Callable[[], None]], words: list[str], wanted: bool
) -> None:
    assert keys.start_early(words) is wanted
    assert len(started) == (keys.KEY_WORKERS if wanted else 0)
    assert pki.spare_keys_pending(keys.KEYS_GUESS) == (keys.KEYS_AHEAD if wanted else 0)


def test_keys_already_started_are_not_asked_for_again(started: list[Callable[[], None]]) -> None:
    keys.make_ahead(keys.KEYS_GUESS)
    keys.make_ahead(keys.KEYS_GUESS)  # as apply_recovery does after the command line started them
    assert len(started) == keys.KEY_WORKERS and pki.spare_keys_pending(keys.KEYS_GUESS) == keys.KEYS_AHEAD
    keys.make_ahead(EncryptionAlgorithm.ECDSA_P256)  # another algorithm (the plan's): its own
    assert len(started) == 2 * keys.KEY_WORKERS


def test_keys_the_run_did_not_use_are_dropped_when_the_command_ends(
    started: list[Callable[[], None]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert app.main(["recover", "--apply", "--no-such-option"]) != 0  # refused before it ran
    assert len(started) == keys.KEY_WORKERS and pki.spare_keys_pending(keys.KEYS_GUESS) == 0
