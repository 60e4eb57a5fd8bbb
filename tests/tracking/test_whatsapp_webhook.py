"""GET|POST /api/webhooks/whatsapp/<token>/: Meta's handshake, signatures, batches of statuses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from campaigns.models import Campaign, Connection, Delivery, DeliveryEvent, WebhookEvent, WebhookRejection
from tests.tracking.conftest import APP_SECRET, VERIFY_TOKEN, make_campaign, make_connection, process_all, stats
from tests.webhook_payloads import cloud_incoming_message, cloud_notification, cloud_status, dumps, sign


def url(connection: Connection) -> str:
    return f"/api/webhooks/whatsapp/{connection.webhook_token}/"


def post(connection: Connection, payload: Any, *, secret: str | None = APP_SECRET, signature: str | None = None) -> Any:
    body = payload if isinstance(payload, bytes) else dumps(payload)
    headers = {}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    elif secret is not None:
        headers["X-Hub-Signature-256"] = sign(secret, body)
    return Client().post(url(connection), body, content_type="application/json", headers=headers)


class TestVerificationHandshake:
    def test_it_echoes_the_challenge_for_the_right_verify_token(self, cloud_connection: Connection) -> None:
        query = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"}
        response = Client().get(url(cloud_connection), query)

        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain")
        assert response.content == b"1158201444"

    @pytest.mark.parametrize(
        "query",
        [
            {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
            {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
            {"hub.challenge": "1"},
        ],
    )
    def test_it_refuses_a_wrong_token_or_mode(self, cloud_connection: Connection, query: dict[str, str]) -> None:
        response = Client().get(url(cloud_connection), query)

        assert response.status_code == 403
        assert b"1" not in response.content

    def test_a_connection_without_verify_token_refuses_every_check(self, acme: Any) -> None:
        connection = make_connection(acme, Connection.Provider.CLOUD, verify_token="")
        query = {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"}
        assert Client().get(url(connection), query).status_code == 403

    def test_an_unknown_token_is_404(self, cloud_connection: Connection) -> None:
        assert Client().get("/api/webhooks/whatsapp/nope/", {"hub.mode": "subscribe"}).status_code == 404


@pytest.mark.parametrize("status", ["sent", "delivered", "read", "failed"])
def test_each_cloud_status_moves_the_delivery(
    cloud_connection: Connection, cloud_campaign: Campaign, deliveries: Any, status: str
) -> None:
    [delivery] = deliveries(cloud_campaign, 1)
    error = (131026, "Message undeliverable") if status == "failed" else None
    item = cloud_status(delivery.provider_message_id, status, timestamp=1_700_000_000, error=error)

    response = post(cloud_connection, cloud_notification([item]))
    assert response.status_code == 200, response.content
    process_all()

    delivery.refresh_from_db()
    assert delivery.status == status
    stamp = getattr(delivery, f"{status}_at")
    assert stamp is not None and int(stamp.timestamp()) == 1_700_000_000  # the provider's time
    if status == "failed":
        assert delivery.error_code == "131026"
        assert "Message undeliverable" in delivery.error_message
        assert stats(cloud_campaign)["failed"] == 1 and stats(cloud_campaign)["sent"] == 0
        [history] = DeliveryEvent.objects.filter(delivery=delivery)
        assert (history.error_code, history.event) == ("131026", "statuses")


def test_a_batch_with_many_entries_and_statuses_is_applied_whole(
    cloud_connection: Connection, cloud_campaign: Campaign, deliveries: Any
) -> None:
    rows = deliveries(cloud_campaign, 30)
    # Three entries, out of order inside each: the final state only depends on the evidence.
    entries: list[list[dict[str, Any]]] = [[], [], []]
    for n, d in enumerate(rows):
        target = ["delivered", "read", "failed"][n % 3]
        entries[n % 3].append(cloud_status(d.provider_message_id, target, timestamp=1_700_000_100))
        entries[(n + 1) % 3].append(cloud_status(d.provider_message_id, "sent", timestamp=1_700_000_000))

    response = post(cloud_connection, cloud_notification(*entries))
    assert response.status_code == 200
    assert response.json()["statuses"] == 60
    process_all()

    assert [d.status for d in Delivery.objects.order_by("pk")] == ["delivered", "read", "failed"] * 10
    assert stats(cloud_campaign) == {
        "total": 30,
        "pending": 0,
        "sent": 20,
        "delivered": 20,
        "read": 10,
        "failed": 10,
        "cancelled": 0,
        "unknown": 0,
        "replied": 0,
    }
    assert DeliveryEvent.objects.count() == 60


def test_a_batch_can_span_campaigns(cloud_connection: Connection, deliveries: Any) -> None:
    first, second = make_campaign(cloud_connection, "A"), make_campaign(cloud_connection, "B")
    [a], [b] = deliveries(first, 1), deliveries(second, 1)
    post(
        cloud_connection,
        cloud_notification([cloud_status(a.provider_message_id, "read"), cloud_status(b.provider_message_id, "read")]),
    )
    process_all()
    assert stats(first)["read"] == 1 and stats(second)["read"] == 1


def test_another_tenants_message_ids_are_not_touched(
    cloud_connection: Connection, globex: Any, deliveries: Any
) -> None:
    other = make_campaign(make_connection(globex, Connection.Provider.CLOUD))
    [theirs] = deliveries(other, 1)

    response = post(cloud_connection, cloud_notification([cloud_status(theirs.provider_message_id, "read")]))
    assert response.status_code == 200  # accepted and stored: the lookup is what refuses it
    process_all()

    assert WebhookEvent.objects.get().status == "processed"
    theirs.refresh_from_db()
    assert theirs.status == "sent"


def test_incoming_messages_are_stored_for_processing(cloud_connection: Connection) -> None:
    response = post(cloud_connection, cloud_incoming_message())

    assert response.status_code == 200
    event = WebhookEvent.objects.get()
    assert (event.status, event.event_type) == ("pending", "messages")


class TestSignature:
    def test_a_missing_signature_is_401(self, cloud_connection: Connection) -> None:
        response = post(cloud_connection, cloud_notification([]), secret=None)

        assert response.status_code == 401
        assert not WebhookEvent.objects.exists()
        assert WebhookRejection.objects.get().reason == "missing_signature"

    @pytest.mark.parametrize(
        "signature",
        ["sha256=" + "0" * 64, "sha256=", "md5=abc", sign("another-secret", b"{}")],
    )
    def test_a_wrong_signature_is_403(self, cloud_connection: Connection, signature: str) -> None:
        response = post(cloud_connection, cloud_notification([]), signature=signature)

        assert response.status_code == 403
        assert response.json()["code"] == "bad_signature"
        assert not WebhookEvent.objects.exists()
        assert WebhookRejection.total_since(tenant_id=cloud_connection.tenant_id) == 1

    def test_the_signature_is_checked_before_the_body_is_parsed(self, cloud_connection: Connection) -> None:
        # A garbage body with a bad signature is a 403, not a 400: nothing is parsed first.
        assert post(cloud_connection, b"not json", secret="wrong").status_code == 403

    def test_a_signed_body_changed_in_transit_is_refused(self, cloud_connection: Connection) -> None:
        body = dumps(cloud_notification([cloud_status("wamid.1", "read")]))
        tampered = body.replace(b"read", b"sent")
        assert post(cloud_connection, tampered, signature=sign(APP_SECRET, body)).status_code == 403

    def test_a_connection_without_app_secret_refuses_everything(self, acme: Any) -> None:
        connection = make_connection(acme, Connection.Provider.CLOUD, app_secret="")
        assert post(connection, cloud_notification([]), secret="").status_code == 403


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        json.dumps({"object": "page", "entry": []}).encode(),
        json.dumps({"object": "whatsapp_business_account"}).encode(),
        json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1"}]}).encode(),
        json.dumps({"object": "whatsapp_business_account", "entry": [{"changes": [{"value": []}]}]}).encode(),
        dumps(cloud_notification([{"status": "read"}])),
        dumps(cloud_notification(["wamid.1"])),  # type: ignore[list-item]
    ],
)
def test_malformed_bodies_are_400(cloud_connection: Connection, payload: bytes) -> None:
    response = post(cloud_connection, payload)

    assert response.status_code == 400
    assert not WebhookEvent.objects.exists()


def test_bodies_over_the_limit_are_413_before_the_signature_is_computed(cloud_connection: Connection) -> None:
    body = b'{"object": "whatsapp_business_account", "entry": [], "pad": "' + b"x" * (1024 * 1024) + b'"}'
    assert post(cloud_connection, body).status_code == 413
