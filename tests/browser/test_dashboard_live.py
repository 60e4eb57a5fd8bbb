"""An operator's day in real Chromium: log in, watch a campaign move live, read a delivery's
history, and switch the interface to Brazilian Portuguese."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import expect

from campaigns.models import Campaign, Delivery, DeliveryEvent
from sense.models import Tenant
from sense.realtime import broadcast
from tests.browser.conftest import screenshot
from tests.conftest import PASSWORD
from tests.dashboard.conftest import make_campaign

pytestmark = pytest.mark.slow


def log_in(page: Any, username: str) -> None:
    page.goto("/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/campaigns/$"))


def move(delivery: Delivery, to_status: str, **fields: Any) -> None:
    """A status change as the tracking code makes it: the move, then the stats broadcast."""
    assert Delivery.move(delivery.pk, from_status=delivery.status, to_status=to_status, **fields)
    delivery.refresh_from_db()
    DeliveryEvent.objects.create(
        tenant=delivery.tenant, delivery=delivery, status=to_status, occurred_at=timezone.now(), event="messages.update"
    )
    campaign = Campaign.objects.get(pk=delivery.campaign_id)
    broadcast(
        campaign.tenant_id,
        {"type": "campaign.stats", "campaign_id": str(campaign.id), "status": campaign.status, "stats": campaign.stats},
    )


def test_an_operator_watches_counters_rise_and_opens_a_delivery(page: Any, alice: User, acme: Tenant) -> None:
    campaign = make_campaign(acme, name="Live campaign", deliveries=4, status="running")
    log_in(page, "alice")
    expect(page.locator(f'[data-campaign="{campaign.id}"]')).to_contain_text("Live campaign")
    screenshot(page, "campaigns-list")

    page.click("text=Live campaign")
    expect(page.locator("html")).to_have_attribute("data-live", "on")
    sent = page.locator('#campaign-stats [data-stat="sent"]')
    expect(sent).to_have_text("0")

    deliveries = list(Delivery.objects.filter(campaign=campaign).order_by("id"))
    for d in deliveries:
        move(d, "sent", provider_message_id=f"wamid.{d.pk}", sent_at=timezone.now())
    expect(sent).to_have_text("4")  # no reload: the WebSocket frame updated the card
    move(deliveries[0], "delivered", delivered_at=timezone.now())
    expect(page.locator('#campaign-stats [data-stat="delivered"]')).to_have_text("1")
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # never reloaded
    screenshot(page, "campaign-detail")

    page.reload()  # the delivery log itself is server-rendered
    page.click(f"text={deliveries[0].phone}")
    modal = page.locator("#modal [role=dialog]")
    expect(modal).to_be_visible()
    expect(modal.locator(".event")).to_have_count(5)  # sent, delivered, read from the fixture + 2 moves
    move(deliveries[0], "read", read_at=timezone.now())
    expect(modal.locator(".event")).to_have_count(6)  # the open modal refreshed itself
    screenshot(page, "delivery-modal")


def test_the_interface_switches_to_brazilian_portuguese(page: Any, alice: User, acme: Tenant) -> None:
    make_campaign(acme, name="Promo")
    log_in(page, "alice")
    page.select_option("#language", "pt-br")
    expect(page.locator("h1")).to_have_text("Campanhas")
    expect(page.locator(".mainnav")).to_contain_text("Contatos")
    screenshot(page, "campaigns-pt-br")
