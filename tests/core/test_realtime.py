"""The tenant WebSocket: who may connect, and what reaches them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from sense.asgi import application
from sense.models import Tenant
from sense.realtime import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED, broadcast
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


async def burst(path: str, tenant_id: Any, count: int) -> tuple[list[dict[str, Any]], list[float], float]:
    """COUNT changes of one campaign's stats over about a second, each marked on a coalescer
    that broadcasts the latest state (as campaigns.live does); the frames the socket got
    until the last state, when each was published, and when the first change was marked."""
    from sense.lib.coalesce import Coalescer

    loop = asyncio.get_running_loop()
    published: list[float] = []
    state = {"sent": -1}

    def publish(keys: set[Any]) -> None:
        published.append(time.monotonic())
        broadcast(tenant_id, {"type": "campaign.stats", "campaign_id": "c1", "stats": dict(state)})

    coalescer = Coalescer(publish, interval=settings.LIVE_FRAME_INTERVAL_SECONDS, uses_db=False)

    def changes() -> float:
        started = time.monotonic()
        for n in range(count):
            state["sent"] = n
            coalescer.mark("c1")
            time.sleep(1.0 / count)
        return started

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
    first_change = await loop.run_in_executor(None, changes)
    await reader
    # Nothing after the last state either.
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()
    return frames, published, first_change


def test_a_burst_is_coalesced_once_leading_edge_and_the_last_state_always_arrives(alice: User, acme: Tenant) -> None:
    token = token_for(alice, acme)
    frames, published, first_change = asyncio.run(burst(f"/ws/tenant/{acme.id}/?token={token}", acme.id, 200))
    assert frames[-1]["stats"] == {"sent": 199}  # the final state is never dropped
    assert len(frames) == len(published) < 20  # coalesced once; the socket forwards each frame
    assert [f["stats"]["sent"] for f in frames] == sorted(f["stats"]["sent"] for f in frames)
    assert published[0] - first_change < 0.05  # the first change goes out at once
    # Never more than 4 frames in any one-second window.
    assert all(sum(1 for t in published if s <= t < s + 1.0) <= 4 for s in published)


def test_the_socket_forwards_every_frame_as_it_comes(alice: User, acme: Tenant) -> None:
    token = token_for(alice, acme)

    async def frames() -> list[dict[str, Any]]:
        communicator = WebsocketCommunicator(application, f"/ws/tenant/{acme.id}/?token={token}", headers=HEADERS)
        assert (await communicator.connect(timeout=5))[0]
        await communicator.send_json_to({"type": "ping"})
        await communicator.receive_json_from(timeout=5)
        loop = asyncio.get_running_loop()
        for n in range(5):
            message = {"type": "campaign.stats", "campaign_id": "c1", "stats": {"sent": n}}
            await loop.run_in_executor(None, broadcast, acme.id, message)
        got = [await communicator.receive_json_from(timeout=2) for _ in range(5)]
        await communicator.disconnect()
        return got

    assert [f["stats"]["sent"] for f in asyncio.run(frames())] == [0, 1, 2, 3, 4]


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


def test_the_coalescer_is_leading_edge_then_at_most_once_per_interval_with_the_latest_state_last() -> None:
    from sense.lib.coalesce import Coalescer

    state = {"value": 0}
    flushes: list[tuple[float, int]] = []
    coalescer = Coalescer(lambda keys: flushes.append((time.monotonic(), state["value"])), interval=0.25, uses_db=False)
    started = time.monotonic()
    coalescer.mark("c")
    time.sleep(0.05)
    assert len(flushes) == 1 and flushes[0][0] - started < 0.05  # the first change at once
    while time.monotonic() - started < 1.3:  # a steady stream of changes
        state["value"] += 1
        coalescer.mark("c")
        time.sleep(0.005)
    last = state["value"]
    coalescer.drain()
    times = [t for t, _ in flushes]
    assert all(b - a >= 0.24 for a, b in zip(times, times[1:], strict=False))  # at most 4 a second
    assert len(flushes) >= 5  # but one every interval while changes keep coming
    assert flushes[-1][1] == last  # the latest state is always the last one flushed
    time.sleep(0.3)
    coalescer.mark("c")  # after a quiet interval: at once again
    marked = time.monotonic()
    time.sleep(0.05)
    assert flushes[-1][0] - marked < 0.05


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


def test_what_two_flushes_send_is_an_interval_apart_however_long_each_takes() -> None:
    """A frame is sent at the end of its flush (after the stats query): a slow flush followed
    by a quick one must still send an interval apart, or five frames fit in one second."""
    import time

    from sense.lib.coalesce import Coalescer

    sent: list[float] = []
    durations = iter([0.06, 0.0] * 10)

    def flush(keys: set[Any]) -> None:
        time.sleep(next(durations, 0.0))  # the query, slow then quick
        sent.append(time.monotonic())

    coalescer = Coalescer(flush, interval=0.1, uses_db=False)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        coalescer.mark("campaign")
        time.sleep(0.005)
    coalescer.drain()
    gaps = [b - a for a, b in zip(sent, sent[1:], strict=False)]
    assert len(gaps) >= 5 and min(gaps) >= 0.1


def test_the_interval_runs_from_when_a_flush_sent_not_from_when_it_ended() -> None:
    """A flush that queries, sends, then takes a while to finish: the next one is paced from
    the send, so its time after sending is not added to every interval, and what two flushes
    send is still at least an interval apart."""
    import statistics

    from sense.lib.coalesce import Coalescer

    sends: list[float] = []

    def flush(keys: set[Any]) -> float:
        time.sleep(0.02)  # its query
        sent = time.monotonic()
        sends.append(sent)
        time.sleep(0.08)  # what it does after sending
        return sent

    coalescer = Coalescer(flush, interval=0.25, uses_db=False)
    started = time.monotonic()
    while time.monotonic() - started < 1.6:
        coalescer.mark("c")
        time.sleep(0.005)
    coalescer.drain()
    gaps = [b - a for a, b in zip(sends, sends[1:], strict=False)]
    assert len(gaps) >= 4 and min(gaps) >= 0.25
    assert statistics.median(gaps) < 0.32  # 0.25 + its query, not + the 80 ms after sending
