"""A small Kubernetes API client: JSON over HTTPS with the cluster's own trust.

Why not ``requests``: it lets ``REQUESTS_CA_BUNDLE`` silently replace a session's ``verify``; here
each client gets an :class:`ssl.SSLContext` built from the cluster CA and nothing else, so trust
comes from the kubeconfig, never from the process environment. The client certificate and key are
handed to OpenSSL through an anonymous in-memory file (``memfd_create``), so no key touches the disk.

Every failure is a :class:`KubeApiError` with ``status`` (None when the server was not reached)
and ``reason`` (the API ``Status.reason``, e.g. ``NotFound``, ``AlreadyExists``, ``Forbidden``).
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from kuberevive.core.kubeconfig import Kubeconfig
from kuberevive.core.redact import redact_url
from kuberevive.errors import ConfigError, KubeApiError
from kuberevive.io.tls import client_context

PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}


#: Seconds a kept connection (``keep_alive``) may sit idle and still be used: below kube-apiserver's idle timeout
#: (90 s, Go's ``http.Server.IdleTimeout`` as the API server sets it), so the client does not send on a connection
#: the server is closing.
KEEP_IDLE = 60.0
#: How a kept connection the server closed while it was idle fails on the next request: the request never reached
#: the server, and is sent again on a new connection. A server that drops the TCP connection without a TLS
#: close_notify gives an SSL EOF (seen in the fleet benchmark's pod simulator: 16 requests lost that way).
IDLE_CLOSED = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)


class KubeApi:
    """One API server, one identity. Thread-safe: every request opens its own connection, or with ``keep_alive``
    each thread keeps one open for its next requests (as a kubelet or a controller does; the fleet benchmark's
    set-up and pod simulator, which send tens of thousands of requests)."""

    def __init__(
        self,
        server: str,
        ca_pem: bytes,
        client_cert_pem: bytes | None = None,
        client_key_pem: bytes | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        keep_alive: bool = False,
    ) -> None:
        parts = urlsplit(server)
        if parts.scheme != "https" or not parts.hostname:
            raise KubeApiError(
                f"the API server URL {redact_url(server)!r} is not https://host[:port]", "fix the kubeconfig"
            )
        self.server = server.rstrip("/")
        self.shown = redact_url(self.server)  # what messages show: no user:password@, no ?token=
        self.host = parts.hostname
        self.port = parts.port or 443
        self.token = token
        self.timeout = timeout
        self.keep_alive = keep_alive
        self._kept = threading.local()  # with keep_alive: this thread's open connection
        self._open: set[http.client.HTTPSConnection] = set()  # every thread's, for close()
        self._open_lock = threading.Lock()
        try:
            self._ctx = client_context(ca_pem, client_cert_pem, client_key_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise KubeApiError(
                f"the kubeconfig's CA or client credentials are not usable: {exc}", "check the kubeconfig"
            ) from exc

    @classmethod
    def from_kubeconfig(
        cls,
        data: bytes | str,
        read_file: Callable[[str], bytes] | None = None,
        timeout: float = 10.0,
        keep_alive: bool = False,
    ) -> KubeApi:
        """The current context of a kubeconfig. File references (``certificate-authority``,
        ``client-certificate``, ``client-key``, ``tokenFile``) are read through ``read_file``
        (default: the local file system), so a node's kubeconfig can be used through a root prefix."""
        reader = read_file or (lambda p: open(p, "rb").read())  # noqa: SIM115
        try:
            cluster, user = Kubeconfig.from_yaml(data).current_or_first()
        except ConfigError as exc:
            raise KubeApiError(
                f"the kubeconfig is malformed or has no usable context: {exc.message}", "check the file"
            ) from exc

        def material(inline: bytes | None, ref: str | None) -> bytes | None:
            if inline:
                return inline
            if ref:
                try:
                    return reader(ref)
                except OSError as exc:
                    raise KubeApiError(f"cannot read {ref} named in the kubeconfig: {exc.strerror}") from exc
            return None

        ca = material(cluster.certificate_authority_data, cluster.certificate_authority)
        if ca is None:
            raise KubeApiError("the kubeconfig has no certificate-authority", "kuberevive never skips TLS verification")
        token = user.token
        if not token and user.token_file:
            token = reader(user.token_file).decode().strip()
        return cls(
            server=cluster.server or "",
            ca_pem=ca,
            client_cert_pem=material(user.client_certificate_data, user.client_certificate),
            client_key_pem=material(user.client_key_data, user.client_key),
            token=token,
            timeout=timeout,
            keep_alive=keep_alive,
        )

    # -- requests ----------------------------------------------------------------------------

    def raw(
        self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        """One request; returns (HTTP status, body). Raises only when the server cannot be reached."""
        headers = {"Accept": "application/json", "User-Agent": "kuberevive"}
        if body is not None:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        kept: http.client.HTTPSConnection | None = getattr(self._kept, "conn", None)
        self._kept.conn = None
        if kept is not None and time.monotonic() - getattr(self._kept, "used", 0.0) > KEEP_IDLE:
            self._close(kept)  # the server may be closing it right now (its idle timeout): not worth the race
            kept = None
        if kept is not None:
            try:
                return self._send(kept, method, path, body, headers)
            except IDLE_CLOSED:
                pass  # the server closed it while it was idle: sent again on a new connection
            except (TimeoutError, OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc) from exc
        conn = http.client.HTTPSConnection(self.host, self.port, context=self._ctx, timeout=self.timeout)
        try:
            return self._send(conn, method, path, body, headers)
        except ssl.SSLCertVerificationError as exc:
            raise KubeApiError(
                f"the API server at {self.shown} is not trusted by the kubeconfig's CA: {exc.verify_message}",
                "check that the kubeconfig embeds the cluster's current ca.crt",
            ) from exc
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from exc

    def _send(
        self, conn: http.client.HTTPSConnection, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """One request on ``conn``; with ``keep_alive`` it stays this thread's for its next request unless the server
        said it closes it, else (or on any failure) it is closed."""
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except BaseException:
            self._close(conn)
            raise
        if self.keep_alive and not resp.will_close:
            self._kept.conn, self._kept.used = conn, time.monotonic()
            with self._open_lock:
                self._open.add(conn)
        else:
            self._close(conn)
        return resp.status, data

    def _close(self, conn: http.client.HTTPSConnection) -> None:
        conn.close()
        with self._open_lock:
            self._open.discard(conn)

    def close(self) -> None:
        """Close the connections kept open (``keep_alive``), every thread's; a thread's next request opens a new
        one."""
        with self._open_lock:
            kept, self._open = self._open, set()
        for conn in kept:
            conn.close()

    def _unreachable(self, exc: BaseException) -> KubeApiError:
        return KubeApiError(
            f"cannot reach the API server at {self.shown}: {exc}", "check that kube-apiserver is running"
        )

    def request(
        self,
        method: str,
        path: str,
        obj: Any = None,
        content_type: str = "application/json",
        query: Mapping[str, Any] | None = None,
    ) -> Any:
        if query:
            path = f"{path}?{urlencode({k: v for k, v in query.items() if v is not None})}"
        body = json.dumps(obj).encode() if obj is not None else None
        status, data = self.raw(method, quote(path, safe="/?=&:,-._~%"), body, content_type)
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = {"message": data[:200].decode(errors="replace")}
        if status >= 400:
            message = parsed.get("message") if isinstance(parsed, dict) else None
            reason = parsed.get("reason") if isinstance(parsed, dict) else None
            raise KubeApiError(
                f"{method} {path} failed: {status} {message or reason or 'error'}", status=status, reason=reason or ""
            )
        return parsed

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query or None)

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``, or None when the API answers 404."""
        try:
            obj = self.get(path)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise
        return obj if isinstance(obj, dict) else None

    def create(self, path: str, obj: Mapping[str, Any]) -> Any:
        return self.request("POST", path, obj)

    def create_or_replace(self, collection: str, obj: Mapping[str, Any]) -> Any:
        """POST ``obj`` to ``collection``; when it exists (409), PUT it over the existing one. The stored object."""
        try:
            return self.create(collection, obj)
        except KubeApiError as exc:
            if exc.status != 409:
                raise
            return self.replace(f"{collection}/{obj['metadata']['name']}", obj)

    def ensure_configmap_data(self, namespace: str, name: str, data: Mapping[str, str]) -> str:
        """Make the ConfigMap ``namespace/name`` hold ``data`` (its other keys kept): created when it is missing,
        merge-patched when a value differs. Returns ``created``, ``unchanged`` or ``updated``."""
        collection = f"/api/v1/namespaces/{namespace}/configmaps"
        current = self.get_or_none(f"{collection}/{name}")
        if current is None:
            obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": dict(data)}
            self.create(collection, obj)
            return "created"
        have = current.get("data") or {}
        if all(have.get(k) == v for k, v in data.items()):
            return "unchanged"
        self.patch(f"{collection}/{name}", {"data": dict(data)})
        return "updated"

    def replace(self, path: str, obj: Mapping[str, Any]) -> Any:
        return self.request("PUT", path, obj)

    def replace_if_unchanged(self, path: str, obj: Mapping[str, Any]) -> bool:
        """PUT ``obj`` (with the ``resourceVersion`` it was read at); ``False`` when the object changed meanwhile (409:
        another writer's version is kept, not overwritten)."""
        try:
            self.replace(path, obj)
        except KubeApiError as exc:
            if exc.status != 409:
                raise
            return False
        return True

    def patch(self, path: str, obj: Any, patch_type: str = "merge") -> Any:
        return self.request("PATCH", path, obj, content_type=PATCH_TYPES[patch_type])

    def delete(self, path: str, **query: Any) -> Any:
        return self.request("DELETE", path, query=query or None)

    def watch(self, path: str, resource_version: str, timeout_seconds: int = 300) -> Iterator[dict[str, Any]]:
        """The events of ``GET path?watch=1`` from ``resource_version`` (``{"type": ..., "object": ...}``), until the
        server ends the watch (at most ``timeout_seconds``); an ``ERROR`` event (e.g. 410 Gone) ends it too."""
        query = urlencode({"watch": "1", "resourceVersion": resource_version, "timeoutSeconds": str(timeout_seconds)})
        headers = {"Accept": "application/json", "User-Agent": "kuberevive"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = http.client.HTTPSConnection(self.host, self.port, context=self._ctx, timeout=timeout_seconds + 30)
        try:
            conn.request("GET", f"{quote(path)}?{query}", headers=headers)
            resp = conn.getresponse()
            if resp.status >= 400:
                raise KubeApiError(f"watch {path} failed: {resp.status} {resp.read()[:200]!r}", status=resp.status)
            while line := resp.readline():
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    return
                yield event
        except (TimeoutError, OSError, http.client.HTTPException, ValueError) as exc:
            raise KubeApiError(f"watch {path} at {self.shown} broke: {exc}", "watch again") from exc
        finally:
            conn.close()

    def readyz(self) -> tuple[bool, str]:
        """``GET /readyz``: (ok, body)."""
        status, body = self.raw("GET", "/readyz")
        return status == 200, body.decode(errors="replace").strip()


def local_healthz(address: str, port: int, timeout: float = 3.0) -> tuple[bool, str]:
    """A component's plain-HTTP health endpoint on this node (the kubelet's ``healthzBindAddress``:``healthzPort``):
    (True, "ok") when ``GET /healthz`` answers 200 "ok", else (False, what it answered or why it could not)."""
    url = f"http://{address}:{port}/healthz"
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        body = resp.read(200).decode(errors="replace").strip()
    except OSError as exc:
        return False, f"{url}: {exc}"
    finally:
        conn.close()
    return resp.status == 200 and body == "ok", f"{url}: {resp.status} {body}"
