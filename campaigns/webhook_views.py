"""Provider webhook endpoints: verify, store the raw event, answer 200, process later.

Plain function views (no session, no CSRF: providers authenticate with the secret token
in the path plus a signature or JWT). The event row is committed before the answer, so a
200 means the event is durable; processing happens in the `process_webhook_events` actor,
or in the sweeper if the broker was unreachable.

Answers: 200 stored (also for events that carry no status, template news, inbound message
or consent change: stored as ignored, so the provider does not retry them for days); 400 not JSON or
not the provider's shape; 401/403 failed verification (nothing stored, counted in
WebhookRejection); 404 unknown token; 413 body over WEBHOOK_MAX_BODY_BYTES.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from campaigns.models import Connection, WebhookEvent, WebhookRejection
from campaigns.providers import ParsedWebhook, PayloadError, Provider, Rejected, provider_class, provider_for
from campaigns.tasks import process_webhook_events
from sense.errors import json_error
from sense.lib import bulk
from sense.lib.broker import send_nowait
from sense.lib.coalesce import Coalescer
from sense.lib.groupcommit import GroupCommit

log = logging.getLogger("sense.webhooks")


class _Refused(Exception):
    def __init__(self, response: HttpResponse) -> None:
        self.response = response


# token -> (connection or None, expiry). A provider posts many events a second to one
# token; looking the connection up once every few seconds keeps a query off every call.
# Deactivating a connection or changing its credentials takes effect within the TTL.
_connections: dict[tuple[str, str], tuple[Connection | None, float]] = {}


def _connection(token: str, provider: str) -> Connection:
    key, now = (token, provider), time.monotonic()
    cached = _connections.get(key)
    if cached is not None and cached[1] > now:
        connection = cached[0]
    else:
        connection = (
            Connection.objects.filter(webhook_token=token, provider=provider, is_active=True)
            .only("id", "tenant_id", "provider", "base_url", "credentials", "name")
            .first()
        )
        if len(_connections) > 10_000:  # unknown tokens must not grow it without bound
            _connections.clear()
        _connections[key] = (connection, now + settings.WEBHOOK_CONNECTION_CACHE_SECONDS)
    if connection is None:
        raise _Refused(json_error("Unknown webhook.", code="not_found", status=404))
    return connection


def _body(request: HttpRequest) -> bytes:
    """The raw body, refusing more than the limit before reading it when the length is
    announced, and after reading at most limit + 1 bytes when it is not."""
    limit = settings.WEBHOOK_MAX_BODY_BYTES
    try:
        announced = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise _Refused(json_error("Bad Content-Length.", code="invalid", status=400)) from None
    # Only when refusing: building a response costs a webhook a few percent of its CPU.
    if announced > limit or len(body := request.read(limit + 1)) > limit:
        raise _Refused(json_error(f"Body over {limit} bytes.", code="too_large", status=413))
    return body


def _reject(connection: Connection, exc: Rejected) -> HttpResponse:
    WebhookRejection.bump(connection, exc.reason)
    log.warning("[WEBHOOK] refused a call for connection %s: %s", connection.pk, exc.reason)
    message = "Missing credentials." if exc.status == 401 else "Verification failed."
    return json_error(message, code=exc.reason, status=exc.status)


def _parse(provider: Provider, body: bytes, event_hint: str = "") -> ParsedWebhook:
    try:
        return provider.parse_webhook(body, event_hint)
    except PayloadError as exc:
        raise _Refused(json_error(f"Invalid webhook body: {exc}", code="invalid", status=400)) from None


def _store(connection: Connection, parsed: ParsedWebhook, body: bytes) -> WebhookEvent:
    """Commit the raw event, then hand it to the actor. If the broker is unreachable the
    event stays pending and the sweeper processes it: the provider still gets its 200."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused(json_error("Invalid webhook body: not UTF-8.", code="invalid", status=400)) from None
    now = timezone.now()
    ignored = not parsed.actionable
    event = WebhookEvent(
        tenant_id=connection.tenant_id,
        connection_id=connection.pk,
        provider=connection.provider,
        event_type=parsed.event_type,
        body=text,
        status=WebhookEvent.Status.IGNORED if ignored else WebhookEvent.Status.PENDING,
        received_at=now,
        processed_at=now if ignored else None,
    )
    # Committed, alone or in one INSERT with the events of concurrent requests, before the
    # answer: a 200 means the raw body is durable. A thread waiting for another's INSERT must
    # not hold a pooled connection (the connection lookup above may have taken one) that the
    # writing thread may need.
    in_transaction = transaction.get_connection().in_atomic_block
    if not in_transaction:
        transaction.get_connection().close()
    _events.submit(event)
    if not ignored:
        # Committed: wake a worker now. (on_commit outside a transaction would check out a
        # pooled connection only to learn that it is in autocommit.)
        if in_transaction:
            transaction.on_commit(_enqueue)
        else:
            _enqueue()
    return event


_events: GroupCommit[WebhookEvent] = GroupCommit(
    bulk.insert, writers=settings.WEBHOOK_INSERT_WRITERS, max_rows=settings.WEBHOOK_INSERT_BATCH
)


def _wake_workers(_: set[object]) -> None:
    send_nowait(process_webhook_events)


# One wake-up message at once, then at most one per interval while events keep coming: a
# storm of webhooks costs a handful of messages, and each woken worker applies every
# pending event in batches. The last event still wakes a worker within the interval.
_wakeups = Coalescer(
    _wake_workers, interval=settings.WEBHOOK_WAKE_INTERVAL_SECONDS, name="webhook-wakeup", uses_db=False
)


def _enqueue() -> None:
    """Wake a worker for the stored event without waiting for RabbitMQ (sense.lib.broker's
    publisher thread). The row is committed: a lost or refused message only costs delay,
    because the sweeper processes stored events that nobody processed."""
    _wakeups.mark("webhooks")


def _accepted(event: WebhookEvent, parsed: ParsedWebhook) -> JsonResponse:
    log.debug(
        "[WEBHOOK] stored event %s %s (%d statuses, %d messages)",
        event.pk,
        event.event_type,
        len(parsed.statuses),
        len(parsed.messages),
    )
    return JsonResponse(
        {"status": event.status, "id": event.pk, "statuses": len(parsed.statuses), "messages": len(parsed.messages)}
    )


def _receive(request: HttpRequest, provider_name: str, token: str, event: str = "") -> HttpResponse:
    """The one path every provider's webhook takes: find the connection by its token,
    answer the provider's GET handshake if it has one, then verify, parse and store."""
    try:
        connection = _connection(token, provider_name)
        provider = provider_for(connection)
        if request.method == "GET":
            return _subscribe(request, connection, provider)
        body = _body(request)
        try:
            provider.verify(request, body)
            parsed = _parse(provider, body, event_hint=event)
            provider.verify_parsed(parsed)
        except Rejected as exc:
            return _reject(connection, exc)
        return _accepted(_store(connection, parsed, body), parsed)
    except _Refused as refused:
        return refused.response


def _subscribe(request: HttpRequest, connection: Connection, provider: Provider) -> HttpResponse:
    """A provider's verification handshake (Meta's): its answer as plain text, or 403."""
    answer = provider.verify_subscription(request)
    if answer is None:
        WebhookRejection.bump(connection, "bad_verify_token")
        log.warning("[WEBHOOK] refused a subscription check for connection %s", connection.pk)
        return HttpResponse("Verification failed.", status=403, content_type="text/plain")
    return HttpResponse(answer, content_type="text/plain")


_EVOLUTION = provider_class("evolution")
_CLOUD = provider_class("cloud")
_SANDBOX = provider_class("sandbox")


@csrf_exempt
@require_http_methods(list(_EVOLUTION.webhook_methods))
def evolution(request: HttpRequest, token: str, event: str = "") -> HttpResponse:
    """`POST /api/webhooks/evolution/<token>/[<event-slug>]` from Evolution API."""
    return _receive(request, _EVOLUTION.name, token, event)


@csrf_exempt
@require_http_methods(list(_CLOUD.webhook_methods))
def whatsapp(request: HttpRequest, token: str) -> HttpResponse:
    """`GET|POST /api/webhooks/whatsapp/<token>/` from the WhatsApp Cloud API."""
    return _receive(request, _CLOUD.name, token)


@csrf_exempt
@require_http_methods(list(_SANDBOX.webhook_methods))
def sandbox(request: HttpRequest, token: str) -> HttpResponse:
    """`POST /api/webhooks/sandbox/<token>/` from Sense's own sandbox gateway (Cloud API shapes
    and signature; campaigns/providers/sandbox.py)."""
    return _receive(request, _SANDBOX.name, token)
