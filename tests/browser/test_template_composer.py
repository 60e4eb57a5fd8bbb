"""A template campaign composed in the browser on the full stack: the Cloud connection's
approved template, one mapping field per parameter, the live preview, and a worker sending
the template to the Graph API simulator."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from campaigns import services
from campaigns.models import Campaign, Connection, Contact
from sense.models import Tenant
from tests.browser.conftest import htmx_settled, screenshot
from tests.browser.test_dashboard_live import log_in
from tests.campaigns.template_fixtures import ORDER_UPDATE, WABA
from tests.helpers import wait_for
from tests.live import Stack
from tests.simulator import ProviderSimulator

pytestmark = pytest.mark.slow


def test_an_operator_composes_and_sends_a_template_campaign(
    page: Any, live_stack: Stack, alice: User, acme: Tenant
) -> None:
    with ProviderSimulator() as sim:
        sim.add_template(WABA, "order_update", components=ORDER_UPDATE, category="UTILITY")
        connection = Connection.objects.create(
            tenant=acme,
            name="Cloud number",
            provider="cloud",
            base_url=f"{sim.base_url}/v21.0",
            credentials={
                "phone_number_id": "1",
                "access_token": "t",
                "app_secret": "s",
                "verify_token": "v",
                "waba_id": WABA,
            },
            rate_per_minute=0,
        )
        services.templates_sync(connection=connection)
        for n, name in enumerate(["Ana", "Bruno"]):
            Contact.objects.create(tenant=acme, phone=f"+5511988880{n:03d}", name=name, attributes={"order": f"A-{n}"})

        log_in(page, "alice")
        page.goto("/campaigns/new/")
        page.fill("input[name=name]", "Pedidos")
        page.select_option("select[name=connection]", str(connection.id))
        expect(page.locator("#template-section")).to_contain_text("24 hours")
        htmx_settled(page)  # the section is swapped twice: the select's load, then its change
        page.select_option("select[name=template]", label="order_update (en_US, utility)")
        for key in ("header.1", "2", "button.0"):
            page.fill(f"input[name='param:{key}']", "{{order}}")
        page.fill("input[name='param:1']", "{{name}}")
        preview = page.locator("#preview .template-preview")
        expect(preview).to_contain_text("Hi Ana, your order A-0 ships today.")
        expect(preview).to_contain_text("Order A-0")
        expect(preview).to_contain_text("Track")
        screenshot(page, "template-composer")
        page.click("button:has-text('Create campaign')")
        expect(page.locator("h1")).to_contain_text("Pedidos")

        page.on("dialog", lambda dialog: dialog.accept())
        page.click("#campaign-actions button:has-text('Start')")
        campaign = Campaign.objects.get(tenant=acme, name="Pedidos")
        wait_for(lambda: len(sim.sends) == 2, timeout=30, what="two template sends")
        assert {r["text"] for r in sim.sends} == {
            "Hi Ana, your order A-0 ships today.",
            "Hi Bruno, your order A-1 ships today.",
        }
        assert all(r["template"]["name"] == "order_update" for r in sim.sends)
        campaign.refresh_from_db()
        assert campaign.template is not None and campaign.message == ""
