"""/metrics (Prometheus) and the per-tenant daily media figures."""

from __future__ import annotations

import datetime
from typing import Any

from django.test import Client
from django.utils import timezone

from media import counters as metrics
from media.models import DailyMetric


def test_metrics_do_not_exist_without_a_token(db: Any, settings: Any) -> None:
    settings.METRICS_TOKEN = ""

    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 404


def test_metrics_need_the_token(db: Any, settings: Any) -> None:
    settings.METRICS_TOKEN = "scrape-me"

    assert Client().get("/metrics").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401


def test_metrics_expose_media_request_and_queue_figures(db: Any, acme: Any, settings: Any) -> None:
    settings.METRICS_TOKEN = "scrape-me"
    metrics.record(acme.id, metrics.UPLOAD_ATTEMPTED)
    metrics.record(acme.id, metrics.UPLOAD_FAILED + "too_large")
    metrics.record(acme.id, metrics.PROXY_HIT_MS, 3.0)
    metrics.record(acme.id, metrics.THUMBNAIL_BYTES, 12_000)
    Client().get("/api/health/")

    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me")

    assert response.status_code == 200
    text = response.content.decode()
    assert 'sense_media_uploads_total{outcome="failed",reason="too_large",tenant="acme"} 1.0' in text
    assert 'sense_media_proxy_seconds_bucket{cache="hit",le="0.005",tenant="acme"} 1.0' in text
    assert 'sense_media_thumbnail_bytes_sum{tenant="acme"} 12000.0' in text
    assert 'sense_http_requests_total{method="GET",route="api/health/",status="200"}' in text
    assert "sense_http_request_seconds_bucket" in text
    assert "sense_queue_messages" in text


def test_daily_figures_survive_a_restart(db: Any, acme: Any) -> None:
    for ms in (10, 20, 30, 40, 2000):
        metrics.record(acme.id, metrics.PROXY_MISS_MS, ms)
    metrics.flush()
    metrics.discard()  # a new process starts with an empty buffer

    summary = metrics.daily_summary(acme)["proxy"]

    assert summary["misses"] == 5
    assert 10 <= summary["miss_p50_ms"] <= 50
    assert 1000 <= summary["miss_p95_ms"] <= 2000


def test_counters_add_up_across_flushes_and_days(db: Any, acme: Any) -> None:
    metrics.record(acme.id, metrics.UPLOAD_SUCCEEDED)
    metrics.flush()
    metrics.record(acme.id, metrics.UPLOAD_SUCCEEDED)
    metrics.flush()
    yesterday = timezone.localdate() - datetime.timedelta(days=1)
    DailyMetric.objects.create(tenant=acme, day=yesterday, name=metrics.UPLOAD_SUCCEEDED, count=7)

    assert metrics.daily_summary(acme)["uploads"]["succeeded"] == 2
    assert metrics.daily_summary(acme, yesterday)["uploads"]["succeeded"] == 7


def test_quantiles_interpolate_inside_buckets() -> None:
    bounds = (10.0, 20.0)
    assert metrics.quantile(bounds, [0, 0, 0], 0.5) is None
    assert metrics.quantile(bounds, [2, 2, 0], 0.5) == 10.0
    assert metrics.quantile(bounds, [0, 4, 0], 0.5) == 15.0
    assert metrics.quantile(bounds, [0, 0, 3], 0.95) == 20.0


def test_queue_depths_are_read_without_keeping_a_broker_connection_per_scrape(db: Any, settings: Any) -> None:
    import dramatiq

    from sense.tasks import worker_ping
    from tests.helpers import at_once
    from tests.workers import flush_queues

    settings.METRICS_TOKEN = "scrape-me"
    broker = dramatiq.get_broker()
    flush_queues()
    try:
        for n in range(3):
            worker_ping.send(f"queued-{n}")
        before = len(broker.connections)  # type: ignore[attr-defined]

        # Under ASGI every scrape runs in a thread of its own.
        pages = at_once(lambda: Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me"), threads=5)

        assert all(page.status_code == 200 for page in pages)
        assert all('sense_queue_messages{queue="default"} 3.0' in page.content.decode() for page in pages)
        assert len(broker.connections) == before  # type: ignore[attr-defined]
    finally:
        flush_queues()
