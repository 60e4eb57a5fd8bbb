"""Live updates: one WebSocket group per tenant.

Browsers connect with their session, API clients with an API token (`?token=<api token>`
or an `Authorization: Bearer <api token>` header). Anyone else is closed with 4401 (not
authenticated) or 4403 (not a member of that tenant). Only a socket authenticated by its
session cookie must come from one of ALLOWED_HOSTS (its Origin header): a browser sends the
cookie whichever site opened the socket (cross-site WebSocket hijacking), while a token is
never sent on its own, so token clients (scripts, servers, no Origin at all) skip the check.
Senders call `broadcast(tenant_id, message)`, usually from `transaction.on_commit`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any
from urllib.parse import parse_qs, urlparse

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.security.websocket import AllowedHostsOriginValidator

from sense import throttle
from sense.models import ApiToken, Membership

log = logging.getLogger("sense.realtime")

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


def group_name(tenant_id: Any) -> str:
    return f"tenant.{tenant_id}"


_publisher_lock = threading.Lock()
_publisher: tuple[int, asyncio.AbstractEventLoop, threading.Thread] | None = None


def _publisher_loop() -> asyncio.AbstractEventLoop:
    """This process's event loop for publishing (a thread of its own, started on first use):
    one loop, so one channel-layer connection, for every frame the process sends, instead of
    a loop and a Redis connection made per frame."""
    global _publisher
    with _publisher_lock:
        if _publisher is None or _publisher[0] != os.getpid() or not _publisher[2].is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="sense-live-publisher", daemon=True)
            thread.start()
            _publisher = (os.getpid(), loop, thread)
        return _publisher[1]


def broadcast(tenant_id: Any, message: dict[str, Any]) -> None:
    """Send MESSAGE (a JSON-able dict with a "type" like "campaign.stats") to every socket
    of the tenant. Never raises: a live update is best-effort, the page can refresh."""
    layer = get_channel_layer()
    if layer is None:
        return
    event = {"type": "tenant.event", "payload": message}
    try:
        asyncio.run_coroutine_threadsafe(layer.group_send(group_name(tenant_id), event), _publisher_loop()).result(
            timeout=2
        )
    except Exception as exc:
        log.warning("live update for tenant %s not sent: %s", tenant_id, exc.__class__.__name__)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin1")
    return None


def socket_token(scope: dict[str, Any]) -> str | None:
    """The API token the socket presents (an `Authorization: Bearer` header, else `?token=`),
    or None when it presents none."""
    scheme, _, value = (_header(scope, b"authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    query = parse_qs(scope.get("query_string", b"").decode())
    return (query.get("token") or [""])[0] or None


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether the socket's Origin is one of ALLOWED_HOSTS, by channels'
    AllowedHostsOriginValidator rule (False without an Origin header)."""
    origin = _header(scope, b"origin")
    validator = AllowedHostsOriginValidator(None)
    return bool(validator.valid_origin(urlparse(origin) if origin else None))


@database_sync_to_async
def _resolve(scope: dict[str, Any], tenant_id: str) -> tuple[int | None, bool, bool]:
    """(user id, is member of tenant_id, authenticated by the session cookie) for the
    socket's API token or, when it presents none, its session. A token that fails is not
    followed by the session: the socket is then unauthenticated."""
    raw = socket_token(scope)
    if raw is not None:
        token = ApiToken.authenticate(raw)
        if token is None:
            client = scope.get("client") or [None]
            throttle.token_failed(client[0])  # counts toward the address's HTTP 429 (sense.throttle)
            return None, False, False
        return token.membership.user_id, str(token.membership.tenant_id) == tenant_id, False
    user = scope.get("user")
    if user is None or not user.is_authenticated:
        return None, False, False
    return user.pk, Membership.objects.filter(user_id=user.pk, tenant_id=tenant_id).exists(), True


class TenantConsumer(AsyncJsonWebsocketConsumer):
    """Forwards the tenant group's events to one socket as they come.

    Every web process receives every event of the group (channels-redis in full-stack
    mode), so a change made in a worker reaches a browser connected anywhere. Frames are
    coalesced once, where they are made (campaigns.live: at most 4 a second per campaign,
    the latest state last); waiting again here would only add latency.
    """

    async def connect(self) -> None:
        tenant_id = str(self.scope["url_route"]["kwargs"]["tenant_id"])
        user_id, member, by_session = await _resolve(self.scope, tenant_id)
        if by_session and not origin_allowed(self.scope):
            await self.close()  # before accepting: the handshake is refused (HTTP 403)
            return
        if user_id is None or not member:
            await self.accept()  # a close code (4401/4403) needs an accepted socket
            await self.close(code=CLOSE_UNAUTHENTICATED if user_id is None else CLOSE_FORBIDDEN)
            return
        # Subscribe before accepting: the page counts as live once the socket opens, and an
        # event sent between the two would otherwise be lost.
        self.group = group_name(tenant_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        group = getattr(self, "group", None)
        if group:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        # The socket is server-to-client; a ping from the page gets a pong.
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def tenant_event(self, event: dict[str, Any]) -> None:
        await self.send_json(event["payload"])
