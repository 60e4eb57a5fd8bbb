"""Shared fixtures: alice owns acme, bob is an operator of acme, charlie owns globex."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client

from sense.models import ApiToken, Membership, Tenant

pytest_plugins = ["tests.workers", "tests.live"]

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _clear_cache() -> Any:
    with contextlib.suppress(Exception):  # a test may point the cache at a stopped server
        cache.clear()
    yield


@pytest.fixture
def acme(db: Any) -> Tenant:
    return Tenant.objects.create(slug="acme", name="Acme")


@pytest.fixture
def globex(db: Any) -> Tenant:
    return Tenant.objects.create(slug="globex", name="Globex")


def _member(username: str, tenant: Tenant, role: str) -> User:
    user = User.objects.create_user(username=username, password=PASSWORD, email=f"{username}@example.com")
    Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


@pytest.fixture
def alice(acme: Tenant) -> User:
    return _member("alice", acme, Membership.Role.ADMIN)


@pytest.fixture
def bob(acme: Tenant, alice: User) -> User:
    return _member("bob", acme, Membership.Role.OPERATOR)


@pytest.fixture
def charlie(globex: Tenant) -> User:
    return _member("charlie", globex, Membership.Role.ADMIN)


def token_for(user: User, tenant: Tenant) -> str:
    _, raw = ApiToken.issue(membership=Membership.objects.get(user=user, tenant=tenant))
    return raw


@pytest.fixture
def alice_token(alice: User, acme: Tenant) -> str:
    return token_for(alice, acme)


@pytest.fixture
def charlie_token(charlie: User, globex: Tenant) -> str:
    return token_for(charlie, globex)


class ApiClient(Client):
    """A test client that sends a Bearer token and JSON bodies."""

    def __init__(self, token: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.token = token

    def _auth(self, extra: dict[str, Any]) -> dict[str, Any]:
        if self.token:
            extra.setdefault("HTTP_AUTHORIZATION", f"Bearer {self.token}")
        return extra

    def get_json(self, path: str, **extra: Any) -> Any:
        return self.get(path, **self._auth(extra))

    def post_json(self, path: str, data: Any = None, **extra: Any) -> Any:
        body = json.dumps(data if data is not None else {})
        return self.post(path, body, content_type="application/json", **self._auth(extra))

    def patch_json(self, path: str, data: Any = None, **extra: Any) -> Any:
        return self.patch(path, json.dumps(data or {}), content_type="application/json", **self._auth(extra))

    def delete_json(self, path: str, **extra: Any) -> Any:
        return self.delete(path, **self._auth(extra))


@pytest.fixture
def api_alice(alice_token: str) -> ApiClient:
    return ApiClient(alice_token)


@pytest.fixture
def api_charlie(charlie_token: str) -> ApiClient:
    return ApiClient(charlie_token)


@pytest.fixture
def anon_api() -> ApiClient:
    return ApiClient()
