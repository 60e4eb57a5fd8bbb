"""Media figures for the ops page, against the existing deployment's targets."""

from __future__ import annotations

from datetime import date
from typing import Any

from django.utils.translation import gettext as _

from media.counters import daily_summary
from sense.models import Tenant
from sense.ops import OpsFigure


def _weighted(days: list[dict[str, Any]], value: str, weight: str) -> float | None:
    pairs = [(d[value], d[weight]) for d in days if d[value] is not None and d[weight]]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None


def figures(tenant: Tenant, days: list[date]) -> list[OpsFigure]:
    summaries = [daily_summary(tenant, day) for day in days]
    uploads = [s["uploads"] for s in summaries]
    thumbs = [s["thumbnails"] for s in summaries]
    proxy = [s["proxy"] for s in summaries]

    attempted = sum(u["attempted"] for u in uploads)
    success = 100.0 * sum(u["succeeded"] for u in uploads) / attempted if attempted else None
    avg_kb = _weighted(thumbs, "avg_bytes", "count")
    avg_kb = avg_kb / 1024 if avg_kb is not None else None
    hits = sum(p["hits"] for p in proxy)
    lookups = hits + sum(p["misses"] for p in proxy)
    hit_rate = 100.0 * hits / lookups if lookups else None
    hit_ms = _weighted(proxy, "hit_p50_ms", "hits")
    miss_ms = _weighted(proxy, "miss_p50_ms", "misses")

    def ok(value: float | None, passes: bool) -> bool | None:
        return None if value is None else passes

    return [
        OpsFigure(
            "upload_success",
            _("Upload success"),
            success,
            "%",
            "> 95%",
            ok(success, (success or 0) > 95),
            [100.0 * u["success_rate"] if u["success_rate"] is not None else 0 for u in uploads],
        ),
        OpsFigure(
            "thumbnail_kb",
            _("Average thumbnail"),
            avg_kb,
            " KB",
            "< 50 KB",
            ok(avg_kb, (avg_kb or 0) < 50),
            [(t["avg_bytes"] or 0) / 1024 for t in thumbs],
        ),
        OpsFigure(
            "cache_hit_rate",
            _("Media proxy cache hit rate"),
            hit_rate,
            "%",
            "> 70%",
            ok(hit_rate, (hit_rate or 0) > 70),
            [100.0 * p["hit_rate"] if p["hit_rate"] is not None else 0 for p in proxy],
        ),
        OpsFigure(
            "proxy_hit_ms",
            _("Media proxy on a hit (p50)"),
            hit_ms,
            " ms",
            "< 1000 ms",
            ok(hit_ms, (hit_ms or 0) < 1000),
            [p["hit_p50_ms"] or 0 for p in proxy],
        ),
        OpsFigure(
            "proxy_miss_ms",
            _("Media proxy on a download (p50)"),
            miss_ms,
            " ms",
            "< 3000 ms",
            ok(miss_ms, (miss_ms or 0) < 3000),
            [p["miss_p50_ms"] or 0 for p in proxy],
        ),
    ]
