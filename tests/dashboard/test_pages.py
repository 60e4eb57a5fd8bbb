from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from campaigns.models import Campaign, Delivery, DeliveryEvent
from media.models import Asset
from sense.models import Membership, Tenant
from tests.conftest import PASSWORD
from tests.dashboard.conftest import login

HX = {"HX-Request": "true"}


def test_anonymous_visitors_are_sent_to_the_login_page(db: None) -> None:
    response = Client().get("/campaigns/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=/campaigns/")


def test_logging_in_leads_to_the_campaigns(alice: User) -> None:
    client = Client()
    response = client.post("/login/", {"username": "alice", "password": PASSWORD}, follow=True)
    assert response.redirect_chain[-1][0] == "/campaigns/"
    assert b"Campaigns" in response.content or b"Campanhas" in response.content


def test_a_wrong_password_shows_a_form_error(alice: User) -> None:
    response = Client().post("/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert b'class="form-error"' in response.content


def test_the_campaign_list_shows_only_the_tenants_campaigns(
    alice_client: Client, acme_campaign: Campaign, globex_campaign: Campaign
) -> None:
    page = alice_client.get("/campaigns/").content.decode()
    assert "Black Friday" in page
    assert "Globex launch" not in page


def test_the_campaign_list_filters_by_status_and_name(
    alice_client: Client, acme_campaign: Campaign, acme: Tenant
) -> None:
    Campaign.objects.create(
        tenant=acme, name="Christmas", connection=acme_campaign.connection, message="x", status="finished"
    )
    assert "Christmas" not in alice_client.get("/campaigns/?status=draft").content.decode()
    assert "Christmas" in alice_client.get("/campaigns/?status=finished").content.decode()
    assert "Black Friday" not in alice_client.get("/campaigns/?q=christ").content.decode()


def test_an_htmx_request_gets_only_the_table_fragment(alice_client: Client, acme_campaign: Campaign) -> None:
    page = alice_client.get("/campaigns/", headers=HX).content.decode()
    assert page.lstrip().startswith('<div id="campaign-table">')
    assert "<html" not in page


@pytest.mark.parametrize(
    "path",
    [
        "/campaigns/{c.id}/",
        "/campaigns/{c.id}/stats/",
        "/campaigns/{c.id}/actions/",
        "/campaigns/{c.id}/deliveries/",
        "/deliveries/{d.id}/",
    ],
)
def test_another_tenants_campaign_pages_are_404(charlie_client: Client, acme_campaign: Campaign, path: str) -> None:
    delivery = Delivery.objects.filter(campaign=acme_campaign).first()
    assert charlie_client.get(path.format(c=acme_campaign, d=delivery)).status_code == 404
    assert charlie_client.get(path.format(c=acme_campaign, d=delivery), headers=HX).status_code == 404


def test_another_tenants_campaign_cannot_be_acted_on(charlie_client: Client, acme_campaign: Campaign) -> None:
    assert charlie_client.post(f"/campaigns/{acme_campaign.id}/start/").status_code == 404
    acme_campaign.refresh_from_db()
    assert acme_campaign.status == "draft"


def test_the_campaign_page_shows_stats_funnel_timeline_and_the_delivery_log(
    alice_client: Client, acme_campaign: Campaign
) -> None:
    page = alice_client.get(f"/campaigns/{acme_campaign.id}/").content.decode()
    assert 'data-stat="total">3<' in page
    assert "funnel" in page
    assert "<polyline" in page  # the timeline has the three events
    assert page.count('hx-target="#modal"') == 3  # one modal link per delivery row


def test_the_delivery_log_filters_by_status_and_searches_by_phone(
    alice_client: Client, acme_campaign: Campaign
) -> None:
    Delivery.objects.filter(phone="+5511999990001").update(status="failed", error_message="number not on WhatsApp")
    base = f"/campaigns/{acme_campaign.id}/deliveries/"
    failed = alice_client.get(base + "?status=failed", headers=HX).content.decode()
    assert "+5511999990001" in failed and "+5511999990000" not in failed
    assert "number not on WhatsApp" in failed
    search = alice_client.get(base + "?phone=9990002", headers=HX).content.decode()
    assert "+5511999990002" in search and "+5511999990001" not in search


def test_the_delivery_log_is_paginated(alice_client: Client, acme: Tenant) -> None:
    from tests.dashboard.conftest import make_campaign

    campaign = make_campaign(acme, name="Big", deliveries=60)
    first = alice_client.get(f"/campaigns/{campaign.id}/deliveries/", headers=HX).content.decode()
    second = alice_client.get(f"/campaigns/{campaign.id}/deliveries/?page=2", headers=HX).content.decode()
    assert first.count('class="clickable"') == 50
    assert second.count('class="clickable"') == 10


def test_the_delivery_modal_lists_the_events_in_order_with_errors(
    alice_client: Client, acme_campaign: Campaign
) -> None:
    delivery = Delivery.objects.filter(campaign=acme_campaign).order_by("id").first()
    assert delivery is not None
    DeliveryEvent.objects.create(
        tenant=delivery.tenant,
        delivery=delivery,
        status="failed",
        occurred_at=timezone.now(),
        event="messages.update",
        error_code="131026",
        error_message="Message undeliverable",
    )
    modal = alice_client.get(f"/deliveries/{delivery.id}/", headers=HX).content.decode()
    assert 'role="dialog"' in modal and "<html" not in modal
    order = [modal.index(f'event delivery-{s}"') for s in ("sent", "delivered", "read", "failed")]
    assert order == sorted(order)
    assert "131026" in modal and "Message undeliverable" in modal
    # Without JavaScript the same URL is a full page.
    assert b"<html" in alice_client.get(f"/deliveries/{delivery.id}/").content


def test_a_member_of_several_tenants_can_switch(bob: User, globex: Tenant, acme_campaign: Campaign) -> None:
    from tests.dashboard.conftest import make_campaign

    make_campaign(globex, name="Globex launch")
    Membership.objects.create(user=bob, tenant=globex, role="operator")
    client = login("bob")
    assert "Black Friday" in client.get("/campaigns/").content.decode()
    response = client.post("/tenant/switch/", {"tenant": str(globex.id), "next": "/campaigns/"})
    assert response.status_code == 302 and response["Location"] == "/campaigns/"
    page = client.get("/campaigns/").content.decode()
    assert "Globex launch" in page and "Black Friday" not in page


def test_switching_to_a_tenant_one_is_not_in_is_404(alice_client: Client, globex: Tenant) -> None:
    assert alice_client.post("/tenant/switch/", {"tenant": str(globex.id)}).status_code == 404
    assert alice_client.post("/tenant/switch/", {"tenant": "nope"}).status_code == 404


def test_switching_never_redirects_off_site(bob: User, globex: Tenant) -> None:
    Membership.objects.create(user=bob, tenant=globex, role="operator")
    client = login("bob")
    response = client.post("/tenant/switch/", {"tenant": str(globex.id), "next": "https://evil.example/"})
    assert response["Location"] == "/"


def test_a_user_without_a_tenant_gets_a_clear_page(db: None) -> None:
    User.objects.create_user("dave", password=PASSWORD)
    client = Client()
    client.login(username="dave", password=PASSWORD)
    response = client.get("/campaigns/")
    assert response.status_code == 403
    assert "não participa de nenhum cliente" in response.content.decode()  # pt-BR is the default language


def test_the_contacts_page_searches_and_filters_by_tag(alice_client: Client, acme_campaign: Campaign) -> None:
    from campaigns.models import Contact

    Contact.objects.filter(phone="+5511999990001").update(tags=["vip"])
    page = alice_client.get("/contacts/?tag=vip", headers=HX).content.decode()
    assert "+5511999990001" in page and "+5511999990000" not in page
    assert "+5511999990002" in alice_client.get("/contacts/?q=Contact 2", headers=HX).content.decode()


def test_the_media_library_shows_only_the_tenants_assets(
    alice_client: Client, charlie_client: Client, alice: User, acme: Tenant
) -> None:
    asset = Asset.objects.create(
        tenant=acme,
        uploaded_by=alice,
        original_name="promo.jpg",
        key=f"tenants/{acme.id}/media/x/promo.jpg",
        file_type="image",
        mime_type="image/jpeg",
        size=10,
        sha256="0" * 64,
        status="failed",
        failure_reason="cannot identify image file",
    )
    page = alice_client.get("/media/").content.decode()
    assert "promo.jpg" in page and "cannot identify image file" in page
    assert "promo.jpg" not in charlie_client.get("/media/").content.decode()
    for path in (f"/media/{asset.id}/card/", f"/media/{asset.id}/preview/"):
        assert charlie_client.get(path).status_code == 404
    assert charlie_client.post(f"/media/{asset.id}/delete/").status_code == 404
    assert Asset.objects.filter(pk=asset.pk).exists()


def test_the_ops_page_shows_readiness_and_queues(alice_client: Client) -> None:
    page = alice_client.get("/ops/").content.decode()
    for name in ("database", "cache", "storage", "broker"):
        assert name in page
    assert page.count('class="badge ok">✓') >= 4


def test_the_ops_page_shows_the_targets_green_or_red(alice_client: Client, acme: Tenant) -> None:
    from media import counters as metrics

    for _ in range(10):
        metrics.record(acme.id, metrics.UPLOAD_ATTEMPTED)
    for _ in range(9):
        metrics.record(acme.id, metrics.UPLOAD_SUCCEEDED)  # 90%: below the 95% target
    metrics.record(acme.id, metrics.UPLOAD_FAILED + "too_large")
    for size in (8_000, 9_000):
        metrics.record(acme.id, metrics.THUMBNAIL_BYTES, size)  # ~8 KB: under 50 KB
    metrics.flush()
    page = alice_client.get("/ops/", headers={"Accept-Language": "en"}).content.decode()
    upload_row = page[page.index("Upload success") :][:400]
    thumb_row = page[page.index("Average thumbnail") :][:400]
    assert "90%" in upload_row and "badge bad" in upload_row
    assert "8.3 KB" in thumb_row and "badge ok" in thumb_row
    # Brazilian Portuguese: translated labels and a decimal comma.
    page_pt = alice_client.get("/ops/", headers={"Accept-Language": "pt-br"}).content.decode()
    assert "8,3 KB" in page_pt[page_pt.index("Miniatura média") :][:400]
    assert page.count('<svg class="spark"') >= 5  # 7-day charts
