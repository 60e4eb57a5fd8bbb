"""The connections pages: the list (state, today's sends against the daily limit, templates)
and one connection's page (webhook URL for admins, the campaigns using it, the settings form)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection as db
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns import pacing
from campaigns.models import Campaign, Connection, ConnectionDay, MessageTemplate, WebhookEvent
from sense.models import Tenant
from tests.dashboard.conftest import login

EN = {"Accept-Language": "en"}
SECRETS = ("evo-secret-key", "cloud-secret-token", "app-secret", "verify-secret", "acme-1")


def page(client: Client, url: str, **kwargs: Any) -> str:
    response = client.get(url, headers=EN, **kwargs)
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def assert_no_credentials(html: str) -> None:
    for value in SECRETS:
        assert value not in html, f"credential {value!r} in the page"


def webhook(connection: Connection, *, minutes_ago: float) -> WebhookEvent:
    return WebhookEvent.objects.create(
        tenant=connection.tenant,
        connection=connection,
        provider=connection.provider,
        event_type="messages.update",
        body="{}",
        received_at=timezone.now() - timedelta(minutes=minutes_ago),
    )


@pytest.fixture
def down(evolution: Connection) -> Connection:
    """The Evolution number, reported closed by its gateway, capped at 100 a day, 40 sent today."""
    since = timezone.now() - timedelta(hours=2)
    Connection.objects.filter(pk=evolution.pk).update(
        state=Connection.State.CLOSE, state_reason="loggedOut", state_since=since, daily_limit=100
    )
    ConnectionDay.objects.create(tenant=evolution.tenant, connection=evolution, day=pacing.today(), sent=40)
    ConnectionDay.objects.create(
        tenant=evolution.tenant, connection=evolution, day=pacing.today() - timedelta(days=1), sent=99
    )
    evolution.refresh_from_db()
    return evolution


@pytest.fixture
def cloud_with_templates(cloud: Connection) -> Connection:
    cloud.credentials = {**cloud.credentials, "verify_token": "verify-secret"}
    cloud.save(update_fields=["credentials"])
    for name, status in (("welcome", "APPROVED"), ("promo", "PENDING"), ("old", "DELETED")):
        MessageTemplate.objects.create(
            tenant=cloud.tenant, connection=cloud, name=name, language="en_US", status=status, components=[]
        )
    return cloud


def test_the_list_shows_state_todays_sends_against_the_limit_and_templates(
    alice: Any, down: Connection, cloud_with_templates: Connection, globex: Tenant
) -> None:
    Connection.objects.create(tenant=globex, name="Globex number", provider="evolution", base_url="http://x")

    html = page(login("alice"), "/connections/")

    assert 'href="/connections/"' in html and 'aria-current="page">Connections' in html  # the nav link
    assert f'href="/connections/{down.pk}/"' in html and f'href="/connections/{cloud_with_templates.pk}/"' in html
    assert 'data-connection-state="close"' in html and "Closed" in html and "loggedOut" in html
    assert 'data-sent-today="40"' in html and 'data-daily-limit="100"' in html  # today's row, not yesterday's
    assert "no daily cap" in html  # the Cloud number has none
    assert f'href="/templates/?connection={cloud_with_templates.pk}"' in html
    assert "2 templates" in html and "1 approved" in html  # the DELETED one is not counted
    assert f'action="/templates/sync/{cloud_with_templates.pk}/"' in html
    assert "Globex number" not in html
    assert_no_credentials(html)


def test_the_list_shows_the_last_webhook_received_within_the_hour(
    alice: Any, evolution: Connection, cloud: Connection, acme: Tenant
) -> None:
    quiet = Connection.objects.create(tenant=acme, name="Quiet", provider="evolution", base_url="http://x")
    webhook(evolution, minutes_ago=30)
    webhook(evolution, minutes_ago=5)
    webhook(cloud, minutes_ago=90)  # older than the window: not looked for

    html = page(login("alice"), "/connections/")

    row = {c.pk: html.split(f'data-connection="{c.pk}"')[1].split("</tr>")[0] for c in (evolution, cloud, quiet)}
    assert "5\xa0minutes ago" in row[evolution.pk] and "30\xa0minutes" not in row[evolution.pk]
    assert "none in the last hour" in row[cloud.pk] and "none in the last hour" in row[quiet.pk]


def test_a_member_sees_the_list_without_the_sync_button(bob: Any, cloud_with_templates: Connection) -> None:
    html = page(login("bob"), "/connections/")

    assert "Cloud API on the simulator" in html
    assert "/templates/sync/" not in html


def test_the_list_queries_the_same_for_many_connections(alice: Any, acme: Tenant) -> None:
    client = login("alice")

    def queries() -> int:
        with CaptureQueriesContext(db) as ctx:
            page(client, "/connections/")
        return len(ctx.captured_queries)

    def add(n: int) -> None:
        for i in range(n):
            for provider in ("evolution", "cloud"):
                c = Connection.objects.create(
                    tenant=acme, name=f"{provider} {n} {i}", provider=provider, base_url="http://x", daily_limit=10
                )
                ConnectionDay.objects.create(tenant=acme, connection=c, day=pacing.today(), sent=i)
                MessageTemplate.objects.create(tenant=acme, connection=c, name="t", language="en", components=[])
                webhook(c, minutes_ago=i)

    add(1)
    few = queries()
    add(6)
    assert queries() == few


def test_the_list_is_paginated(alice: Any, acme: Tenant) -> None:
    Connection.objects.bulk_create(
        [Connection(tenant=acme, name=f"n{i:03d}", provider="evolution", base_url="http://x") for i in range(51)]
    )
    first = page(login("alice"), "/connections/")
    second = page(login("alice"), "/connections/?page=2")

    assert "n049" in first and "n050" not in first and "Page 1 of 2" in first
    assert "n050" in second and "n049" not in second


def test_an_admin_sees_the_webhook_url_built_from_the_host_and_no_credential(
    alice: Any, down: Connection, cloud_with_templates: Connection, settings: Any
) -> None:
    settings.ALLOWED_HOSTS = ["sense.example.com"]
    client = login("alice")

    evolution = page(client, f"/connections/{down.pk}/", HTTP_HOST="sense.example.com")
    cloud = page(client, f"/connections/{cloud_with_templates.pk}/", HTTP_HOST="sense.example.com", secure=True)

    assert f'value="http://sense.example.com/api/webhooks/evolution/{down.webhook_token}/"' in evolution
    assert "MESSAGES_UPDATE" in evolution and "loggedOut" in evolution and 'data-sent-today="40"' in evolution
    token = cloud_with_templates.webhook_token
    assert f'value="https://sense.example.com/api/webhooks/whatsapp/{token}/"' in cloud
    assert "verify token" in cloud and "2 templates" in cloud
    assert f'action="/templates/sync/{cloud_with_templates.pk}/"' in cloud
    assert_no_credentials(evolution + cloud)


def test_a_member_sees_the_connection_but_not_its_webhook_token_nor_the_form(bob: Any, down: Connection) -> None:
    html = page(login("bob"), f"/connections/{down.pk}/")

    assert "Evolution on the simulator" in html and "loggedOut" in html
    assert down.webhook_token not in html and "/api/webhooks/" not in html
    assert "Only tenant admins can see the webhook URL" in html
    assert 'name="daily_limit"' not in html and "Only tenant admins can change a connection." in html
    assert_no_credentials(html)


def test_the_page_lists_the_campaigns_using_the_connection_first_or_in_rotation(
    alice: Any, evolution: Connection, make_campaign: Any, acme: Tenant
) -> None:
    other = Connection.objects.create(tenant=acme, name="Second", provider="evolution", base_url="http://x")
    first = make_campaign(evolution, name="Uses it first", status=Campaign.Status.RUNNING)
    rotating = make_campaign(other, name="Rotates through it", status=Campaign.Status.PAUSED)
    rotating.extra_connections.add(evolution)
    make_campaign(other, name="Elsewhere only")

    html = page(login("alice"), f"/connections/{evolution.pk}/")

    assert f'href="/campaigns/{first.pk}/"' in html and f'href="/campaigns/{rotating.pk}/"' in html
    assert "Elsewhere only" not in html
    assert "status-running" in html and "status-paused" in html
    assert "first connection" in html and "in rotation" in html
    assert html.count("data-campaign=") == 2


def test_an_admin_changes_the_name_daily_limit_and_active_flag(alice: Any, down: Connection) -> None:
    client = login("alice")

    response = client.post(f"/connections/{down.pk}/", {"name": "  Renamed  ", "daily_limit": "250"}, headers=EN)

    assert response.status_code == 302 and response["Location"] == f"/connections/{down.pk}/"
    down.refresh_from_db()
    assert (down.name, down.daily_limit, down.is_active) == ("Renamed", 250, False)  # unchecked: inactive
    assert "Connection saved." in page(client, f"/connections/{down.pk}/")

    client.post(f"/connections/{down.pk}/", {"name": "Renamed", "daily_limit": "", "is_active": "on"})
    down.refresh_from_db()
    assert (down.daily_limit, down.is_active) == (None, True)  # empty: no cap


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"name": "Half written", "daily_limit": "0", "is_active": "on"}, "greater than or equal to 1"),
        ({"name": "Half written", "daily_limit": "lots", "is_active": "on"}, "Enter a whole number"),
        ({"name": "   ", "daily_limit": "5"}, "This field is required"),
    ],
)
def test_a_bad_form_shows_its_errors_in_the_page_and_changes_nothing(
    alice: Any, down: Connection, data: dict[str, str], error: str
) -> None:
    before = Connection.objects.filter(pk=down.pk).values().get()

    response = login("alice").post(f"/connections/{down.pk}/", data, headers=EN)

    assert response.status_code == 200
    html = response.content.decode()
    assert error in html and 'class="form-error"' in html
    assert Connection.objects.filter(pk=down.pk).values().get() == before


def test_a_member_may_not_change_a_connection(bob: Any, down: Connection) -> None:
    before = Connection.objects.filter(pk=down.pk).values().get()

    response = login("bob").post(f"/connections/{down.pk}/", {"name": "Hijacked", "is_active": ""}, headers=EN)

    assert response.status_code == 403
    assert Connection.objects.filter(pk=down.pk).values().get() == before


def test_another_tenant_gets_404_and_changes_nothing(charlie: Any, down: Connection) -> None:
    client = login("charlie")
    before = Connection.objects.filter(pk=down.pk).values().get()

    assert client.get(f"/connections/{down.pk}/").status_code == 404
    assert client.post(f"/connections/{down.pk}/", {"name": "Hijacked"}).status_code == 404
    assert Connection.objects.filter(pk=down.pk).values().get() == before
    assert "Evolution on the simulator" not in page(client, "/connections/")


def test_the_templates_page_shows_one_connection_when_asked(
    alice: Any, acme: Tenant, cloud_with_templates: Connection
) -> None:
    other = Connection.objects.create(tenant=acme, name="Other cloud", provider="cloud", base_url="http://x")
    MessageTemplate.objects.create(tenant=acme, connection=other, name="other_one", language="en", components=[])

    html = page(login("alice"), f"/templates/?connection={cloud_with_templates.pk}")
    everything = page(login("alice"), "/templates/?connection=not-a-uuid")

    assert "welcome" in html and "other_one" not in html and "Other cloud" not in html
    assert f'name="connection" value="{cloud_with_templates.pk}"' in html  # kept by the status filter
    assert "welcome" in everything and "other_one" in everything


def test_syncing_from_the_connection_pages_lands_on_its_templates(
    alice: Any, sim: Any, cloud_with_templates: Connection
) -> None:
    cloud_with_templates.credentials = {**cloud_with_templates.credentials, "waba_id": "waba-1"}
    cloud_with_templates.save(update_fields=["credentials"])
    sim.add_template("waba-1", "fresh_one", components=[{"type": "BODY", "text": "Oi"}])

    response = login("alice").post(f"/templates/sync/{cloud_with_templates.pk}/")

    assert response.status_code == 302
    assert response["Location"] == f"/templates/?connection={cloud_with_templates.pk}"
    assert MessageTemplate.objects.filter(connection=cloud_with_templates, name="fresh_one").exists()
