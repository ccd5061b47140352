"""``KubeApi(keep_alive=True)`` against a real HTTPS server on loopback (Python's, HTTP/1.1 with keep-alive): each
thread sends its requests over one connection; a connection the server closed while it was idle is replaced and the
request sent again; without ``keep_alive`` every request has its own connection, as before."""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kuberevive.core import pki
from kuberevive.io import kubeapi
from kuberevive.io.kubeapi import KubeApi
from kuberevive.model.config import EncryptionAlgorithm


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    connections = 0
    requests = 0
    close_after: int | None = None  # close a connection after this many requests on it (an idle timeout)
    reset_after: int | None = None  # the same, dropping the TCP connection without a TLS close_notify


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1
        self.served = 0

    def do_GET(self) -> None:
        self.server.requests += 1
        self.served += 1
        body = json.dumps({"n": self.server.requests}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.server.close_after is not None and self.served >= self.server.close_after:
            self.close_connection = True  # closed without a "Connection: close": the client learns on its next send
        if self.server.reset_after is not None and self.served >= self.server.reset_after:
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[_Server, bytes]]:
    now = datetime.now(UTC)
    ca_key = pki.generate_private_key(EncryptionAlgorithm.ECDSA_P256)
    ca = pki.new_self_signed_ca("test-ca", ca_key, now - timedelta(days=1), now + timedelta(days=1))
    key = pki.generate_private_key(EncryptionAlgorithm.ECDSA_P256)
    cert = pki.issue_certificate(
        common_name="kube-apiserver",
        organization=(),
        usages=(pki.KeyUsage.SERVER_AUTH,),
        public_key=key.public_key(),
        ca_cert=ca,
        ca_key=ca_key,
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=1),
        alt_names=pki.AltNames(ips=(ipaddress.ip_address("127.0.0.1"),)),
    )
    httpd = _Server(("127.0.0.1", 0), _Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        pem = Path(tmp) / "server.pem"
        pem.write_bytes(pki.encode_certificate_pem(cert) + pki.encode_private_key_pem(key))
        ctx.load_cert_chain(pem)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd, pki.encode_certificate_pem(ca)
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def apis() -> Iterator[list[KubeApi]]:
    made: list[KubeApi] = []
    yield made
    for api in made:
        api.close()


def _api(httpd: _Server, ca: bytes, keep_alive: bool, made: list[KubeApi]) -> KubeApi:
    made.append(KubeApi(f"https://127.0.0.1:{httpd.server_address[1]}", ca, timeout=5, keep_alive=keep_alive))
    return made[-1]


def test_each_thread_sends_its_requests_over_one_connection(server: tuple[_Server, bytes], apis: list[KubeApi]) -> None:
    httpd, ca = server
    api = _api(httpd, ca, keep_alive=True, made=apis)
    assert [api.get("/api/v1/x")["n"] for _ in range(5)] == [1, 2, 3, 4, 5]
    assert httpd.connections == 1
    threads = [threading.Thread(target=lambda: [api.get("/api/v1/x") for _ in range(4)]) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert httpd.requests == 5 + 12
    assert httpd.connections == 1 + 3


def test_a_connection_the_server_closed_is_replaced_and_the_request_sent_again(
    server: tuple[_Server, bytes], apis: list[KubeApi]
) -> None:
    httpd, ca = server
    httpd.close_after = 2
    api = _api(httpd, ca, keep_alive=True, made=apis)
    assert [api.get("/api/v1/x")["n"] for _ in range(5)] == [1, 2, 3, 4, 5]  # none lost, none sent twice
    assert httpd.connections == 3


def test_without_keep_alive_every_request_has_its_own_connection(
    server: tuple[_Server, bytes], apis: list[KubeApi]
) -> None:
    httpd, ca = server
    api = _api(httpd, ca, keep_alive=False, made=apis)
    for _ in range(3):
        api.get("/api/v1/x")
    assert (httpd.requests, httpd.connections) == (3, 3)


def test_a_connection_dropped_without_a_tls_close_is_replaced_and_the_request_sent_again(
    server: tuple[_Server, bytes], apis: list[KubeApi]
) -> None:
    """The server resets the TCP connection (no close_notify): the next request on it fails with an SSL EOF or a
    reset, and is sent again on a new connection (the fleet's pod simulator lost 16 requests that way)."""
    httpd, ca = server
    httpd.reset_after = 1
    api = _api(httpd, ca, keep_alive=True, made=apis)
    assert [api.get("/api/v1/x")["n"] for _ in range(4)] == [1, 2, 3, 4]
    assert httpd.connections == 4


def test_a_connection_idle_longer_than_keep_idle_is_not_used_again(
    server: tuple[_Server, bytes], apis: list[KubeApi], monkeypatch: pytest.MonkeyPatch
) -> None:
    httpd, ca = server
    monkeypatch.setattr(kubeapi, "KEEP_IDLE", 0.05)
    api = _api(httpd, ca, keep_alive=True, made=apis)
    api.get("/api/v1/x")
    api.get("/api/v1/x")
    assert httpd.connections == 1
    time.sleep(0.1)
    api.get("/api/v1/x")
    assert httpd.connections == 2
