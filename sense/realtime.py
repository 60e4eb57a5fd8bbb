"""Live updates: one WebSocket group per tenant.

Browsers connect with their session, API clients with `?token=<api token>`. Anyone
else is closed with 4401 (not authenticated) or 4403 (not a member of that tenant).
Senders call `broadcast(tenant_id, message)`, usually from `transaction.on_commit`.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer

from sense.models import ApiToken, Membership

log = logging.getLogger("sense.realtime")

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


def group_name(tenant_id: Any) -> str:
    return f"tenant.{tenant_id}"


def broadcast(tenant_id: Any, message: dict[str, Any]) -> None:
    """Send MESSAGE (a JSON-able dict with a "type" like "campaign.stats") to every socket
    of the tenant. Never raises: a live update is best-effort, the page can refresh."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group_name(tenant_id), {"type": "tenant.event", "payload": message})
    except Exception as exc:
        log.warning("live update for tenant %s not sent: %s", tenant_id, exc.__class__.__name__)


@database_sync_to_async
def _resolve(scope: dict[str, Any], tenant_id: str) -> tuple[int | None, bool]:
    """(user id, is member of tenant_id) for the socket's session or ?token=."""
    query = parse_qs(scope.get("query_string", b"").decode())
    raw = (query.get("token") or [""])[0]
    user_id: int | None = None
    if raw:
        token = ApiToken.authenticate(raw)
        if token is None:
            return None, False
        return token.membership.user_id, str(token.membership.tenant_id) == tenant_id
    user = scope.get("user")
    if user is not None and user.is_authenticated:
        user_id = user.pk
    if user_id is None:
        return None, False
    return user_id, Membership.objects.filter(user_id=user_id, tenant_id=tenant_id).exists()


class TenantConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        tenant_id = str(self.scope["url_route"]["kwargs"]["tenant_id"])
        await self.accept()
        user_id, member = await _resolve(self.scope, tenant_id)
        if user_id is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not member:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.group = group_name(tenant_id)
        await self.channel_layer.group_add(self.group, self.channel_name)

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
