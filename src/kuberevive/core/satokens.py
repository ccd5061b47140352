"""Which ServiceAccount tokens were signed by a lost ``sa.key``: the JWT ``kid`` against the current key ids.

kube-apiserver puts a key id in the header of every ServiceAccount token it (or
kube-controller-manager, for legacy token Secrets) signs: ``base64url(sha256(DER of the PKIX public
key))`` without padding (kubernetes ``pkg/serviceaccount/jwt.go``, ``keyIDFromPublicKey``). So a
token whose ``kid`` is not the id of any key in the current ``--service-account-key-file`` set was
signed by a key the cluster no longer trusts, without verifying any signature. A token without a
``kid`` (very old) cannot be classified this way; ask the API (TokenReview) instead.

Pure: PEM and token text in, ids and verdicts out. Nothing here decodes or logs token *claims*
beyond the header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

LEGACY_TOKEN_SECRET = "kubernetes.io/service-account-token"
_PEM_BLOCK = re.compile(rb"-----BEGIN (?P<label>[A-Z0-9 ]+)-----.+?-----END (?P=label)-----\r?\n?", re.S)


def _b64url_nopad(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def key_ids(pem: bytes) -> frozenset[str]:
    """The key ids of every public key in a PEM file (``sa.pub``: PUBLIC KEY blocks; certificates and
    private keys are accepted too, as kube-apiserver accepts them in ``--service-account-key-file``)."""
    ids: set[str] = set()
    for m in _PEM_BLOCK.finditer(pem):
        block, kind = m.group(0), m.group("label")
        public: Any
        try:
            if kind == b"CERTIFICATE":
                public = x509.load_pem_x509_certificate(block).public_key()
            elif kind.endswith(b"PRIVATE KEY"):
                public = serialization.load_pem_private_key(block, password=None).public_key()
            else:
                public = serialization.load_pem_public_key(block)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"a {kind.decode(errors='replace')} block does not parse ({exc})") from exc
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        ids.add(_b64url_nopad(hashlib.sha256(der).digest()))
    if not ids:
        raise ValueError("no public key, private key or certificate PEM block")
    return frozenset(ids)


def jwt_header(token: str) -> dict[str, Any]:
    """The decoded JOSE header of a compact JWS (``ValueError`` when it is not one)."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWT (three dot-separated parts)")
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise ValueError("the JWT header is not base64url JSON") from exc
    if not isinstance(header, dict):
        raise ValueError("the JWT header is not a JSON object")
    return header


def token_kid(token: str) -> str | None:
    kid = jwt_header(token).get("kid")
    return kid if isinstance(kid, str) and kid else None


def signed_by_current_key(token: str, current: frozenset[str]) -> bool | None:
    """True/False by the ``kid``; None when the token has no ``kid`` (use a TokenReview)."""
    kid = token_kid(token)
    return None if kid is None else kid in current


@dataclass(frozen=True)
class StaleTokenSecret:
    namespace: str
    name: str
    service_account: str
    reason: str


def stale_token_secrets(secrets: Iterable[Mapping[str, Any]], current: frozenset[str]) -> list[StaleTokenSecret]:
    """Legacy ``kubernetes.io/service-account-token`` Secrets whose token the cluster now rejects
    (or cannot classify): these must be re-minted (cleared so the token controller refills them)."""
    out: list[StaleTokenSecret] = []
    for s in secrets:
        if s.get("type") != LEGACY_TOKEN_SECRET:
            continue
        meta = s.get("metadata") or {}
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        sa = str((meta.get("annotations") or {}).get("kubernetes.io/service-account.name", ""))
        raw = (s.get("data") or {}).get("token")
        if not raw:
            continue  # not filled yet: the token controller will sign it with the current key
        try:
            token = base64.b64decode(raw).decode()
            verdict = signed_by_current_key(token, current)
        except (binascii.Error, ValueError, UnicodeDecodeError):
            out.append(StaleTokenSecret(ns, name, sa, "its token is not a JWT"))
            continue
        if verdict is None:
            out.append(StaleTokenSecret(ns, name, sa, "its token has no key id; check it with a TokenReview"))
        elif not verdict:
            out.append(
                StaleTokenSecret(ns, name, sa, f"its token was signed by key {token_kid(token)}, not a current one")
            )
    return out
