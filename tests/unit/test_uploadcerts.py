"""The control-plane join command recover prints (issue 12): what ``kubeadm init phase upload-certs
--upload-certs`` stores, made by kuberevive (core/uploadcerts.py) and opened here the way kubeadm's
``DownloadCerts`` opens it (copycerts.getDataFromSecret + crypto.DecryptBytes: the first 12 bytes are the AES-GCM
nonce, the rest ciphertext and tag, no additional data; the data keys are the pki names with ``/`` as ``-``).
The same Secret is opened by Go's own AES-GCM in tests/integration/test_uploadcerts_go.py."""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kuberevive import logs
from kuberevive.cli.commands.recover import result_document
from kuberevive.core import uploadcerts
from kuberevive.core.recover import SEED_STEP_IDS
from kuberevive.core.redact import MASK
from kuberevive.errors import PlanError
from kuberevive.run.context import Faults
from kuberevive.run.recover import RecoveryResult
from tests.documents import errors
from tests.unit.test_executor import ADDRESS, Cluster, Killed, _kill
from tests.unit.test_recover import STORED
from tests.unit.test_salvage import cluster_pki

NOW = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)
KUBEADM_DATA_KEYS = {
    "ca.crt",
    "ca.key",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "sa.pub",
    "sa.key",
    "etcd-ca.crt",
    "etcd-ca.key",
}
"""copycerts.certsToTransfer with local etcd, through certOrKeyNameToSecretName (written out here, not imported)."""
ENDPOINT = "cp.kuberevive-lab.invalid:6443"
WITH_ENDPOINT = STORED.replace(
    "clusterName: kubernetes\n", f"clusterName: kubernetes\ncontrolPlaneEndpoint: {ENDPOINT}\n"
)
OWNER = {"metadata": {"name": "bootstrap-token-abcdef", "uid": "0b7a3c1e-0000-4000-8000-000000000001"}}


def kubeadm_decrypt(sealed: bytes, key_hex: str) -> bytes:
    """kubeadm's DecryptBytes, line by line: hex-decoded key, NewGCM (12-byte nonce), Open(nil, nonce, rest, nil)."""
    key = bytes.fromhex(key_hex)
    nonce, out = sealed[:12], sealed[12:]
    return AESGCM(key).decrypt(nonce, out, None)


def test_the_secret_opens_with_the_key_exactly_as_kubeadms_download_certs_does() -> None:
    files = cluster_pki()
    key = uploadcerts.new_certificate_key(os.urandom)
    assert len(key) == 64 and bytes.fromhex(key)  # kubeadm: hex of 32 random bytes (AES-256)
    secret = uploadcerts.certs_secret(files, key, os.urandom, OWNER)
    assert secret["metadata"]["name"] == "kubeadm-certs" and secret["metadata"]["namespace"] == "kube-system"
    assert set(secret["data"]) == KUBEADM_DATA_KEYS
    nonces = set()
    for data_key, value in secret["data"].items():
        sealed = base64.b64decode(value)
        name = data_key.replace("etcd-", "etcd/")
        assert len(sealed) == 12 + len(files[name]) + 16  # nonce, ciphertext, GCM tag
        assert kubeadm_decrypt(sealed, key) == files[name], data_key
        nonces.add(sealed[:12])
    assert len(nonces) == len(KUBEADM_DATA_KEYS)  # a fresh nonce per value
    assert uploadcerts.opened_secret(secret, key) == {k: files[k.replace("etcd-", "etcd/")] for k in KUBEADM_DATA_KEYS}
    other = uploadcerts.new_certificate_key(os.urandom)
    with pytest.raises(InvalidTag):
        kubeadm_decrypt(base64.b64decode(secret["data"]["ca.key"]), other)
    with pytest.raises(PlanError, match="do not open with this certificate key"):
        uploadcerts.opened_secret(secret, other)


def test_a_tampered_value_does_not_open_and_a_missing_file_is_an_empty_value() -> None:
    files = {k: v for k, v in cluster_pki().items() if k != "sa.pub"}
    key = uploadcerts.new_certificate_key(os.urandom)
    secret = uploadcerts.certs_secret(files, key, os.urandom, OWNER)
    assert secret["data"]["sa.pub"] == ""  # as kubeadm stores a file it did not find
    sealed = bytearray(base64.b64decode(secret["data"]["ca.crt"]))
    sealed[20] ^= 1
    with pytest.raises(PlanError):
        uploadcerts.open_sealed(bytes(sealed), key)
    with pytest.raises(PlanError, match="64 lowercase hex"):
        uploadcerts.open_sealed(bytes(sealed), key.upper())


def test_the_secret_is_owned_by_a_two_hour_token_that_only_carries_its_ttl() -> None:
    token = uploadcerts.ttl_token_secret("abcdef.0123456789abcdef", NOW)
    data = {k: base64.b64decode(v).decode() for k, v in token["data"].items()}
    assert data == {
        "token-id": "abcdef",
        "token-secret": "0123456789abcdef",
        "description": "Proxy for managing TTL for the kubeadm-certs secret",
        "expiration": "2026-12-05T06:00:00Z",
    }
    ref = uploadcerts.certs_secret({}, "0" * 64, os.urandom, OWNER)["metadata"]["ownerReferences"]
    assert ref == [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "name": "bootstrap-token-abcdef",
            "uid": OWNER["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    with pytest.raises(PlanError, match="without a uid"):
        uploadcerts.owner_reference({"metadata": {"name": "x"}})
    binding = uploadcerts.role_binding()
    assert binding["subjects"] == [{"kind": "Group", "name": "system:bootstrappers:kubeadm:default-node-token"}]
    assert uploadcerts.role()["rules"][0]["resourceNames"] == ["kubeadm-certs"]


def _secret(c: Cluster, name: str) -> dict:  # type: ignore[type-arg]
    return c.api.objects[f"/api/v1/namespaces/kube-system/secrets/{name}"]


def _assert_control_plane_join(c: Cluster, result: RecoveryResult) -> str:
    assert result.join_command.startswith(f"kubeadm join {ENDPOINT} --token ")
    head, _, key = result.control_plane_join_command.rpartition(" --certificate-key ")
    assert head == f"{result.join_command} --control-plane"
    opened = uploadcerts.opened_secret(_secret(c, "kubeadm-certs"), key)
    for data_key in KUBEADM_DATA_KEYS:  # the node's own files, byte for byte
        on_node = c.root.read(PurePosixPath("/etc/kubernetes/pki") / data_key.replace("etcd-", "etcd/"))
        assert opened[data_key] == on_node, data_key
    (ref,) = _secret(c, "kubeadm-certs")["metadata"]["ownerReferences"]
    owner = _secret(c, ref["name"])
    assert ref["uid"] == owner["metadata"]["uid"]
    assert base64.b64decode(owner["data"]["description"]).decode() == uploadcerts.TTL_TOKEN_DESCRIPTION
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system"
    assert c.api.objects[f"{rbac}/rolebindings/kubeadm:kubeadm-certs"]["roleRef"]["name"] == "kubeadm:kubeadm-certs"
    assert result.as_dict()["control_plane_join_command"] == result.control_plane_join_command
    assert errors(result_document(result)) == []  # the --json document, against RecoveryResult.schema.json
    assert c.journal().certificate_key is None  # dropped at the end, like the token
    return key


def test_recover_with_a_control_plane_endpoint_prints_a_control_plane_join_command(tmp_path: Path) -> None:
    c = Cluster(tmp_path, WITH_ENDPOINT)
    result = c.recover()
    _assert_control_plane_join(c, result)
    assert any("kube-system/kubeadm-certs" in line for line in c.progress)


def test_a_run_killed_after_the_upload_prints_the_key_the_secret_was_sealed_with(tmp_path: Path) -> None:
    c = Cluster(tmp_path, WITH_ENDPOINT)
    assert SEED_STEP_IDS[-1] == "report"  # killed right after it: the key is in the journal, the Secret uploaded
    with pytest.raises(Killed):
        c.recover(Faults(after_step=len(SEED_STEP_IDS), kill=_kill))
    kept = c.journal().certificate_key
    assert kept is not None
    result = c.recover()
    assert result.applied == []
    assert _assert_control_plane_join(c, result) == kept


def test_without_a_control_plane_endpoint_there_is_no_control_plane_join_command(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    result = c.recover()
    assert result.join_command.startswith(f"kubeadm join {ADDRESS}:6443 --token ")
    assert result.control_plane_join_command == "" and result.as_dict()["control_plane_join_command"] == ""
    assert errors(result_document(result)) == []
    assert "/api/v1/namespaces/kube-system/secrets/kubeadm-certs" not in c.api.objects


def test_the_log_never_holds_the_certificate_key() -> None:
    key = hashlib.sha256(b"k").hexdigest()
    line = f"  kubeadm join cp:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:{key}"
    said = logs.scrub(f"{line} --control-plane --certificate-key {key}")
    assert said.count(key) == 1 and said.endswith("--certificate-key " + MASK)  # the CA hash is public
