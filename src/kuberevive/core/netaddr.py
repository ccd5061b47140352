"""Address and name rules kubeadm applies to SANs and endpoints (Go ``net``/``k8s.io/utils/net`` semantics).

Shared by :mod:`kuberevive.core.pki`, :mod:`kuberevive.core.kubeconfig`, :mod:`kuberevive.core.manifests` and every
module that splits an endpoint or a URL into host and port: :func:`split_endpoint` and :func:`split_url` are the one
splitter (an IPv6 host in brackets, ``[fd00::10]:6443``, comes back without them); :func:`join_host_port` the inverse.
"""

from __future__ import annotations

import ipaddress
import re

from kuberevive.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
_DNS1123_SUBDOMAIN_MAX = 253


def parse_ip_sloppy(text: str) -> IPAddress | None:
    """Parse like Go ``netutils.ParseIPSloppy``: IPv4 parts may carry leading zeros (read as decimal).

    An IPv4-mapped IPv6 address comes back as IPv4, as Go's ``To4()``/``String()`` treat it.
    Returns None when ``text`` is not an address (zones such as ``%eth0`` are not addresses).
    """
    if not text or "%" in text:
        return None
    if ":" not in text:
        parts = text.split(".")
        if len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts):
            return None
        values = [int(p) for p in parts]
        if any(v > 255 for v in values):
            return None
        return ipaddress.IPv4Address(".".join(str(v) for v in values))
    try:
        v6 = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    return v6.ipv4_mapped or v6


def advertise_ip(advertise_address: str) -> IPAddress:
    """``localAPIEndpoint.advertiseAddress`` as an IP (kubeadm parses it sloppily, as Go's ``net.ParseIP``)."""
    ip = parse_ip_sloppy(advertise_address)
    if ip is None:
        raise ConfigError(
            f"localAPIEndpoint.advertiseAddress {advertise_address!r} is not an IP address",
            "Set localAPIEndpoint.advertiseAddress to this node's IP address.",
        )
    return ip


def is_dns1123_subdomain(text: str) -> bool:
    """``validation.IsDNS1123Subdomain``: lower-case RFC 1123 labels joined by dots, at most 253 chars."""
    return len(text) <= _DNS1123_SUBDOMAIN_MAX and _DNS1123_SUBDOMAIN.fullmatch(text) is not None


def is_wildcard_dns1123_subdomain(text: str) -> bool:
    """``validation.IsWildcardDNS1123Subdomain``: ``*.`` followed by a DNS-1123 subdomain."""
    return (
        len(text) <= _DNS1123_SUBDOMAIN_MAX
        and text.startswith("*.")
        and _DNS1123_SUBDOMAIN.fullmatch(text[2:]) is not None
    )


def split_host_port(hostport: str) -> tuple[str, str]:
    """kubeadm ``ParseHostPort``: ``host[:port]`` (IPv6 in brackets when a port is given).

    The host must be an IP address or a DNS-1123 subdomain; the port, if any, 1..65535.
    Raises ConfigError otherwise.
    """
    host, port = hostport, ""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end != -1 and hostport[end + 1 : end + 2] == ":" and ":" not in hostport[end + 2 :]:
            host, port = hostport[1:end], hostport[end + 2 :]
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ConfigError(
            f"controlPlaneEndpoint {hostport!r}: port {port!r} is not a number between 1 and 65535",
            "Fix controlPlaneEndpoint in the kubeadm configuration.",
        )
    if parse_ip_sloppy(host) is not None or is_dns1123_subdomain(host):
        return host, port
    raise ConfigError(
        f"controlPlaneEndpoint {hostport!r}: host {host!r} is neither an IP address nor a lower-case DNS name",
        "Fix controlPlaneEndpoint in the kubeadm configuration.",
    )


def split_endpoint(hostport: str) -> tuple[str, str] | None:
    """``host:port``, ``[ipv6]:port``, ``[ipv6]`` or ``host`` -> (host without brackets, port or ""), as Go's
    ``url.URL.Hostname()``/``Port()`` split a URL's host (the port after the last colon; an IPv6 address with a port in
    brackets, as ``net.JoinHostPort`` writes it); None when malformed (an unclosed bracket, something else after it, a
    port that is not digits)."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            return None
        host, tail = hostport[1:end], hostport[end + 1 :]
        if tail and not re.fullmatch(r":\d*", tail):
            return None
        return host, tail[1:]
    host, sep, port = hostport.rpartition(":")
    if not sep:
        return hostport, ""
    if not re.fullmatch(r"\d*", port):
        return None
    return host, port


def endpoint_port(hostport: str) -> int | None:
    """The port of an endpoint (:func:`split_endpoint`), None when it has none or is malformed."""
    split = split_endpoint(hostport)
    return int(split[1]) if split is not None and split[1] else None


_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):(.*)$", re.DOTALL)


def split_url(text: str) -> tuple[str, str, str] | None:
    """The (scheme, hostname, port) Go's ``url.Parse`` + ``Hostname()``/``Port()`` give (the host of
    ``https://[fd00::10]:2380`` is ``fd00::10``); None on error."""
    m = _URL_RE.match(text)
    if not m:
        # No scheme: Go parses a relative reference; a colon in its first segment is an error.
        first = text.split("/", 1)[0]
        return None if ":" in first else ("", "", "")
    scheme = m.group(1).lower()
    rest = m.group(2)
    if not rest.startswith("//"):
        return (scheme, "", "")
    authority = re.split(r"[/?#]", rest[2:], maxsplit=1)[0]
    split = split_endpoint(authority.rpartition("@")[2])
    return None if split is None else (scheme, *split)


def url_host(url: str) -> str:
    """The host of a URL (:func:`split_url`), "" when it has none or is malformed."""
    split = split_url(url)
    return split[1] if split is not None else ""


def join_host_port(host: str, port: int | str) -> str:
    """Go ``net.JoinHostPort``: brackets around a host that contains a colon (IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
