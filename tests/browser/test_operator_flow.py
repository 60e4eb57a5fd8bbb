"""The whole job from the browser, on the full stack (uvicorn, a rundramatiq worker,
PostgreSQL, Redis, RabbitMQ, S3) with the sandbox provider answering sends and its worker
posting status webhooks back to the web process: upload media by drag and drop, create and
start a campaign, watch it live, read a delivery's history, switch to Brazilian Portuguese."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from campaigns.models import Campaign, Connection, Contact, Delivery, WebhookEvent
from media.models import Asset
from sense.models import Tenant
from tests.browser.conftest import screenshot
from tests.browser.test_dashboard_live import log_in
from tests.live import Stack

pytestmark = pytest.mark.slow


def png(color: tuple[int, int, int]) -> str:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (900, 600), color)
    draw = ImageDraw.Draw(image)
    for x in range(0, 900, 30):
        draw.line((x, 0, 900 - x, 600), fill=(255, 255, 255), width=4)
    out = io.BytesIO()
    image.save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


DROP = """([files]) => {
  const transfer = new DataTransfer();
  for (const f of files) {
    const bytes = Uint8Array.from(atob(f.data), c => c.charCodeAt(0));
    transfer.items.add(new File([bytes], f.name, {type: "image/png"}));
  }
  const zone = document.getElementById("dropzone");
  for (const type of ["dragenter", "dragover", "drop"]) {
    zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
  }
}"""


def test_an_operator_does_the_whole_job_from_the_browser(
    page: Any, live_stack: Stack, alice: User, acme: Tenant
) -> None:
    connection = Connection.objects.create(
        tenant=acme,
        name="Loja principal",
        provider="sandbox",
        base_url=live_stack.base_url,  # its worker posts the webhooks to the web process
        credentials={"outcomes": "delivered=100,read=100,reply=0,delivered_after=0.3-0.8,read_after=0.3-0.8"},
        rate_per_minute=600,
    )
    for n, name in enumerate(["Ana", "Bruno", "Carla", "Davi"]):
        Contact.objects.create(tenant=acme, phone=f"+5511988880{n:03d}", name=name, tags=["vip"])
    Contact.objects.create(tenant=acme, phone="+5511988889999", name="Fora", tags=["other"])
    page.on("dialog", lambda dialog: dialog.accept())

    log_in(page, "alice")

    # Media: drop two images, see each upload's progress, then their thumbnails.
    page.click("text=Media")
    page.evaluate(
        DROP, [[{"name": "vitrine.png", "data": png((200, 40, 40))}, {"name": "promo.png", "data": png((40, 40, 200))}]]
    )
    expect(page.locator("#upload-list .upload.done")).to_have_count(2)
    assert page.eval_on_selector_all("#upload-list progress", "bars => bars.map(b => b.value)") == [100, 100]
    expect(page.locator("figure.asset .badge.media-ready")).to_have_count(2, timeout=30_000)
    thumbs = page.locator("figure.asset img")
    expect(thumbs).to_have_count(2)
    page.wait_for_function("() => [...document.querySelectorAll('figure.asset img')].every(i => i.naturalWidth > 0)")
    screenshot(page, "media-library")

    # A campaign for the "vip" tag with a picture, previewed and counted live.
    page.click("text=Campaigns")
    page.click("text=New campaign")
    page.fill("input[name=name]", "Semana VIP")
    page.select_option("select[name=connection]", str(connection.id))
    page.fill("textarea[name=message]", "Olá {{name}}, novidades na loja!")
    page.fill("input[name=tags]", "vip")
    expect(page.locator("#audience strong")).to_have_text("4")
    expect(page.locator("#preview .bubble")).to_contain_text("Olá ")
    page.select_option("select[name=asset]", label="promo.png")
    screenshot(page, "campaign-form")
    page.click("button:has-text('Create campaign')")
    expect(page.locator("h1")).to_contain_text("Semana VIP")

    # Start it and watch the counters rise with no reload while the webhooks arrive.
    page.click("#campaign-actions button:has-text('Start')")
    stats = page.locator("#campaign-stats")
    expect(stats.locator('[data-stat="total"]')).to_have_text("4")
    expect(stats.locator('[data-stat="sent"]')).to_have_text("4", timeout=30_000)
    expect(stats.locator('[data-stat="delivered"]')).to_have_text("4", timeout=30_000)
    expect(stats.locator('[data-stat="read"]')).to_have_text("4", timeout=30_000)
    expect(page.locator("[data-campaign-status]").first).to_have_attribute(
        "data-campaign-status", "finished", timeout=30_000
    )
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    expect(page.locator("#deliveries .badge.delivery-read")).to_have_count(4)  # the log moved too
    screenshot(page, "campaign-live")
    campaign = Campaign.objects.get(tenant=acme, name="Semana VIP")
    assert campaign.media == Asset.objects.get(tenant=acme, original_name="promo.png")
    deliveries = Delivery.objects.filter(campaign=campaign)
    assert sorted(deliveries.values_list("contact__name", flat=True)) == ["Ana", "Bruno", "Carla", "Davi"]
    assert len(set(deliveries.values_list("provider_message_id", flat=True))) == 4  # each sent once
    events = WebhookEvent.objects.filter(connection=connection)
    assert events.count() == 12 and set(events.values_list("status", flat=True)) == {"processed"}

    # The delivery log's modal shows one delivery's history.
    page.reload()
    ana = Delivery.objects.get(phone="+5511988880000")
    page.click(f"#deliveries a:has-text('{ana.phone}')")
    modal = page.locator("#modal [role=dialog]")
    expect(modal).to_be_visible()
    expect(modal.locator(".event .badge")).to_have_text(["Sent", "Delivered", "Read"])
    screenshot(page, "delivery-modal-history")
    page.click("#modal .close")

    # Ops page and Portuguese.
    page.click("text=Operations")
    expect(page.locator(".checks li.ok")).to_have_count(4)
    screenshot(page, "ops")
    page.select_option("#language", "pt-br")
    expect(page.locator("h1")).to_have_text("Operações")
    page.click("text=Campanhas")
    expect(page.locator("tr", has_text="Semana VIP").locator(".badge")).to_have_text("Concluída")
    screenshot(page, "campaigns-pt-br-finished")
