"""The media proxy's refusals (SSRF): addresses, schemes, credentials, ports, odd IP forms."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpcore
import pytest
from django.test import Client

from media import proxy
from tests.media.test_proxy import PROXY
from tests.media.upstream import Upstream, upstream
from tests.security.conftest import error_code

FORBIDDEN, BAD_URL, BAD_PORT = (403, "forbidden_address"), (400, "bad_url"), (403, "forbidden_port")

PROXY_REFUSALS = [
    ("", BAD_URL),
    ("   ", BAD_URL),
    # Loopback, by name and by number
    ("http://127.0.0.1/a.png", FORBIDDEN),
    ("http://127.8.9.10/a.png", FORBIDDEN),
    ("http://localhost/a.png", FORBIDDEN),
    ("http://LOCALHOST/a.png", FORBIDDEN),
    ("http://[::1]/a.png", FORBIDDEN),
    # Private ranges, their edges included
    ("http://10.0.0.1/a.png", FORBIDDEN),
    ("http://10.255.255.254/a.png", FORBIDDEN),
    ("http://172.16.0.1/a.png", FORBIDDEN),
    ("http://172.31.255.254/a.png", FORBIDDEN),
    ("http://192.168.0.1/a.png", FORBIDDEN),
    ("http://192.168.255.254/a.png", FORBIDDEN),
    ("http://[fd00::1]/a.png", FORBIDDEN),
    # Cloud metadata services
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", FORBIDDEN),
    ("http://[fd00:ec2::254]/latest/meta-data/", FORBIDDEN),
    ("http://100.100.100.200/latest/meta-data/", FORBIDDEN),
    ("http://[fe80::1]/a.png", FORBIDDEN),
    # Unspecified, CGNAT, multicast, broadcast, benchmarking
    ("http://0.0.0.0/a.png", FORBIDDEN),
    ("http://0/a.png", FORBIDDEN),
    ("http://[::]/a.png", FORBIDDEN),
    ("http://100.64.0.1/a.png", FORBIDDEN),
    ("http://224.0.0.1/a.png", FORBIDDEN),
    ("http://255.255.255.255/a.png", FORBIDDEN),
    ("http://198.18.0.1/a.png", FORBIDDEN),
    # IPv4 inside IPv6: mapped, 6to4, NAT64
    ("http://[::ffff:127.0.0.1]/a.png", FORBIDDEN),
    ("http://[::ffff:7f00:1]/a.png", FORBIDDEN),
    ("http://[::ffff:169.254.169.254]/a.png", FORBIDDEN),
    ("http://[::ffff:10.0.0.1]/a.png", FORBIDDEN),
    ("http://[2002:7f00:1::]/a.png", FORBIDDEN),
    ("http://[64:ff9b::a9fe:a9fe]/a.png", FORBIDDEN),
    ("http://[64:ff9b::7f00:1]/a.png", FORBIDDEN),
    # Odd spellings of 127.0.0.1 that the resolver accepts
    ("http://2130706433/a.png", FORBIDDEN),
    ("http://0x7f000001/a.png", FORBIDDEN),
    ("http://017700000001/a.png", FORBIDDEN),
    ("http://127.1/a.png", FORBIDDEN),
    ("http://127\u30020\u30020\u30021/a.png", FORBIDDEN),  # ideographic full stops
    ("http://0177.0.0.1/a.png", BAD_URL),
    ("http://\u2460\u2461\u2466.0.0.1/a.png", BAD_URL),
    # Parser confusion: the host is what httpx connects to, and that is checked
    ("http://127.0.0.1#@example.com/a.png", FORBIDDEN),
    ("http://example.com\\@127.0.0.1/a.png", BAD_URL),
    ("http://127.0.0.1%2f@example.com/a.png", BAD_URL),
    # Credentials
    ("http://user:secret@example.com/a.png", BAD_URL),
    ("http://user@example.com/a.png", BAD_URL),
    ("http://:@example.com/a.png", BAD_URL),
    # Schemes other than http(s), and URLs that are not absolute
    ("file:///etc/passwd", BAD_URL),
    ("ftp://example.com/a.png", BAD_URL),
    ("gopher://127.0.0.1:70/_stats", BAD_URL),
    ("dict://127.0.0.1:11211/stats", BAD_URL),
    ("ldap://127.0.0.1/", BAD_URL),
    ("ws://example.com/a.png", BAD_URL),
    ("javascript:alert(1)", BAD_URL),
    ("data:image/png;base64,iVBORw0KGgo=", BAD_URL),
    ("jar:http://example.com/a.jar!/a.png", BAD_URL),
    ("//example.com/a.png", BAD_URL),
    ("/relative/a.png", BAD_URL),
    ("http:/127.0.0.1/a.png", BAD_URL),
    ("http:127.0.0.1/a.png", BAD_URL),
    # Ports other than 80 and 443 (checked before the address)
    ("http://example.com:8080/a.png", BAD_PORT),
    ("https://example.com:8443/a.png", BAD_PORT),
    ("http://example.com:22/a.png", BAD_PORT),
    ("http://127.0.0.1:6379/a.png", BAD_PORT),
    ("http://[::1]:5432/a.png", BAD_PORT),
    # Overly long
    ("http://example.com/" + "a" * 70_000, BAD_URL),
]

# Where a trusted upstream (127.0.0.1, a real local server) redirects to: checked again.
REDIRECT_REFUSALS = [
    ("file:///etc/passwd", BAD_URL),
    ("gopher://127.0.0.1:70/_stats", BAD_URL),
    ("http://user:secret@example.com/a.png", BAD_URL),
    ("http://example.com:8080/a.png", BAD_PORT),
    ("http://[::1]/a.png", FORBIDDEN),
    ("http://10.0.0.1/a.png", FORBIDDEN),
    ("http://169.254.169.254/latest/meta-data/", FORBIDDEN),
    ("http://[::ffff:169.254.169.254]/", FORBIDDEN),
    ("http://2130706433/a.png", FORBIDDEN),  # another spelling of the trusted host is not trusted
]


@pytest.fixture
def connections(monkeypatch: Any) -> Iterator[tuple[list[tuple[str, int]], set[tuple[str, int]]]]:
    """Records every TCP connection the proxy opens; only the addresses a test allows are
    really connected (so a refusal that failed would show here, without a packet sent)."""
    attempts: list[tuple[str, int]] = []
    allowed: set[tuple[str, int]] = set()
    original = httpcore.SyncBackend.connect_tcp

    def connect_tcp(self: Any, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        attempts.append((host, port))
        if (host, port) in allowed:
            return original(self, host, port, *args, **kwargs)
        raise httpcore.ConnectError(f"test: no connection to {host}:{port}")

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect_tcp)
    yield attempts, allowed
    proxy.reset_client()


def proxy_get(client: Client, url: str, token: str) -> Any:
    return client.get(PROXY + quote(url, safe=""), headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize(("url", "expected"), PROXY_REFUSALS, ids=lambda v: str(v)[:60])
def test_the_media_proxy_refuses(
    url: str, expected: tuple[int, str], alice_token: str, connections: Any, settings: Any
) -> None:
    settings.MEDIA_PROXY_TRUSTED_HOSTS = []
    attempts, _ = connections

    response = proxy_get(Client(), url, alice_token)

    assert (response.status_code, error_code(response)) == expected, response.content[:300]
    assert attempts == []  # refused before any connection
    assert proxy.proxy_cache().get(proxy.cache_key(url)) is None


@pytest.fixture
def trusted_upstream(settings: Any, connections: Any) -> Iterator[Upstream]:
    settings.MEDIA_PROXY_TRUSTED_HOSTS = ["127.0.0.1"]
    with upstream() as server:
        connections[1].add(("127.0.0.1", server.server_address[1]))
        yield server


@pytest.mark.parametrize(("target", "expected"), REDIRECT_REFUSALS, ids=str)
def test_the_media_proxy_refuses_a_redirect_to(
    target: str, expected: tuple[int, str], alice_token: str, trusted_upstream: Upstream, connections: Any
) -> None:
    url = f"{trusted_upstream.base}/redirect?to={quote(target, safe='')}"

    response = proxy_get(Client(), url, alice_token)

    assert (response.status_code, error_code(response)) == expected, response.content[:300]
    assert trusted_upstream.hits["/redirect"] == 1
    assert connections[0] == [("127.0.0.1", trusted_upstream.server_address[1])]  # only the upstream
