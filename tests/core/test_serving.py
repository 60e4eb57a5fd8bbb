"""Plain HTTP through sense.asgi: Django's sync handler on a fixed pool of threads (no thread
made per request), webhooks straight to their view (no middleware), WebSockets still on the
same app."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.test import Client

from campaigns import webhook_views
from campaigns.models import Connection, WebhookEvent
from sense import asgi, serving
from sense.lib.metrics import registry
from sense.serving import DirectHandler
from tests.tracking.conftest import make_connection
from tests.webhook_payloads import evolution_update

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


def test_webhooks_skip_django_s_handler_and_its_middleware() -> None:
    assert isinstance(asgi.http_app.handler_for("/api/webhooks/evolution/abc/"), DirectHandler)
    assert isinstance(asgi.http_app.handler_for("/api/webhooks/whatsapp/abc/"), DirectHandler)
    assert not isinstance(asgi.http_app.handler_for("/api/health/"), DirectHandler)
    assert not isinstance(asgi.http_app.handler_for("/api/webhooks-not/"), DirectHandler)


def _webhook_cases(token: str) -> list[tuple[str, str, str, bytes, dict[str, str]]]:
    """(name, method, path, body, headers) of the answers a webhook URL gives."""
    url = f"/api/webhooks/evolution/{token}/"
    update = json.dumps(evolution_update("3EB0DOOR", "READ")).encode()
    return [
        ("stored", "POST", url, update, {}),
        ("by event slug", "POST", url + "messages-update", update, {}),
        ("no trailing slash", "POST", url.rstrip("/"), update, {}),
        ("unknown token", "POST", "/api/webhooks/evolution/no-such-token/", update, {}),
        ("not json", "POST", url, b"not json", {}),
        ("another instance", "POST", url, json.dumps(evolution_update("3EB0X", "READ", instance="x")).encode(), {}),
        ("too large", "POST", url, b"{" + b" " * (settings.WEBHOOK_MAX_BODY_BYTES + 1) + b"}", {}),
        ("get", "GET", url, b"", {}),
        ("unknown route", "POST", "/api/webhooks/nowhere/", update, {}),
        ("disallowed host", "POST", url, update, {"host": "evil.example"}),
    ]


async def _through_asgi(method: str, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=asgi.application)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.request(method, path, content=body, headers={"content-type": "application/json", **headers})


def _answer(status: int, content: bytes, content_type: str) -> tuple[int, Any]:
    if content_type.startswith("application/json"):
        answer = json.loads(content)
        answer.pop("id", None)  # the stored event's id differs from one door to the other
        return status, answer
    return status, content_type.split(";")[0]


def test_webhooks_answer_the_same_through_the_direct_door_as_through_django(acme: Any) -> None:
    """Every answer of the webhook URLs (stored, refused, errors Django makes) is the same
    straight to the view as through Django's handler and middleware, and stores the same."""
    connection = make_connection(acme, Connection.Provider.EVOLUTION)
    for name, method, path, body, headers in _webhook_cases(connection.webhook_token):
        before = WebhookEvent.objects.count()
        host = headers.get("host", "127.0.0.1")
        django = Client().generic(method, path, body, content_type="application/json", HTTP_HOST=host)
        stored_by_django = WebhookEvent.objects.count() - before
        direct = asyncio.run(_through_asgi(method, path, body, headers))
        stored_directly = WebhookEvent.objects.count() - before - stored_by_django
        assert _answer(direct.status_code, direct.content, direct.headers["content-type"]) == _answer(
            django.status_code, django.content, django["Content-Type"]
        ), name
        assert stored_directly == stored_by_django, name
        assert "set-cookie" not in direct.headers, name
        assert direct.headers["content-length"] == str(len(direct.content)), name  # not chunked
    statuses = {name: asyncio.run(_through_asgi(m, p, b, h)).status_code for name, m, p, b, h in _webhook_cases("x")}
    assert statuses["unknown token"] == 404 and statuses["disallowed host"] == 400 and statuses["get"] == 405


def test_a_webhook_that_raises_is_a_logged_500_and_still_counted(
    acme: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    connection = make_connection(acme, Connection.Provider.EVOLUTION)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(webhook_views, "_receive", boom)
    labels = {"method": "POST", "route": "api/webhooks/evolution/<str:token>/", "status": "500"}
    counted = registry.get_sample_value("sense_http_requests_total", labels) or 0
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = asyncio.run(_through_asgi("POST", f"/api/webhooks/evolution/{connection.webhook_token}/", b"{}", {}))
    assert response.status_code == 500
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)
    assert registry.get_sample_value("sense_http_requests_total", labels) == counted + 1


def test_a_direct_webhook_hands_its_database_connection_back(acme: Any) -> None:
    """Answered in a pool thread without Django's handler, a webhook that queried (its
    connection lookup) and wrote (its event) leaves no connection checked out of the pool:
    request_finished still runs when the response closes."""
    from django.db import connection as db

    if db.vendor != "postgresql":
        pytest.skip("the connection pool is PostgreSQL's")
    connection = make_connection(acme, Connection.Provider.EVOLUTION)
    webhook_views._connections.clear()  # the lookup must query, in the pool thread

    def checked_out() -> int:
        stats = db.pool.get_stats()  # type: ignore[attr-defined]
        return stats["pool_size"] - stats["pool_available"]

    before, hits = checked_out(), serving._resolve.cache_info().hits
    for n in range(3):
        update = json.dumps(evolution_update(f"3EB0POOL{n}", "READ")).encode()
        response = asyncio.run(
            _through_asgi("POST", f"/api/webhooks/evolution/{connection.webhook_token}/", update, {})
        )
        assert response.status_code == 200
    assert WebhookEvent.objects.count() == 3
    assert checked_out() == before
    assert serving._resolve.cache_info().hits >= hits + 2  # the same URL is resolved once


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
