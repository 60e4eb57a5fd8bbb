"""The contact page in real Chromium: the profile picture loads through Sense's proxy (never
from WhatsApp's CDN) and a reply arrives live, as the ingest worker announces it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import expect

from campaigns.models import Campaign, Connection, Contact, InboundMessage
from sense.models import Tenant
from sense.realtime import broadcast
from tests.browser.conftest import screenshot
from tests.browser.test_dashboard_live import log_in
from tests.campaigns.conversation import ago, delivery, inbound
from tests.media.files import jpeg
from tests.simulator import ProviderSimulator

pytestmark = pytest.mark.slow

PICTURE = jpeg((96, 96), colour=(20, 120, 200))


@pytest.fixture
def sim() -> Iterator[ProviderSimulator]:
    with ProviderSimulator() as simulator:
        yield simulator


def test_a_reply_arrives_live_and_the_avatar_comes_through_the_proxy(
    page: Any, alice: User, acme: Tenant, sim: ProviderSimulator
) -> None:
    connection = Connection.objects.create(
        tenant=acme,
        name="Evolution",
        provider="evolution",
        base_url=sim.base_url,
        credentials={"instance": "acme-1", "api_key": "k"},
    )
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001", name="Ana Souza")
    sim.profile_pictures["5511999990001"] = PICTURE
    campaign = Campaign.objects.create(tenant=acme, name="Black Friday", connection=connection, message="Oi")
    delivery(campaign, ana, at=ago(hours=1), status="delivered")
    inbound(ana, connection, "Primeira resposta", at=ago(minutes=30), campaign=campaign)
    avatars: list[Any] = []
    page.on("response", lambda r: avatars.append(r) if r.url.endswith(f"/contacts/{ana.pk}/avatar/") else None)
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))

    log_in(page, "alice")
    page.goto(f"/contacts/{ana.pk}/")
    expect(page.locator("html")).to_have_attribute("data-live", "on")

    avatar = page.locator("img[data-avatar-img]")
    expect(avatar).to_be_visible()
    page.wait_for_function("document.querySelector('img[data-avatar-img]').naturalWidth === 96")
    assert avatars and avatars[0].status == 200 and avatars[0].headers["x-cache"] == "MISS"
    assert not any(url.startswith(sim.base_url) for url in requested)  # the browser never saw the CDN
    assert sim.base_url not in page.content()
    assert sim.picture_downloads == ["5511999990001"]

    items = page.locator("#conversation > li.msg")
    expect(items).to_have_count(2)
    message = InboundMessage.objects.create(
        tenant=acme,
        connection=connection,
        contact=ana,
        campaign=campaign,
        provider_message_id="wamid.live.1",
        text="Chegou agora, ao vivo",
        phone=ana.phone,
        received_at=timezone.now(),
    )
    broadcast(
        acme.pk,
        {"type": "inbound.message", "contact_id": ana.pk, "campaign_id": str(campaign.pk), "id": message.pk},
    )

    fresh = page.locator(f"#msg-inbound-{message.pk}")
    expect(fresh).to_contain_text("Chegou agora, ao vivo")
    expect(items).to_have_count(3)
    expect(items.first).to_have_id(f"msg-inbound-{message.pk}")  # newest first
    expect(page.locator("[data-conversation-count]")).to_have_text("3")
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # never reloaded
    screenshot(page, "contact-live")
