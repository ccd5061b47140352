"""ServiceAccount token key ids: kube-apiserver's keyIDFromPublicKey and the JWT header ``kid``."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kuberevive.core.satokens import jwt_header, key_ids, signed_by_current_key, stale_token_secrets, token_kid

OLD = rsa.generate_private_key(public_exponent=65537, key_size=2048)
NEW = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pub_pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def kid_of(key: Any) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def token(kid: str | None) -> str:
    header: dict[str, str] = {"alg": "RS256"} if kid is None else {"alg": "RS256", "kid": kid}
    enc = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{enc}.eyJzdWIiOiJ4In0.c2ln"


def test_key_ids_of_sa_pub_and_other_pem_kinds():
    assert key_ids(pub_pem(NEW)) == {kid_of(NEW)}
    assert len(kid_of(NEW)) == 43  # 32 bytes, base64url without padding
    both = pub_pem(OLD) + pub_pem(NEW)
    assert key_ids(both) == {kid_of(OLD), kid_of(NEW)}
    priv = NEW.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    assert key_ids(priv) == {kid_of(NEW)}
    ec_key = ec.generate_private_key(ec.SECP256R1())
    assert key_ids(pub_pem(ec_key)) == {kid_of(ec_key)}
    with pytest.raises(ValueError, match="no public key"):
        key_ids(b"nothing here")
    with pytest.raises(ValueError, match="a PUBLIC KEY block does not parse"):
        key_ids(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_token_verdicts():
    current = key_ids(pub_pem(NEW))
    assert signed_by_current_key(token(kid_of(NEW)), current) is True
    assert signed_by_current_key(token(kid_of(OLD)), current) is False
    assert signed_by_current_key(token(None), current) is None
    assert jwt_header(token("k"))["alg"] == "RS256" and token_kid(token("k")) == "k"
    with pytest.raises(ValueError, match="three dot-separated parts"):
        jwt_header("abc")
    with pytest.raises(ValueError, match="not base64url JSON"):
        jwt_header("!!!.b.c")


def secret(name: str, tok: str | None, kind: str = "kubernetes.io/service-account-token") -> dict[str, Any]:
    data = {} if tok is None else {"token": base64.b64encode(tok.encode()).decode()}
    return {
        "type": kind,
        "metadata": {"namespace": "ns", "name": name, "annotations": {"kubernetes.io/service-account.name": "builder"}},
        "data": data,
    }


def test_stale_legacy_token_secrets():
    current = key_ids(pub_pem(NEW))
    secrets = [
        secret("fresh", token(kid_of(NEW))),
        secret("old", token(kid_of(OLD))),
        secret("nokid", token(None)),
        secret("garbage", "not-a-jwt"),
        secret("unfilled", None),
        secret("opaque", token(kid_of(OLD)), kind="Opaque"),
    ]
    assert [(s.name, s.service_account, s.reason) for s in stale_token_secrets(secrets, current)] == [
        ("old", "builder", f"its token was signed by key {kid_of(OLD)}, not a current one"),
        ("nokid", "builder", "its token has no key id; check it with a TokenReview"),
        ("garbage", "builder", "its token is not a JWT"),
    ]
