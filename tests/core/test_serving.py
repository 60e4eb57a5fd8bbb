"""Plain HTTP through sense.asgi: Django's sync handler on a fixed pool of threads (no thread
made per request), webhooks on a short middleware stack, WebSockets still on the same app."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest
from django.conf import settings

from sense import asgi
from sense.serving import LEAN_MIDDLEWARE

pytestmark = pytest.mark.django_db(transaction=True)


async def _get(*requests: tuple[str, str]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=asgi.application)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return [await client.request(method, url, headers={"accept-language": "en"}) for method, url in requests]


def test_pages_api_and_webhooks_answer_through_the_thread_pool(acme: Any) -> None:
    health, login, webhook = asyncio.run(
        _get(("GET", "/api/health/"), ("GET", "/login/"), ("POST", "/api/webhooks/evolution/no-such-token/"))
    )
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert login.status_code == 200 and b"csrfmiddlewaretoken" in login.content and "csrftoken" in login.cookies
    assert webhook.status_code == 404 and webhook.json()["code"] == "not_found"


def test_requests_reuse_a_fixed_set_of_threads(acme: Any) -> None:
    seen: set[str] = set()
    app = asgi.http_app
    original = app.handler.respond

    def respond(environ: dict[str, Any]) -> Any:
        seen.add(threading.current_thread().name)
        return original(environ)

    app.handler.respond = respond  # type: ignore[method-assign]
    try:
        asyncio.run(_get(*[("GET", "/api/health/")] * 50))
    finally:
        del app.handler.respond
    assert seen and all(name.startswith("sense-http") for name in seen)
    assert len(seen) <= settings.WEB_THREADS


def test_webhooks_skip_the_page_middleware() -> None:
    lean = asgi.http_app.handler_for("/api/webhooks/evolution/abc/")
    full = asgi.http_app.handler_for("/api/health/")
    assert lean is not full
    names = [m for m in settings.MIDDLEWARE if m in LEAN_MIDDLEWARE]
    assert lean._middleware == names
    assert not any("session" in m.lower() or "csrf" in m.lower() or "auth" in m.lower() for m in names)
    assert full._middleware is None  # settings.MIDDLEWARE, unchanged


def test_a_webhook_answer_sets_no_cookie_and_varies_on_nothing(acme: Any) -> None:
    (webhook,) = asyncio.run(_get(("POST", "/api/webhooks/evolution/no-such-token/")))
    assert "set-cookie" not in webhook.headers
    assert "cookie" not in webhook.headers.get("vary", "").lower()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_streaming_responses_go_out_chunk_by_chunk_and_are_closed(kind: str) -> None:
    from collections.abc import AsyncIterator, Iterator

    from django.http import StreamingHttpResponse

    def rows() -> Iterator[bytes]:
        yield from (b"a,", b"b,", b"c")

    async def arows() -> AsyncIterator[bytes]:
        for chunk in rows():
            yield chunk

    response = StreamingHttpResponse(rows() if kind == "sync" else arows())
    closed: list[bool] = []
    response._resource_closers.append(lambda: closed.append(True))  # type: ignore[attr-defined]
    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    async def stream() -> None:
        await asgi.http_app._stream(response, send, asyncio.get_running_loop())

    asyncio.run(stream())
    assert b"".join(m.get("body", b"") for m in messages) == b"a,b,c"
    assert messages[-1] == {"type": "http.response.body"} and closed == [True]
