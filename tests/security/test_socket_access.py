"""The tenant WebSocket: 4401 without credentials, 4403 for another tenant's members; the
Origin is checked for session-authenticated sockets only (token clients send none)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User

from sense.asgi import application
from sense.models import Tenant
from sense.realtime import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from tests.conftest import token_for
from tests.core.test_realtime import session_cookie

OPEN, REFUSED = "open", "refused"  # connected and answering pings; refused at the handshake


@dataclass(frozen=True)
class Ws:
    who: str  # "anonymous", "session:<user>", "token:<user>", "bearer:<user>" or "token:bogus"
    tenant: str  # whose socket: "acme" or "globex"
    expect: int | str
    origin: bytes | None = b"http://testserver"  # None: no Origin header (a script, a server)

    def __str__(self) -> str:
        return f"{self.who} on {self.tenant} from {self.origin.decode() if self.origin else 'no origin'}"


WEBSOCKETS = [
    Ws("anonymous", "acme", CLOSE_UNAUTHENTICATED),
    Ws("token:bogus", "acme", CLOSE_UNAUTHENTICATED),
    Ws("session:charlie", "acme", CLOSE_FORBIDDEN),
    Ws("token:charlie", "acme", CLOSE_FORBIDDEN),
    Ws("session:alice", "globex", CLOSE_FORBIDDEN),
    Ws("token:alice", "globex", CLOSE_FORBIDDEN),
    Ws("session:alice", "acme", OPEN),
    Ws("token:alice", "acme", OPEN),
    Ws("session:bob", "acme", OPEN),  # an operator is a member too
    Ws("session:charlie", "globex", OPEN),
    # Cross-site WebSocket hijacking: another site's page cannot ride alice's session cookie.
    Ws("session:alice", "acme", REFUSED, origin=b"http://evil.example"),
    Ws("session:alice", "acme", REFUSED, origin=None),
    # A token is never sent by a browser on its own: clients without (or with any) Origin.
    Ws("token:alice", "acme", OPEN, origin=None),
    Ws("bearer:alice", "acme", OPEN, origin=None),
    Ws("token:alice", "acme", OPEN, origin=b"http://elsewhere.example"),
    Ws("token:charlie", "acme", CLOSE_FORBIDDEN, origin=None),
    Ws("bearer:charlie", "acme", CLOSE_FORBIDDEN, origin=None),
    Ws("token:bogus", "acme", CLOSE_UNAUTHENTICATED, origin=None),
    Ws("bearer:bogus", "acme", CLOSE_UNAUTHENTICATED, origin=None),
    Ws("anonymous", "acme", CLOSE_UNAUTHENTICATED, origin=None),
]


async def _socket_answers(path: str, headers: list[tuple[bytes, bytes]]) -> int | str:
    """OPEN when the socket answers a ping; REFUSED when the handshake is refused; otherwise
    the code it was closed with (the consumer accepts first, then closes with a code the page
    can read; a ping sent meanwhile waits behind that)."""
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    if not connected:
        return REFUSED
    await communicator.send_json_to({"type": "ping"})
    message = await communicator.receive_output(timeout=5)
    if message["type"] == "websocket.close":
        await communicator.disconnect()
        return int(message["code"])
    assert json.loads(message["text"]) == {"type": "pong"}
    await communicator.disconnect()
    return OPEN


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", WEBSOCKETS, ids=str)
def test_the_tenant_socket_admits_members_only(
    case: Ws, acme: Tenant, globex: Tenant, bob: User, charlie: User
) -> None:
    tenant = {"acme": acme, "globex": globex}[case.tenant]
    path = f"/ws/tenant/{tenant.pk}/"
    headers = [(b"host", b"testserver"), *([(b"origin", case.origin)] if case.origin else [])]
    kind, _, user = case.who.partition(":")
    if kind == "session":
        headers.append(session_cookie(user))
    elif kind in ("token", "bearer"):
        home = {"alice": acme, "bob": acme, "charlie": globex}
        token = "sense_bogus" if user == "bogus" else token_for(User.objects.get(username=user), home[user])
        if kind == "token":
            path += f"?token={token}"
        else:
            headers.append((b"authorization", f"Bearer {token}".encode()))

    assert asyncio.run(_socket_answers(path, headers)) == case.expect


def test_every_socket_url_is_in_the_table() -> None:
    from sense.routing import websocket_urlpatterns

    assert [str(p.pattern) for p in websocket_urlpatterns] == ["ws/tenant/<uuid:tenant_id>/"]
