"""The media proxy: fetch a remote image, video or audio file safely and cache it in Redis.

Safety follows go-camo and imgproxy:
- http(s) on ports 80/443 only, no user info in the URL;
- the host name is resolved by our own network backend at connect time; every address is
  checked and the socket connects to the checked address itself (no second lookup, so no
  DNS rebinding between check and use). TLS still verifies the certificate for the host
  name (SNI) because httpcore passes the name separately;
- loopback, private, link-local, CGNAT, multicast, reserved, unspecified and IPv4-mapped
  addresses are refused unless the host is in MEDIA_PROXY_TRUSTED_HOSTS;
- redirects are followed by hand (at most MEDIA_PROXY_MAX_REDIRECTS), each checked again;
- timeouts (connect, and a total deadline while streaming), a byte cap while streaming,
  and a content-type allow list (no SVG: it can carry script).

Caching: one Redis entry per URL (the body, its type and status); concurrent misses for the
same URL wait for one fetch (a Redis lock); upstream 404s are cached briefly. Without Redis
the proxy serves uncached.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
from django.conf import settings
from django.core.cache import BaseCache, caches
from django.core.signals import setting_changed

from sense.errors import ServiceError
from sense.lib.http import build_client

log = logging.getLogger("sense.media.proxy")

ALLOWED_TYPES = ("image/", "video/", "audio/")
REFUSED_TYPES = ("image/svg+xml",)
DEFAULT_PORTS = {"http": 80, "https": 443}
CACHE_PREFIX = "mproxy:v1:"
_MAX_AGE = re.compile(r"(?:^|,)\s*(s-maxage|max-age)\s*=\s*\"?(\d+)", re.IGNORECASE)


class ProxyError(ServiceError):
    """A URL we do not proxy, or an upstream that failed; `status` is the HTTP answer."""


class Blocked(Exception):
    """Raised by the network backend: the destination's address is not allowed."""


@dataclass(frozen=True)
class Fetched:
    status: int  # 200, or 404 (negative cache)
    content_type: str
    body: bytes
    ttl: int


# --- Destination checks ---------------------------------------------------------------


def _trusted_entries() -> list[tuple[str, int | None]]:
    entries = []
    for raw in settings.MEDIA_PROXY_TRUSTED_HOSTS:
        value = raw.strip().lower()
        host, port = value, None
        match = re.fullmatch(r"\[?([^\]]+?)\]?:(\d+)", value) if value.count(":") == 1 or "]:" in value else None
        if match:
            host, port = match.group(1), int(match.group(2))
        entries.append((host.strip("[]"), port))
    return entries


def is_trusted(host: str, port: int) -> bool:
    """True when HOST (or HOST:PORT) is listed in MEDIA_PROXY_TRUSTED_HOSTS. A host entry
    trusts every port of that host."""
    host = host.lower().strip("[]")
    return any(h == host and (p is None or p == port) for h, p in _trusted_entries())


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped is not None or ip.sixtofour is not None):
        return False
    return ip.is_global and not (
        ip.is_multicast or ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_unspecified
    )


def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}") from exc
    seen: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in seen:
            seen.append(ip)
    return seen


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend that resolves the host itself, refuses it if any of its
    addresses is not public (unless trusted), and connects to the checked IP."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = resolve(host, port)
        if not is_trusted(host, port):
            refused = [str(ip) for ip in addresses if not is_public(ip)]
            if refused or not addresses:
                raise Blocked(f"{host} resolves to a non-public address ({', '.join(refused)})")
        last: Exception | None = None
        for ip in addresses:
            try:
                return super().connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last


def check_url(raw: str) -> httpx.URL:
    """Parse and check the scheme, user info and port of RAW (addresses are checked at
    connect time). Raises ProxyError 400/403."""
    try:
        url = httpx.URL(raw)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise ProxyError("The url is not a valid URL.", code="bad_url", status=400) from None
    if url.scheme not in DEFAULT_PORTS or not url.host:
        raise ProxyError("Only absolute http and https URLs can be proxied.", code="bad_url", status=400)
    if url.userinfo:
        raise ProxyError("URLs with user names or passwords are not proxied.", code="bad_url", status=400)
    port = url.port or DEFAULT_PORTS[url.scheme]
    if port not in (80, 443) and not is_trusted(url.host, port):
        raise ProxyError("Only ports 80 and 443 can be proxied.", code="forbidden_port", status=403)
    return url


# --- Fetching -------------------------------------------------------------------------

_client_lock = threading.Lock()
_client: httpx.Client | None = None


def client() -> httpx.Client:
    """The proxy's own client: the guarded backend, no redirects, no cookies, no env proxies."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                transport = httpx.HTTPTransport(retries=0)
                # httpx has no public hook for the network backend: swap the pool for one
                # built with ours (same SSL context and limits).
                pool: httpcore.ConnectionPool = transport._pool
                transport._pool = httpcore.ConnectionPool(
                    ssl_context=pool._ssl_context,
                    max_connections=50,
                    max_keepalive_connections=20,
                    keepalive_expiry=30.0,
                    network_backend=GuardedBackend(),
                )
                _client = build_client(transport=transport, follow_redirects=False)
    return _client


_cache: BaseCache | None = None


def proxy_cache() -> BaseCache:
    """One cache backend for the whole process. Under ASGI every request runs in a new
    context, where `django.core.cache.cache` is a new backend with a new Redis connection
    pool: on the HIT path that connection set-up cost more than the lookup itself. A redis-py
    pool is thread-safe, so one shared backend is fine."""
    global _cache
    if _cache is None:
        with _client_lock:
            if _cache is None:
                _cache = caches.create_connection("default")
    return _cache


def reset_client(**kwargs: Any) -> None:
    """Drop the client, the cache backend and their pooled connections (settings changed)."""
    global _client, _cache
    with _client_lock:
        if _client is not None:
            _client.close()
        _client = None
        _cache = None


setting_changed.connect(reset_client, dispatch_uid="media-proxy-reset")


def ttl_from(cache_control: str | None) -> int:
    ttl = settings.MEDIA_PROXY_CACHE_TTL
    if not cache_control:
        return ttl
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return 0
    ages = dict((name.lower(), int(value)) for name, value in _MAX_AGE.findall(lowered))
    age = ages.get("s-maxage", ages.get("max-age"))
    return min(ttl, age) if age is not None else ttl


def _content_type(response: httpx.Response) -> str:
    value = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if value in REFUSED_TYPES or not value.startswith(ALLOWED_TYPES):
        raise ProxyError(f"Remote content of type {value or 'unknown'} is not proxied.", code="bad_type", status=415)
    return value


def fetch(
    raw_url: str, *, headers: dict[str, str] | None = None, max_bytes: int | None = None, any_type: bool = False
) -> Fetched:
    """GET RAW_URL under every rule above. Returns a 200 or 404 result or raises ProxyError.
    HEADERS are sent to RAW_URL's host only (a redirect elsewhere drops them: they may carry
    a token); MAX_BYTES replaces MEDIA_PROXY_MAX_BYTES; ANY_TYPE skips the content-type
    allow list, for callers that sniff the content themselves (inbound attachments)."""
    url = check_url(raw_url)
    origin = (url.scheme, url.host, url.port)
    limit = settings.MEDIA_PROXY_MAX_BYTES if max_bytes is None else max_bytes
    deadline = time.monotonic() + settings.MEDIA_PROXY_TIMEOUT
    timeout = httpx.Timeout(settings.MEDIA_PROXY_TIMEOUT, connect=settings.MEDIA_PROXY_CONNECT_TIMEOUT)
    accept = {"Accept": "*/*" if any_type else "image/*, video/*, audio/*"}
    try:
        for hop in range(settings.MEDIA_PROXY_MAX_REDIRECTS + 1):
            sent = {**(headers or {}), **accept} if (url.scheme, url.host, url.port) == origin else accept
            with client().stream("GET", url, headers=sent, timeout=timeout) as response:
                if response.is_redirect:
                    if hop == settings.MEDIA_PROXY_MAX_REDIRECTS:
                        raise ProxyError(
                            "The remote server redirected too many times.", code="too_many_redirects", status=502
                        )
                    url = check_url(str(url.join(response.headers["location"])))
                    continue
                if response.status_code == 404:
                    return Fetched(404, "", b"", settings.MEDIA_PROXY_NEGATIVE_TTL)
                if response.status_code != 200:
                    raise ProxyError(
                        f"The remote server answered {response.status_code}.", code="upstream_error", status=502
                    )
                content_type = (
                    response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
                    if any_type
                    else _content_type(response)
                )
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise ProxyError(f"The remote file is larger than {limit} bytes.", code="too_large", status=413)
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise ProxyError(f"The remote file is larger than {limit} bytes.", code="too_large", status=413)
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("total deadline passed")
                return Fetched(200, content_type, bytes(body), ttl_from(response.headers.get("cache-control")))
        raise ProxyError("The remote server redirected too many times.", code="too_many_redirects", status=502)
    except Blocked as exc:
        log.warning("[MEDIA PROXY] refused %s: %s", url.host, exc)
        raise ProxyError("That address cannot be proxied.", code="forbidden_address", status=403) from None
    except httpx.TimeoutException:
        raise ProxyError("The remote server took too long.", code="upstream_timeout", status=504) from None
    except (httpx.HTTPError, httpx.StreamError, KeyError) as exc:
        log.info("[MEDIA PROXY] upstream error for %s: %s", url.host, exc.__class__.__name__)
        raise ProxyError("The remote server could not be reached.", code="upstream_error", status=502) from None


# --- Caching --------------------------------------------------------------------------


def cache_key(url: str) -> str:
    return CACHE_PREFIX + hashlib.sha256(url.encode()).hexdigest()


def _degraded(exc: BaseException) -> None:
    log.warning("[MEDIA PROXY] cache unavailable (%s): serving uncached", exc.__class__.__name__)


def _store(key: str, fetched: Fetched) -> None:
    if fetched.ttl <= 0:
        return
    value = {"status": fetched.status, "content_type": fetched.content_type, "body": fetched.body, "ttl": fetched.ttl}
    try:
        proxy_cache().set(key, value, fetched.ttl)
    except Exception as exc:
        _degraded(exc)


def _cached(value: Any) -> Fetched | None:
    if isinstance(value, dict) and "status" in value:
        return Fetched(value["status"], value["content_type"], value["body"], value["ttl"])
    return None


def serve(url: str) -> tuple[Fetched, bool]:
    """The proxied result for URL and whether it came from the cache (HIT)."""
    check_url(url)  # refuse bad URLs before touching the cache
    key = cache_key(url)
    try:
        hit = _cached(proxy_cache().get(key))
    except Exception as exc:
        _degraded(exc)
        return fetch(url), False
    if hit is not None:
        return hit, True

    lock_key, token = key + ":lock", secrets.token_hex(8)
    lock_ttl = int(settings.MEDIA_PROXY_TIMEOUT) + 5
    try:
        owner = proxy_cache().add(lock_key, token, lock_ttl)
    except Exception as exc:
        _degraded(exc)
        return fetch(url), False
    if not owner:
        # Another request is fetching this URL: wait for its result rather than hitting
        # the upstream again. If it gives up without caching (an error), fetch ourselves.
        give_up = time.monotonic() + settings.MEDIA_PROXY_TIMEOUT + 1
        with contextlib.suppress(Exception):
            while time.monotonic() < give_up:
                time.sleep(0.02)
                hit = _cached(proxy_cache().get(key))
                if hit is not None:
                    return hit, True
                if proxy_cache().get(lock_key) is None:
                    # The owner may have stored its result between our two reads.
                    hit = _cached(proxy_cache().get(key))
                    if hit is not None:
                        return hit, True
                    break
        fetched = fetch(url)
        _store(key, fetched)
        return fetched, False
    try:
        fetched = fetch(url)
        _store(key, fetched)
        return fetched, False
    finally:
        # Only delete our own lock; a lock that outlived its TTL may belong to someone else.
        with contextlib.suppress(Exception):
            if proxy_cache().get(lock_key) == token:
                proxy_cache().delete(lock_key)
