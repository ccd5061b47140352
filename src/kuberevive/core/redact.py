"""Keep credentials out of messages: URLs as they may be shown (pure; no I/O).

A kubeconfig's ``server`` may carry ``user:password@`` or a ``?token=...`` (Go's client accepts both); every
message, finding and report shows such a URL through :func:`redact_url`.
"""

from __future__ import annotations

import re

#: What replaces a credential.
MASK = "***"

#: A URL inside free text (an error message): scheme://, then everything up to white space or a quote, less
#: trailing punctuation (``at https://host:6443: refused``).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>.,;:)\]]")
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)?(?P<hier>[^?#]*)(?P<rest>.*)", re.S)


def redact_url(url: str) -> str:
    """``url`` without its credentials: user information becomes ``***@``, every query value and a fragment ``***``.

    ``https://admin:pw@10.0.0.1:6443/x?token=abc&v=1#frag`` -> ``https://***@10.0.0.1:6443/x?token=***&v=***#***``.
    Host, port and path are kept (they are what an operator needs to fix the address); everything before the
    last ``@`` goes, so a password with an unescaped ``/`` cannot show either. A URL without ``@``, query or
    fragment comes back unchanged, and redacting twice changes nothing.
    """
    m = _URL.fullmatch(url)
    if m is None:  # pragma: no cover - the pattern matches every string
        return MASK
    scheme, hier, rest = m.group("scheme") or "", m.group("hier"), m.group("rest")
    if "@" in hier:  # up to the last "@": a password with an unescaped "/" must not show either
        hier = f"{MASK}@{hier.rpartition('@')[2]}"
    query, hash_, fragment = rest.partition("#")
    if query.startswith("?"):
        query = "?" + "&".join(_redact_param(p) for p in query[1:].split("&"))
    return scheme + hier + query + (hash_ + MASK if fragment else hash_)


def redact_urls(text: str) -> str:
    """``text`` with every ``scheme://...`` in it passed through :func:`redact_url` (for error messages)."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def _redact_param(param: str) -> str:
    name, eq, value = param.partition("=")
    if not eq:
        return MASK if name else name  # a bare ?word may itself be the secret
    return f"{name}={MASK}" if value else f"{name}="
