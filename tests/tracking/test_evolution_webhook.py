"""POST /api/webhooks/evolution/<token>/: verification, storage and each Evolution status."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from campaigns import tracking
from campaigns.models import Campaign, Connection, Delivery, DeliveryEvent, WebhookEvent, WebhookRejection
from tests.tracking.conftest import JWT_KEY, make_connection, post_evolution, process_all, stats
from tests.webhook_payloads import (
    evolution_incoming_message,
    evolution_jwt,
    evolution_send_message,
    evolution_update,
)


@pytest.mark.parametrize(
    ("evolution_status", "expected"),
    [
        ("SERVER_ACK", "sent"),
        ("DELIVERY_ACK", "delivered"),
        ("READ", "read"),
        ("PLAYED", "read"),
        ("ERROR", "failed"),
        (3, "delivered"),  # some versions send Baileys' numeric status
        (4, "read"),
    ],
)
def test_each_evolution_status_moves_the_delivery(
    evolution_connection: Connection, campaign: Campaign, deliveries: Any, evolution_status: Any, expected: str
) -> None:
    [delivery] = deliveries(campaign, 1)

    response = post_evolution(evolution_connection, evolution_update(delivery.provider_message_id, evolution_status))
    assert response.status_code == 200
    assert response.json()["status"] == "pending"
    process_all()

    delivery.refresh_from_db()
    assert delivery.status == expected
    counters = stats(campaign)
    assert counters["total"] == 1
    assert counters["sent"] == (0 if expected == "failed" else 1)
    assert counters["delivered"] == (1 if expected in ("delivered", "read") else 0)
    assert counters["read"] == (1 if expected == "read" else 0)
    assert counters["failed"] == (1 if expected == "failed" else 0)
    [history] = DeliveryEvent.objects.filter(delivery=delivery)
    assert (history.status, history.event) == (expected, "messages.update")


def test_read_without_delivered_counts_as_delivered_too(
    evolution_connection: Connection, campaign: Campaign, deliveries: Any
) -> None:
    [delivery] = deliveries(campaign, 1)
    post_evolution(evolution_connection, evolution_update(delivery.provider_message_id, "READ"))
    process_all()

    delivery.refresh_from_db()
    assert delivery.delivered_at is not None and delivery.read_at is not None
    counters = stats(campaign)
    assert (counters["sent"], counters["delivered"], counters["read"]) == (1, 1, 1)


def test_it_accepts_data_as_a_list_and_the_by_event_url(
    evolution_connection: Connection, campaign: Campaign, deliveries: Any
) -> None:
    first, second = deliveries(campaign, 2)
    payload = evolution_update(first.provider_message_id, "DELIVERY_ACK", as_list=True, event=None)
    payload["data"].append({**payload["data"][0], "keyId": second.provider_message_id, "status": "READ"})

    response = post_evolution(evolution_connection, payload, suffix="messages-update")
    assert response.status_code == 200, response.content
    assert response.json()["statuses"] == 2
    process_all()

    assert WebhookEvent.objects.get().event_type == "messages.update"
    assert [d.status for d in Delivery.objects.order_by("pk")] == ["delivered", "read"]


def test_send_message_before_the_id_is_recorded_is_kept_in_history(
    evolution_connection: Connection, campaign: Campaign, deliveries: Any
) -> None:
    [delivery] = deliveries(campaign, 1)
    post_evolution(evolution_connection, evolution_send_message(delivery.provider_message_id), suffix="send-message")
    process_all()

    delivery.refresh_from_db()
    assert delivery.status == "sent"  # PENDING moves nothing
    assert list(DeliveryEvent.objects.values_list("status", "event")) == [("pending", "send.message")]


def test_receipts_for_incoming_messages_and_deleted_status_are_ignored(
    evolution_connection: Connection, campaign: Campaign, deliveries: Any
) -> None:
    [delivery] = deliveries(campaign, 1)
    receipt = evolution_update(delivery.provider_message_id, "READ", from_me=False)
    assert post_evolution(evolution_connection, receipt).json()["status"] == "ignored"
    assert (
        post_evolution(evolution_connection, evolution_update(delivery.provider_message_id, "DELETED")).status_code
        == 200
    )
    process_all()

    delivery.refresh_from_db()
    assert delivery.status == "sent"


def test_non_status_events_are_stored_as_ignored(evolution_connection: Connection) -> None:
    payload = {
        "event": "contacts.update",
        "instance": "acme-main",
        "data": [{"remoteJid": "5511999990000@s.whatsapp.net", "pushName": "Maria", "profilePicUrl": None}],
    }
    response = post_evolution(evolution_connection, payload)

    assert response.status_code == 200
    event = WebhookEvent.objects.get()
    assert (event.status, event.event_type, event.processed_at is not None) == ("ignored", "contacts.update", True)
    assert json.loads(event.body)["data"][0]["pushName"] == "Maria"


def test_incoming_messages_are_stored_for_processing(evolution_connection: Connection) -> None:
    response = post_evolution(evolution_connection, evolution_incoming_message())

    assert response.status_code == 200
    assert response.json()["messages"] == 1
    event = WebhookEvent.objects.get()
    assert (event.status, event.event_type) == ("pending", "messages.upsert")


def test_duplicates_change_nothing(evolution_connection: Connection, campaign: Campaign, deliveries: Any) -> None:
    [delivery] = deliveries(campaign, 1)
    for _ in range(3):
        post_evolution(evolution_connection, evolution_update(delivery.provider_message_id, "DELIVERY_ACK"))
    process_all()
    for event_id in WebhookEvent.objects.values_list("pk", flat=True):  # processing again is a no-op
        assert tracking.process_event(event_id).status == "skipped"

    delivery.refresh_from_db()
    assert delivery.status == "delivered"
    assert stats(campaign)["delivered"] == 1 and stats(campaign)["sent"] == 1
    assert DeliveryEvent.objects.filter(delivery=delivery).count() == 3  # every event is in the history


def test_unknown_token_is_404_and_stores_nothing(evolution_connection: Connection) -> None:
    response = Client().post("/api/webhooks/evolution/not-a-token/", "{}", content_type="application/json")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert not WebhookEvent.objects.exists()


def test_an_inactive_connection_or_another_providers_token_is_404(
    evolution_connection: Connection, cloud_connection: Connection, settings: Any
) -> None:
    settings.WEBHOOK_CONNECTION_CACHE_SECONDS = 0
    assert post_evolution(cloud_connection, evolution_update("x", "READ")).status_code == 404
    assert post_evolution(evolution_connection, evolution_update("x", "READ")).status_code == 200
    evolution_connection.is_active = False
    evolution_connection.save()
    assert post_evolution(evolution_connection, evolution_update("x", "READ")).status_code == 404


def test_a_deactivated_connection_is_refused_once_its_cached_lookup_expires(
    evolution_connection: Connection, settings: Any
) -> None:
    from campaigns import webhook_views

    settings.WEBHOOK_CONNECTION_CACHE_SECONDS = 60
    assert post_evolution(evolution_connection, evolution_update("x", "READ")).status_code == 200
    Connection.objects.filter(pk=evolution_connection.pk).update(is_active=False)
    assert post_evolution(evolution_connection, evolution_update("x", "READ")).status_code == 200  # cached for a while
    for key, (connection, _) in list(webhook_views._connections.items()):
        webhook_views._connections[key] = (connection, 0.0)  # the TTL has passed
    assert post_evolution(evolution_connection, evolution_update("x", "READ")).status_code == 404


def test_another_instance_is_refused_and_counted(evolution_connection: Connection) -> None:
    response = post_evolution(evolution_connection, evolution_update("3EB0X", "READ", instance="someone-else"))

    assert response.status_code == 403
    assert not WebhookEvent.objects.exists()
    assert WebhookRejection.objects.get().reason == "wrong_instance"
    assert WebhookRejection.total_since(tenant_id=evolution_connection.tenant_id) == 1


class TestJwt:
    @pytest.fixture
    def connection(self, acme: Any) -> Connection:
        return make_connection(acme, Connection.Provider.EVOLUTION, jwt_key=JWT_KEY)

    def test_a_valid_jwt_is_accepted(self, connection: Connection) -> None:
        token = evolution_jwt(JWT_KEY)
        response = post_evolution(connection, evolution_update("3EB0X", "READ"), Authorization=f"Bearer {token}")
        assert response.status_code == 200
        assert WebhookEvent.objects.count() == 1

    # Tokens are made when the test runs, not when it is collected: a long suite outlives a
    # token's 10 minutes, and an expired token answers expired_jwt, not the reason under test.
    @pytest.mark.parametrize(
        ("make_authorization", "status", "reason"),
        [
            (lambda: "", 401, "missing_jwt"),
            (lambda: "Bearer " + evolution_jwt("another-key-0123456789abcdef0123456789"), 403, "invalid_jwt"),
            (lambda: "Bearer " + evolution_jwt(JWT_KEY, expires_in=-3600), 403, "expired_jwt"),
            (lambda: "Bearer " + evolution_jwt(JWT_KEY, app="other"), 403, "invalid_jwt"),
            (lambda: "Bearer " + evolution_jwt(JWT_KEY, action="send"), 403, "invalid_jwt"),
            (lambda: "Bearer not.a.jwt", 403, "invalid_jwt"),
        ],
    )
    def test_a_missing_or_bad_jwt_is_refused_and_counted(
        self, connection: Connection, make_authorization: Callable[[], str], status: int, reason: str
    ) -> None:
        authorization = make_authorization()
        headers = {"Authorization": authorization} if authorization else {}
        response = post_evolution(connection, evolution_update("3EB0X", "READ"), **headers)

        assert response.status_code == status
        assert response.json()["code"] == reason
        assert not WebhookEvent.objects.exists()
        assert WebhookRejection.objects.get(reason=reason).count == 1

    def test_rejections_are_counted_per_day_and_reason(self, connection: Connection) -> None:
        for _ in range(3):
            post_evolution(connection, evolution_update("3EB0X", "READ"))
        assert WebhookRejection.objects.get(reason="missing_jwt").count == 3
        assert WebhookRejection.total_since() == 3


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"instance": "acme-main", "data": {}}).encode(),  # no event
        json.dumps({"event": "messages.update", "instance": "acme-main"}).encode(),  # no data
        json.dumps({"event": "messages.update", "data": "text"}).encode(),
        json.dumps({"event": "messages.update", "data": {"status": "READ"}}).encode(),  # no message id
        json.dumps({"event": "messages.update", "data": [1, 2]}).encode(),
        b"\xff\xfe{}",
    ],
)
def test_malformed_bodies_are_400_and_not_stored(evolution_connection: Connection, body: bytes) -> None:
    response = post_evolution(evolution_connection, body)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert not WebhookEvent.objects.exists()


def test_bodies_over_the_limit_are_413(evolution_connection: Connection) -> None:
    payload = evolution_incoming_message()
    payload["data"]["message"]["conversation"] = "x" * (1024 * 1024)

    response = post_evolution(evolution_connection, payload)

    assert response.status_code == 413
    assert not WebhookEvent.objects.exists()


def test_an_unannounced_body_over_the_limit_is_413(evolution_connection: Connection) -> None:
    """Under ASGI a chunked body has no Content-Length: the bytes read are checked too."""
    import io

    from django.core.handlers.asgi import ASGIRequest

    from campaigns import webhook_views

    payload = evolution_incoming_message()
    payload["data"]["message"]["conversation"] = "x" * (1024 * 1024)
    scope = {
        "type": "http",
        "method": "POST",
        "path": f"/api/webhooks/evolution/{evolution_connection.webhook_token}/",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
    }
    request = ASGIRequest(scope, io.BytesIO(json.dumps(payload).encode()))

    response = webhook_views.evolution(request, token=evolution_connection.webhook_token)

    assert response.status_code == 413
    assert not WebhookEvent.objects.exists()


def test_get_is_not_allowed(evolution_connection: Connection) -> None:
    assert Client().get(f"/api/webhooks/evolution/{evolution_connection.webhook_token}/").status_code == 405
