"""The private keys a recovery makes before the API server can start, made ahead of need in background threads.

A fresh ``recover --apply`` needs 16 (etcd's 5, the control plane's 6 with sa.key, 4 kubeconfigs, the kubelet's client
certificate) within the first second or two: an RSA-2048 key is 50-150 ms of CPU, and with the configuration read
from etcd's data file every one of them is needed before the kubelet restart that starts etcd and the API server.
They are made from the moment the command line says ``recover --apply`` (:func:`start_early`, before the command's
modules are imported: the imports and the plan then overlap the keys on the other core), of kubeadm's default
algorithm until the plan names another. :func:`kuberevive.core.pki.generate_private_key` hands them out; the run drops
what it did not use (:func:`kuberevive.core.pki.drop_spare_keys`)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence

from kuberevive.core import pki
from kuberevive.model.config import EncryptionAlgorithm

#: Keys a fresh recovery makes before the API server can start.
KEYS_AHEAD = 16
#: Threads that make them (RSA key generation runs outside the GIL: one thread per core of a small control plane).
KEY_WORKERS = 2
#: The algorithm of the keys made before the plan is known (kubeadm's default ``encryptionAlgorithm``); should the
#: plan (the stored or given configuration) name another, those are dropped and the right ones made.
KEYS_GUESS = EncryptionAlgorithm.RSA_2048


def in_thread(work: Callable[[], None]) -> None:
    """Run ``work`` in a daemon thread (it must not outlive its use: the process may exit under it)."""
    threading.Thread(target=work, name="kuberevive-background", daemon=True).start()


def make_ahead(algorithm: EncryptionAlgorithm, background: Callable[[Callable[[], None]], None] | None = None) -> None:
    """Start :data:`KEY_WORKERS` threads (``background``, default :func:`in_thread`) making :data:`KEYS_AHEAD` keys of
    ``algorithm``, unless keys of it are being made or ready already (started by :func:`start_early`)."""
    if pki.spare_keys_pending(algorithm):
        return
    generation = pki.reserve_spare_keys(algorithm, KEYS_AHEAD)
    for _ in range(KEY_WORKERS):
        (background or in_thread)(functools.partial(pki.make_reserved_keys, algorithm, generation))


def start_early(words: Sequence[str]) -> bool:
    """For a command line that runs ``recover --apply`` (not ``--help``): start making the keys now, before the
    command's modules are imported. A word that only happens to be ``recover`` costs a few keys' CPU (never used)."""
    wanted = "recover" in words and "--apply" in words and not {"-h", "--help", "--dry-run"} & set(words)
    if wanted:
        make_ahead(KEYS_GUESS)
    return wanted


def drop() -> None:
    """Forget the keys made ahead and not used, and stop making more."""
    pki.drop_spare_keys()
