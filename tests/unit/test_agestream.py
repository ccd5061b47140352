"""core/agestream.py writes and reads the age format that pyrage (the Rust age crate) writes and reads, both ways,
for a passphrase and for X25519 recipients; chunk boundaries, truncation and tampering are caught."""

from __future__ import annotations

import io

import pyrage
import pytest

from kuberevive.core import agestream as a
from kuberevive.errors import BackupError

SIZES = [0, 1, a.CHUNK - 1, a.CHUNK, a.CHUNK + 1, 3 * a.CHUNK, 200_001]


def _encrypt(data: bytes, **kw: object) -> bytes:
    out = io.BytesIO()
    with a.AgeWriter(out, **kw) as w:  # type: ignore[arg-type]
        for i in range(0, len(data), 7000):
            w.write(data[i : i + 7000])
    return out.getvalue()


def _decrypt(ct: bytes, passphrase: str | None = None, identities: tuple[str, ...] = ()) -> bytes:
    src = io.BytesIO(ct)
    key, _scrypt = a.read_header(src, passphrase=passphrase, identities=identities, source="t.age")
    r = a.AgeReader(src, key, "t.age")
    out = b""
    while chunk := r.read(5000):
        out += chunk
    return out


@pytest.mark.parametrize("size", SIZES)
def test_recipients_both_ways(size: int) -> None:
    ident = pyrage.x25519.Identity.generate()
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    ct = _encrypt(data, recipients=(str(ident.to_public()),))
    assert pyrage.decrypt(ct, [ident]) == data
    theirs = pyrage.encrypt(data, [ident.to_public()])
    assert _decrypt(theirs, identities=(str(ident),)) == data


@pytest.mark.parametrize("size", [0, a.CHUNK, 200_001])
def test_passphrase_both_ways(size: int) -> None:
    data = b"k" * size
    ct = _encrypt(data, passphrase="correct horse")
    assert b"-> scrypt " in ct[:200]
    assert pyrage.passphrase.decrypt(ct, "correct horse") == data
    theirs = pyrage.passphrase.encrypt(data, "correct horse")
    assert _decrypt(theirs, passphrase="correct horse") == data


def test_wrong_secret_truncation_and_tampering_are_refused() -> None:
    data = b"z" * (3 * a.CHUNK + 5)
    ct = _encrypt(data, passphrase="p")
    with pytest.raises(BackupError, match="the passphrase is wrong"):
        _decrypt(ct, passphrase="q")
    with pytest.raises(BackupError, match="truncated or corrupt"):
        _decrypt(ct[: -(a.CHUNK // 2)], passphrase="p")
    cut = len(ct) - (5 + a.TAG)  # drop exactly the last chunk: the one before is not flagged last
    with pytest.raises(BackupError, match="truncated or corrupt"):
        _decrypt(ct[:cut], passphrase="p")
    flipped = bytearray(ct)
    flipped[-100] ^= 1
    with pytest.raises(BackupError, match="truncated or corrupt"):
        _decrypt(bytes(flipped), passphrase="p")
    header_end = ct.index(b"\n---") + 1
    bad = bytearray(ct)
    bad[header_end - 3] ^= 1  # inside the stanza body
    with pytest.raises(BackupError):
        _decrypt(bytes(bad), passphrase="p")
    with pytest.raises(BackupError, match="not an age public key"):
        _encrypt(b"x", recipients=("age1nope",))
