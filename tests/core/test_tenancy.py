from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.http import Http404
from django.test import Client

from sense.models import ApiToken, Membership, Tenant
from sense.tenancy import SESSION_TENANT_KEY, get_for_tenant
from tests.conftest import PASSWORD


def test_a_session_acts_for_the_users_tenant(alice: User, acme: Tenant) -> None:
    client = Client()
    assert client.login(username="alice", password=PASSWORD)
    assert client.get("/api/me/").json()["tenant"]["slug"] == "acme"


def test_a_session_in_several_tenants_acts_for_the_chosen_one(bob: User, globex: Tenant) -> None:
    Membership.objects.create(user=bob, tenant=globex, role="operator")
    client = Client()
    client.login(username="bob", password=PASSWORD)
    assert client.get("/api/me/").json()["tenant"]["slug"] == "acme"  # first by name
    session = client.session
    session[SESSION_TENANT_KEY] = str(globex.id)
    session.save()
    assert client.get("/api/me/").json()["tenant"]["slug"] == "globex"


def test_a_session_cannot_choose_a_tenant_it_is_not_in(charlie: User, acme: Tenant) -> None:
    client = Client()
    client.login(username="charlie", password=PASSWORD)
    session = client.session
    session[SESSION_TENANT_KEY] = str(acme.id)
    session.save()
    assert client.get("/api/me/").json()["tenant"]["slug"] == "globex"


def test_a_user_without_membership_is_not_authenticated_for_the_api(db: None) -> None:
    User.objects.create_user("dave", password=PASSWORD)
    client = Client()
    client.login(username="dave", password=PASSWORD)
    assert client.get("/api/me/").status_code == 401


def test_get_for_tenant_answers_404_for_another_tenants_row(
    alice: User, charlie: User, acme: Tenant, globex: Tenant
) -> None:
    alice_membership = Membership.objects.get(user=alice)
    token, _ = ApiToken.issue(membership=alice_membership)
    # Membership is tenant-owned: alice's row is found in acme and is a 404 from globex.
    assert get_for_tenant(Membership, acme, pk=alice_membership.pk) == alice_membership
    with pytest.raises(Http404):
        get_for_tenant(Membership, globex, pk=alice_membership.pk)
    with pytest.raises(Http404):
        get_for_tenant(Membership, acme, pk="not-a-number")
