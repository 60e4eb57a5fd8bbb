"""Liveness and readiness.

`/api/health/` touches nothing (a PaaS restarts the process when it stops answering);
`/api/health/ready/` checks every dependency and answers 503 naming the failing one.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse
from ninja import Router, Schema, Status

from sense.lib.logs import redact
from sense.lib.storage import check_storage

if TYPE_CHECKING:
    import pika

log = logging.getLogger("sense.health")

router = Router(tags=["health"])


class HealthOut(Schema):
    status: str


class CheckOut(Schema):
    ok: bool
    ms: float
    error: str | None = None
    backend: str | None = None


class ReadyOut(Schema):
    status: str
    checks: dict[str, CheckOut]


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def check_cache() -> str:
    key, value = f"ready:{secrets.token_hex(4)}", secrets.token_hex(8)
    cache.set(key, value, 10)
    got = cache.get(key)
    cache.delete(key)
    if got != value:
        raise RuntimeError("cache did not return the value it was given")
    return "redis" if settings.REDIS_URL else "local-memory"


def check_storage_ready() -> str:
    check_storage()
    return "s3" if settings.S3_BUCKET else "local"


def broker_connection() -> pika.BlockingConnection:
    """A short-lived connection to RABBITMQ_URL (one attempt, HEALTH_CHECK_TIMEOUT); the
    caller closes it. Dramatiq's own connections are per thread and would stay open."""
    import pika

    params = pika.URLParameters(settings.RABBITMQ_URL)
    params.connection_attempts = 1
    params.socket_timeout = settings.HEALTH_CHECK_TIMEOUT
    params.blocked_connection_timeout = settings.HEALTH_CHECK_TIMEOUT
    params.stack_timeout = settings.HEALTH_CHECK_TIMEOUT
    return pika.BlockingConnection(params)


def check_broker() -> str:
    if settings.TASKS_EMBEDDED:
        return "embedded"
    broker_connection().close()
    return "rabbitmq"


CHECKS: dict[str, Callable[[], str]] = {
    "database": check_database,
    "cache": check_cache,
    "storage": check_storage_ready,
    "broker": check_broker,
}


def run_checks() -> dict[str, CheckOut]:
    results: dict[str, CheckOut] = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            backend = check()
            results[name] = CheckOut(ok=True, ms=_ms(started), backend=backend)
        except Exception as exc:
            error = redact(f"{exc.__class__.__name__}: {exc}")[:300]
            log.warning("readiness: %s down: %s", name, error)
            results[name] = CheckOut(ok=False, ms=_ms(started), error=error)
    return results


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


@router.get("/health/", auth=None, response=HealthOut, summary="Liveness")
def health(request: HttpRequest) -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready/", auth=None, response={200: ReadyOut, 503: ReadyOut}, summary="Readiness")
def ready(request: HttpRequest) -> Status[ReadyOut]:
    checks = run_checks()
    ok = all(c.ok for c in checks.values())
    return Status(200 if ok else 503, ReadyOut(status="ok" if ok else "error", checks=checks))


PROBE_PNG = settings.BASE_DIR / "static" / "img" / "probe.png"


def probe_image(request: HttpRequest) -> HttpResponse:
    """A small cacheable PNG (`GET /api/health/probe.png`) for the post-deploy check's media
    proxy test: static files in DEBUG say max-age=0, which the proxy rightly never caches."""
    response = HttpResponse(PROBE_PNG.read_bytes(), content_type="image/png")
    response["Cache-Control"] = "public, max-age=3600"
    return response
