from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from sense.models import ApiToken, Membership, Tenant, hash_token
from tests.conftest import ApiClient, token_for


def test_a_token_is_stored_only_as_its_hash(alice: User, acme: Tenant) -> None:
    token, raw = ApiToken.issue(membership=Membership.objects.get(user=alice))
    token.refresh_from_db()
    assert raw.startswith("sense_")
    assert token.token_hash == hash_token(raw)
    assert raw not in {token.token_hash, token.prefix}
    assert token.prefix == raw[:12]


def test_a_token_authenticates_to_its_member_and_tenant(alice_token: str, acme: Tenant) -> None:
    response = ApiClient(alice_token).get_json("/api/me/")
    assert response.status_code == 200
    assert response.json() == {
        "username": "alice",
        "role": "admin",
        "tenant": {"id": str(acme.id), "slug": "acme", "name": "Acme"},
    }


def test_it_records_when_a_token_was_last_used(alice_token: str) -> None:
    token = ApiToken.objects.get()
    assert token.last_used_at is None
    ApiClient(alice_token).get_json("/api/me/")
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_a_revoked_token_is_refused(alice_token: str) -> None:
    ApiToken.objects.get().revoke()
    response = ApiClient(alice_token).get_json("/api/me/")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


def test_a_token_of_an_inactive_user_is_refused(alice: User, alice_token: str) -> None:
    alice.is_active = False
    alice.save()
    assert ApiClient(alice_token).get_json("/api/me/").status_code == 401


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer sense_wrong", "Token x", "Bearer", ""])
def test_bad_credentials_get_a_json_401(db: None, header: str) -> None:
    response = Client().get("/api/me/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json() == {
        "error": "Authentication required: send a valid Bearer token.",
        "code": "unauthenticated",
    }


def test_a_token_acts_only_for_its_own_tenant(bob: User, charlie: User, acme: Tenant, globex: Tenant) -> None:
    # bob joins globex too; his acme token must still act for acme only.
    Membership.objects.create(user=bob, tenant=globex, role="operator")
    acme_token = token_for(bob, acme)
    globex_token = token_for(bob, globex)
    assert ApiClient(acme_token).get_json("/api/me/").json()["tenant"]["slug"] == "acme"
    assert ApiClient(globex_token).get_json("/api/me/").json()["tenant"]["slug"] == "globex"


def test_last_used_is_not_rewritten_on_every_call(alice_token: str, django_assert_num_queries: object) -> None:
    client = ApiClient(alice_token)
    client.get_json("/api/me/")
    stamp = ApiToken.objects.get().last_used_at
    client.get_json("/api/me/")
    assert ApiToken.objects.get().last_used_at == stamp
    ApiToken.objects.update(last_used_at=timezone.now() - timedelta(minutes=5))
    client.get_json("/api/me/")
    assert ApiToken.objects.get().last_used_at > timezone.now() - timedelta(seconds=5)  # type: ignore[operator]


def test_admin_shows_a_new_token_once_and_never_again(admin_client: Client, alice: User) -> None:
    membership = Membership.objects.get(user=alice)
    response = admin_client.post("/admin/sense/apitoken/add/", {"membership": membership.pk, "name": "ci"}, follow=True)
    assert response.status_code == 200
    token = ApiToken.objects.get(name="ci")
    shown = [str(m) for m in response.context["messages"]]
    raw = next(word for message in shown for word in message.split() if word.startswith("sense_"))
    assert hash_token(raw) == token.token_hash
    change_page = admin_client.get(f"/admin/sense/apitoken/{token.pk}/change/").content.decode()
    list_page = admin_client.get("/admin/sense/apitoken/").content.decode()
    assert raw not in change_page and raw not in list_page
    assert token.token_hash not in change_page


def test_admin_action_revokes_tokens(admin_client: Client, alice_token: str) -> None:
    token = ApiToken.objects.get()
    admin_client.post("/admin/sense/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert ApiClient(alice_token).get_json("/api/me/").status_code == 401
