"""io/tls.client_context against a real TLS server on loopback (Python's ssl, OpenSSL underneath).

The server requires a client certificate from its CA, as etcd and kube-apiserver do. The trust traps of the
environment (``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE`` pointing at another CA) must change nothing.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kuberevive.core.pki import (
    AltNames,
    KeyUsage,
    encode_certificate_pem,
    encode_private_key_pem,
    issue_certificate,
    new_self_signed_ca,
)
from kuberevive.io.tls import client_context, verify_server

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


class Ca:
    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = new_self_signed_ca(name, self.key, NOW - timedelta(minutes=1), NOW + timedelta(days=1))
        self.pem = encode_certificate_pem(self.cert)

    def leaf(self, cn: str, usage: str, alt: AltNames | None = None) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue_certificate(
            common_name=cn,
            organization=(),
            usages=(usage,),
            public_key=key.public_key(),
            ca_cert=self.cert,
            ca_key=self.key,
            not_before=NOW - timedelta(minutes=1),
            not_after=NOW + timedelta(days=1),
            alt_names=alt,
        )
        return encode_certificate_pem(cert), encode_private_key_pem(key)


@pytest.fixture(scope="module")
def cas() -> tuple[Ca, Ca]:
    return Ca("cluster-ca"), Ca("other-ca")


def _serve(tmp: Path, server_ca: Ca, client_ca: Ca | None) -> Iterator[int]:
    """A TLS server on 127.0.0.1 with a certificate of ``server_ca``; it requires a client certificate of
    ``client_ca`` (None: none, as kube-apiserver lets anonymous clients greet it)."""
    cert, key = server_ca.leaf("server", KeyUsage.SERVER_AUTH, AltNames(("localhost",), (ip_address("127.0.0.1"),)))
    (tmp / "server.pem").write_bytes(cert + key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "server.pem")
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_ca.pem.decode())
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def loop() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    peer = tls.getpeercert() or {}
                    tls.sendall(b"hello " + str(peer.get("subject")).encode())
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join()
    listener.close()


@pytest.fixture
def server(tmp_path: Path, cas: tuple[Ca, Ca]) -> Iterator[int]:
    cluster, _ = cas
    yield from _serve(tmp_path, cluster, cluster)


def _talk(ctx: ssl.SSLContext, port: int, host: str = "127.0.0.1") -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return tls.recv(1024)


@pytest.fixture
def env_trusts_other_ca(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cas: tuple[Ca, Ca]) -> None:
    _, other = cas
    bundle = tmp_path / "other-bundle.pem"
    bundle.write_bytes(other.pem)
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(name, str(bundle))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))


def test_the_cluster_ca_and_a_client_certificate_reach_the_server(server, cas, env_trusts_other_ca):
    cluster, _ = cas
    cert, key = cluster.leaf("kube-apiserver-etcd-client", KeyUsage.CLIENT_AUTH)
    assert _talk(client_context(cluster.pem, cert, key), server).startswith(b"hello ((('commonName', 'kube-apiserver")


def test_a_server_of_another_ca_is_refused_whatever_the_environment_trusts(tmp_path, cas, env_trusts_other_ca):
    cluster, other = cas
    cert, key = cluster.leaf("client", KeyUsage.CLIENT_AUTH)
    for port in _serve(tmp_path, other, cluster):
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            _talk(client_context(cluster.pem, cert, key), port)


def test_the_host_name_is_checked(server, cas):
    cluster, _ = cas
    cert, key = cluster.leaf("client", KeyUsage.CLIENT_AUTH)
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _talk(client_context(cluster.pem, cert, key), server, host="etcd.example")


def test_without_a_client_certificate_the_server_refuses(server, cas):
    cluster, _ = cas
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        # TLS 1.3: the refusal of a missing client certificate arrives with the first read
        assert _talk(client_context(cluster.pem), server) == b""


def test_unusable_credentials_are_an_ssl_or_value_error(cas):
    cluster, other = cas
    cert, _ = cluster.leaf("client", KeyUsage.CLIENT_AUTH)
    _, wrong_key = other.leaf("client", KeyUsage.CLIENT_AUTH)
    with pytest.raises(ssl.SSLError):
        client_context(cluster.pem, cert, wrong_key)
    with pytest.raises((ssl.SSLError, ValueError)):
        client_context(b"not a certificate")


def test_verify_server_accepts_the_ca_the_server_serves_with_and_refuses_another(tmp_path, cas, env_trusts_other_ca):
    """The salvage step's check that a peer's API server serves with the peer's ca.crt (issue 12)."""
    cluster, other = cas
    for port in _serve(tmp_path, cluster, None):
        verify_server("127.0.0.1", port, cluster.pem)
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            verify_server("127.0.0.1", port, other.pem)
