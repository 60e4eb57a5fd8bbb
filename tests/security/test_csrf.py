"""CSRF: every form and every session-authenticated API write is refused without a token
and changes nothing, and goes through with one."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLPattern

from sense.api import api
from sense.tenancy import SESSION_TENANT_KEY
from tests.conftest import PASSWORD
from tests.media.files import CSV, png
from tests.security.conftest import (
    ADMIN_PREFIX,
    PUBLIC,
    WEBHOOK,
    World,
    _openapi_operations,
    concrete,
    error_code,
    fill,
    fill_data,
    route_of,
    routes,
    snapshot,
    url_patterns,
)

UPLOAD = "/api/chat/upload-media/"


@dataclass(frozen=True)
class Form:
    """A state-changing request sent with a browser session. ENCODING: "form" (multipart,
    with UPLOAD as its `file`) or "json"; CHANGES: whether it changes some state when it goes
    through (acme's rows, the session's user, tenant or language, alice's password)."""

    method: str
    path: str
    data: dict[str, Any] = field(default_factory=dict)
    encoding: str = "form"
    who: str = "alice"
    setup: str = ""
    upload: tuple[str, bytes] | None = None
    changes: bool = True

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path} as {self.who}"


NEW_PHONE = "+5511977776666"
CSRF_FORMS = [
    # Account
    Form("post", "/login/", {"username": "alice", "password": PASSWORD}, who="anonymous"),
    Form("post", "/logout/"),
    Form(
        "post",
        "/password/",
        {"old_password": PASSWORD, "new_password1": "N3w-pass!word", "new_password2": "N3w-pass!word"},
    ),
    Form("post", "/tenant/switch/", {"tenant": "{initech}"}),
    Form("post", "/i18n/setlang/", {"language": "en", "next": "/"}),
    # Campaign pages
    Form("post", "/campaigns/new/", {"name": "New", "connection": "{connection}", "message": "Oi", "tags": ""}),
    Form("post", "/campaigns/preview/", {"message": "Oi {{name}}"}, changes=False),
    Form("post", "/campaigns/{campaign}/start/", setup="draft"),
    Form("post", "/campaigns/{campaign}/pause/", setup="running"),
    Form("post", "/campaigns/{campaign}/resume/", setup="paused"),
    Form("post", "/campaigns/{campaign}/cancel/", setup="running"),
    Form("post", "/campaigns/{campaign}/retry/", setup="finished"),
    Form("post", "/campaigns/{campaign}/duplicate/"),
    Form("post", "/campaigns/{campaign}/test/", {"phone": NEW_PHONE}),
    Form("post", "/contacts/import/", upload=("contacts.csv", CSV)),
    Form("post", "/contacts/{contact}/erase/"),
    Form("post", "/contacts/{contact}/consent/", {"action": "opt_out"}),
    Form("post", "/contacts/{contact}/consent/", {"action": "opt_in", "reason": "asked"}, setup="opted_out"),
    Form("post", "/contacts/settings/consent/", {"opt_out_keywords": "SAIR\nCHEGA", "opt_in_keywords": "VOLTAR"}),
    # Media pages and the upload (which checks CSRF itself, after streaming the body)
    Form("post", "/media/{asset}/delete/"),
    Form("post", UPLOAD, upload=("photo.png", png())),
    # The JSON API with a browser session (ninja's SessionAuth checks CSRF)
    Form("post", "/api/contacts/", {"phone": NEW_PHONE, "name": "New"}, "json"),
    Form("patch", "/api/contacts/{contact}/", {"name": "Renamed"}, "json"),
    Form("delete", "/api/contacts/{contact}/", encoding="json"),
    Form("post", "/api/contacts/{contact}/opt-in/", {"reason": "asked"}, "json", setup="opted_out"),
    Form("post", "/api/contacts/{contact}/opt-out/", {}, "json"),
    Form("post", "/api/contacts/import/", upload=("contacts.csv", CSV)),
    Form(
        "post",
        "/api/connections/",
        {
            "name": "New",
            "provider": "evolution",
            "base_url": "http://127.0.0.1:9",
            "credentials": {"instance": "i", "api_key": "k"},
        },
        "json",
    ),
    Form("patch", "/api/connections/{connection}/", {"is_active": False}, "json"),
    Form("post", "/api/campaigns/", {"name": "New", "connection_id": "{connection}", "message": "Oi"}, "json"),
    Form("patch", "/api/campaigns/{campaign}/", {"name": "Renamed"}, "json", setup="draft"),
    Form("post", "/api/campaigns/{campaign}/start/", encoding="json", setup="draft"),
    Form("post", "/api/campaigns/{campaign}/pause/", encoding="json", setup="running"),
    Form("post", "/api/campaigns/{campaign}/resume/", encoding="json", setup="paused"),
    Form("post", "/api/campaigns/{campaign}/cancel/", encoding="json", setup="running"),
    Form("post", "/api/campaigns/{campaign}/unschedule/", encoding="json", setup="scheduled"),
    Form("post", "/api/campaigns/{campaign}/retry/", encoding="json", setup="finished"),
    Form("post", "/api/campaigns/{campaign}/test/", {"phone": NEW_PHONE}, "json"),
    Form("post", "/api/campaigns/{campaign}/duplicate/", encoding="json"),
    Form("delete", "/api/media/{asset}/", encoding="json"),
    Form("post", "/api/connections/{cloud_connection}/templates/sync/", encoding="json"),
    Form("post", "/templates/sync/{cloud_connection}/"),
    Form("post", "/connections/{connection}/", {"name": "Renamed", "daily_limit": "10", "is_active": "on"}),
    Form("post", "/api/ops/worker-ping/", encoding="json", changes=False),
]
# Page URLs that take a POST (not 405) but are no form: they do the same for every method.
POST_NOT_A_FORM = {
    "": "home redirects whatever the method",
    "metrics": "read-only scrape behind its own token",
    "api/health/probe.png": "a static image",
    "api/": "the API root redirects to its documentation",
    "api/docs": "read-only API documentation",
    "api/openapi.json": "read-only API documentation",
}
# Views exempt from Django's CSRF middleware, besides ninja's (whose SessionAuth checks CSRF).
CSRF_EXEMPT = {
    "campaigns.webhook_views.evolution": WEBHOOK,
    "campaigns.webhook_views.whatsapp": WEBHOOK,
    "campaigns.webhook_views.sandbox": WEBHOOK,
    "media.file_views.upload_media": "checks CSRF itself once the multipart body is streamed (CSRF_FORMS)",
}


def csrf_client(who: str) -> Client:
    client = Client(enforce_csrf_checks=True)
    if who != "anonymous":
        assert client.login(username=who, password=PASSWORD)
    return client


def csrf_token(client: Client) -> str:
    client.get("/login/")  # any page with a form sets the cookie
    return str(client.cookies[settings.CSRF_COOKIE_NAME].value)


def state(client: Client, world: World) -> tuple[Any, ...]:
    """What a form may change: acme's rows, the session's user and tenant, the language
    cookie and alice's password."""
    session = client.session if settings.SESSION_COOKIE_NAME in client.cookies else {}
    language = client.cookies.get(settings.LANGUAGE_COOKIE_NAME)
    return (
        snapshot(world.acme),
        session.get("_auth_user_id"),
        session.get(SESSION_TENANT_KEY),
        language.value if language is not None else None,
        User.objects.get(username="alice").password,
    )


def submit(client: Client, form: Form, world: World, token: str | None) -> Any:
    ids = world.ids()
    path, data = fill(form.path, ids), fill_data(form.data, ids)
    headers = {"X-CSRFToken": token} if token else {}
    if form.encoding == "json":
        body = json.dumps(data)
        return client.generic(form.method.upper(), path, body, content_type="application/json", headers=headers)
    if form.upload is not None:
        name, content = form.upload
        data["file"] = SimpleUploadedFile(name, content)
    return client.post(path, data, headers=headers)


@pytest.mark.parametrize("form", CSRF_FORMS, ids=str)
def test_a_form_without_a_csrf_token_is_refused_and_changes_nothing(form: Form, world: World) -> None:
    world.prepare(form.setup)
    client = csrf_client(form.who)
    before = state(client, world)

    response = submit(client, form, world, token=None)

    assert response.status_code == 403, response.content[:300]
    if form.path == UPLOAD:
        assert error_code(response) == "csrf"
    assert state(client, world) == before


@pytest.mark.parametrize("form", CSRF_FORMS, ids=str)
def test_the_same_form_with_a_csrf_token_goes_through(form: Form, world: World) -> None:
    world.prepare(form.setup)
    client = csrf_client(form.who)
    token = csrf_token(client)
    before = state(client, world)

    response = submit(client, form, world, token=token)

    assert response.status_code < 400, response.content[:300]
    if form.changes:
        assert state(client, world) != before


def _module(pattern: URLPattern) -> str:
    return str(getattr(pattern.callback, "__module__", ""))


def _page_routes() -> list[str]:
    """Routes outside the ninja API and the admin (ninja's are checked from its schema)."""
    ninja = {route for route, pattern in url_patterns() if _module(pattern) == "ninja.operation"}
    return sorted(r for r in routes() - ninja - set(PUBLIC) if not r.startswith(ADMIN_PREFIX)) + sorted(
        r for r in PUBLIC if "webhooks" not in r
    )


@pytest.mark.parametrize("route", _page_routes(), ids=str)
def test_every_page_that_takes_a_post_checks_csrf_and_is_in_the_table(route: str, world: World) -> None:
    world.prepare("running")
    path = concrete(route, world.ids())

    refused = csrf_client("alice").post(path)
    accepted = csrf_client("alice")
    answered = accepted.post(path, headers={"X-CSRFToken": csrf_token(accepted)})

    assert refused.status_code in (403, 405), (path, refused.status_code)
    forms = {route_of(form.path) for form in CSRF_FORMS}
    if answered.status_code != 405:
        assert route in forms or route in POST_NOT_A_FORM, f"{route} takes a POST: add it to CSRF_FORMS"


def test_every_api_write_is_in_the_csrf_table() -> None:
    writes = {(m, r) for m, r in _openapi_operations() if m in ("post", "put", "patch", "delete")}
    covered = {(form.method, route_of(form.path)) for form in CSRF_FORMS}
    assert not writes - covered, f"API writes missing from CSRF_FORMS: {sorted(writes - covered)}"


def test_only_known_views_are_exempt_from_csrf() -> None:
    exempt = {
        f"{pattern.callback.__module__}.{pattern.callback.__name__}"
        for _, pattern in url_patterns()
        if getattr(pattern.callback, "csrf_exempt", False) and _module(pattern) != "ninja.operation"
    }
    assert exempt == set(CSRF_EXEMPT)


def test_the_api_session_auth_checks_csrf() -> None:
    """Ninja views are all csrf_exempt for Django's middleware; the session auth must check."""
    from sense.api import SessionMembershipAuth

    assert any(isinstance(a, SessionMembershipAuth) and a.csrf for a in api.auth)  # type: ignore[union-attr]
