"""Normalise a kubeconfig for golden comparison: the random parts (keys, serials, signatures, dates) are
replaced by a description of what they are, so the rest of the text can be compared byte for byte.

    certificate-authority-data: <CA CN=kubernetes sig=sha256WithRSAEncryption key=RSA-2048>
    client-certificate-data: <CERT subject=O=kubeadm:cluster-admins,CN=kubernetes-admin issuer=CN=kubernetes
                               eku=clientAuth validity=525605min key=RSA-2048>
    client-key-data: <KEY -----BEGIN RSA PRIVATE KEY----->
"""

from __future__ import annotations

import base64
import re

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

_FIELD = re.compile(r"^(\s*)(certificate-authority-data|client-certificate-data|client-key-data): (\S+)$", re.M)


def _key_name(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC-{key.curve.name}"
    return type(key).__name__


def _describe(field: str, value: str) -> str:
    data = base64.b64decode(value)
    if field == "client-key-data":
        return f"<KEY {data.decode().splitlines()[0]}>"
    cert = x509.load_pem_x509_certificate(data)
    if field == "certificate-authority-data":
        return f"<CA {cert.subject.rfc4514_string()} sig={cert.signature_algorithm_oid._name} key={_key_name(cert)}>"
    eku = ",".join(u._name for u in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    minutes = round((cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 60)
    return (
        f"<CERT subject={cert.subject.rfc4514_string()} issuer={cert.issuer.rfc4514_string()} eku={eku}"
        f" validity={minutes}min key={_key_name(cert)}>"
    )


def normalise(text: str) -> str:
    return _FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}: {_describe(m.group(2), m.group(3))}", text)
