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
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.security.websocket import AllowedHostsOriginValidator

from sense import throttle
from sense.models import ApiToken, Membership

log = logging.getLogger("sense.realtime")

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
# At most 4 frames a second per object: 0.3 s apart leaves room for network jitter to bunch
# frames at the browser. The latest state is always sent, at most this long after the change
# that produced it.
COALESCE_SECONDS = 0.3

# Frame type -> the payload field naming the object it is about (see coalesce_by).
_coalesced: dict[str, str] = {}


def coalesce_by(kind: str, field: str) -> None:
    """Frames of type KIND about the same `payload[FIELD]` replace each other while they wait
    (they carry the full state: the latest wins). Apps call it from AppConfig.ready()."""
    _coalesced[kind] = field


def coalesce_key(payload: dict[str, Any]) -> tuple[str, str] | None:
    """The key under which frames replace each other, or None for frames always sent."""
    kind = payload.get("type")
    if not isinstance(kind, str) or kind not in _coalesced:
        return None
    return (kind, str(payload.get(_coalesced[kind])))


def group_name(tenant_id: Any) -> str:
    return f"tenant.{tenant_id}"


def broadcast(tenant_id: Any, message: dict[str, Any]) -> None:
    """Send MESSAGE (a JSON-able dict with a "type" like "campaign.stats") to every socket
    of the tenant. Never raises: a live update is best-effort, the page can refresh."""
    layer = get_channel_layer()
    if layer is None:
        return
    event = {"type": "tenant.event", "payload": message}

    def send() -> None:
        try:
            async_to_sync(layer.group_send)(group_name(tenant_id), event)
        except Exception as exc:
            log.warning("live update for tenant %s not sent: %s", tenant_id, exc.__class__.__name__)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        send()  # the usual case: a sync view, actor or command
        return
    # Called from a thread that runs an event loop: async_to_sync cannot block it.
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    thread.join(timeout=2)


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
    """Forwards the tenant group's events to one socket, coalescing bursts per object.

    Every web process receives every event of the group (channels-redis in full-stack
    mode), so a change made in a worker reaches a browser connected anywhere. Coalescing
    happens here, per socket: the first frame of a burst goes out at once, later ones wait
    until COALESCE_SECONDS after the previous frame and only the latest is sent.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_sent: dict[tuple[str, str], float] = {}
        self._waiting: dict[tuple[str, str], dict[str, Any]] = {}
        self._timers: dict[tuple[str, str], asyncio.Task[None]] = {}

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
        for task in self._timers.values():
            task.cancel()
        group = getattr(self, "group", None)
        if group:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        # The socket is server-to-client; a ping from the page gets a pong.
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def tenant_event(self, event: dict[str, Any]) -> None:
        payload = event["payload"]
        key = coalesce_key(payload)
        if key is None:
            await self.send_json(payload)
            return
        now = time.monotonic()
        due = self._last_sent.get(key, 0.0) + COALESCE_SECONDS
        if now >= due and key not in self._timers:
            self._last_sent[key] = now
            await self.send_json(payload)
            return
        self._waiting[key] = payload
        if key not in self._timers:
            self._timers[key] = asyncio.ensure_future(self._flush_later(key, max(0.0, due - now)))

    async def _flush_later(self, key: tuple[str, str], delay: float) -> None:
        await asyncio.sleep(delay)
        self._timers.pop(key, None)
        payload = self._waiting.pop(key, None)
        if payload is not None:
            self._last_sent[key] = time.monotonic()
            await self.send_json(payload)
