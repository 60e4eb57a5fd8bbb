"""The composer page's safe-sending settings: saved as the API saves them, refused with form errors."""

from __future__ import annotations

from typing import Any

from django.test import Client

from campaigns.models import Campaign, Connection
from sense.models import Tenant


def _number(tenant: Tenant, i: int, provider: str = Connection.Provider.EVOLUTION) -> Connection:
    return Connection.objects.create(
        tenant=tenant,
        name=f"Number {i}",
        provider=provider,
        base_url="http://127.0.0.1:9",
        credentials={"instance": f"n{i}", "api_key": "k"},
    )


def test_the_composer_saves_every_sending_setting(alice_client: Client, acme: Tenant) -> None:
    one, two = _number(acme, 1), _number(acme, 2)
    response = alice_client.post(
        "/campaigns/new/",
        {
            "name": "Engine",
            "connection": str(one.pk),
            "more_connections": [str(two.pk)],
            "message": "Hi {{name}}",
            "rotation": "least_used",
            "interval_min_seconds": "25",
            "interval_max_seconds": "50",
            "pause_every": "20",
            "pause_seconds": "300",
            "typing_seconds": "3",
            "window_days": ["1", "2", "3", "4", "5"],
            "window_start": "09:00",
            "window_end": "18:00",
            "skip_dates": "2026-12-25, 2027-01-01",
            "variants": "Hello {{name}}\n---\nHey {{name}}",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    campaign = Campaign.objects.get()
    assert campaign.all_connection_ids() == [one.pk, two.pk]
    assert (campaign.rotation, campaign.interval_min_seconds, campaign.interval_max_seconds) == ("least_used", 25, 50)
    assert (campaign.pause_every, campaign.pause_seconds, campaign.typing_seconds) == (20, 300, 3)
    assert campaign.send_window == {"days": [1, 2, 3, 4, 5], "start": "09:00", "end": "18:00"}
    assert campaign.skip_dates == ["2026-12-25", "2027-01-01"]
    assert campaign.variants == ["Hello {{name}}", "Hey {{name}}"]


def test_the_composer_shows_bad_settings_as_form_errors(alice_client: Client, acme: Tenant) -> None:
    one = _number(acme, 1)
    base: dict[str, Any] = {"name": "x", "connection": str(one.pk), "message": "hi"}
    response = alice_client.post("/campaigns/new/", {**base, "interval_min_seconds": "9", "interval_max_seconds": "3"})
    assert response.status_code == 200
    assert "interval_min_seconds must not exceed" in response.content.decode()
    response = alice_client.post("/campaigns/new/", {**base, "window_days": ["1"], "window_start": "10:00"})
    assert "Give both times" in response.content.decode()
    response = alice_client.post("/campaigns/new/", {**base, "skip_dates": "tomorrow"})
    assert "is not a date" in response.content.decode()
    assert not Campaign.objects.exists()


def test_the_campaign_page_shows_why_it_waits_its_variants_and_each_deliverys_connection(
    alice_client: Client, acme: Tenant
) -> None:
    from django.utils import timezone

    from campaigns import services
    from campaigns.models import Contact, Delivery

    one = _number(acme, 1)
    Contact.objects.bulk_create([Contact(tenant=acme, phone=f"+5511910000{i:03d}", name=f"C{i}") for i in range(4)])
    campaign = services.campaign_create(
        tenant=acme, name="v", message="A {{name}}", connection=one, variants=["B {{name}}"]
    )
    services.campaign_start(campaign=campaign)
    services.campaign_prepare(campaign_id=campaign.pk)
    first = Delivery.objects.filter(campaign=campaign).order_by("pk").first()
    assert first is not None
    Delivery.objects.filter(pk=first.pk).update(status="sent", connection=one, sent_at=timezone.now())
    Campaign.objects.filter(pk=campaign.pk).update(waiting_reason="window", next_send_at=timezone.now())

    page = alice_client.get(f"/campaigns/{campaign.pk}/").content.decode()
    assert 'data-waiting="window"' in page and "Outside its send window" in page
    assert 'data-variant="0"' in page and 'data-variant="1"' in page
    assert "Number 1" in page


def test_the_ops_page_shows_each_connections_state_and_sends_today(alice_client: Client, acme: Tenant) -> None:
    from django.utils import timezone

    one = _number(acme, 1)
    Connection.objects.filter(pk=one.pk).update(state="close", state_reason="401", state_since=timezone.now())
    page = alice_client.get("/ops/").content.decode()
    assert "Number 1: closed since" in page and "(401)" in page
