"""All outbound HTTP goes through here: one place for timeouts, the User-Agent and logging.

Provider clients use `shared_client()`; the media proxy builds its own client with
`build_client(transport=...)` so that it can pin connections to checked addresses, and
`postdeploy_check` one with `build_client(base_url=..., headers=...)` for the deployment it checks.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import httpx
from django.conf import settings

USER_AGENT = "Sense/1.0 (+https://github.com/sense)"

_lock = threading.Lock()
_shared: httpx.Client | None = None


def default_timeout() -> httpx.Timeout:
    return httpx.Timeout(settings.HTTP_TIMEOUT, connect=settings.HTTP_CONNECT_TIMEOUT)


def build_client(
    *,
    timeout: httpx.Timeout | None = None,
    transport: httpx.BaseTransport | None = None,
    follow_redirects: bool = False,
    max_connections: int = 50,
    headers: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Client:
    """A new httpx client with Sense's defaults. Redirects are off unless asked for; HEADERS
    are sent with every request, besides the User-Agent."""
    return httpx.Client(
        timeout=timeout or default_timeout(),
        transport=transport,
        follow_redirects=follow_redirects,
        headers={"User-Agent": USER_AGENT, **(headers or {})},
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        trust_env=False,  # never pick up proxies or .netrc credentials from the environment
        **kwargs,
    )


def shared_client() -> httpx.Client:
    """The process-wide client (thread-safe, keeps connections alive across calls)."""
    global _shared
    if _shared is None:
        with _lock:
            if _shared is None:
                _shared = build_client()
    return _shared


def reset_shared_client() -> None:
    """Drop the shared client (tests change timeouts; a forked worker must not reuse sockets)."""
    global _shared
    with _lock:
        if _shared is not None:
            _shared.close()
        _shared = None
