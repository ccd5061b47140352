"""The one TLS client context of the product: etcd's and the API server's clients both use it.

Trust is explicit: the CA passed in is the only trust anchor (no ``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE`` or
system store), the peer's certificate and host name are always checked, and the client key is handed to
OpenSSL through an anonymous in-memory file (``memfd_create``), so no key touches the disk.
"""

from __future__ import annotations

import os
import socket
import ssl


def client_context(ca_pem: bytes, cert_pem: bytes | None = None, key_pem: bytes | None = None) -> ssl.SSLContext:
    """A client context that trusts ``ca_pem`` only and presents ``cert_pem``/``key_pem`` when both are given.

    Raises :class:`ssl.SSLError` or :class:`ValueError` when the CA or the credentials are not usable.
    """
    # with cadata, create_default_context loads no system certificates: the CA given is the only anchor
    ctx = ssl.create_default_context(cadata=ca_pem.decode("ascii", errors="replace"))
    if cert_pem and key_pem:
        fd = os.memfd_create("kuberevive-client-credentials", os.MFD_CLOEXEC)
        try:
            os.write(fd, cert_pem.rstrip(b"\n") + b"\n" + key_pem)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
    return ctx


def verify_server(host: str, port: int, ca_pem: bytes, timeout: float = 10.0) -> None:
    """A TLS handshake with ``host:port`` that succeeds only when ``ca_pem`` verifies the server's certificate
    for ``host`` (an IP address is checked against the IP SANs). Raises :class:`ssl.SSLError` (not that CA, or
    not that host) or :class:`OSError` (unreachable); nothing is sent after the handshake."""
    ctx = client_context(ca_pem)
    with socket.create_connection((host, port), timeout=timeout) as sock, ctx.wrap_socket(sock, server_hostname=host):
        pass
