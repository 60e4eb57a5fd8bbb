"""Every campaigns endpoint answers 404 for another tenant's objects (never 403 or data)."""

from __future__ import annotations

from typing import Any

import pytest

from campaigns import services
from campaigns.models import Delivery
from tests.conftest import ApiClient


@pytest.fixture
def acme_objects(monkeypatch: Any, evolution: Any, make_contacts: Any, make_campaign: Any) -> dict[str, Any]:
    monkeypatch.setattr(services, "_enqueue_senders", lambda campaign_id: None)
    contact = make_contacts(1)[0]
    campaign = make_campaign(evolution)
    services.campaign_start(campaign=campaign)
    services.campaign_prepare(campaign_id=campaign.pk)  # the worker's audience snapshot
    delivery = Delivery.objects.get(campaign=campaign)
    return {"contact": contact, "campaign": campaign, "delivery": delivery, "connection": evolution}


REQUESTS = [
    ("get", "/api/campaigns/{campaign}/"),
    ("patch", "/api/campaigns/{campaign}/"),
    ("post", "/api/campaigns/{campaign}/start/"),
    ("post", "/api/campaigns/{campaign}/pause/"),
    ("post", "/api/campaigns/{campaign}/resume/"),
    ("post", "/api/campaigns/{campaign}/cancel/"),
    ("post", "/api/campaigns/{campaign}/unschedule/"),
    ("get", "/api/campaigns/{campaign}/deliveries/"),
    ("get", "/api/campaigns/{campaign}/deliveries/{delivery}/"),
    ("get", "/api/connections/{connection}/"),
    ("patch", "/api/connections/{connection}/"),
    ("get", "/api/contacts/{contact}/"),
    ("patch", "/api/contacts/{contact}/"),
    ("delete", "/api/contacts/{contact}/"),
]


@pytest.mark.parametrize(("method", "path"), REQUESTS)
def test_it_refuses_another_tenants_objects(
    method: str, path: str, api_charlie: ApiClient, acme_objects: dict[str, Any]
) -> None:
    url = path.format(**{k: v.pk for k, v in acme_objects.items()})
    response = getattr(api_charlie, f"{method}_json")(url)
    assert response.status_code == 404, (url, response.content)
    assert response.json()["code"] == "not_found"
    campaign = acme_objects["campaign"]
    campaign.refresh_from_db()
    assert campaign.status == "running"


def test_lists_show_only_the_callers_tenant(api_charlie: ApiClient, acme_objects: dict[str, Any]) -> None:
    assert api_charlie.get_json("/api/campaigns/").json() == {"count": 0, "items": []}
    assert api_charlie.get_json("/api/contacts/").json()["count"] == 0
    assert api_charlie.get_json("/api/connections/").json() == []


def test_the_owner_sees_them(api_alice: ApiClient, acme_objects: dict[str, Any]) -> None:
    campaign, delivery = acme_objects["campaign"], acme_objects["delivery"]
    assert api_alice.get_json(f"/api/campaigns/{campaign.pk}/deliveries/{delivery.pk}/").status_code == 200
    assert api_alice.get_json(f"/api/connections/{acme_objects['connection'].pk}/").status_code == 200


def test_anonymous_callers_are_refused(anon_api: ApiClient, acme_objects: dict[str, Any]) -> None:
    assert anon_api.get_json("/api/campaigns/").status_code == 401
    assert anon_api.post_json("/api/contacts/import/").status_code == 401
