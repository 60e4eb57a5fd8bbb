"""Under ASGI the middleware chain runs on the event loop: a request is handed to a thread
once, for its view, not once per sync-only middleware."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import AsyncClient
from django.utils.module_loading import import_string


@pytest.mark.parametrize("path", settings.MIDDLEWARE)
def test_every_middleware_can_run_on_the_event_loop(path: str) -> None:
    middleware = import_string(path)
    assert getattr(middleware, "async_capable", False), f"{path} would put every request through a thread"


@pytest.mark.django_db(transaction=True)
def test_pages_and_webhooks_answer_through_the_async_chain(acme: Any) -> None:
    async_to_sync(_requests)()


async def _requests() -> None:
    client = AsyncClient()
    assert (await client.get("/api/health/")).json()["status"] == "ok"
    login = await client.get("/login/", headers={"accept-language": "en"})
    assert login.status_code == 200 and b"csrfmiddlewaretoken" in login.content
    assert (
        await client.post("/api/webhooks/evolution/no-such-token/", {}, content_type="application/json")
    ).status_code == 404
