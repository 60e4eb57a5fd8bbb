"""Prometheus metrics at /metrics, protected by METRICS_TOKEN (Bearer).

This process's HTTP requests (count and latency by route) come from a middleware; task
queue depth is read from the broker at scrape time; apps add their own collectors with
`register(collector)` (media does, from its AppConfig.ready). With METRICS_TOKEN unset the
endpoint does not exist (404); a wrong token is 401.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sense.lib.middleware import follow_mode
from sense.tenancy import bearer_token

log = logging.getLogger("sense.metrics")

registry = CollectorRegistry()

REQUESTS = Counter(
    "sense_http_requests", "HTTP requests handled by this process.", ["method", "route", "status"], registry=registry
)
LATENCY = Histogram(
    "sense_http_request_seconds",
    "HTTP request latency in this process.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=registry,
)

_registered: set[str] = set()


def register(collector: Collector, *, name: str) -> None:
    """Add COLLECTOR once (NAME makes repeated AppConfig.ready calls harmless)."""
    if name in _registered:
        return
    registry.register(collector)
    _registered.add(name)


class QueueCollector(Collector):
    """Messages waiting in each Dramatiq queue, read as the ops page reads them: on a
    short-lived connection of its own. (Dramatiq's broker keeps one connection per thread,
    and under ASGI every scrape runs in a new thread: asking it would leak one per scrape.)"""

    def collect(self) -> Iterator[Any]:
        from sense.ops import queue_depths

        family = GaugeMetricFamily("sense_queue_messages", "Messages waiting per task queue.", labels=["queue"])
        for queue, depth in queue_depths().items():
            if depth is not None:
                family.add_metric([queue], float(depth))
        yield family


register(QueueCollector(), name="queues")


class RequestMetricsMiddleware:
    """Counts and times every request by its URL route (not its path: bounded labels)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.is_async = follow_mode(self, get_response)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        started = time.perf_counter()
        response: HttpResponse = self.get_response(request)
        self.observe(request, response, started)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response: HttpResponse = await self.get_response(request)
        self.observe(request, response, started)
        return response

    @staticmethod
    def observe(request: HttpRequest, response: HttpResponse, started: float) -> None:
        match = getattr(request, "resolver_match", None)
        route = match.route if match is not None and match.route else "unmatched"
        REQUESTS.labels(request.method or "", route, str(response.status_code)).inc()
        LATENCY.labels(request.method or "", route).observe(time.perf_counter() - started)


def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if not token:
        return HttpResponse("Not found.\n", status=404, content_type="text/plain")
    given = bearer_token(request) or ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        response = HttpResponse("Send Authorization: Bearer <METRICS_TOKEN>.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
