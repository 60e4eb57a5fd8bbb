"""Webhook-to-browser latency: a WebSocket client on the tenant's live channel while status
webhooks arrive at 500 per second, on the production processes (uvicorn and a rundramatiq
worker on PostgreSQL, Redis and RabbitMQ). For the k-th webhook answered 200, the latency is
the time until the first frame whose delivered counter reaches k. Also the most frames any
one second carried for the campaign (coalescing: at most 4).

A warm-up of WARMUP webhooks at the same rate comes first and is not measured: the steady
state is what an operator watches; a process's very first frame also opens its broker,
database and Redis connections (about a second on this loaded machine, once per process)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from bench.bench_http import open_loop
from bench.bench_webhooks import _env, _vhost, seed
from bench.common import Figure, manage, percentile, production, recreate_database

DB_NAME = "sense_bench_live"
EVENTS = int(os.environ.get("BENCH_LIVE_EVENTS", "2500"))
WARMUP = 500  # deliveries EVENTS, EVENTS + 1, ...
RATE = 500.0

SEED = seed(
    EVENTS + WARMUP,
    """
from django.contrib.auth.models import User
from sense.models import ApiToken, Membership

user = User.objects.create_user("watcher")
token, raw = ApiToken.issue(membership=Membership.objects.create(tenant=tenant, user=user, role="operator"))
print("SEED", conn.webhook_token, campaign.pk, tenant.pk, raw)
""",
)


@dataclass
class LiveResult:
    latencies: list[float]  # seconds, one per webhook answered 200
    rate: float  # webhooks answered per second
    max_frames: int  # most frames made for the campaign in one second (by their sent_at)
    max_arrivals: int  # most frames arriving in one second at the client
    final: int  # the delivered counter of the last frame
    transit: list[float]  # seconds from each frame's sent_at to its arrival (same host clock)


def _busiest(times: list[float]) -> int:
    """The most of TIMES in any one-second window (sliding, from each of them)."""
    return max((sum(1 for u in times if t <= u < t + 1.0) for t in times), default=0)


async def _measure(base: str, token: str, campaign_id: str, tenant_id: str, api_token: str) -> LiveResult:
    from websockets.asyncio.client import connect

    frames: list[tuple[float, int]] = []  # (arrival, delivered, less the warm-up's)
    made: list[float] = []  # each frame's sent_at (the server's clock, epoch seconds)
    offset = 0  # read by the listener's closure, set once the warm-up is over
    answered: list[float] = []
    transit: list[float] = []
    url = f"{base}/api/webhooks/evolution/{token}/"
    ws_url = base.replace("http", "ws", 1) + f"/ws/tenant/{tenant_id}/?token={api_token}"
    # The listener has its own thread and event loop: the load generator below keeps this
    # loop busy, and frames read late would look bunched together.
    listening = threading.Event()
    stop = threading.Event()

    async def listen() -> None:
        async with connect(ws_url, origin=base) as ws:  # type: ignore[arg-type]
            listening.set()
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=0.2)
                except TimeoutError:
                    continue
                frame = json.loads(raw)
                if frame.get("type") == "campaign.stats" and frame.get("campaign_id") == campaign_id:
                    frames.append((time.monotonic(), int(frame["stats"]["delivered"]) - offset))
                    made.append(datetime.fromisoformat(frame["sent_at"]).timestamp())
                    transit.append(time.time() - made[-1])

    listener = threading.Thread(target=lambda: asyncio.run(listen()), daemon=True)
    listener.start()
    listening.wait(timeout=10)
    # The webhooks go out from raw sockets (bench_http.open_loop): an httpx client in this
    # process could not offer 500/s on a shared 2-core machine (it answered 57/s before).
    port = int(base.rsplit(":", 1)[1])
    path = url.split(str(port), 1)[1]
    await open_loop(port, path, RATE, WARMUP / RATE, EVENTS, status="DELIVERY_ACK")
    deadline = time.monotonic() + 30
    while (not frames or frames[-1][1] < WARMUP) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # the last warm-up frame is out; the next one is measured
    offset = WARMUP
    frames.clear()
    made.clear()
    transit.clear()
    await open_loop(port, path, RATE, EVENTS / RATE, 0, status="DELIVERY_ACK", answered=answered)
    deadline = time.monotonic() + 30
    while (not frames or frames[-1][1] < EVENTS) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    listener.join(timeout=5)
    answered.sort()
    latencies = []
    for k, at in enumerate(answered, start=1):
        seen = next((t for t, delivered in frames if delivered >= k and t >= at), None)
        if seen is None:  # the frame came before this 200 was read by the client
            seen = next((t for t, delivered in frames if delivered >= k), None)
            if seen is not None:
                seen = max(seen, at)
        if seen is not None:
            latencies.append(seen - at)
    arrivals = [t for t, _ in frames]
    return LiveResult(
        latencies=latencies,
        # open_loop opens its connections for 0.5 s before the first request is due.
        rate=(len(answered) - 1) / (answered[-1] - answered[0]) if len(answered) > 1 else 0.0,
        max_frames=_busiest(made),
        max_arrivals=_busiest(arrivals),
        final=frames[-1][1] if frames else 0,
        transit=list(transit),
    )


def _claim_lag(events: int) -> list[float]:
    """Milliseconds from each of the last EVENTS webhook events' commit (received_at) to its
    claim by a worker (processed_at)."""
    import psycopg

    with psycopg.connect(f"postgres://postgres@127.0.0.1:5432/{DB_NAME}", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM processed_at - received_at) * 1000 FROM campaigns_webhookevent"
            " WHERE processed_at IS NOT NULL ORDER BY id DESC LIMIT %s",
            [events],
        ).fetchall()
    return [float(ms) for (ms,) in rows]


def run() -> list[Figure]:
    tmp = tempfile.mkdtemp(prefix="sense-bench-live-")
    env = _env(DB_NAME, tmp, _vhost())
    recreate_database(DB_NAME)
    manage(env, "migrate", "--noinput", "-v", "0")
    token, campaign_id, tenant_id, api_token = manage(env, "shell", "-c", SEED).split("SEED ", 1)[1].split()
    with production(env, tmp, app="bench.bench_webhooks:asgi_app") as port:
        result = asyncio.run(_measure(f"http://127.0.0.1:{port}", token, campaign_id, tenant_id, api_token))
    latencies = [x * 1000 for x in result.latencies]
    complete = result.final == EVENTS and len(latencies) == EVENTS
    if complete:
        shutil.rmtree(tmp, ignore_errors=True)
    p50 = percentile(latencies, 50) if latencies else float("nan")
    p95 = percentile(latencies, 95) if latencies else float("nan")
    lag = _claim_lag(EVENTS)
    transit = [x * 1000 for x in result.transit]

    def spread(values: list[float]) -> str:
        return f"p50 {percentile(values, 50):.0f}, p95 {percentile(values, 95):.0f} ms" if values else "-"

    note = (
        f"{EVENTS:,} Evolution DELIVERY_ACK webhooks offered at {RATE:.0f}/s after a warm-up of {WARMUP:,}; "
        f"the server answered "
        f"{result.rate:.0f}/s; every event reached the browser: {complete}"
    )
    return [
        Figure(
            name="webhook 200 -> live frame p50", sense=round(p50, 1), unit="ms", goal="-", met=complete, notes=note
        ),
        Figure(
            name="webhook 200 -> live frame p95",
            sense=round(p95, 1),
            unit="ms",
            goal="<= 300 ms",
            met=complete and p95 <= 300,
            notes=f"of which: stored -> claimed by the worker {spread(lag)}; "
            f"frame made -> in the browser {spread(transit)}; the rest is waiting for the next frame",
        ),
        Figure(
            name="live frames per second per campaign (max)",
            sense=float(result.max_frames),
            unit="frames/s",
            goal="<= 4",
            met=result.max_frames <= 4,
            notes=f"by the time each frame was made (its sent_at); as they arrived at the client: "
            f"at most {result.max_arrivals} in one second (network and load move frames closer or apart)",
        ),
    ]
