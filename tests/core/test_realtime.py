"""The tenant WebSocket: who may connect, and what reaches them."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from sense.asgi import application
from sense.models import Tenant
from sense.realtime import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED, TenantConsumer, broadcast
from tests.conftest import PASSWORD, token_for

pytestmark = pytest.mark.django_db(transaction=True)

HEADERS = [(b"origin", b"http://testserver"), (b"host", b"testserver")]


def session_cookie(username: str) -> tuple[bytes, bytes]:
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


async def close_code(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    communicator = WebsocketCommunicator(application, path, headers=[*HEADERS, *(headers or [])])
    connected, _ = await communicator.connect(timeout=5)
    assert connected  # accepted first, then closed with an application code the page can read
    message = await communicator.receive_output(timeout=5)
    assert message["type"] == "websocket.close"
    await communicator.wait()
    return int(message["code"])


def test_an_anonymous_socket_is_closed_with_4401(acme: Tenant) -> None:
    assert asyncio.run(close_code(f"/ws/tenant/{acme.id}/")) == CLOSE_UNAUTHENTICATED


def test_a_bad_token_is_closed_with_4401(acme: Tenant) -> None:
    assert asyncio.run(close_code(f"/ws/tenant/{acme.id}/?token=sense_nope")) == CLOSE_UNAUTHENTICATED


def test_an_outsider_is_closed_with_4403(charlie: User, acme: Tenant) -> None:
    assert asyncio.run(close_code(f"/ws/tenant/{acme.id}/", [session_cookie("charlie")])) == CLOSE_FORBIDDEN


def test_a_token_for_another_tenant_is_closed_with_4403(charlie: User, globex: Tenant, acme: Tenant) -> None:
    token = token_for(charlie, globex)
    assert asyncio.run(close_code(f"/ws/tenant/{acme.id}/?token={token}")) == CLOSE_FORBIDDEN


async def receive_broadcast(
    path: str, headers: list[tuple[bytes, bytes]], tenant_id: Any, other_tenant_id: Any, *, origin: bool = True
) -> list[dict[str, Any]]:
    """The broadcasts a socket on PATH receives (with this site's Origin unless not ORIGIN)."""
    base = HEADERS if origin else [(b"host", b"testserver")]
    communicator = WebsocketCommunicator(application, path, headers=[*base, *headers])
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
    loop = asyncio.get_running_loop()
    # broadcast() is the synchronous API workers use; run it off the event loop.
    await loop.run_in_executor(None, broadcast, other_tenant_id, {"type": "campaign.stats", "campaign_id": "other"})
    await loop.run_in_executor(None, broadcast, tenant_id, {"type": "campaign.stats", "campaign_id": "mine"})
    received = [await communicator.receive_json_from(timeout=5)]
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()
    return received


def test_a_member_session_receives_its_tenants_broadcasts_only(alice: User, acme: Tenant, globex: Tenant) -> None:
    got = asyncio.run(receive_broadcast(f"/ws/tenant/{acme.id}/", [session_cookie("alice")], acme.id, globex.id))
    assert got == [{"type": "campaign.stats", "campaign_id": "mine"}]


def test_an_api_client_with_a_token_receives_broadcasts(alice: User, acme: Tenant, globex: Tenant) -> None:
    token = token_for(alice, acme)
    got = asyncio.run(receive_broadcast(f"/ws/tenant/{acme.id}/?token={token}", [], acme.id, globex.id))
    assert got == [{"type": "campaign.stats", "campaign_id": "mine"}]


async def burst(path: str, tenant_id: Any, count: int) -> tuple[list[dict[str, Any]], list[float]]:
    """Broadcast COUNT stats of one campaign; the frames the socket got until the last state,
    and when the consumer sent each (stamped at the sender: a reader held up by a busy loop
    would bunch its receive times together)."""
    loop = asyncio.get_running_loop()
    sent_at: list[float] = []
    send_json = TenantConsumer.send_json

    async def stamped(self: TenantConsumer, content: Any, close: bool = False) -> None:
        if isinstance(content, dict) and content.get("type") == "campaign.stats":
            sent_at.append(loop.time())
        await send_json(self, content, close)

    with mock.patch.object(TenantConsumer, "send_json", stamped):
        communicator = WebsocketCommunicator(application, path, headers=HEADERS)
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        await communicator.send_json_to({"type": "ping"})
        await communicator.receive_json_from(timeout=5)
        frames: list[dict[str, Any]] = []

        async def read() -> None:
            while not frames or frames[-1]["stats"] != {"sent": count - 1}:
                frames.append(await communicator.receive_json_from(timeout=30))

        reader = asyncio.ensure_future(read())
        for n in range(count):
            message = {"type": "campaign.stats", "campaign_id": "c1", "stats": {"sent": n}}
            await loop.run_in_executor(None, broadcast, tenant_id, message)
        await reader
        # Nothing after the last state either.
        assert await communicator.receive_nothing(timeout=0.5)
        await communicator.disconnect()
    return frames, sent_at


def test_a_burst_is_coalesced_and_the_last_state_always_arrives(alice: User, acme: Tenant) -> None:
    token = token_for(alice, acme)
    frames, sent_at = asyncio.run(burst(f"/ws/tenant/{acme.id}/?token={token}", acme.id, 200))
    assert frames[-1]["stats"] == {"sent": 199}  # the final state is never dropped
    assert len(frames) < 200  # the burst was coalesced
    assert len(sent_at) == len(frames)
    # Never more than 4 frames in any one-second window.
    assert all(sum(1 for t in sent_at if s <= t < s + 1.0) <= 4 for s in sent_at)


def test_the_apps_register_which_frames_replace_each_other() -> None:
    from sense.realtime import coalesce_key

    assert coalesce_key({"type": "campaign.stats", "campaign_id": 7, "stats": {}}) == ("campaign.stats", "7")
    assert coalesce_key({"type": "media.updated", "id": "a1", "status": "ready"}) == ("media.updated", "a1")
    assert coalesce_key({"type": "pong"}) is None  # anything unregistered goes out as it comes


def test_the_coalescer_flushes_a_burst_in_few_calls_and_never_drops_a_key() -> None:
    from sense.lib.coalesce import Coalescer

    flushed: list[set[Any]] = []
    coalescer = Coalescer(lambda keys: flushed.append(set(keys)), interval=0.05)
    for _ in range(2000):
        coalescer.mark("campaign-a")
    coalescer.mark("campaign-b")
    coalescer.drain()
    assert set().union(*flushed) == {"campaign-a", "campaign-b"}
    assert len(flushed) < 20  # not one call per change
    coalescer.mark("campaign-a")  # a later change is flushed too
    coalescer.drain()
    assert flushed[-1] == {"campaign-a"}


def test_a_client_without_an_origin_receives_broadcasts_with_a_token_in_the_query(
    alice: User, acme: Tenant, globex: Tenant
) -> None:
    token = token_for(alice, acme)
    got = asyncio.run(receive_broadcast(f"/ws/tenant/{acme.id}/?token={token}", [], acme.id, globex.id, origin=False))
    assert got == [{"type": "campaign.stats", "campaign_id": "mine"}]


def test_a_client_without_an_origin_receives_broadcasts_with_a_bearer_header(
    alice: User, acme: Tenant, globex: Tenant
) -> None:
    bearer = (b"authorization", f"Bearer {token_for(alice, acme)}".encode())
    got = asyncio.run(receive_broadcast(f"/ws/tenant/{acme.id}/", [bearer], acme.id, globex.id, origin=False))
    assert got == [{"type": "campaign.stats", "campaign_id": "mine"}]


def test_a_bad_token_is_not_followed_by_the_session_cookie(alice: User, acme: Tenant) -> None:
    # A session with a failing token stays unauthenticated (and so skips no Origin check it needs).
    code = asyncio.run(close_code(f"/ws/tenant/{acme.id}/?token=sense_nope", [session_cookie("alice")]))
    assert code == CLOSE_UNAUTHENTICATED


async def refused(path: str, headers: list[tuple[bytes, bytes]]) -> bool:
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    if connected:
        await communicator.disconnect()
    return not connected


def test_a_session_socket_from_a_foreign_origin_is_refused_at_the_handshake(alice: User, acme: Tenant) -> None:
    path = f"/ws/tenant/{acme.id}/"
    foreign = [(b"origin", b"https://evil.example"), (b"host", b"testserver"), session_cookie("alice")]
    assert asyncio.run(refused(path, foreign))
    assert asyncio.run(refused(path, [(b"host", b"testserver"), session_cookie("alice")]))  # no Origin
    assert not asyncio.run(refused(path, [*HEADERS, session_cookie("alice")]))
