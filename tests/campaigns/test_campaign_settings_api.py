"""The safe-sending settings of a campaign through the API: connections and rotation,
intervals, breaks, typing, send window, skip dates, variants; and daily limits of connections."""

from __future__ import annotations

from typing import Any

import pytest

from campaigns import services, snapshot
from campaigns.models import Campaign, Connection, Delivery
from sense.models import Tenant
from tests.conftest import ApiClient


@pytest.fixture(autouse=True)
def _no_senders(monkeypatch: Any) -> None:
    monkeypatch.setattr(services, "_enqueue_senders", lambda campaign_id: None)


def _evolution(tenant: Tenant, name: str, instance: str) -> Connection:
    return Connection.objects.create(
        tenant=tenant,
        name=name,
        provider=Connection.Provider.EVOLUTION,
        base_url="http://127.0.0.1:9",
        credentials={"instance": instance, "api_key": "k"},
    )


ENGINE: dict[str, Any] = {
    "rotation": "least_used",
    "interval_min_seconds": 25,
    "interval_max_seconds": 50,
    "pause_every": 20,
    "pause_seconds": 300,
    "typing_seconds": 3,
    "send_window": {"days": [1, 2, 3, 4, 5], "start": "09:00", "end": "18:00"},
    "skip_dates": ["2026-12-25", "2026-12-24"],
    "variants": ["Hello {{name}}", "Hey {{name}}"],
}


def test_it_creates_a_campaign_with_every_setting_and_shows_them(api_alice: ApiClient, acme: Tenant) -> None:
    one, two, three = (_evolution(acme, f"Number {i}", f"n{i}") for i in (1, 2, 3))
    ids = [str(two.id), str(one.id), str(three.id)]
    response = api_alice.post_json(
        "/api/campaigns/", {"name": "Engine", "message": "Hi {{name}}", "connection_ids": ids, **ENGINE}
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["connection_id"] == str(two.id)  # the first is the primary
    assert body["connection_ids"][0] == str(two.id) and set(body["connection_ids"]) == set(ids)
    for name, value in ENGINE.items():
        expected = sorted(value) if name == "skip_dates" else value
        assert body[name] == expected, name
    assert body["waiting_reason"] is None and body["next_send_at"] is None

    patched = api_alice.patch_json(
        f"/api/campaigns/{body['id']}/", {"connection_id": str(three.id), "send_window": None, "variants": []}
    ).json()
    assert patched["connection_ids"] == [str(three.id)]
    assert patched["send_window"] is None and patched["variants"] == []
    assert patched["interval_max_seconds"] == 50


def test_connection_id_alone_is_a_list_of_one(api_alice: ApiClient, evolution: Any) -> None:
    body = api_alice.post_json(
        "/api/campaigns/", {"name": "x", "message": "hi", "connection_id": str(evolution.id)}
    ).json()
    assert body["connection_ids"] == [str(evolution.id)]
    assert body["rotation"] == "round_robin" and body["interval_min_seconds"] == body["interval_max_seconds"] == 0


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"rotation": "random"}, "invalid_rotation"),
        ({"interval_min_seconds": 10, "interval_max_seconds": 5}, "invalid_interval"),
        ({"interval_max_seconds": 3601}, "invalid_interval"),
        ({"interval_min_seconds": -1}, "invalid_interval"),
        ({"pause_every": 10}, "invalid_pause"),
        ({"typing_seconds": 61}, "invalid_typing"),
        ({"send_window": {"days": [0], "start": "09:00", "end": "18:00"}}, "invalid_send_window"),
        ({"send_window": {"days": [1], "start": "18:00", "end": "09:00"}}, "invalid_send_window"),
        ({"send_window": {"days": [1], "start": "9h", "end": "18:00"}}, "invalid_send_window"),
        ({"send_window": {"start": "09:00", "end": "18:00", "tz": "UTC"}}, "invalid_send_window"),
        ({"skip_dates": ["25/12/2026"]}, "invalid_skip_dates"),
        ({"variants": ["a", "b", "c", "d", "e", "f"]}, "invalid_variants"),
        ({"variants": ["  "]}, "invalid_variants"),
    ],
)
def test_it_refuses_bad_settings_with_a_precise_code(
    api_alice: ApiClient, evolution: Any, changes: dict[str, Any], code: str
) -> None:
    payload = {"name": "x", "message": "hi", "connection_id": str(evolution.id), **changes}
    response = api_alice.post_json("/api/campaigns/", payload)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code
    assert not Campaign.objects.exists()

    draft = api_alice.post_json("/api/campaigns/", {"name": "x", "message": "hi", "connection_id": str(evolution.id)})
    patched = api_alice.patch_json(f"/api/campaigns/{draft.json()['id']}/", changes)
    assert patched.status_code == 400 and patched.json()["code"] == code


def test_it_refuses_connections_of_two_providers_or_of_another_tenant(
    api_alice: ApiClient, acme: Tenant, globex: Tenant, evolution: Any, cloud: Any
) -> None:
    mixed = api_alice.post_json(
        "/api/campaigns/", {"name": "x", "message": "hi", "connection_ids": [str(evolution.id), str(cloud.id)]}
    )
    assert mixed.status_code == 400 and mixed.json()["code"] == "mixed_providers"
    theirs = _evolution(globex, "Theirs", "t1")
    foreign = api_alice.post_json(
        "/api/campaigns/", {"name": "x", "message": "hi", "connection_ids": [str(evolution.id), str(theirs.id)]}
    )
    assert foreign.status_code == 400 and foreign.json()["code"] == "invalid_connection"
    empty = api_alice.post_json("/api/campaigns/", {"name": "x", "message": "hi", "connection_ids": []})
    assert empty.status_code == 400 and empty.json()["code"] == "invalid_connection"


def test_a_connections_daily_limit_is_set_and_checked(api_alice: ApiClient, evolution: Any) -> None:
    url = f"/api/connections/{evolution.id}/"
    assert api_alice.patch_json(url, {"daily_limit": 100}).json()["daily_limit"] == 100
    assert api_alice.patch_json(url, {"daily_limit": None}).json()["daily_limit"] is None
    bad = api_alice.patch_json(url, {"daily_limit": 0})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_daily_limit"
    shown = api_alice.get_json(url).json()
    assert shown["state"] is None and shown["state_since"] is None


def test_the_snapshot_renders_variants_in_turn_in_sql(
    api_alice: ApiClient, acme: Tenant, evolution: Any, make_contacts: Any
) -> None:
    contacts = make_contacts(9, attributes={"city": "Recife"})
    campaign = services.campaign_create(
        tenant=acme,
        name="v",
        message="Main {{name}}",
        connection=evolution,
        variants=["Second {{name}} in {{city}}", "Third {{phone}}"],
    )
    services.campaign_start(campaign=campaign)
    services.campaign_prepare(campaign_id=campaign.id)
    rows = {d.contact_id: d for d in Delivery.objects.filter(campaign=campaign)}
    for contact in contacts:
        delivery = rows[contact.pk]
        variant = snapshot.variant_of(contact.pk, 3)
        assert delivery.variant == variant
        expected = [f"Main {contact.name}", f"Second {contact.name} in Recife", f"Third {contact.phone}"][variant]
        assert delivery.text == expected
    assert {d.variant for d in rows.values()} == {0, 1, 2}
    page = api_alice.get_json(f"/api/campaigns/{campaign.id}/deliveries/").json()
    assert {"variant", "connection_id"} <= set(page["items"][0])
