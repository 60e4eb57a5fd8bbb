"""Webhook ingest: 20,000 Evolution status events (delivered + read) for a 10,000-delivery
campaign, posted at concurrency 32 to the production processes (uvicorn as in the Procfile,
plus one `rundramatiq` worker) on PostgreSQL, Redis and RabbitMQ; against the same
server's throughput on a no-op view in the same run.

Reports accepted events/s, p50/p99 latency, the time from the last 200 until the campaign's
counters are final, and whether any event was lost (counters equal the ground truth and
every stored event is processed). Own database (sense_bench_webhooks), Redis db 13 and a
RabbitMQ vhost of its own when rabbitmqctl can create one (so test workers elsewhere never
take its messages).

`uvicorn --factory bench.bench_webhooks:asgi_app` serves Sense's ASGI application with one
extra route, `POST /bench/noop/`, a view that answers 200 through the same middleware.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any
from urllib.parse import quote

from bench.common import ROOT, Figure, bench_env, manage, percentile, production, recreate_database

DB_NAME = "sense_bench_webhooks"
VHOST = "sense-bench-webhooks"
# The issue asks for 10,000 deliveries (20,000 events); on this shared 2-core machine that
# run takes about 4 minutes, over the ~2 minute budget per bench, so the default is scaled
# down. BENCH_WEBHOOK_DELIVERIES=10000 runs the full size.
DELIVERIES = int(os.environ.get("BENCH_WEBHOOK_DELIVERIES", "2500"))
CONCURRENCY = 32
NOOP_REQUESTS = 5_000


def asgi_app() -> Any:
    """uvicorn factory: Sense's ASGI app plus a no-op view (the reference)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sense.settings")
    import django

    django.setup()
    from django.http import HttpRequest, HttpResponse
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    from sense import urls

    @csrf_exempt
    def noop(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b'{"status": "ok"}', content_type="application/json")

    urls.urlpatterns.insert(0, path("bench/noop/", noop))
    from sense.asgi import application

    return application


def seed(deliveries: int, then: str) -> str:
    """A `manage.py shell -c` script: tenant, an Evolution connection and a running campaign with
    DELIVERIES sent deliveries (provider ids 3EB0BENCH0000000000, ...), counters to match;
    then THEN, which may use `tenant`, `conn` and `campaign`."""
    return f"""
from django.utils import timezone
from campaigns.models import Campaign, Connection, Delivery
from sense.models import Tenant

tenant = Tenant.objects.create(slug="bench", name="Bench")
conn = Connection.objects.create(tenant=tenant, name="n", provider="evolution", base_url="http://127.0.0.1:9",
                                 credentials={{"instance": "bench", "api_key": "k"}})
campaign = Campaign.objects.create(tenant=tenant, name="bench", connection=conn, message="hi", status="running")
now = timezone.now()
Delivery.objects.bulk_create(
    [Delivery(tenant=tenant, campaign=campaign, phone=f"+55119{{n:08d}}", text="hi", status="sent",
              provider_message_id=f"3EB0BENCH{{n:010d}}", sent_at=now) for n in range({deliveries})],
    batch_size=5000,
)
Campaign.objects.filter(pk=campaign.pk).update(stat_total={deliveries}, stat_sent={deliveries})
{then}
"""


SEED = seed(DELIVERIES, 'print("SEED " + conn.webhook_token + " " + str(campaign.pk))')


def _vhost() -> str:
    """A RabbitMQ vhost for the bench alone ("/" when rabbitmqctl is not usable here)."""
    ctl = shutil.which("rabbitmqctl")
    if ctl:
        try:
            # A fresh vhost each run: no queue or message of an earlier run survives.
            subprocess.run([ctl, "delete_vhost", VHOST], capture_output=True, timeout=60)
            subprocess.run([ctl, "add_vhost", VHOST], capture_output=True, timeout=30)
            done = subprocess.run(
                [ctl, "set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*"], capture_output=True, timeout=30
            )
            if done.returncode == 0:
                return VHOST
        except (OSError, subprocess.SubprocessError):
            pass
    return "/"


def _env(db_name: str, tmp: str, vhost: str) -> dict[str, str]:
    """bench_env on DB_NAME and the RabbitMQ VHOST; uvicorn imports this module (asgi_app)."""
    return bench_env(
        db_name,
        tmp,
        RABBITMQ_URL=f"amqp://guest:guest@127.0.0.1:5672/{quote(vhost, safe='')}",
        PYTHONPATH=str(ROOT),
    )


async def _load(url: str, bodies: list[bytes]) -> tuple[float, list[float], int, float]:
    """POST every body at CONCURRENCY; returns (elapsed s, latencies s, non-200 count, last 200 time)."""
    import httpx

    latencies: list[float] = []
    errors = 0
    last_ok = 0.0
    queue = iter(bodies)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

        async def worker() -> None:
            nonlocal errors, last_ok
            for body in queue:
                t0 = time.perf_counter()
                try:
                    response = await client.post(url, content=body, headers={"Content-Type": "application/json"})
                except httpx.TransportError:
                    errors += 1
                    continue
                t1 = time.perf_counter()
                latencies.append(t1 - t0)
                if response.status_code == 200:
                    last_ok = max(last_ok, time.monotonic())
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, errors, last_ok


def _event(message_id: str, status: str) -> bytes:
    return json.dumps(
        {
            "event": "messages.update",
            "instance": "bench",
            "data": {
                "keyId": message_id,
                "remoteJid": "5511999990000@s.whatsapp.net",
                "fromMe": True,
                "status": status,
                "messageId": "row",
                "instanceId": "bench",
            },
            "date_time": "2025-01-01T12:00:00.000Z",
            "sender": "5511988880000@s.whatsapp.net",
            "server_url": "http://evolution:8080",
            "apikey": "k",
        }
    ).encode()


def run() -> list[Figure]:
    import psycopg

    tmp = tempfile.mkdtemp(prefix="sense-bench-webhooks-")
    env = _env(DB_NAME, tmp, _vhost())
    recreate_database(DB_NAME)
    manage(env, "migrate", "--noinput", "-v", "0")
    token, campaign_id = manage(env, "shell", "-c", SEED).split("SEED ", 1)[1].split()
    with production(env, tmp, app="bench.bench_webhooks:asgi_app") as port:
        base = f"http://127.0.0.1:{port}"
        rng = random.Random(5)
        ids = [f"3EB0BENCH{n:010d}" for n in range(DELIVERIES)]
        bodies = [_event(i, s) for i in ids for s in ("DELIVERY_ACK", "READ")]
        rng.shuffle(bodies)
        # Warm both routes (connections, pools, the broker channel) before measuring.
        asyncio.run(_load(f"{base}/bench/noop/", bodies[:200]))
        noop_elapsed, noop_lat, noop_errors, _ = asyncio.run(_load(f"{base}/bench/noop/", bodies[:NOOP_REQUESTS]))
        noop_rate = NOOP_REQUESTS / noop_elapsed

        url = f"{base}/api/webhooks/evolution/{token}/"
        elapsed, latencies, errors, last_ok = asyncio.run(_load(url, bodies))
        rate = len(bodies) / elapsed

        final_after = None
        with psycopg.connect(f"postgres://postgres@127.0.0.1:5432/{DB_NAME}", autocommit=True) as conn:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT stat_delivered, stat_read FROM campaigns_campaign WHERE id = %s", [campaign_id]
                ).fetchone()
                if row == (DELIVERIES, DELIVERIES):
                    final_after = time.monotonic() - last_ok
                    break
                time.sleep(0.02)
            # Counters can be final while an event that changes nothing (a duplicate, or
            # delivered after read) still waits for its worker: wait for every event.
            while time.monotonic() < deadline:
                pending = conn.execute("SELECT count(*) FROM campaigns_webhookevent WHERE status = 'pending'")
                if pending.fetchone() == (0,):
                    break
                time.sleep(0.02)
            stats = conn.execute(
                "SELECT stat_total, stat_sent, stat_delivered, stat_read, stat_failed FROM campaigns_campaign "
                "WHERE id = %s",
                [campaign_id],
            ).fetchone()
            events: dict[str, int] = dict(
                conn.execute("SELECT status, count(*) FROM campaigns_webhookevent GROUP BY status").fetchall()
            )
            truth = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'read') FROM campaigns_delivery WHERE campaign_id = %s",
                [campaign_id],
            ).fetchone()
    lost = (
        errors
        or stats != (DELIVERIES, DELIVERIES, DELIVERIES, DELIVERIES, 0)
        or truth != (DELIVERIES,)
        or events.get("processed") != len(bodies)
    )
    if not lost and final_after is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"   logs kept in {tmp}", flush=True)
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    ratio = rate / noop_rate
    scale = f"{len(bodies):,} events for {DELIVERIES:,} deliveries, concurrency {CONCURRENCY}"
    return [
        Figure(
            name="webhook ingest",
            sense=round(rate, 1),
            unit="events/s",
            goal="ratio >= 0.5",
            met=ratio >= 0.5 and not lost,
            reference=round(noop_rate, 1),
            reference_label="no-op view, same server",
            ratio=round(ratio, 2),
            notes=f"{scale}; no-op p50 {percentile(noop_lat, 50) * 1000:.1f} ms, {noop_errors} errors",
        ),
        Figure(name="webhook p50 latency", sense=round(p50, 1), unit="ms", goal="-", met=True, notes=scale),
        Figure(
            name="webhook p99 latency",
            sense=round(p99, 1),
            unit="ms",
            goal="< 100 ms",
            met=p99 < 100,
            reference=round(percentile(noop_lat, 99) * 1000, 1),
            reference_label="no-op view p99, same load",
            ratio=round(p99 / (percentile(noop_lat, 99) * 1000), 2),
            notes=f"at concurrency {CONCURRENCY} a request waits for the ones ahead of it: "
            "latency is about concurrency / throughput",
        ),
        Figure(
            name="last 200 -> counters final",
            sense=round(final_after * 1000) if final_after is not None else -1,
            unit="ms",
            goal="< 2000 ms",
            met=final_after is not None and final_after < 2.0,
            notes="1 rundramatiq process, 8 threads",
        ),
        Figure(
            name="events lost",
            sense=0 if not lost else 1,
            unit="",
            goal="0",
            met=not lost,
            notes=f"non-200: {errors}; stats {stats}; stored events {events}",
        ),
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    for figure in run():
        print(figure)
