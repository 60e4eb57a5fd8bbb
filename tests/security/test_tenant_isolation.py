"""Tenant isolation: every URL that names a tenant's object answers another tenant 404 and
changes nothing; every list shows only the caller's tenant; anonymous callers are sent
to the login page (pages) or get 401 (API).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from campaigns.models import Campaign
from tests.conftest import token_for
from tests.dashboard.conftest import login
from tests.security.conftest import (
    ADMIN_PREFIX,
    API,
    HX,
    MEDIA,
    PAGE,
    PUBLIC,
    Req,
    World,
    _openapi_operations,
    auths,
    concrete,
    error_code,
    fill,
    fill_data,
    route_of,
    routes,
    snapshot,
)

# Every URL that names one of acme's objects. Charlie (globex) must get 404 and change nothing;
# alice (acme) must get through (which proves the URL is right and the write would land).
OBJECT_URLS = [
    # Pages and their HTMX partials
    Req("get", "/campaigns/{campaign}/", PAGE),
    Req("get", "/campaigns/{campaign}/", PAGE, headers={**HX, "HX-Target": "deliveries"}),
    Req("get", "/campaigns/{campaign}/stats/", PAGE, headers=HX),
    Req("get", "/campaigns/{campaign}/actions/", PAGE, headers=HX),
    Req("get", "/campaigns/{campaign}/deliveries/", PAGE),
    Req("get", "/campaigns/{campaign}/deliveries/", PAGE, headers=HX),
    Req("post", "/campaigns/{campaign}/start/", PAGE, setup="draft"),
    Req("post", "/campaigns/{campaign}/pause/", PAGE, setup="running"),
    Req("post", "/campaigns/{campaign}/pause/", PAGE, headers=HX, setup="running"),
    Req("post", "/campaigns/{campaign}/resume/", PAGE, setup="paused"),
    Req("post", "/campaigns/{campaign}/cancel/", PAGE, setup="running"),
    Req("get", "/campaigns/{campaign}/activity/", PAGE),
    Req("get", "/campaigns/{campaign}/activity/", PAGE, headers=HX),
    Req("post", "/campaigns/{campaign}/retry/", PAGE, setup="finished"),
    Req("post", "/campaigns/{campaign}/retry/", PAGE, headers=HX, setup="finished"),
    Req("post", "/campaigns/{campaign}/duplicate/", PAGE),
    Req("post", "/campaigns/{campaign}/test/", PAGE, {"phone": "+5511977776666"}),
    Req("post", "/campaigns/{campaign}/test/", PAGE, {"phone": "+5511977776666"}, headers=HX),
    Req("get", "/deliveries/{delivery}/", PAGE),  # the delivery log, as a page
    Req("get", "/deliveries/{delivery}/", PAGE, headers=HX),  # and as the modal
    Req("get", "/media/{asset}/card/", PAGE, headers=HX),
    Req("get", "/media/{asset}/preview/", PAGE),
    Req("get", "/media/{asset}/preview/", PAGE, headers=HX),
    Req("post", "/media/{asset}/delete/", PAGE),
    Req("post", "/media/{asset}/delete/", PAGE, headers=HX),
    Req("get", "/contacts/{contact}/", PAGE),
    Req("get", "/contacts/{contact}/messages/", PAGE),
    Req("get", "/contacts/{contact}/messages/?page=1", PAGE, headers=HX),
    Req("get", "/contacts/{contact}/inbound/{inbound}/", PAGE, headers=HX),
    Req("post", "/contacts/{contact}/consent/", PAGE, {"action": "opt_out"}),
    Req("post", "/contacts/{contact}/consent/", PAGE, {"action": "opt_in", "reason": "asked"}, setup="opted_out"),
    Req("post", "/contacts/{contact}/consent/", PAGE, {"action": "opt_out"}, headers=HX),
    Req("get", "/campaigns/{campaign}/replies/", PAGE, headers=HX),
    Req("get", "/contacts/{contact}/erase/", PAGE),
    Req("post", "/contacts/{contact}/erase/", PAGE),
    Req("get", "/contacts/imports/{contact_import}/", PAGE),
    Req("get", "/contacts/imports/{contact_import}/", PAGE, headers=HX),  # the progress partial
    Req("get", "/contacts/imports/{contact_import}/errors/", PAGE),
    Req("get", "/connections/{connection}/", PAGE),
    Req("get", "/connections/{cloud_connection}/", PAGE),
    Req("get", "/connections/{connection}/?page=1", PAGE, headers=HX),  # the campaigns partial
    Req("post", "/connections/{connection}/", PAGE, {"name": "Hijacked", "daily_limit": "1"}),
    # JSON API
    Req("get", "/api/campaigns/{campaign}/", API),
    Req("patch", "/api/campaigns/{campaign}/", API, {"name": "Hijacked", "message": "pwned"}, setup="draft"),
    Req("post", "/api/campaigns/{campaign}/start/", API, setup="draft"),
    Req("post", "/api/campaigns/{campaign}/pause/", API, setup="running"),
    Req("post", "/api/campaigns/{campaign}/resume/", API, setup="paused"),
    Req("post", "/api/campaigns/{campaign}/cancel/", API, setup="running"),
    Req("post", "/api/campaigns/{campaign}/unschedule/", API, setup="scheduled"),
    Req("get", "/api/campaigns/{campaign}/deliveries/", API),
    Req("get", "/api/campaigns/{campaign}/deliveries/{delivery}/", API),
    Req("post", "/api/campaigns/{campaign}/retry/", API, setup="finished"),
    Req("post", "/api/campaigns/{campaign}/test/", API, {"phone": "+5511977776666"}),
    Req("post", "/api/campaigns/{campaign}/duplicate/", API),
    Req("get", "/api/campaigns/{campaign}/activity/", API),
    Req("get", "/api/campaigns/{campaign}/deliveries.csv", API),
    Req("get", "/api/campaigns/{campaign}/deliveries.csv?sep=;", API),
    Req("get", "/api/deliveries/{delivery}/events/", API),
    Req("get", "/api/connections/{connection}/", API),
    Req("patch", "/api/connections/{connection}/", API, {"name": "Hijacked", "is_active": False}),
    Req("get", "/api/contacts/{contact}/", API),
    Req("patch", "/api/contacts/{contact}/", API, {"name": "Hijacked", "opted_out": True}),
    Req("delete", "/api/contacts/{contact}/", API),
    Req("get", "/api/contacts/{contact}/messages/", API),
    Req("get", "/api/contacts/{contact}/consent/", API),
    Req("post", "/api/contacts/{contact}/opt-in/", API, {"reason": "asked by phone"}, setup="opted_out"),
    Req("post", "/api/contacts/{contact}/opt-out/", API, {"reason": "complained"}),
    Req("get", "/api/contacts/imports/{contact_import}/", API),
    Req("get", "/api/contacts/imports/{contact_import}/errors/", API),
    Req("get", "/api/media/{asset}/", API),
    Req("delete", "/api/media/{asset}/", API),
    Req("get", "/api/templates/{template}/", API),
    Req("post", "/api/connections/{cloud_connection}/templates/sync/", API),
    Req("post", "/templates/sync/{cloud_connection}/", PAGE),
    # Media URLs outside the ninja API
    Req("get", "/api/media/{asset}/file/", MEDIA),
    Req("get", "/api/media/{asset}/thumbnail/", MEDIA),
    Req("get", "/contacts/{contact}/avatar/", MEDIA),  # initials when the gateway has no picture
]


@dataclass(frozen=True)
class Ref:
    """Charlie acting in his own tenant but naming one of acme's objects in the request."""

    req: Req
    status: int
    code: str = ""  # the JSON error code, for API answers


# Cross-tenant references inside a request of one's own tenant.
DRAFT = {"name": "x", "message": "m"}
OWN_API, OWN_FORM = {**DRAFT, "connection_id": "{globex_connection}"}, {**DRAFT, "connection": "{globex_connection}"}
REFERENCES = [
    Ref(Req("get", "/api/campaigns/{globex_campaign}/deliveries/{delivery}/", API), 404, "not_found"),
    Ref(Req("post", "/api/campaigns/", API, {**DRAFT, "connection_id": "{connection}"}), 422, "invalid_connection"),
    Ref(Req("post", "/api/campaigns/", API, {**OWN_API, "media_id": "{asset}"}), 422, "invalid_media"),
    Ref(
        Req("patch", "/api/campaigns/{globex_campaign}/", API, {"connection_id": "{connection}"}),
        422,
        "invalid_connection",
    ),
    Ref(Req("patch", "/api/campaigns/{globex_campaign}/", API, {"media_id": "{asset}"}), 422, "invalid_media"),
    Ref(Req("post", "/api/campaigns/", API, {**OWN_API, "template_id": "{template}"}), 400, "template_not_found"),
    Ref(
        Req("patch", "/api/campaigns/{globex_campaign}/", API, {"template_id": "{template}"}), 400, "template_not_found"
    ),
    Ref(Req("post", "/campaigns/new/", PAGE, {**OWN_FORM, "template": "{template}"}), 200),
    Ref(Req("get", "/api/inbound/?campaign_id={campaign}", API), 404, "not_found"),
    Ref(Req("get", "/api/inbound/?contact_id={contact}", API), 404, "not_found"),
    Ref(
        Req(
            "post",
            "/api/campaigns/{globex_campaign}/test/",
            API,
            {"phone": "+5511977776666", "contact_id": "{contact}"},
        ),
        422,
        "invalid_contact",
    ),
    # The form's choices are the tenant's own: another tenant's id is a form error, not a campaign.
    Ref(Req("post", "/campaigns/new/", PAGE, {**DRAFT, "connection": "{connection}"}), 200),
    Ref(Req("post", "/campaigns/new/", PAGE, {**OWN_FORM, "asset": "{asset}"}), 200),
    # Switching to a tenant one is not a member of.
    Ref(Req("post", "/tenant/switch/", PAGE, {"tenant": "{acme}"}), 404),
]


@dataclass(frozen=True)
class Listing:
    """A list, search or count: NEEDLE comes from acme's data; charlie must not see it."""

    req: Req
    needle: str


LISTINGS = [
    Listing(Req("get", "/campaigns/", PAGE), "Acme secret campaign"),
    Listing(Req("get", "/campaigns/?q=secret", PAGE, headers=HX), "Acme secret campaign"),
    Listing(Req("get", "/campaigns/new/", PAGE), "Acme secret number"),  # the connection choices
    Listing(Req("get", "/campaigns/preview/?message=%7B%7Bname%7D%7D", PAGE, headers=HX), "Acme secret contact"),
    Listing(Req("get", "/campaigns/audience/", PAGE, headers=HX), "<strong>3</strong>"),
    Listing(Req("get", "/contacts/", PAGE), "Acme secret contact"),
    Listing(Req("get", "/contacts/?q=secret", PAGE, headers=HX), "Acme secret contact"),
    Listing(Req("get", "/contacts/import/", PAGE), "acme-secret-list.csv"),  # recent imports
    Listing(Req("get", "/media/", PAGE), "acme-secret.png"),
    Listing(Req("get", "/media/?type=image", PAGE, headers=HX), "acme-secret.png"),
    Listing(Req("get", "/api/me/", API), "Acme"),
    Listing(Req("get", "/api/campaigns/", API), "Acme secret campaign"),
    Listing(Req("get", "/api/contacts/", API), "Acme secret contact"),
    Listing(Req("get", "/api/contacts/?q=secret", API), "Acme secret contact"),
    Listing(Req("get", "/api/connections/", API), "Acme secret number"),
    Listing(Req("get", "/api/inbound/", API), "Acme secret reply"),
    Listing(Req("get", "/api/inbound/?q=secret", API), "Acme secret reply"),
    Listing(Req("get", "/contacts/settings/consent/", PAGE), "Acme secret stop"),
    Listing(Req("get", "/api/media/", API), "acme-secret.png"),
    Listing(Req("get", "/api/templates/", API), "acme_secret_template"),
    Listing(Req("get", "/templates/", PAGE), "acme_secret_template"),
    Listing(Req("get", "/templates/?connection={cloud_connection}", PAGE), "acme_secret_template"),
    Listing(Req("get", "/connections/", PAGE), "Acme secret number"),
    Listing(Req("get", "/connections/", PAGE, headers=HX), "Acme secret cloud number"),
    Listing(
        Req("get", "/campaigns/template-fields/?connection={cloud_connection}", PAGE, headers=HX),
        "acme_secret_template",
    ),
]

# URLs that need a login but name no object (creating one in the caller's own tenant, or
# account pages). Anonymous callers are refused; the writes are in the CSRF table too.
LOGIN_ONLY = [
    Req("post", "/campaigns/new/", PAGE),
    Req("post", "/campaigns/preview/", PAGE),
    Req("get", "/contacts/import/", PAGE),
    Req("post", "/contacts/import/", PAGE),
    Req("post", "/contacts/settings/consent/", PAGE),
    Req("get", "/ops/", PAGE),
    Req("get", "/ops/", PAGE, headers=HX),
    Req("post", "/tenant/switch/", PAGE, {"tenant": "{initech}"}),
    Req("get", "/password/", PAGE),
    Req("post", "/password/", PAGE),
    Req("get", "/password/done/", PAGE),
    Req("post", "/api/campaigns/", API),
    Req("post", "/api/contacts/", API),
    Req("post", "/api/contacts/import/", API),
    Req("post", "/api/connections/", API),
    Req("post", "/api/ops/worker-ping/", API),
    Req("get", "/api/ops/worker-ping/{token}/", API),
    Req("post", "/api/chat/upload-media/", MEDIA),
    Req("get", "/api/chat/media-proxy/?url=https%3A%2F%2Fexample.com%2Fa.png", MEDIA),
]

# The Django admin is for staff (Sense's operators), never for tenant users: ADMIN_ROUTES below
# checks that a tenant admin who is not staff is sent to the admin login on every admin URL.
ADMIN_OPEN = {"admin/login/": "the admin login form", "admin/logout/": "logging out of the admin"}


def send(client: Client, req: Req, ids: dict[str, Any], token: str | None = None) -> Any:
    """REQ through CLIENT (a session, or TOKEN as Bearer): pages post forms, the API JSON."""
    path = fill(req.path, ids)
    headers = dict(req.headers)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if req.method == "get":
        return client.get(path, headers=headers)
    data = fill_data(req.data, ids)
    if req.kind == PAGE:
        return client.post(path, data, headers=headers)
    return client.generic(req.method.upper(), path, json.dumps(data), content_type="application/json", headers=headers)


def client_for(who: str, auth: str, world: World) -> tuple[Client, str | None]:
    """A client for WHO ("alice", "charlie") by AUTH ("session" or "token")."""
    if auth == "session":
        return login(who), None
    tenant = world.acme if who == "alice" else world.globex
    return Client(), token_for(User.objects.get(username=who), tenant)


ADMIN_ROUTES = sorted(r for r in routes() if r.startswith(ADMIN_PREFIX) and r not in ADMIN_OPEN)


ISOLATION = [pytest.param(req, auth, id=f"{req} [{auth}]") for req in OBJECT_URLS for auth in auths(req)]


@pytest.mark.parametrize(("req", "auth"), ISOLATION)
def test_another_tenant_gets_404_and_changes_nothing(req: Req, auth: str, world: World) -> None:
    world.prepare(req.setup)
    client, token = client_for("charlie", auth, world)
    before = snapshot(world.acme, world.globex)

    response = send(client, req, world.ids(), token)

    assert response.status_code == 404, response.content[:300]
    if req.kind != PAGE:
        assert error_code(response) == "not_found"
    assert b"Acme secret" not in response.content and b"acme-secret" not in response.content
    assert snapshot(world.acme, world.globex) == before


@pytest.mark.parametrize(("req", "auth"), ISOLATION)
def test_the_owner_gets_through(req: Req, auth: str, world: World) -> None:
    """The control for the test above: the same request works for alice (so a 404 for charlie
    is the tenant check, not a wrong URL), and a write really changes something."""
    world.prepare(req.setup)
    client, token = client_for("alice", auth, world)
    before = snapshot(world.acme)

    response = send(client, req, world.ids(), token)

    assert response.status_code < 400, response.content[:300]
    if req.writes:
        assert snapshot(world.acme) != before


@pytest.mark.parametrize("ref", REFERENCES, ids=lambda ref: str(ref.req))
def test_naming_another_tenants_object_in_a_request_is_refused(ref: Ref, world: World) -> None:
    Campaign.objects.filter(pk=world.globex_campaign.pk).update(status="draft")
    client, token = client_for("charlie", "token" if ref.req.kind == API else "session", world)
    before = snapshot(world.acme, world.globex)

    response = send(client, ref.req, world.ids(), token)

    assert response.status_code == ref.status, response.content[:300]
    if ref.code:
        assert error_code(response) == ref.code
    assert snapshot(world.acme, world.globex) == before
    me = client.get("/api/me/", headers={"Authorization": f"Bearer {token}"} if token else {})
    assert me.json()["tenant"]["slug"] == "globex"  # still charlie's own tenant


LISTING_CASES = [pytest.param(item, auth, id=f"{item.req} [{auth}]") for item in LISTINGS for auth in auths(item.req)]


@pytest.mark.parametrize(("listing", "auth"), LISTING_CASES)
def test_lists_show_only_the_callers_tenant(listing: Listing, auth: str, world: World) -> None:
    charlie, charlie_token = client_for("charlie", auth, world)
    alice, alice_token = client_for("alice", auth, world)

    theirs = send(charlie, listing.req, world.ids(), charlie_token)
    mine = send(alice, listing.req, world.ids(), alice_token)

    assert theirs.status_code == mine.status_code == 200
    assert listing.needle in mine.content.decode()  # the control: acme's data is there for acme
    assert listing.needle not in theirs.content.decode()


@pytest.mark.parametrize("req", [*OBJECT_URLS, *LOGIN_ONLY, *(item.req for item in LISTINGS)], ids=str)
def test_anonymous_callers_are_sent_to_log_in(req: Req, world: World) -> None:
    before = snapshot(world.acme)

    response = send(Client(), req, world.ids())

    if req.kind == PAGE:
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=")
    else:
        assert response.status_code == 401
        assert error_code(response) == "unauthenticated"
    assert snapshot(world.acme) == before


@pytest.mark.parametrize("route", sorted(PUBLIC), ids=str)
def test_public_urls_show_no_tenant_data(route: str, world: World) -> None:
    path, _reason = PUBLIC[route]
    assert route in routes() and route_of(path) in PUBLIC  # the allow list names real routes

    response = Client().get(path, follow=True)

    assert response.status_code < 500
    content = response.getvalue()
    for needle in (b"Acme secret", b"acme-secret", b"wamid.acme"):
        assert needle not in content


@pytest.mark.parametrize("route", ADMIN_ROUTES, ids=str)
def test_the_admin_is_closed_to_tenant_users(route: str, world: World) -> None:
    path = concrete(route, world.ids())
    assert route_of(path) == route
    for client in (Client(), login("charlie")):
        response = client.get(path)
        assert response.status_code == 302, (path, response.status_code)
        assert response["Location"].startswith("/admin/login/")


def test_every_url_is_in_the_matrix() -> None:
    """A URL pattern in no table and not allow-listed fails here: add it to a table above."""
    tables = [*OBJECT_URLS, *LOGIN_ONLY, *(item.req for item in LISTINGS), *(ref.req for ref in REFERENCES)]
    covered = {route_of(req.path) for req in tables}
    missing = sorted(r for r in routes() - covered - set(PUBLIC) if not r.startswith(ADMIN_PREFIX))
    assert not missing, f"URL patterns in no security table: {missing}"
    assert not covered & set(PUBLIC), "a URL is both tested for a login and allow-listed as public"


def test_every_api_operation_is_in_the_matrix() -> None:
    """Each method of each API path is in a table (one route may serve GET, PATCH and DELETE)."""
    tables = [*OBJECT_URLS, *LOGIN_ONLY, *(item.req for item in LISTINGS)]
    covered = {(req.method, route_of(req.path)) for req in tables if req.kind == API}
    public = {("get", "api/health/"), ("get", "api/health/ready/")}
    missing = sorted(_openapi_operations() - covered - public)
    assert not missing, f"API operations in no security table: {missing}"
