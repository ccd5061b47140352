"""A tiny etcd v3 client over etcd's gRPC gateway (JSON over HTTPS), pure Python.

etcd serves ``/v3/...`` JSON endpoints on its client port (``/v3/kv/range``, ``/v3/cluster/member/list``,
``/v3/maintenance/status``; keys and values are base64 in the JSON) and ``/health``. kubeadm's etcd
requires client certificates (``--client-cert-auth=true``), so every connection presents a client
certificate signed by the etcd CA (``healthcheck-client`` or ``apiserver-etcd-client``).

Trust is explicit: the etcd CA is passed per client and is the only trust anchor of its
``ssl.SSLContext`` (:func:`kuberevive.io.tls.client_context`); no environment variable can change it.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from dataclasses import dataclass
from typing import Any

from kuberevive.core.redact import redact_url
from kuberevive.errors import EtcdError
from kuberevive.io.tls import client_context


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int
    version: int


@dataclass(frozen=True)
class Member:
    id: str
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False


def _member(m: dict[str, Any]) -> Member:
    return Member(
        id=str(m.get("ID", "")),
        name=str(m.get("name", "")),
        peer_urls=tuple(m.get("peerURLs") or ()),
        client_urls=tuple(m.get("clientURLs") or ()),
        is_learner=bool(m.get("isLearner", False)),
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key with this prefix"."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\x00"


class EtcdClient:
    """One etcd endpoint (``https://host:port``), one client identity."""

    def __init__(self, endpoint: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, timeout: float = 5.0) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(endpoint)
        if parts.scheme != "https" or not parts.hostname:
            raise EtcdError(f"the etcd endpoint {redact_url(endpoint)!r} is not https://host:port", "pass an https URL")
        self.endpoint = endpoint.rstrip("/")
        self.shown = redact_url(self.endpoint)  # what messages show
        self.host, self.port = parts.hostname, parts.port or 2379
        self.timeout = timeout
        try:
            self._ctx = client_context(ca_pem, cert_pem, key_pem)
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise EtcdError(f"the etcd CA or client certificate is not usable: {exc}", "check the etcd PKI") from exc

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self._ctx, timeout=self.timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        except ssl.SSLCertVerificationError as exc:
            raise EtcdError(
                f"etcd at {self.shown} is not trusted by the etcd CA: {exc.verify_message}",
                "check that etcd runs with the server certificate signed by this etcd CA",
            ) from exc
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise EtcdError(f"cannot reach etcd at {self.shown}: {exc}", "check that etcd is running") from exc
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"message": raw[:200].decode(errors="replace")}
        return resp.status, parsed

    def _post(self, path: str, body: Any) -> Any:
        status, parsed = self._request("POST", path, body)
        if status != 200:
            msg = parsed.get("message") or parsed.get("error") if isinstance(parsed, dict) else parsed
            raise EtcdError(f"etcd {path} failed: {status} {msg}", "check etcd's log")
        return parsed

    def health(self) -> tuple[bool, str]:
        """``GET /health``: (healthy, reason)."""
        status, parsed = self._request("GET", "/health")
        ok = status == 200 and isinstance(parsed, dict) and str(parsed.get("health")) == "true"
        return ok, "" if ok else str(parsed.get("reason") if isinstance(parsed, dict) else parsed)

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._post("/v3/maintenance/status", {})
        return result

    def range(self, key: bytes, *, prefix: bool = False, keys_only: bool = False, limit: int = 0) -> list[KeyValue]:
        body: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(prefix_end(key))
        if keys_only:
            body["keys_only"] = True
        if limit:
            body["limit"] = limit
        parsed = self._post("/v3/kv/range", body)
        return [
            KeyValue(
                key=base64.b64decode(kv.get("key", "")),
                value=base64.b64decode(kv.get("value", "")),
                mod_revision=int(kv.get("mod_revision", 0)),
                create_revision=int(kv.get("create_revision", 0)),
                version=int(kv.get("version", 0)),
            )
            for kv in parsed.get("kvs") or []
        ]

    def get(self, key: bytes | str) -> bytes | None:
        k = key.encode() if isinstance(key, str) else key
        kvs = self.range(k)
        return kvs[0].value if kvs else None

    def members(self) -> list[Member]:
        parsed = self._post("/v3/cluster/member/list", {})
        return [_member(m) for m in parsed.get("members") or []]

    def member_add(self, peer_urls: list[str], learner: bool) -> Member:
        """``MemberAdd``: the new member (unstarted: no name yet), as a learner when ``learner``."""
        parsed = self._post("/v3/cluster/member/add", {"peerURLs": peer_urls, "isLearner": learner})
        return _member(parsed.get("member") or {})

    def member_remove(self, member_id: str) -> None:
        self._post("/v3/cluster/member/remove", {"ID": member_id})

    def member_promote(self, member_id: str) -> None:
        """``MemberPromote``: EtcdError while the learner has not caught up with the leader (retry)."""
        self._post("/v3/cluster/member/promote", {"ID": member_id})

    def snapshot(self, timeout: float = 300.0) -> bytes:
        """A consistent snapshot (``Maintenance.Snapshot`` via ``POST /v3/maintenance/snapshot``), streamed.

        Returns the bytes exactly as etcd streamed them: the bbolt db followed by the sha256 etcd appends
        (``kuberevive.core.backup.split_snapshot`` checks it; ``etcdutl snapshot restore`` checks it too).
        """
        from kuberevive.core.backup import decode_snapshot_stream, split_snapshot
        from kuberevive.errors import BackupError

        conn = http.client.HTTPSConnection(self.host, self.port, context=self._ctx, timeout=timeout)
        try:
            conn.request("POST", "/v3/maintenance/snapshot", body=b"{}", headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise EtcdError(f"cannot take a snapshot from etcd at {self.shown}: {exc}", "check etcd") from exc
        finally:
            conn.close()
        if resp.status != 200:
            raise EtcdError(f"etcd refused the snapshot: HTTP {resp.status}", "check etcd's log")
        try:
            data = decode_snapshot_stream(body)
            split_snapshot(data)
        except BackupError as exc:
            raise EtcdError(exc.message, exc.hint) from exc
        return data
