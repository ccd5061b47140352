"""age (https://age-encryption.org/v1) encryption and decryption as streams, chunk by chunk.

``pyrage`` (the Rust ``age`` crate) encrypts a passphrase only from bytes in memory; a backup with an 8 GiB etcd
snapshot must never be held whole. This module writes and reads the same binary format with the primitives of
``cryptography``: the header (an ``scrypt`` stanza for a passphrase, ``X25519`` stanzas for recipients, the
header MAC) and the STREAM payload (ChaCha20-Poly1305 over 64 KiB chunks, the last one flagged). Files made here
decrypt with pyrage and the reference ``age``, and pyrage's (binary) files decrypt here
(tests/unit/test_agestream.py checks both ways). Pure: the caller passes the file objects.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
from hashlib import sha256
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from kuberevive.errors import BackupError

INTRO = b"age-encryption.org/v1\n"
CHUNK = 64 << 10
TAG = 16
SCRYPT_LOG_N = 16
"""scrypt work factor of a passphrase (64 MiB, about a second here); what pyrage chose on this class of machine."""
MAX_SCRYPT_LOG_N = 22
_ZERO_NONCE = b"\0" * 12
_B64 = re.compile(rb"[A-Za-z0-9+/]*")


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    if not _B64.fullmatch(text):
        raise ValueError("not base64")
    return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _scrypt_key(passphrase: str, salt: bytes, log_n: int) -> bytes:
    kdf = Scrypt(salt=b"age-encryption.org/v1/scrypt" + salt, length=32, n=1 << log_n, r=8, p=1)
    return kdf.derive(passphrase.encode())


# ------------------------------------------------------------------------------------------- bech32

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _polymod(values: list[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def bech32_decode(text: str, hrp: str) -> bytes:
    """The 32-byte key of an ``age1...`` recipient or ``AGE-SECRET-KEY-1...`` identity (checksum verified)."""
    s = text.strip().lower()
    pos = s.rfind("1")
    if s[:pos] != hrp.lower() or len(s) - pos < 8:
        raise ValueError(f"not a {hrp} key")
    data = [_CHARSET.index(c) for c in s[pos + 1 :]]
    h = s[:pos]
    if _polymod([ord(c) >> 5 for c in h] + [0] + [ord(c) & 31 for c in h] + data) != 1:
        raise ValueError("bad bech32 checksum")
    acc = bits = 0
    out = bytearray()
    for v in data[:-6]:
        acc, bits = (acc << 5) | v, bits + 5
        while bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    if len(out) != 32:
        raise ValueError("not a 32-byte key")
    return bytes(out)


# ------------------------------------------------------------------------------------------- header


def _header(stanzas: list[list[bytes]], file_key: bytes) -> bytes:
    text = INTRO
    for args, body in ((s[:-1], s[-1]) for s in stanzas):
        text += b"-> " + b" ".join(args) + b"\n"
        encoded = _b64(body)
        lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)] or [b""]
        if len(lines[-1]) == 64:
            lines.append(b"")
        text += b"".join(line + b"\n" for line in lines)
    text += b"---"
    mac = hmac.new(_hkdf(file_key, b"", b"header"), text, sha256).digest()
    return text + b" " + _b64(mac) + b"\n"


def header_for(file_key: bytes, *, passphrase: str | None = None, recipients: tuple[str, ...] = ()) -> bytes:
    """The age header wrapping ``file_key`` to the recipients, else to the passphrase (scrypt)."""
    stanzas: list[list[bytes]] = []
    if recipients:
        for r in recipients:
            try:
                pub = bech32_decode(r, "age")
            except ValueError as exc:
                raise BackupError(
                    "the --recipient is not an age public key", "pass the age1... line that age-keygen printed"
                ) from exc
            eph = X25519PrivateKey.generate()
            share = eph.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            shared = eph.exchange(X25519PublicKey.from_public_bytes(pub))
            wrap = _hkdf(shared, share + pub, b"age-encryption.org/v1/X25519")
            stanzas.append([b"X25519", _b64(share), ChaCha20Poly1305(wrap).encrypt(_ZERO_NONCE, file_key, None)])
    elif passphrase:
        salt = secrets.token_bytes(16)
        key = _scrypt_key(passphrase, salt, SCRYPT_LOG_N)
        body = ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, file_key, None)
        stanzas.append([b"scrypt", _b64(salt), str(SCRYPT_LOG_N).encode(), body])
    else:
        raise BackupError(
            "no passphrase and no recipient to encrypt the backup to",
            "pass --passphrase-file FILE, set KUBEREVIVE_PASSPHRASE, or pass --recipient age1...",
        )
    return _header(stanzas, file_key)


def _read_line(src: BinaryIO, limit: int = 4096) -> bytes:
    line = src.readline(limit)
    if not line.endswith(b"\n"):
        raise ValueError("truncated header")
    return line[:-1]


def read_header(
    src: BinaryIO, *, passphrase: str | None, identities: tuple[str, ...], source: str
) -> tuple[bytes, bool]:
    """Read the header from ``src`` (left at the payload): the file key, and whether it was wrapped to a
    passphrase (scrypt); one clear BackupError for every way it can fail."""
    try:
        if src.read(len(INTRO)) != INTRO:
            raise BackupError(f"{source} is not a binary age file", "use a kuberevive backup")
        text = INTRO
        stanzas: list[tuple[list[bytes], bytes]] = []
        while True:
            line = _read_line(src)
            if line.startswith(b"--- "):
                mac = _unb64(line[4:])
                text += b"---"
                break
            if not line.startswith(b"-> ") or len(stanzas) > 64:
                raise ValueError("malformed header")
            text += line + b"\n"
            args = line[3:].split(b" ")
            body = b""
            while True:
                chunk = _read_line(src)
                text += chunk + b"\n"
                body += chunk
                if len(chunk) < 64:
                    break
            stanzas.append((args, _unb64(body)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError(
            f"cannot decrypt {source}: its age header is damaged ({exc})", "the file is damaged: use another backup"
        ) from exc
    scrypt = [s for s in stanzas if s[0][:1] == [b"scrypt"]]
    file_key = None
    if scrypt:
        if len(stanzas) != 1:
            raise BackupError(f"cannot decrypt {source}: an scrypt stanza must be alone", "use another backup")
        if not passphrase:
            raise BackupError(
                f"{source} is encrypted with a passphrase", "pass --passphrase-file FILE or set KUBEREVIVE_PASSPHRASE"
            )
        args, body = scrypt[0]
        try:
            log_n = int(args[2])
            if not 1 <= log_n <= MAX_SCRYPT_LOG_N:
                raise ValueError("work factor")
            key = _scrypt_key(passphrase, _unb64(args[1]), log_n)
            file_key = ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, body, None)
        except (ValueError, IndexError, InvalidTag):
            file_key = None
        what = "the passphrase is wrong"
    else:
        if not identities:
            raise BackupError(
                f"{source} is encrypted to an age recipient key", "pass the matching identity with --identity FILE"
            )
        keys = []
        for ident in identities:
            try:
                keys.append(X25519PrivateKey.from_private_bytes(bech32_decode(ident, "age-secret-key-")))
            except ValueError as exc:
                raise BackupError(
                    "the --identity file holds no valid age identity", "pass the file age-keygen wrote"
                ) from exc
        for args, body in stanzas:
            if args[:1] != [b"X25519"] or len(args) != 2:
                continue
            for k in keys:
                try:
                    share = _unb64(args[1])
                    pub = k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                    wrap = _hkdf(k.exchange(X25519PublicKey.from_public_bytes(share)), share + pub,
                                 b"age-encryption.org/v1/X25519")  # fmt: skip
                    file_key = ChaCha20Poly1305(wrap).decrypt(_ZERO_NONCE, body, None)
                    break
                except (ValueError, InvalidTag):
                    continue
            if file_key is not None:
                break
        what = "the identity does not match"
    if file_key is None:
        raise BackupError(
            f"cannot decrypt {source}: {what}", "check the passphrase or identity; if it is right, use another backup"
        )
    if not hmac.compare_digest(hmac.new(_hkdf(file_key, b"", b"header"), text, sha256).digest(), mac):
        raise BackupError(f"cannot decrypt {source}: its age header was altered", "use another backup")
    return file_key, bool(scrypt)


# ------------------------------------------------------------------------------------------- payload


class AgeWriter:
    """A write-only file object: what is written is encrypted in 64 KiB chunks into ``out`` (header first).
    :meth:`close` writes the last chunk; nothing is flushed in plaintext."""

    def __init__(
        self,
        out: BinaryIO,
        *,
        passphrase: str | None = None,
        recipients: tuple[str, ...] = (),
        file_key: bytes | None = None,
    ) -> None:
        """With ``file_key`` no header is written: a payload only that key opens (:class:`AgeReader`), for a
        spool file whose key never leaves memory."""
        self._out = out
        if file_key is None:
            file_key = secrets.token_bytes(16)
            out.write(header_for(file_key, passphrase=passphrase, recipients=recipients))
        nonce = secrets.token_bytes(16)
        out.write(nonce)
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._buf = bytearray()
        self._counter = 0
        self.closed = False
        self.written = 0

    def _seal(self, data: bytes, last: bool) -> None:
        nonce = self._counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        self._out.write(self._aead.encrypt(nonce, data, None))
        self._counter += 1

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._buf += data
        self.written += len(data)
        # keep at least one byte back: the last chunk must be flagged, and must not be empty unless it is the only one
        while len(self._buf) > CHUNK:
            self._seal(bytes(self._buf[:CHUNK]), last=False)
            del self._buf[:CHUNK]
        return len(data)

    def flush(self) -> None:
        """Nothing to do: only whole chunks leave (a partial one waits for :meth:`close`)."""

    def close(self) -> None:
        if not self.closed:
            self._seal(bytes(self._buf), last=True)
            self._buf = bytearray()
            self.closed = True

    def __enter__(self) -> AgeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AgeReader:
    """A read-only file object over an age payload: chunks are decrypted and authenticated as they are read; a
    truncated, reordered or altered file is a :class:`BackupError` at the chunk where it happens."""

    def __init__(self, src: BinaryIO, file_key: bytes, source: str) -> None:
        nonce = src.read(16)
        if len(nonce) != 16:
            raise BackupError(f"cannot decrypt {source}: it is truncated", "use another backup")
        self._src = src
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._counter = 0
        self._buf = b""
        self._pos = 0
        self._ahead = src.read(CHUNK + TAG)
        self._done = False
        self.source = source

    def _next(self) -> None:
        sealed, self._ahead = self._ahead, self._src.read(CHUNK + TAG)
        last = not self._ahead
        nonce = self._counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        try:
            plain = self._aead.decrypt(nonce, sealed, None)
        except InvalidTag as exc:
            raise BackupError(
                f"cannot decrypt {self.source}: it is truncated or corrupt (chunk {self._counter})",
                "the file is damaged: use another backup",
            ) from exc
        if not plain and (self._counter > 0 or not last):
            raise BackupError(f"cannot decrypt {self.source}: an empty chunk", "use another backup")
        self._counter += 1
        self._buf, self._pos = plain, 0
        self._done = last

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while size < 0 or len(out) < size:
            if self._pos >= len(self._buf):
                if self._done:
                    break
                self._next()
                continue
            take = len(self._buf) - self._pos if size < 0 else min(size - len(out), len(self._buf) - self._pos)
            out += self._buf[self._pos : self._pos + take]
            self._pos += take
        return bytes(out)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._src.close()

    def __enter__(self) -> AgeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
