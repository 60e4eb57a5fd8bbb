from __future__ import annotations

import contextlib
import json
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from sense.models import ApiToken, Membership, Tenant
from tests.conftest import ApiClient


def run(*args: str) -> Any:
    out = StringIO()
    call_command(*args, "--json", stdout=out)
    return json.loads(out.getvalue())


def test_createtenant_creates_once_and_then_returns_the_same_tenant(db: None) -> None:
    first = run("createtenant", "acme", "--name", "Acme Corp")
    again = run("createtenant", "acme")
    assert first["slug"] == "acme" and first["created"] is True
    assert again["id"] == first["id"] and again["created"] is False
    assert Tenant.objects.get().name == "Acme Corp"


def test_createtenant_refuses_a_bad_slug(db: None) -> None:
    with pytest.raises(CommandError, match="invalid slug"):
        call_command("createtenant", "Not A Slug")


def test_addmember_creates_the_user_and_sets_the_role(acme: Tenant) -> None:
    result = run("addmember", "dora", "--tenant", "acme", "--role", "admin", "--password", "s3cret-pass")
    assert result == {
        "user_id": result["user_id"],
        "username": "dora",
        "tenant": "acme",
        "role": "admin",
        "user_created": True,
        "created": True,
    }
    assert Client().login(username="dora", password="s3cret-pass")
    again = run("addmember", "dora", "--tenant", "acme", "--role", "operator")
    assert again["user_created"] is False and again["role"] == "operator"
    assert Membership.objects.get(user__username="dora").role == "operator"


def test_addmember_needs_an_existing_tenant(db: None) -> None:
    with pytest.raises(CommandError, match="no tenant"):
        call_command("addmember", "dora", "--tenant", "nope")


def test_issuetoken_prints_a_working_token(alice: User) -> None:
    result = run("issuetoken", "alice", "--tenant", "acme")
    assert ApiToken.objects.get().prefix == result["token"][:12]
    assert ApiClient(result["token"]).get_json("/api/me/").json()["username"] == "alice"


def test_issuetoken_refuses_a_non_member(alice: User, globex: Tenant) -> None:
    with pytest.raises(CommandError, match="not a member"):
        call_command("issuetoken", "alice", "--tenant", "globex")


def test_seed_demo_creates_a_tenant_and_an_admin_who_can_log_in(db: None) -> None:
    result = run("seed_demo")
    assert result["tenant"] == "demo"
    client = Client()
    assert client.login(username="admin", password=result["password"])
    assert client.get("/admin/").status_code == 200
    again = run("seed_demo")
    assert again["password"] is None  # an existing admin keeps the password
    assert Tenant.objects.filter(slug="demo").count() == 1


def test_ensure_bucket_creates_a_missing_bucket(db: None, settings: Any) -> None:
    from sense.lib.storage import s3_client

    client = s3_client()
    settings.S3_BUCKET = "sense-ensure-test"
    with contextlib.suppress(Exception):
        client.delete_bucket(Bucket="sense-ensure-test")
    assert run("ensure_bucket") == {"bucket": "created"}
    assert run("ensure_bucket") == {"bucket": "exists"}
    client.delete_bucket(Bucket="sense-ensure-test")
