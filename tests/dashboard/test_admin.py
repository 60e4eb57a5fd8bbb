"""The admin: list pages without N+1 queries, and actions that call the services."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection as db_connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from campaigns.models import Campaign, Delivery, WebhookEvent
from media.models import Asset
from sense.models import ApiToken, Membership, Tenant
from tests.dashboard.conftest import make_campaign


def add_rows(tenant: Tenant, name: str, deliveries: int) -> None:
    """One more row on every admin list page below: a campaign (with its connection, contacts
    and deliveries), a webhook event, an asset, and a member with an API token."""
    campaign = make_campaign(tenant, name=name, deliveries=deliveries)
    WebhookEvent.objects.create(
        tenant=tenant, connection=campaign.connection, provider="evolution", event_type="messages.update", body="{}"
    )
    user = User.objects.create_user(f"member {name}")
    ApiToken.issue(membership=Membership.objects.create(user=user, tenant=tenant, role=Membership.Role.OPERATOR))
    Asset.objects.create(
        tenant=tenant,
        uploaded_by=user,
        original_name=f"{name}.jpg",
        key=f"tenants/{tenant.id}/media/{campaign.id}/{name}.jpg",
        file_type="image",
        mime_type="image/jpeg",
        size=10,
        sha256="0" * 64,
    )


@pytest.mark.parametrize(
    "url",
    [
        "/admin/campaigns/campaign/",
        "/admin/campaigns/delivery/",
        "/admin/campaigns/contact/",
        "/admin/campaigns/connection/",
        "/admin/campaigns/webhookevent/",
        "/admin/media/asset/",
        "/admin/sense/membership/",
        "/admin/sense/apitoken/",
    ],
)
def test_admin_list_pages_do_not_query_per_row(admin_client: Client, acme: Tenant, url: str) -> None:
    def queries() -> int:
        with CaptureQueriesContext(db_connection) as ctx:
            assert admin_client.get(url).status_code == 200
        return len(ctx.captured_queries)

    add_rows(acme, "one", deliveries=2)
    few = queries()
    for n in range(5):
        add_rows(acme, f"more {n}", deliveries=3)
    assert queries() == few


def test_retry_failed_deliveries_reopens_a_finished_campaign(
    admin_client: Client, acme: Tenant, monkeypatch: Any
) -> None:
    from campaigns import services

    started: list[Any] = []
    monkeypatch.setattr(services, "_enqueue_senders", started.append)
    campaign = make_campaign(acme, deliveries=3, status="finished")
    ids = list(Delivery.objects.filter(campaign=campaign).values_list("id", flat=True))
    Delivery.move(ids[0], from_status="pending", to_status="failed", error_code="500", error_message="x")
    Delivery.move(ids[1], from_status="pending", to_status="unknown")
    # Undeliverable (Cloud 131026): sending it again fails the same way.
    Delivery.move(ids[2], from_status="pending", to_status="failed", error_code="131026", error_message="x")
    response = admin_client.post(
        "/admin/campaigns/campaign/", {"action": "retry_failed", "_selected_action": [campaign.pk]}, follow=True
    )
    assert "1 entregas com falha colocadas na fila de novo" in response.content.decode()  # pt-BR by default
    campaign.refresh_from_db()
    assert campaign.status == "running" and campaign.finished_at is None
    retried = Delivery.objects.get(pk=ids[0])
    assert (retried.status, retried.error_code) == ("pending", "")
    assert Delivery.objects.get(pk=ids[1]).status == "unknown"  # may have been sent: never retried
    assert Delivery.objects.get(pk=ids[2]).status == "failed"
    assert (campaign.stat_failed, campaign.stat_pending, campaign.stat_unknown) == (1, 1, 1)
    assert started == [campaign.pk]


def test_retry_is_refused_for_a_cancelled_campaign(acme: Tenant) -> None:
    from campaigns import services
    from sense.errors import ServiceError

    campaign = make_campaign(acme, deliveries=1, status="cancelled")
    with pytest.raises(ServiceError, match="Only a running, paused or finished"):
        services.deliveries_retry_failed(campaign=campaign)


def test_regenerate_thumbnails_action_makes_them_again(admin_client: Client, alice: Any, acme: Tenant) -> None:
    import io

    from PIL import Image

    from media import services

    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (10, 120, 200)).save(buffer, "JPEG")
    buffer.seek(0)
    asset = services.asset_create(
        tenant=acme, user=alice, upload=buffer, name="a.jpg", size=len(buffer.getvalue()), enqueue=False
    )
    Asset.objects.filter(pk=asset.pk).update(status="failed", failure_reason="made up", thumbnail_key="")
    admin_client.post("/admin/media/asset/", {"action": "regenerate_thumbnails", "_selected_action": [asset.pk]})
    asset.refresh_from_db()
    assert asset.status == "ready" and asset.thumbnail_key and asset.failure_reason == ""


def test_regenerate_thumbnails_action_says_when_storage_is_down(
    admin_client: Client, alice: Any, acme: Tenant, monkeypatch: Any
) -> None:
    from media import services
    from media.objects import StorageUnavailable

    asset = Asset.objects.create(
        tenant=acme, uploaded_by=alice, original_name="a.jpg", file_type="image", mime_type="image/jpeg", size=1
    )

    def storage_down(**kwargs: Any) -> bool:
        raise StorageUnavailable("S3 is unreachable.")

    monkeypatch.setattr(services, "thumbnail_regenerate", storage_down)
    response = admin_client.post(
        "/admin/media/asset/",
        {"action": "regenerate_thumbnails", "_selected_action": [asset.pk]},
        follow=True,
        headers={"accept-language": "en"},
    )

    assert response.status_code == 200
    assert "1 skipped: storage unavailable, try again." in response.content.decode()


def test_the_admin_cannot_bulk_delete_assets(admin_client: Client, acme: Tenant) -> None:
    add_rows(acme, "one", deliveries=0)  # the admin shows no actions on an empty list
    response = admin_client.get("/admin/media/asset/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "regenerate_thumbnails" in page  # the control: the page lists its actions
    assert "delete_selected" not in page


def test_a_campaign_admin_shows_counters_read_only(admin_client: Client, acme: Tenant) -> None:
    campaign = make_campaign(acme)
    response = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "field-stat_total" in page  # shown
    assert 'name="stat_total"' not in page  # not an input
    assert Campaign.objects.get(pk=campaign.pk).stat_total == 3
