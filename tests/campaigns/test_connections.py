"""Connections: `addconnection`, the API (admins only, credentials write-only), the admin."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.models import User

from campaigns.models import Connection
from tests.conftest import ApiClient, token_for
from tests.helpers import manage
from tests.live import stack_env

SECRETS = ("evo-secret-key", "cloud-secret-token", "app-secret")


def test_addconnection_adds_an_evolution_connection_and_prints_its_webhook(transactional_db: Any, acme: Any) -> None:
    result = manage(
        "addconnection", "--tenant", "acme", "--provider", "evolution", "--base-url", "http://evo.local:8080",
        "--instance", "main", "--api-key", "evo-secret-key", "--rate", "30", "--json", env=stack_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    connection = Connection.objects.get(pk=out["id"])
    assert out["webhook_url"] == f"/api/webhooks/evolution/{connection.webhook_token}/"
    assert connection.credentials == {"instance": "main", "api_key": "evo-secret-key"}
    assert connection.rate_per_minute == 30
    assert "evo-secret-key" not in result.stdout + result.stderr


def test_addconnection_adds_a_cloud_connection_on_the_graph_api_by_default(transactional_db: Any, acme: Any) -> None:
    result = manage(
        "addconnection", "--tenant", "acme", "--provider", "cloud", "--phone-number-id", "123",
        "--access-token", "cloud-secret-token", "--app-secret", "app-secret", "--verify-token", "v", "--json",
        env=stack_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    connection = Connection.objects.get(pk=json.loads(result.stdout)["id"])
    assert connection.base_url.startswith("https://graph.facebook.com/v")
    assert json.loads(result.stdout)["webhook_url"] == f"/api/webhooks/whatsapp/{connection.webhook_token}/"


def test_addconnection_refuses_missing_credentials(transactional_db: Any, acme: Any) -> None:
    result = manage(
        "addconnection", "--tenant", "acme", "--provider", "cloud", "--phone-number-id", "1", env=stack_env()
    )
    assert result.returncode != 0 and "Missing credential" in result.stderr


def test_the_api_never_shows_credentials(api_alice: ApiClient, evolution: Any, cloud: Any) -> None:
    listed = api_alice.get_json("/api/connections/")
    detail = api_alice.get_json(f"/api/connections/{cloud.id}/")
    for response in (listed, detail):
        assert response.status_code == 200
        assert not any(secret in response.content.decode() for secret in SECRETS)
    assert detail.json()["credentials_set"] == ["access_token", "app_secret", "phone_number_id", "verify_token"]


def test_only_admins_add_connections_and_credentials_stay_write_only(
    api_alice: ApiClient, bob: User, acme: Any
) -> None:
    payload = {
        "name": "Main",
        "provider": "evolution",
        "base_url": "http://evo.local",
        "credentials": {"instance": "main", "api_key": "evo-secret-key"},
    }
    assert ApiClient(token_for(bob, acme)).post_json("/api/connections/", payload).status_code == 403
    response = api_alice.post_json("/api/connections/", payload)
    assert response.status_code == 201 and "evo-secret-key" not in response.content.decode()
    connection_id = response.json()["id"]
    patched = api_alice.patch_json(f"/api/connections/{connection_id}/", {"credentials": {"api_key": "rotated"}})
    assert patched.status_code == 200
    assert Connection.objects.get(pk=connection_id).credentials == {"instance": "main", "api_key": "rotated"}


def test_the_admin_form_never_renders_stored_credentials(admin_client: Any, evolution: Any) -> None:
    page = admin_client.get(f"/admin/campaigns/connection/{evolution.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "cred_api_key" in html and "evo-secret-key" not in html
    assert "evo-secret-key" not in repr(evolution)
