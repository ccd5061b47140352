"""What ``kubeadm init phase upload-certs --upload-certs`` puts in the cluster, so that a new control-plane node
joins with ``kubeadm join ... --control-plane --certificate-key KEY`` (kubeadm's cmd/kubeadm/app/phases/copycerts
and cmd/kubeadm/app/util/crypto):

* the certificate key: 32 random bytes (AES-256), shown hex-encoded;
* the Secret ``kube-system/kubeadm-certs``: each shared trust file (``ca``, ``front-proxy-ca``, ``etcd/ca`` pairs,
  ``sa.key``/``sa.pub``; data key = the pki-relative name with ``/`` as ``-``: ``etcd-ca.crt``) sealed with AES-GCM
  under the key, as ``nonce (12 bytes) || ciphertext || tag`` (Go's ``gcm.Seal(nonce, nonce, data, nil)``, no
  additional data); a file that is missing is an empty value, as kubeadm stores it;
* a bootstrap token that only carries a TTL (2 h, no usages, no groups), the Secret's controller owner: when the
  token expires, the token cleaner deletes it and the garbage collector the Secret with it;
* the Role and RoleBinding ``kubeadm:kubeadm-certs``: the node bootstrap tokens' group may ``get`` that Secret.

Pure: random bytes and the clock are passed in.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kuberevive.core.recover import bootstrap_token_secret
from kuberevive.errors import PlanError
from kuberevive.model.config import DEFAULT_BOOTSTRAP_GROUP

SECRET_NAME = "kubeadm-certs"
ROLE_NAME = "kubeadm:kubeadm-certs"
KEY_SIZE = 32
NONCE_SIZE = 12
TTL = timedelta(hours=2)
"""kubeadm's DefaultCertTokenDuration: the Secret lives as long as its owner token."""
TTL_TOKEN_DESCRIPTION = "Proxy for managing TTL for the kubeadm-certs secret"
TRANSFERRED = (
    "ca.crt",
    "ca.key",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "sa.pub",
    "sa.key",
    "etcd/ca.crt",
    "etcd/ca.key",
)
"""The pki-relative files kubeadm transfers with local (stacked) etcd (copycerts.certsToTransfer)."""
_KEY_TEXT = re.compile(r"[0-9a-f]{64}")


def new_certificate_key(random_bytes: Callable[[int], bytes]) -> str:
    """A fresh certificate key, hex-encoded as ``kubeadm certs certificate-key`` prints it."""
    key = random_bytes(KEY_SIZE)
    if len(key) != KEY_SIZE:
        raise ValueError(f"the certificate key needs {KEY_SIZE} random bytes, got {len(key)}")
    return key.hex()


def certificate_key_bytes(key: str) -> bytes:
    if not _KEY_TEXT.fullmatch(key):
        raise PlanError("the certificate key is not 64 lowercase hex digits", "use the key the recovery printed")
    return bytes.fromhex(key)


def seal(data: bytes, key: str, nonce: bytes) -> bytes:
    """kubeadm's EncryptBytes with a given nonce: ``nonce || AES-GCM(data)``."""
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"AES-GCM needs a {NONCE_SIZE}-byte nonce")
    return nonce + AESGCM(certificate_key_bytes(key)).encrypt(nonce, data, None)


def open_sealed(sealed: bytes, key: str) -> bytes:
    """kubeadm's DecryptBytes: what :func:`seal` sealed, or an error when the key or the data is wrong."""
    if len(sealed) < NONCE_SIZE:
        raise PlanError("the sealed data is shorter than its nonce", "upload the certificates again")
    try:
        return AESGCM(certificate_key_bytes(key)).decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], None)
    except InvalidTag as exc:
        raise PlanError(
            "the certificates do not open with this certificate key", "use the key printed with the Secret"
        ) from exc


def data_key(pki_name: str) -> str:
    """The Secret's data key of a pki-relative file (copycerts.certOrKeyNameToSecretName)."""
    return pki_name.replace("/", "-")


def ttl_token_secret(token: str, now: datetime) -> dict[str, Any]:
    """The bootstrap token Secret that only carries the kubeadm-certs Secret's TTL."""
    return bootstrap_token_secret(token, now, TTL, description=TTL_TOKEN_DESCRIPTION, usages=(), groups=())


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """A controller reference to a Secret as the API returned it (metav1.NewControllerRef)."""
    meta = owner.get("metadata") or {}
    if not meta.get("uid"):
        raise PlanError(f"the API returned the Secret {meta.get('name')} without a uid", "run recover --apply again")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def certs_secret(
    files: Mapping[str, bytes | None], key: str, random_bytes: Callable[[int], bytes], owner: Mapping[str, Any]
) -> dict[str, Any]:
    """``kube-system/kubeadm-certs`` with the :data:`TRANSFERRED` files of ``files`` (pki-relative name -> bytes)
    sealed under ``key``, owned by the TTL token's Secret ``owner``."""
    data = {}
    for name in TRANSFERRED:
        content = files.get(name)
        sealed = seal(content, key, random_bytes(NONCE_SIZE)) if content is not None else b""
        data[data_key(name)] = base64.b64encode(sealed).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET_NAME, "namespace": "kube-system", "ownerReferences": [owner_reference(owner)]},
        "type": "Opaque",
        "data": data,
    }


def opened_secret(secret: Mapping[str, Any], key: str) -> dict[str, bytes]:
    """The files of a kubeadm-certs Secret opened with ``key`` (data key -> bytes; an empty value stays empty), as
    kubeadm's DownloadCerts reads them: one value that does not open fails the whole Secret."""
    return {
        name: open_sealed(raw, key) if raw else b""
        for name, raw in ((n, base64.b64decode(v)) for n, v in (secret.get("data") or {}).items())
    }


def role() -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": ROLE_NAME, "namespace": "kube-system"},
        "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": [SECRET_NAME]}],
    }


def role_binding() -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": ROLE_NAME, "namespace": "kube-system"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE_NAME},
        "subjects": [{"kind": "Group", "name": DEFAULT_BOOTSTRAP_GROUP}],
    }


def control_plane_join_command(worker_join: str, key: str) -> str:
    """The worker's ``kubeadm join`` as a new control-plane node's (kubeadm init's own printout)."""
    return f"{worker_join} --control-plane --certificate-key {key}"
