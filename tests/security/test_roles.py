"""Roles inside one tenant: alice is acme's admin, bob its operator.

Admin-only: managing connections (adding one, changing its settings or credentials), because
a connection holds the gateway account's credentials and its secret webhook token. Everything
else a member does (contacts, campaigns and their lifecycle, media, reading) is operator work.
The consent keywords page (tenant settings) is admin-only to change and readable by every
member. There are no member or API token endpoints: memberships and tokens are made by staff
(`addmember`, `issuetoken`, the Django admin).

One table says who may do each operation. For each: whoever may do it gets through (and a
write really changes acme's rows); an operator trying an admin operation gets a clear 403 and
changes nothing. No response to anyone shows a connection's credentials, and no response to an
operator shows its webhook token. Guards fail when an API operation (from the OpenAPI schema)
or a page that takes a POST is in no table here, so a new endpoint must be classified.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from campaigns.models import Connection
from sense.tasks import PING_TTL, ping_key
from tests.campaigns.test_contact_import_api import streamed
from tests.conftest import token_for
from tests.dashboard.conftest import login
from tests.media.files import CSV, png
from tests.security.conftest import (
    API,
    MEDIA,
    PAGE,
    Req,
    World,
    _openapi_operations,
    auths,
    fill,
    fill_data,
    route_of,
    snapshot,
)
from tests.security.test_csrf import CSRF_FORMS, NEW_PHONE

ADMIN, MEMBER = "admin", "member"  # who may do an operation: admins only, or any member


@dataclass(frozen=True)
class Op:
    """An operation and who may do it. UPLOAD: (name, content) sent as the multipart `file`;
    CHANGES: whether it changes acme's rows when it goes through (writes only)."""

    req: Req
    allowed: str
    upload: tuple[str, bytes] | None = None
    changes: bool = True

    def __str__(self) -> str:
        data = f" {sorted(self.req.data)}" if self.req.data else ""
        return f"{self.req}{data}"


CAMPAIGN_FORM = {"name": "New", "connection": "{connection}", "message": "Oi", "tags": ""}
NEW_CONNECTION = {
    "name": "Second number",
    "provider": "evolution",
    "base_url": "http://127.0.0.1:9",
    "credentials": {"instance": "s3cr3t-new-instance", "api_key": "s3cr3t-new-api-key"},
}

OPERATIONS = [
    # Connections: admins manage them; members read them (to pick one for a campaign)
    Op(Req("post", "/api/connections/", API, NEW_CONNECTION), ADMIN),
    Op(Req("patch", "/api/connections/{connection}/", API, {"name": "Renamed", "is_active": False}), ADMIN),
    Op(Req("patch", "/api/connections/{connection}/", API, {"credentials": {"api_key": "s3cr3t-rotated"}}), ADMIN),
    Op(Req("patch", "/api/connections/{connection}/", API, {"base_url": "http://127.0.0.1:10"}), ADMIN),
    Op(Req("patch", "/api/connections/{connection}/", API, {"rate_per_minute": 100_000}), ADMIN),
    Op(Req("get", "/api/connections/", API), MEMBER),
    Op(Req("get", "/api/connections/{connection}/", API), MEMBER),
    Op(Req("get", "/connections/", PAGE), MEMBER),
    Op(Req("get", "/connections/{connection}/", PAGE), MEMBER),  # the webhook URL for admins only
    Op(Req("get", "/connections/{cloud_connection}/", PAGE), MEMBER),
    Op(Req("post", "/connections/{connection}/", PAGE, {"name": "Renamed", "daily_limit": "10"}), ADMIN),
    Op(Req("post", "/connections/{connection}/", PAGE, {"name": "Acme secret number", "is_active": ""}), ADMIN),
    # Message templates: members read them; admins sync them (the connection's token at work)
    Op(Req("post", "/api/connections/{cloud_connection}/templates/sync/", API), ADMIN),
    Op(Req("post", "/templates/sync/{cloud_connection}/", PAGE), ADMIN),
    Op(Req("get", "/api/templates/", API), MEMBER),
    Op(Req("get", "/api/templates/{template}/", API), MEMBER),
    Op(Req("get", "/templates/", PAGE), MEMBER),
    Op(Req("get", "/campaigns/template-fields/?connection={cloud_connection}", PAGE), MEMBER),
    # Contacts
    Op(Req("get", "/api/contacts/", API), MEMBER),
    Op(Req("post", "/api/contacts/", API, {"phone": NEW_PHONE, "name": "New"}), MEMBER),
    Op(Req("post", "/api/contacts/import/", API), MEMBER, upload=("contacts.csv", CSV)),
    Op(Req("get", "/api/contacts/{contact}/", API), MEMBER),
    Op(Req("patch", "/api/contacts/{contact}/", API, {"name": "Renamed", "opted_out": True}), MEMBER),
    Op(Req("delete", "/api/contacts/{contact}/", API), MEMBER),
    Op(Req("get", "/api/contacts/imports/{contact_import}/", API), MEMBER),
    Op(Req("get", "/api/contacts/imports/{contact_import}/errors/", API), MEMBER),
    Op(Req("get", "/contacts/imports/{contact_import}/", PAGE), MEMBER),
    Op(Req("get", "/contacts/", PAGE), MEMBER),
    Op(Req("get", "/contacts/{contact}/erase/", PAGE), MEMBER),
    Op(Req("get", "/api/contacts/{contact}/messages/", API), MEMBER),
    Op(Req("get", "/api/contacts/{contact}/consent/", API), MEMBER),
    Op(Req("post", "/api/contacts/{contact}/opt-in/", API, {"reason": "asked"}, setup="opted_out"), MEMBER),
    Op(Req("post", "/api/contacts/{contact}/opt-out/", API, {"reason": "complained"}), MEMBER),
    Op(Req("get", "/api/inbound/", API), MEMBER),
    Op(Req("get", "/contacts/{contact}/", PAGE), MEMBER),
    Op(Req("get", "/contacts/{contact}/avatar/", MEDIA), MEMBER),
    Op(Req("post", "/contacts/{contact}/consent/", PAGE, {"action": "opt_out"}), MEMBER),
    Op(
        Req("post", "/contacts/{contact}/consent/", PAGE, {"action": "opt_in", "reason": "x"}, setup="opted_out"),
        MEMBER,
    ),
    # Consent keywords: every member reads them, admins change them
    Op(Req("get", "/contacts/settings/consent/", PAGE), MEMBER),
    Op(Req("post", "/contacts/settings/consent/", PAGE, {"opt_out_keywords": "SAIR, CHEGA"}), ADMIN),
    Op(Req("post", "/contacts/{contact}/erase/", PAGE), MEMBER),
    Op(Req("post", "/contacts/import/", PAGE), MEMBER, upload=("contacts.csv", CSV)),
    # Campaigns and their lifecycle
    Op(Req("get", "/api/campaigns/", API), MEMBER),
    Op(Req("post", "/api/campaigns/", API, {"name": "New", "connection_id": "{connection}", "message": "Oi"}), MEMBER),
    Op(Req("get", "/api/campaigns/{campaign}/", API), MEMBER),
    Op(Req("patch", "/api/campaigns/{campaign}/", API, {"name": "Renamed"}, setup="draft"), MEMBER),
    Op(Req("post", "/api/campaigns/{campaign}/start/", API, setup="draft"), MEMBER),
    Op(Req("post", "/api/campaigns/{campaign}/pause/", API, setup="running"), MEMBER),
    Op(Req("post", "/api/campaigns/{campaign}/resume/", API, setup="paused"), MEMBER),
    Op(Req("post", "/api/campaigns/{campaign}/cancel/", API, setup="running"), MEMBER),
    Op(Req("post", "/api/campaigns/{campaign}/unschedule/", API, setup="scheduled"), MEMBER),
    Op(Req("get", "/api/campaigns/{campaign}/deliveries/", API), MEMBER),
    Op(Req("get", "/api/campaigns/{campaign}/deliveries/{delivery}/", API), MEMBER),
    # Operator actions: operator work, like the lifecycle
    Op(Req("post", "/api/campaigns/{campaign}/retry/", API, setup="finished"), MEMBER),
    Op(Req("post", "/api/campaigns/{campaign}/test/", API, {"phone": "+5511977776666"}), MEMBER),
    Op(Req("post", "/api/campaigns/{campaign}/duplicate/", API), MEMBER),
    Op(Req("get", "/api/campaigns/{campaign}/activity/", API), MEMBER),
    Op(Req("get", "/api/campaigns/{campaign}/deliveries.csv", API), MEMBER),
    Op(Req("get", "/api/deliveries/{delivery}/events/", API), MEMBER),
    Op(Req("get", "/campaigns/", PAGE), MEMBER),
    Op(Req("get", "/campaigns/new/", PAGE), MEMBER),  # its connection choices show names only
    Op(Req("post", "/campaigns/new/", PAGE, CAMPAIGN_FORM), MEMBER),
    Op(Req("post", "/campaigns/preview/", PAGE, {"message": "Oi {{name}}"}), MEMBER, changes=False),
    Op(Req("get", "/campaigns/{campaign}/", PAGE), MEMBER),
    Op(Req("get", "/campaigns/{campaign}/replies/", PAGE, headers={"HX-Request": "true"}), MEMBER),
    Op(Req("post", "/campaigns/{campaign}/start/", PAGE, setup="draft"), MEMBER),
    Op(Req("post", "/campaigns/{campaign}/pause/", PAGE, setup="running"), MEMBER),
    Op(Req("post", "/campaigns/{campaign}/resume/", PAGE, setup="paused"), MEMBER),
    Op(Req("post", "/campaigns/{campaign}/cancel/", PAGE, setup="running"), MEMBER),
    Op(Req("get", "/campaigns/{campaign}/activity/", PAGE), MEMBER),
    Op(Req("post", "/campaigns/{campaign}/retry/", PAGE, setup="finished"), MEMBER),
    Op(Req("post", "/campaigns/{campaign}/duplicate/", PAGE), MEMBER),
    Op(Req("post", "/campaigns/{campaign}/test/", PAGE, {"phone": "+5511977776666"}), MEMBER),
    Op(Req("get", "/deliveries/{delivery}/", PAGE), MEMBER),
    # Media
    Op(Req("get", "/api/media/", API), MEMBER),
    Op(Req("get", "/api/media/{asset}/", API), MEMBER),
    Op(Req("delete", "/api/media/{asset}/", API), MEMBER),
    Op(Req("get", "/api/media/{asset}/file/", MEDIA), MEMBER),
    Op(Req("get", "/api/media/{asset}/thumbnail/", MEDIA), MEMBER),
    Op(Req("post", "/api/chat/upload-media/", MEDIA), MEMBER, upload=("photo.png", png())),
    Op(Req("get", "/media/", PAGE), MEMBER),
    Op(Req("post", "/media/{asset}/delete/", PAGE), MEMBER),
    # The account and operations
    Op(Req("get", "/api/me/", API), MEMBER),
    Op(Req("post", "/api/ops/worker-ping/", API), MEMBER, changes=False),
    Op(Req("get", "/api/ops/worker-ping/{token}/", API, setup="ping"), MEMBER),
    Op(Req("get", "/ops/", PAGE), MEMBER),
]

# Page forms about the caller's own session or account, the same for every role.
ACCOUNT_FORMS = {
    "login/": "logging in",
    "logout/": "logging out",
    "password/": "changing one's own password",
    "tenant/switch/": "choosing among one's own tenants",
    "i18n/setlang/": "the language cookie",
}
PUBLIC_API = {("get", "api/health/"), ("get", "api/health/ready/")}

ADMIN_REFUSAL = {"error": "Only tenant admins may manage connections.", "code": "forbidden"}


# =============================================================================================
# Helpers
# =============================================================================================


@pytest.fixture
def roles_world(world: World) -> World:
    """The security matrix's world, with credentials that are easy to spot in a response."""
    Connection.objects.filter(pk=world.connection.pk).update(credentials=CREDENTIALS)
    world.connection.refresh_from_db()
    return world


CREDENTIALS = {"instance": "s3cr3t-instance", "api_key": "s3cr3t-api-key", "jwt_key": "s3cr3t-jwt-key"}
SECRET_MARK = "s3cr3t"  # in every credential value stored or sent by the table


def client_for(who: str, auth: str, world: World) -> tuple[Client, str | None]:
    """A client for WHO (alice or bob, both of acme) by AUTH ("session" or "token")."""
    if auth == "session":
        return login(who), None
    return Client(), token_for(User.objects.get(username=who), world.acme)


def prepare(world: World, setup: str) -> None:
    if setup == "ping":  # a ping a worker has not answered yet
        cache.set(ping_key("abc"), {"done": False}, PING_TTL)
    else:
        world.prepare(setup)


def perform(client: Client, op: Op, world: World, token: str | None) -> Any:
    """OP through CLIENT (a session, or TOKEN as Bearer): forms and uploads as multipart,
    other API writes as JSON. English answers, so that messages can be compared."""
    ids = world.ids()
    path, data = fill(op.req.path, ids), fill_data(op.req.data, ids)
    headers = {"Accept-Language": "en", **op.req.headers}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if op.req.method == "get":
        return client.get(path, headers=headers)
    if op.upload is not None:
        name, content = op.upload
        return client.post(path, {**data, "file": SimpleUploadedFile(name, content)}, headers=headers)
    if op.req.kind == PAGE:
        return client.post(path, data, headers=headers)
    body = json.dumps(data)
    return client.generic(op.req.method.upper(), path, body, content_type="application/json", headers=headers)


def shown(response: Any) -> str:
    """Everything a response shows its caller: body and headers."""
    body = streamed(response) if getattr(response, "is_async", False) else response.getvalue().decode(errors="replace")
    return body + str(dict(response.items()))


def assert_shows_no_secret(response: Any, who: str) -> None:
    """No credential value, ever; no webhook token to an operator (it authenticates the
    provider's webhooks, alone for an Evolution connection without a JWT key)."""
    text = shown(response)
    assert SECRET_MARK not in text, f"a credential in the answer to {who}"
    if who == "bob":
        for token in Connection.objects.values_list("webhook_token", flat=True):
            assert token not in text, "a webhook token in an answer to an operator"


def allowed(op: Op) -> tuple[str, ...]:
    return ("alice", "bob") if op.allowed == MEMBER else ("alice",)


GRANTED = [
    pytest.param(op, auth, who, id=f"{op} [{who}, {auth}]")
    for op in OPERATIONS
    for auth in auths(op.req)
    for who in allowed(op)
]
REFUSED = [
    pytest.param(op, auth, id=f"{op} [{auth}]") for op in OPERATIONS if op.allowed == ADMIN for auth in auths(op.req)
]


# =============================================================================================
# Tests
# =============================================================================================


@pytest.mark.parametrize(("op", "auth", "who"), GRANTED)
def test_a_member_allowed_the_operation_gets_through(op: Op, auth: str, who: str, roles_world: World) -> None:
    prepare(roles_world, op.req.setup)
    client, token = client_for(who, auth, roles_world)
    before = snapshot(roles_world.acme)

    response = perform(client, op, roles_world, token)

    assert response.status_code < 400, shown(response)[:300]
    if op.req.writes and op.changes:
        assert snapshot(roles_world.acme) != before
    assert_shows_no_secret(response, who)


@pytest.mark.parametrize(("op", "auth"), REFUSED)
def test_an_operator_is_refused_an_admin_operation_and_nothing_changes(op: Op, auth: str, roles_world: World) -> None:
    prepare(roles_world, op.req.setup)
    client, token = client_for("bob", auth, roles_world)
    before = snapshot(roles_world.acme)

    response = perform(client, op, roles_world, token)

    assert response.status_code == 403, shown(response)[:300]
    if op.req.kind == PAGE:
        assert "text/html" in response["Content-Type"]
    else:
        assert response.json() == ADMIN_REFUSAL
    assert snapshot(roles_world.acme) == before
    assert_shows_no_secret(response, "bob")


def test_the_webhook_url_is_shown_to_admins_only(roles_world: World) -> None:
    """An admin needs the webhook URL to set up the gateway; it holds the connection's secret
    token, which an operator has no use for."""
    detail = Op(Req("get", "/api/connections/{connection}/", API), MEMBER)
    alice = perform(Client(), detail, roles_world, token_for(User.objects.get(username="alice"), roles_world.acme))
    bob = perform(Client(), detail, roles_world, token_for(User.objects.get(username="bob"), roles_world.acme))

    assert alice.json()["webhook_url"] == f"/api/webhooks/evolution/{roles_world.connection.webhook_token}/"
    assert bob.json()["webhook_url"] is None
    assert bob.json()["credentials_set"] == ["api_key", "instance", "jwt_key"]  # which are set, not their values


def test_the_connection_page_shows_the_webhook_url_to_admins_only(roles_world: World) -> None:
    """The page follows the API: the URL to paste into the gateway for admins, no credential
    value for anyone."""
    detail = Op(Req("get", "/connections/{connection}/", PAGE), MEMBER)
    alice = shown(perform(login("alice"), detail, roles_world, None))
    bob = shown(perform(login("bob"), detail, roles_world, None))

    assert f"http://testserver/api/webhooks/evolution/{roles_world.connection.webhook_token}/" in alice
    assert roles_world.connection.webhook_token not in bob
    for value in CREDENTIALS.values():
        assert value not in alice and value not in bob


def test_every_api_operation_has_a_role() -> None:
    """A new API operation fails here until it is added to OPERATIONS with who may do it."""
    covered = {(op.req.method, route_of(op.req.path)) for op in OPERATIONS if op.req.kind == API}
    missing = sorted(_openapi_operations() - covered - PUBLIC_API)
    assert not missing, f"API operations with no role in OPERATIONS: {missing}"


def test_every_page_that_takes_a_post_has_a_role() -> None:
    """Every form of the security matrix's CSRF table (which its guard keeps complete) that is
    no API operation is in OPERATIONS or is about one's own account."""
    api = _openapi_operations()
    forms = {route_of(f.path) for f in CSRF_FORMS if (f.method, route_of(f.path)) not in api}
    covered = {route_of(op.req.path) for op in OPERATIONS if op.req.writes}
    missing = sorted(forms - covered - set(ACCOUNT_FORMS))
    assert not missing, f"forms with no role in OPERATIONS: {missing}"
