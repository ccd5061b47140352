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
from typing import Any, BinaryIO

from kuberevive.core.backup import SnapshotDigest
from kuberevive.core.etcdsafety import Member as Member
from kuberevive.core.etcdsafety import Status
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


def member_id(value: object) -> str:
    """An etcd member id as etcdctl prints it (hex); the JSON gateway sends uint64 as a decimal string."""
    try:
        return f"{int(str(value)):x}"
    except ValueError:
        return str(value)


def _gateway_id(member: str) -> str:
    """A member id (hex, as :func:`member_id` gives it) as the JSON gateway takes a uint64: a decimal string."""
    return str(int(member, 16))


def _member(m: dict[str, Any]) -> Member:
    return Member(
        id=member_id(m.get("ID", "")),
        name=str(m.get("name", "")),
        peer_urls=tuple(m.get("peerURLs") or ()),
        client_urls=tuple(m.get("clientURLs") or ()),
        is_learner=bool(m.get("isLearner")),
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


SNAPSHOT_READ_BYTES = 1 << 20


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

    def peer_members(self) -> list[Member]:
        """``GET /members`` on a member's PEER port (a client of its peer URL with a peer certificate): raft's own
        member list, which the member answers also without a quorum (its client port serves nothing until it has
        one: every member of a cluster powered off starts so)."""
        status, parsed = self._request("GET", "/members")
        if status != 200 or not isinstance(parsed, list):
            raise EtcdError(f"etcd {self.shown}/members failed: {status} {str(parsed)[:200]}", "check etcd's log")
        return [
            _member(
                {
                    "ID": m.get("id", ""),
                    "name": m.get("name", ""),
                    "peerURLs": m.get("peerURLs"),
                    "clientURLs": m.get("clientURLs"),
                    "isLearner": m.get("isLearner"),
                }
            )
            for m in parsed
            if isinstance(m, dict)
        ]

    def member_add(self, peer_urls: list[str], learner: bool) -> Member:
        """``MemberAdd``: the new member (unstarted: no name yet), as a learner when ``learner``."""
        parsed = self._post("/v3/cluster/member/add", {"peerURLs": peer_urls, "isLearner": learner})
        return _member(parsed.get("member") or {})

    def member_remove(self, member: str) -> None:
        self._post("/v3/cluster/member/remove", {"ID": _gateway_id(member)})

    def member_promote(self, member: str) -> None:
        """``MemberPromote``: EtcdError while the learner has not caught up with the leader (retry)."""
        self._post("/v3/cluster/member/promote", {"ID": _gateway_id(member)})

    def put(self, key: bytes, value: bytes) -> int:
        """Write one key; returns the new revision (tests and benchmarks fill an etcd with it)."""
        parsed = self._post("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})
        return int((parsed.get("header") or {}).get("revision", 0))

    def alarms(self) -> list[tuple[str, str]]:
        """(member id, alarm) of every raised alarm (``NOSPACE``, ``CORRUPT``)."""
        parsed = self._post("/v3/maintenance/alarm", {"action": "GET"})
        return [(member_id(a.get("memberID", "0")), str(a.get("alarm", ""))) for a in parsed.get("alarms") or []]

    def safety_status(self) -> Status:
        """:class:`Status` for the preflight: version, member id, database size, learner flag, alarms."""
        st = self.status()
        return Status(
            endpoint=self.shown,
            version=str(st.get("version", "")),
            member_id=member_id((st.get("header") or {}).get("member_id", "0")),
            db_size=int(st.get("dbSize", 0)),
            db_size_in_use=int(st.get("dbSizeInUse", 0)),
            is_learner=bool(st.get("isLearner")),
            alarms=tuple(self.alarms()),
        )

    def compact(self, revision: int) -> None:
        """Compact the key history up to ``revision`` (physically, so defragment can free the pages)."""
        self._post("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    def defragment(self, timeout: float = 600.0) -> None:
        """Defragment this member (it is blocked meanwhile: one member at a time)."""
        saved, self.timeout = self.timeout, timeout
        try:
            self._post("/v3/maintenance/defragment", {})
        finally:
            self.timeout = saved

    def disarm(self, member: str, alarm: str) -> None:
        """Deactivate one alarm of one member (``member`` in hex, as :func:`member_id`)."""
        self._post("/v3/maintenance/alarm", {"action": "DEACTIVATE", "memberID": str(int(member, 16)), "alarm": alarm})

    def revision(self) -> int:
        status = self.status()
        return int((status.get("header") or {}).get("revision", 0))

    def snapshot_to(self, out: BinaryIO, timeout: float = 3600.0) -> SnapshotDigest:
        """Stream a consistent snapshot (``Maintenance.Snapshot`` via ``POST /v3/maintenance/snapshot``) into
        ``out`` chunk by chunk, never whole in memory; returns its size. What is written is exactly what etcd
        streamed: the bbolt db followed by the sha256 etcd appends, which is checked on the way
        (:class:`kuberevive.core.backup.SnapshotDigest`, returned: size, sha256, trailer)."""
        from kuberevive.core.backup import SnapshotStreamDecoder
        from kuberevive.errors import BackupError

        conn = http.client.HTTPSConnection(self.host, self.port, context=self._ctx, timeout=timeout)
        decoder, digest = SnapshotStreamDecoder(), SnapshotDigest()
        try:
            conn.request("POST", "/v3/maintenance/snapshot", body=b"{}", headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                raise EtcdError(f"etcd refused the snapshot: HTTP {resp.status}", "check etcd's log")
            while chunk := resp.read(SNAPSHOT_READ_BYTES):
                for blob in decoder.feed(chunk):
                    digest.update(blob)
                    out.write(blob)
            for blob in decoder.close():
                digest.update(blob)
                out.write(blob)
            digest.finish()
        except BackupError as exc:
            raise EtcdError(exc.message, exc.hint) from exc
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise EtcdError(f"cannot take a snapshot from etcd at {self.shown}: {exc}", "check etcd") from exc
        finally:
            conn.close()
        return digest

    def snapshot(self, timeout: float = 300.0) -> bytes:
        """A consistent snapshot in memory (small databases and tests; :meth:`snapshot_to` streams)."""
        import io

        buf = io.BytesIO()
        self.snapshot_to(buf, timeout)
        return buf.getvalue()
