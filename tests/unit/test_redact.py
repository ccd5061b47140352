"""redact_url / redact_urls: no credential of a URL in any message (D-N5)."""

from __future__ import annotations

import pytest

from kuberevive.core.redact import redact_url, redact_urls


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://10.0.0.1:6443", "https://10.0.0.1:6443"),
        ("https://[fd00::1]:6443/", "https://[fd00::1]:6443/"),
        ("https://cp.example.com", "https://cp.example.com"),
        ("", ""),
        ("https://admin:S3cretPassw0rd@127.0.0.1:1", "https://***@127.0.0.1:1"),
        ("https://admin@127.0.0.1:1", "https://***@127.0.0.1:1"),
        ("https://a:b@c@host:6443/x", "https://***@host:6443/x"),
        ("https://admin:pa/ss@host:6443", "https://***@host:6443"),  # unescaped "/" in the password
        ("admin:pw@host:6443", "***@host:6443"),  # no scheme
        ("https://host:6443/?token=abc123", "https://host:6443/?token=***"),
        ("https://host:6443?access_token=abc&v=1&empty=", "https://host:6443?access_token=***&v=***&empty="),
        ("https://host:6443/?abc123", "https://host:6443/?***"),
        ("https://host:6443/#frag", "https://host:6443/#***"),
        ("https://u:p@host:6443/p?token=t#f", "https://***@host:6443/p?token=***#***"),
    ],
)
def test_redact_url(url: str, shown: str):
    assert redact_url(url) == shown
    assert redact_url(shown) == shown  # idempotent


def test_redact_urls_in_free_text():
    text = "cannot reach the API server at https://admin:S3cret@127.0.0.1:1/?token=T0k: [Errno 111] refused"
    out = redact_urls(text)
    assert out == "cannot reach the API server at https://***@127.0.0.1:1/?token=***: [Errno 111] refused"
    assert "S3cret" not in out and "T0k" not in out
    assert redact_urls("'https://u:p@h:1', (https://h:2).") == "'https://***@h:1', (https://h:2)."
    assert redact_urls("no url here: user@host") == "no url here: user@host"
