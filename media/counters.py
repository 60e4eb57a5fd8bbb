"""Per-tenant, per-day media metrics: uploads, thumbnail sizes, media proxy hits and latency.

Events are added to an in-process buffer (a dict update under a lock: cheap enough for the
proxy's HIT path) and written to `DailyMetric` rows with F() increments at most every
MEDIA_METRICS_FLUSH_SECONDS, by whichever request or job comes next, and at exit. So the
figures survive restarts and add up across processes; a crash loses a few seconds.

Histograms keep one row per bucket: averages are exact (`total / count`), percentiles are
interpolated inside the bucket, as Prometheus' histogram_quantile does.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Count, F, Sum
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from media.models import Asset, DailyMetric
from sense.models import Tenant

log = logging.getLogger("sense.media.metrics")

UPLOAD_ATTEMPTED = "upload.attempted"
UPLOAD_SUCCEEDED = "upload.succeeded"
UPLOAD_FAILED = "upload.failed."  # + reason code
THUMBNAIL_BYTES = "thumbnail.bytes"
PROXY_HIT_MS = "proxy.hit_ms"
PROXY_MISS_MS = "proxy.miss_ms"

LATENCY_MS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 3000.0, 5000.0, 10000.0)
THUMB_BYTES = (5_000.0, 10_000.0, 15_000.0, 20_000.0, 30_000.0, 50_000.0, 100_000.0, 250_000.0)
HISTOGRAMS: dict[str, tuple[float, ...]] = {
    THUMBNAIL_BYTES: THUMB_BYTES,
    PROXY_HIT_MS: LATENCY_MS,
    PROXY_MISS_MS: LATENCY_MS,
}

Key = tuple[Any, datetime.date, str, int]


def bucket_of(bounds: tuple[float, ...], value: float) -> int:
    for index, bound in enumerate(bounds):
        if value <= bound:
            return index
    return len(bounds)


class Recorder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Key, list[float]] = {}
        self._last_flush = time.monotonic()

    def add(self, tenant_id: Any, name: str, value: float | None = None) -> None:
        bounds = HISTOGRAMS.get(name)
        bucket = bucket_of(bounds, value) if bounds is not None and value is not None else 0
        key = (tenant_id, timezone.localdate(), name, bucket)
        with self._lock:
            entry = self._pending.setdefault(key, [0, 0.0])
            entry[0] += 1
            entry[1] += value or 0.0
            due = time.monotonic() - self._last_flush >= settings.MEDIA_METRICS_FLUSH_SECONDS
        if due:
            self.flush()

    def flush(self) -> int:
        """Write the buffer to the database; returns the number of rows touched. On a database
        error the events stay buffered for the next flush."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._last_flush = time.monotonic()
        if not pending:
            return 0
        try:
            with transaction.atomic():
                # Events of a tenant deleted meanwhile would fail the foreign key at commit.
                tenant_ids = {key[0] for key in pending}
                alive: set[Any] = set(Tenant.objects.filter(id__in=tenant_ids).values_list("id", flat=True))
                alive |= {str(t) for t in alive}
                for (tenant_id, day, name, bucket), (count, total) in sorted(pending.items(), key=_order):
                    if tenant_id not in alive:
                        continue
                    _increment(tenant_id, day, name, bucket, int(count), total)
        except DatabaseError:
            log.warning("media metrics not written (database error); keeping %d rows buffered", len(pending))
            with self._lock:
                for key, (count, total) in pending.items():
                    entry = self._pending.setdefault(key, [0, 0.0])
                    entry[0] += count
                    entry[1] += total
            return 0
        return len(pending)


def _order(item: tuple[Key, list[float]]) -> tuple[str, str, str, int]:
    # A fixed order keeps two processes flushing the same rows from deadlocking.
    (tenant_id, day, name, bucket), _ = item
    return (str(tenant_id), day.isoformat(), name, bucket)


def _increment(tenant_id: Any, day: datetime.date, name: str, bucket: int, count: int, total: float) -> None:
    lookup = {"tenant_id": tenant_id, "day": day, "name": name, "bucket": bucket}
    if DailyMetric.objects.filter(**lookup).update(count=F("count") + count, total=F("total") + total):
        return
    try:
        with transaction.atomic():
            DailyMetric.objects.create(**lookup, count=count, total=total)
    except IntegrityError:  # another process created the row first
        DailyMetric.objects.filter(**lookup).update(count=F("count") + count, total=F("total") + total)


recorder = Recorder()
atexit.register(lambda: recorder.flush() if settings.configured else None)


def record(tenant_id: Any, name: str, value: float | None = None) -> None:
    """Count one event (VALUE for histograms: ms or bytes). Never raises."""
    try:
        recorder.add(tenant_id, name, value)
    except Exception:
        log.exception("media metric %s not recorded", name)


def flush() -> int:
    return recorder.flush()


def discard() -> None:
    """Drop buffered events (tests)."""
    with recorder._lock:
        recorder._pending.clear()


# --- Reading ------------------------------------------------------------------------------


def quantile(bounds: tuple[float, ...], counts: list[int], q: float) -> float | None:
    """The Q-quantile of a bucketed distribution (linear inside the bucket), None when empty.
    Values past the last bound are reported as the last bound."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0.0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index >= len(bounds):
                return bounds[-1]
            lower = bounds[index - 1] if index > 0 else 0.0
            return lower + (bounds[index] - lower) * ((rank - seen) / count)
        seen += count
    return bounds[-1]


def _histogram(rows: dict[tuple[str, int], tuple[int, float]], name: str) -> dict[str, float | int | None]:
    bounds = HISTOGRAMS[name]
    counts = [rows.get((name, i), (0, 0.0))[0] for i in range(len(bounds) + 1)]
    total = sum(rows.get((name, i), (0, 0.0))[1] for i in range(len(bounds) + 1))
    n = sum(counts)
    return {
        "count": n,
        "avg": (total / n) if n else None,
        "p50": quantile(bounds, counts, 0.50),
        "p95": quantile(bounds, counts, 0.95),
    }


def daily_summary(tenant: Any, day: datetime.date | None = None) -> dict[str, Any]:
    """One tenant's media figures for DAY (default today), for the ops page:
    uploads (attempted, succeeded, failed by reason, success rate), thumbnail size (avg and
    p95 bytes), proxy (hits, misses, hit rate, p50/p95 ms for hits and for misses)."""
    flush()
    day = day or timezone.localdate()
    rows = {
        (r["name"], r["bucket"]): (r["count"], r["total"])
        for r in DailyMetric.objects.filter(tenant=tenant, day=day).values("name", "bucket", "count", "total")
    }
    attempted = rows.get((UPLOAD_ATTEMPTED, 0), (0, 0.0))[0]
    succeeded = rows.get((UPLOAD_SUCCEEDED, 0), (0, 0.0))[0]
    failed = {name[len(UPLOAD_FAILED) :]: c for (name, _), (c, _) in rows.items() if name.startswith(UPLOAD_FAILED)}
    hits = _histogram(rows, PROXY_HIT_MS)
    misses = _histogram(rows, PROXY_MISS_MS)
    lookups = int(hits["count"] or 0) + int(misses["count"] or 0)
    thumbs = _histogram(rows, THUMBNAIL_BYTES)
    return {
        "day": day.isoformat(),
        "uploads": {
            "attempted": attempted,
            "succeeded": succeeded,
            "failed": sum(failed.values()),
            "failed_by_reason": failed,
            "success_rate": (succeeded / attempted) if attempted else None,
        },
        "thumbnails": {"count": thumbs["count"], "avg_bytes": thumbs["avg"], "p95_bytes": thumbs["p95"]},
        "proxy": {
            "hits": hits["count"],
            "misses": misses["count"],
            "hit_rate": (int(hits["count"] or 0) / lookups) if lookups else None,
            "hit_p50_ms": hits["p50"],
            "hit_p95_ms": hits["p95"],
            "miss_p50_ms": misses["p50"],
            "miss_p95_ms": misses["p95"],
        },
    }


# --- Prometheus ---------------------------------------------------------------------------


class MediaCollector(Collector):
    """Totals over all days from DailyMetric (so every process reports the same, restart-proof
    numbers), plus assets by status."""

    def collect(self) -> Iterator[Any]:
        flush()
        totals: dict[tuple[str, str, int], tuple[int, float]] = {}
        for row in DailyMetric.objects.values("tenant__slug", "name", "bucket").annotate(
            n=Sum("count"), s=Sum("total")
        ):
            totals[(row["tenant__slug"], row["name"], row["bucket"])] = (int(row["n"] or 0), float(row["s"] or 0))

        uploads = CounterMetricFamily(
            "sense_media_uploads",
            "Upload attempts by outcome and refusal reason.",
            labels=["tenant", "outcome", "reason"],
        )
        for (slug, name, _), (count, _) in sorted(totals.items()):
            if name == UPLOAD_ATTEMPTED:
                uploads.add_metric([slug, "attempted", ""], count)
            elif name == UPLOAD_SUCCEEDED:
                uploads.add_metric([slug, "succeeded", ""], count)
            elif name.startswith(UPLOAD_FAILED):
                uploads.add_metric([slug, "failed", name[len(UPLOAD_FAILED) :]], count)
        yield uploads

        thumbs = HistogramMetricFamily("sense_media_thumbnail_bytes", "Thumbnail sizes.", labels=["tenant"])
        proxy = HistogramMetricFamily(
            "sense_media_proxy_seconds", "Media proxy latency by cache outcome.", labels=["tenant", "cache"]
        )
        tenants = sorted({slug for slug, _, _ in totals})
        for slug in tenants:
            for name, family, labels, scale in (
                (THUMBNAIL_BYTES, thumbs, [slug], 1.0),
                (PROXY_HIT_MS, proxy, [slug, "hit"], 1000.0),
                (PROXY_MISS_MS, proxy, [slug, "miss"], 1000.0),
            ):
                bounds = HISTOGRAMS[name]
                counts = [totals.get((slug, name, i), (0, 0.0))[0] for i in range(len(bounds) + 1)]
                if not any(counts):
                    continue
                running, buckets = 0, []
                for bound, count in zip((*bounds, float("inf")), counts, strict=True):
                    running += count
                    le = "+Inf" if bound == float("inf") else repr(bound / scale)
                    buckets.append((le, running))
                total = sum(totals.get((slug, name, i), (0, 0.0))[1] for i in range(len(bounds) + 1)) / scale
                family.add_metric(labels, buckets, total)
        yield thumbs
        yield proxy

        assets = GaugeMetricFamily("sense_media_assets", "Media assets by status.", labels=["status"])
        for status, n in Asset.objects.values_list("status").annotate(n=Count("id")).order_by("status"):
            assets.add_metric([status], n)
        yield assets
