"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from kuberevive.core import pki
from kuberevive.model.config import EncryptionAlgorithm


@pytest.fixture
def keys_made(monkeypatch: pytest.MonkeyPatch) -> list[EncryptionAlgorithm]:
    """The algorithm of every private key :func:`kuberevive.core.pki.generate_private_key` hands out from now on."""
    made: list[EncryptionAlgorithm] = []
    real = pki.generate_private_key

    def counted(algorithm: EncryptionAlgorithm) -> pki.PrivateKey:
        made.append(algorithm)
        return real(algorithm)

    monkeypatch.setattr(pki, "generate_private_key", counted)
    return made
