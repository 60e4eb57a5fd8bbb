"""Message templates: reading Meta's components, syncing them from the Graph API (pages,
updates, deletions, errors), the API's list and detail, and the sync command."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from campaigns import sending, services
from campaigns.models import Campaign, Connection, MessageTemplate
from sense.errors import ServiceError
from tests.campaigns.template_fixtures import ORDER_UPDATE, SPRING_SALE, WABA, WELCOME
from tests.conftest import ApiClient, token_for
from tests.simulator import ProviderSimulator


@pytest.fixture
def waba_cloud(cloud: Connection) -> Connection:
    cloud.credentials = {**cloud.credentials, "waba_id": WABA}
    cloud.save(update_fields=["credentials"])
    return cloud


def _template(connection: Connection, name: str, components: list[dict[str, Any]], **fields: Any) -> MessageTemplate:
    fields.setdefault("status", "APPROVED")
    return MessageTemplate.objects.create(
        tenant=connection.tenant, connection=connection, name=name, language="en_US", components=components, **fields
    )


# --- Reading components ---------------------------------------------------------------------


def test_a_positional_template_lists_its_header_body_and_button_parameters(cloud: Connection) -> None:
    template = _template(cloud, "order_update", ORDER_UPDATE)
    assert template.header_format == "TEXT"
    assert template.header_media_kind is None
    assert template.body_text == "Hi {{1}}, your order {{2}} ships today."
    assert template.footer_text == "Reply STOP to opt out"
    assert template.parameters == ["header.1", "1", "2", "button.0"]
    assert [b["type"] for b in template.buttons] == ["URL", "QUICK_REPLY"]
    assert template.buttons[0]["url"] == "https://shop.example/track/{{1}}"
    values = {"header.1": "A-7", "1": "Ana", "2": "A-7", "button.0": "A-7"}
    assert template.render(values) == "Hi Ana, your order A-7 ships today."
    assert template.render_header(values) == "Order A-7"
    outgoing = sending.template_message(template, values)
    assert [p.value for p in outgoing.body_parameters] == ["Ana", "A-7"]
    assert all(p.name == "" for p in outgoing.body_parameters)
    assert outgoing.buttons[0].index == 0 and outgoing.buttons[0].parameters[0].value == "A-7"


def test_a_named_template_with_an_image_header(cloud: Connection) -> None:
    template = _template(cloud, "spring_sale", SPRING_SALE, parameter_format="NAMED")
    assert template.header_format == "IMAGE" and template.header_media_kind == "image"
    assert template.parameters == ["first_name", "discount"]
    assert template.render({"first_name": "Ana", "discount": "20%"}) == "Hello Ana! 20% off everything this week."
    outgoing = sending.template_message(template, {"first_name": "Ana", "discount": "20%"})
    assert [(p.name, p.value) for p in outgoing.body_parameters] == [("first_name", "Ana"), ("discount", "20%")]


def test_a_template_without_header_or_parameters(cloud: Connection) -> None:
    template = _template(cloud, "welcome", WELCOME)
    assert template.header_format is None and template.parameters == [] and template.buttons == []
    assert template.render({}) == "Welcome to Sense Shop!"


# --- Sync -------------------------------------------------------------------------------------


def test_sync_follows_every_page_and_stores_each_template(sim: ProviderSimulator, waba_cloud: Connection) -> None:
    sim.template_page_size = 2
    sim.add_template(WABA, "order_update", components=ORDER_UPDATE, category="UTILITY")
    sim.add_template(WABA, "spring_sale", components=SPRING_SALE, parameter_format="NAMED")
    sim.add_template(WABA, "welcome", components=WELCOME, status="PENDING")
    sim.add_template(WABA, "welcome", "pt_BR", components=WELCOME, quality="YELLOW")
    sim.add_template(WABA, "old_promo", status="REJECTED")

    result = services.templates_sync(connection=waba_cloud)

    assert result.as_dict() == {"synced": 5, "created": 5, "updated": 0, "deleted": 0}
    assert len(sim.template_requests) == 3  # pages of 2
    assert sim.template_requests[0]["query"] == {"limit": "100"}
    assert all(r["status"] == 200 for r in sim.template_requests)
    stored = {(t.name, t.language): t for t in MessageTemplate.objects.filter(connection=waba_cloud)}
    assert set(stored) == {
        ("order_update", "en_US"),
        ("spring_sale", "en_US"),
        ("welcome", "en_US"),
        ("welcome", "pt_BR"),
        ("old_promo", "en_US"),
    }
    sale = stored[("spring_sale", "en_US")]
    assert sale.parameter_format == "NAMED" and sale.components == SPRING_SALE and sale.meta_id
    assert sale.status == "APPROVED" and sale.category == "MARKETING" and sale.synced_at is not None
    assert stored[("welcome", "pt_BR")].quality_score == "YELLOW"
    assert stored[("order_update", "en_US")].category == "UTILITY"
    assert all(t.tenant_id == waba_cloud.tenant_id for t in stored.values())


def test_sync_updates_changed_templates_and_marks_unlisted_ones_deleted(
    sim: ProviderSimulator, waba_cloud: Connection, make_campaign: Any
) -> None:
    sim.add_template(WABA, "order_update", components=ORDER_UPDATE)
    sim.add_template(WABA, "welcome", components=WELCOME)
    sim.add_template(WABA, "spring_sale", components=SPRING_SALE, parameter_format="NAMED")
    services.templates_sync(connection=waba_cloud)
    welcome = MessageTemplate.objects.get(connection=waba_cloud, name="welcome")
    # A draft names the template that Meta will stop listing: the template is kept.
    draft = make_campaign(waba_cloud, message="", template=welcome)

    sim.add_template(WABA, "order_update", components=ORDER_UPDATE, status="PAUSED")
    sim.remove_template(WABA, "welcome")
    sim.add_template(WABA, "new_one", components=WELCOME)
    result = services.templates_sync(connection=waba_cloud)

    assert result.as_dict() == {"synced": 3, "created": 1, "updated": 1, "deleted": 1}
    welcome.refresh_from_db()
    assert welcome.status == "DELETED" and welcome.status_reason
    assert MessageTemplate.objects.get(connection=waba_cloud, name="order_update").status == "PAUSED"
    draft.refresh_from_db()
    assert draft.template_id == welcome.pk
    # Syncing again changes nothing.
    assert services.templates_sync(connection=waba_cloud).as_dict() == {
        "synced": 3,
        "created": 0,
        "updated": 0,
        "deleted": 0,
    }


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        ("bad_token", "template_sync_bad_token"),
        ("bad_waba", "template_sync_bad_waba"),
        ("no_waba", "waba_id_missing"),
    ],
)
def test_a_graph_error_changes_nothing_and_says_what_to_fix(
    sim: ProviderSimulator, waba_cloud: Connection, setup: str, code: str
) -> None:
    sim.add_template(WABA, "welcome", components=WELCOME)
    services.templates_sync(connection=waba_cloud)
    sim.remove_template(WABA, "welcome")
    sim.add_template(WABA, "other", components=WELCOME)
    if setup == "bad_token":
        sim.access_tokens = {"another-token"}
    elif setup == "bad_waba":
        waba_cloud.credentials["waba_id"] = "999"
        waba_cloud.save(update_fields=["credentials"])
    else:
        del waba_cloud.credentials["waba_id"]
        waba_cloud.save(update_fields=["credentials"])

    with pytest.raises(ServiceError) as raised:
        services.templates_sync(connection=waba_cloud)

    assert raised.value.code == code
    assert "cloud-secret-token" not in raised.value.message
    assert list(MessageTemplate.objects.filter(connection=waba_cloud).values_list("name", "status")) == [
        ("welcome", "APPROVED")
    ]


def test_a_page_on_another_host_is_not_followed(
    sim: ProviderSimulator, waba_cloud: Connection, monkeypatch: Any
) -> None:
    """The bearer token goes only where the connection's base URL points."""
    sim.template_page_size = 1
    sim.add_template(WABA, "a", components=WELCOME)
    sim.add_template(WABA, "b", components=WELCOME)
    original = sim._list_templates

    def hostile(*args: Any) -> Any:
        status, body = original(*args)
        if "next" in body.get("paging", {}):
            body["paging"]["next"] = body["paging"]["next"].replace("127.0.0.1", "evil.example")
        return status, body

    monkeypatch.setattr(sim, "_list_templates", hostile)
    with pytest.raises(ServiceError):
        services.templates_sync(connection=waba_cloud)
    assert not MessageTemplate.objects.exists()


def test_other_providers_have_no_templates(evolution: Connection) -> None:
    with pytest.raises(ServiceError) as raised:
        services.templates_sync(connection=evolution)
    assert raised.value.code == "templates_unsupported"


def test_addconnection_takes_a_waba_id(acme: Any) -> None:
    out = StringIO()
    call_command(
        "addconnection",
        "--tenant",
        acme.slug,
        "--provider",
        "cloud",
        "--phone-number-id",
        "123",
        "--access-token",
        "t",
        "--app-secret",
        "s",
        "--verify-token",
        "v",
        "--waba-id",
        WABA,
        "--json",
        stdout=out,
    )
    connection = Connection.objects.get(pk=json.loads(out.getvalue())["id"])
    assert connection.credential("waba_id") == WABA


def test_the_sync_command_syncs_each_connection_with_a_waba_id(
    sim: ProviderSimulator, waba_cloud: Connection, evolution: Connection
) -> None:
    sim.add_template(WABA, "welcome", components=WELCOME)
    out = StringIO()
    call_command("sync_templates", "--tenant", waba_cloud.tenant.slug, "--json", stdout=out)
    assert json.loads(out.getvalue()) == {
        "connections": {str(waba_cloud.pk): {"synced": 1, "created": 1, "updated": 0, "deleted": 0}}
    }
    sim.access_tokens = {"nope"}
    out = StringIO()
    with pytest.raises(SystemExit):
        call_command("sync_templates", "--connection", str(waba_cloud.pk), stdout=out)
    assert "template_sync_bad_token" in out.getvalue()


def test_the_periodic_job_is_registered() -> None:
    from sense.scheduler import jobs

    assert any(job.name == "campaigns.tasks.sync_templates" and job.seconds == 3600 for job in jobs())


# --- API ----------------------------------------------------------------------------------------


def test_the_api_syncs_lists_and_shows_templates(
    sim: ProviderSimulator, api_alice: ApiClient, waba_cloud: Connection
) -> None:
    sim.add_template(WABA, "order_update", components=ORDER_UPDATE)
    sim.add_template(WABA, "welcome", components=WELCOME, status="PENDING")
    response = api_alice.post_json(f"/api/connections/{waba_cloud.pk}/templates/sync/")
    assert response.status_code == 200, response.content
    assert response.json() == {"synced": 2, "created": 2, "updated": 0, "deleted": 0}

    listed = api_alice.get_json(f"/api/templates/?connection_id={waba_cloud.pk}").json()
    assert listed["count"] == 2
    item = next(i for i in listed["items"] if i["name"] == "order_update")
    assert {
        "id",
        "connection_id",
        "name",
        "language",
        "status",
        "category",
        "parameter_format",
        "header_format",
        "body_text",
        "parameters",
        "buttons",
        "synced_at",
    } <= set(item)
    assert item["header_format"] == "TEXT" and item["parameters"] == ["header.1", "1", "2", "button.0"]
    assert item["connection_id"] == str(waba_cloud.pk)
    approved = api_alice.get_json("/api/templates/?status=approved").json()
    assert [i["name"] for i in approved["items"]] == ["order_update"]
    detail = api_alice.get_json(f"/api/templates/{item['id']}/").json()
    assert detail["body_text"] == "Hi {{1}}, your order {{2}} ships today."


def test_the_api_sync_says_what_meta_refused(
    sim: ProviderSimulator, api_alice: ApiClient, waba_cloud: Connection
) -> None:
    sim.access_tokens = {"other"}
    response = api_alice.post_json(f"/api/connections/{waba_cloud.pk}/templates/sync/")
    assert response.status_code == 400
    assert response.json()["code"] == "template_sync_bad_token"


def test_only_admins_sync(sim: ProviderSimulator, bob: Any, acme: Any, waba_cloud: Connection) -> None:
    api_bob = ApiClient(token_for(bob, acme))
    response = api_bob.post_json(f"/api/connections/{waba_cloud.pk}/templates/sync/")
    assert response.status_code == 403
    assert not sim.template_requests


def test_another_tenants_templates_are_invisible(
    sim: ProviderSimulator, api_charlie: ApiClient, waba_cloud: Connection
) -> None:
    template = _template(waba_cloud, "welcome", WELCOME)
    assert api_charlie.get_json("/api/templates/").json() == {"count": 0, "items": []}
    assert api_charlie.get_json(f"/api/templates/?connection_id={waba_cloud.pk}").json()["count"] == 0
    assert api_charlie.get_json(f"/api/templates/{template.pk}/").status_code == 404
    assert api_charlie.post_json(f"/api/connections/{waba_cloud.pk}/templates/sync/").status_code == 404
    assert not sim.template_requests
    assert Campaign.objects.count() == 0


def test_the_cloud_provider_parses_template_news_next_to_statuses() -> None:
    from campaigns.providers import CloudApiProvider

    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": WABA,
                "changes": [
                    {
                        "field": "message_template_status_update",
                        "value": {
                            "event": "REJECTED",
                            "message_template_id": 594425479261596,
                            "message_template_name": "spring_sale",
                            "message_template_language": "pt_BR",
                            "reason": "INVALID_FORMAT",
                            "other_info": {"title": "Rejected", "description": "Variables at the start."},
                        },
                    },
                    {
                        "field": "message_template_quality_update",
                        "value": {
                            "previous_quality_score": "GREEN",
                            "new_quality_score": "YELLOW",
                            "message_template_id": 1,
                            "message_template_name": "welcome",
                            "message_template_language": "en_US",
                        },
                    },
                    {"field": "message_template_status_update", "value": {"event": "APPROVED", "reason": "NONE"}},
                    {
                        "field": "messages",
                        "value": {"statuses": [{"id": "wamid.1", "status": "delivered", "timestamp": "1700000000"}]},
                    },
                ],
            }
        ],
    }
    parsed = CloudApiProvider.parse_webhook(json.dumps(body))
    assert [s.message_id for s in parsed.statuses] == ["wamid.1"]
    rejected, quality = parsed.templates  # the one naming no template is skipped
    assert (rejected.template_id, rejected.name, rejected.language, rejected.status) == (
        "594425479261596",
        "spring_sale",
        "pt_BR",
        "REJECTED",
    )
    assert rejected.reason == "INVALID_FORMAT: Variables at the start."
    assert quality.quality == "YELLOW" and quality.status == ""


def test_the_periodic_sync_skips_a_connection_another_worker_just_synced(
    sim: ProviderSimulator, waba_cloud: Connection
) -> None:
    from campaigns import tasks

    sim.add_template(WABA, "welcome", components=WELCOME)
    tasks.sync_templates()
    assert len(sim.template_requests) == 1
    tasks.sync_templates()
    assert len(sim.template_requests) == 1
    MessageTemplate.objects.update(synced_at=None)
    tasks.sync_templates()
    assert len(sim.template_requests) == 2
