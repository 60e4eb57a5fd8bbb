"""Open redirects: every view that redirects to a target taken from the request keeps the
browser on this site, whatever the target looks like.

The redirecting views, found by grepping for `next`, `HttpResponseRedirect`, `redirect(`,
`HX-Redirect` and `Referer`: the tenant switch (`sense.views.safe_next`), Django's login and
logout views and `/i18n/setlang/` (its `next`, then the Referer). Every other redirect in the
app goes to a URL it builds itself (a reversed name, or a presigned storage URL).

Each hostile target is tried in every place a redirector reads one (the POST body, the query
string, the Referer); a legitimate local target is tried the same way and must be honoured, so
a refusal is the host check, not a view that ignores `next` altogether.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import pytest
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.test import Client

from sense.models import Membership, Tenant
from tests.conftest import PASSWORD
from tests.dashboard.conftest import login

HOST = "testserver"  # the test client's host
LOCAL = "/campaigns/?status=draft&q=a"

HOSTILE = [
    # Another host, plainly
    "https://evil.example/",
    "http://evil.example",
    "HTTPS://EVIL.EXAMPLE/",
    # Scheme-relative, with the slashes and backslashes browsers read as "//"
    "//evil.example/",
    "///evil.example/",
    "////evil.example/",
    "/\\evil.example/",
    "\\\\evil.example",
    "\\/evil.example",
    "/\\/evil.example",
    # A scheme without "//": browsers still take the next word for the host
    "https:evil.example",
    "https:/evil.example",
    "https:///evil.example",
    "https:\\\\evil.example",
    # Scripts and documents
    "javascript:alert(1)",
    "JavaScript:alert(document.cookie)",
    "java\tscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    # This host's name where it is not the host
    "http://testserver@evil.example/",
    "http://testserver:80@evil.example/",
    "http://evil.example\\@testserver/",
    "http://evil.example#@testserver/",
    "https://testserver.evil.example/",
    "http://evil.example/?next=testserver",
    # Leading or embedded whitespace and control characters, which browsers drop
    " //evil.example",
    "\t//evil.example",
    "\n//evil.example",
    "\r\n//evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "\x00//evil.example",
    "\u3000//evil.example",
    # Percent-encoded slashes, backslashes and schemes
    "%2F%2Fevil.example",
    "/%2F/evil.example",
    "/%2Fevil.example",
    "/%5Cevil.example",
    "%5C%5Cevil.example",
    "https%3A%2F%2Fevil.example",
    "%68ttps://evil.example",
    # Header injection
    "/\r\nLocation: https://evil.example/",
    "/\r\nSet-Cookie: sessionid=stolen",
]


@dataclass(frozen=True)
class Redirector:
    """A request that redirects to TARGET: SEND makes it with CLIENT (logged in as alice or
    anonymous, as WHO says)."""

    label: str
    who: str  # "alice" (logged in) or "anonymous"
    send: Callable[[Client, str], Any]
    # Where the redirect comes from, to resolve a relative Location the way a browser does
    path: str

    def __str__(self) -> str:
        return self.label


def _query(target: str) -> str:
    return "next=" + quote(target, safe="")


def _switch(initech: str) -> Callable[[Client, str], Any]:
    return lambda client, target: client.post("/tenant/switch/", {"tenant": initech, "next": target})


def _switch_query(initech: str) -> Callable[[Client, str], Any]:
    return lambda client, target: client.post(f"/tenant/switch/?{_query(target)}", {"tenant": initech})


CREDENTIALS = {"username": "alice", "password": PASSWORD}


def redirectors(initech: str) -> list[Redirector]:
    return [
        Redirector("tenant switch: next in the form", "alice", _switch(initech), "/tenant/switch/"),
        Redirector("tenant switch: next in the query", "alice", _switch_query(initech), "/tenant/switch/"),
        Redirector(
            "login: next in the form",
            "anonymous",
            lambda client, target: client.post("/login/", {**CREDENTIALS, "next": target}),
            "/login/",
        ),
        Redirector(
            "login: next in the query",
            "anonymous",
            lambda client, target: client.post(f"/login/?{_query(target)}", CREDENTIALS),
            "/login/",
        ),
        Redirector(
            "logout: next in the form",
            "alice",
            lambda client, target: client.post("/logout/", {"next": target}),
            "/logout/",
        ),
        Redirector(
            "logout: next in the query",
            "alice",
            lambda client, target: client.post(f"/logout/?{_query(target)}"),
            "/logout/",
        ),
        Redirector(
            "setlang: next in the form",
            "anonymous",
            lambda client, target: client.post("/i18n/setlang/", {"language": "en", "next": target}),
            "/i18n/setlang/",
        ),
        Redirector(
            "setlang: next in the query (GET)",
            "anonymous",
            lambda client, target: client.get(f"/i18n/setlang/?{_query(target)}"),
            "/i18n/setlang/",
        ),
        Redirector(
            "setlang: the Referer, without next",
            "anonymous",
            lambda client, target: client.post("/i18n/setlang/", {"language": "en"}, headers={"Referer": target}),
            "/i18n/setlang/",
        ),
        Redirector(
            "setlang: a hostile next, then the Referer",
            "anonymous",
            lambda client, target: client.post(
                "/i18n/setlang/", {"language": "en", "next": "https://evil.example/"}, headers={"Referer": target}
            ),
            "/i18n/setlang/",
        ),
    ]


# Parametrized by index: the table needs initech's id, which exists only inside a test.
REDIRECTOR_LABELS = [str(r) for r in redirectors("")]


@pytest.fixture
def initech(alice: User) -> Tenant:
    """A second tenant of alice's, so that she has somewhere to switch to."""
    tenant = Tenant.objects.create(slug="initech", name="Initech")
    Membership.objects.create(user=alice, tenant=tenant, role=Membership.Role.OPERATOR)
    return tenant


def redirector(index: int, initech: Tenant) -> tuple[Redirector, Client]:
    chosen = redirectors(str(initech.pk))[index]
    return chosen, login("alice") if chosen.who == "alice" else Client()


def browser_location(response: HttpResponse, path: str) -> tuple[str, str, str]:
    """Where a browser goes on RESPONSE's Location: (scheme, host, path). A browser drops
    leading and trailing spaces and C0 controls and every tab and newline, and reads a
    backslash as a slash in an http(s) URL (WHATWG URL parsing)."""
    location = response["Location"]
    cleaned = location.strip("".join(map(chr, range(0x21)))).replace("\t", "").replace("\n", "").replace("\r", "")
    cleaned = cleaned.replace("\\", "/")
    parts = urlsplit(urljoin(f"http://{HOST}{path}", cleaned))
    return parts.scheme, parts.netloc, parts.path


def assert_stays_on_site(response: HttpResponse, path: str) -> None:
    assert response.status_code in (301, 302, 303, 307, 308), (response.status_code, response.content[:200])
    location = response["Location"]
    assert not any(ch in location for ch in "\r\n\t\x00"), f"control characters in Location: {location!r}"
    assert not location.lstrip().startswith(("//", "/\\", "\\")), f"scheme-relative Location: {location!r}"
    scheme, host, _ = browser_location(response, path)
    assert scheme in ("http", "https"), f"Location {location!r} leaves http(s)"
    assert host == HOST, f"Location {location!r} leads to {host!r}"


@pytest.mark.parametrize("target", HOSTILE, ids=repr)
@pytest.mark.parametrize("index", range(len(REDIRECTOR_LABELS)), ids=REDIRECTOR_LABELS)
def test_a_hostile_target_is_not_followed(index: int, target: str, initech: Tenant) -> None:
    chosen, client = redirector(index, initech)

    response = chosen.send(client, target)

    assert_stays_on_site(response, chosen.path)
    assert all(morsel.value != "stolen" for morsel in response.cookies.values())  # no header was injected


@pytest.mark.parametrize("index", range(len(REDIRECTOR_LABELS)), ids=REDIRECTOR_LABELS)
@pytest.mark.parametrize("target", [LOCAL, f"http://{HOST}{LOCAL}"], ids=["a path", "an absolute URL on this host"])
def test_a_local_target_is_honoured(index: int, target: str, initech: Tenant) -> None:
    """The control for the test above: the same request with a target on this site goes there."""
    chosen, client = redirector(index, initech)

    response = chosen.send(client, target)

    assert_stays_on_site(response, chosen.path)
    assert browser_location(response, chosen.path)[2] == "/campaigns/"
    assert urlsplit(response["Location"]).query == "status=draft&q=a"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "javascript:alert(1)"])
def test_the_login_form_does_not_carry_a_hostile_next(target: str, db: None) -> None:
    """The login page puts `next` in a hidden field; a hostile one is left out, not kept for the POST."""
    page = Client().get(f"/login/?{_query(target)}").content.decode()

    assert 'name="next" value=""' in page
    assert "evil.example" not in page and "javascript:" not in page


def test_the_login_form_carries_a_local_next(db: None) -> None:
    page = Client().get(f"/login/?{_query('/campaigns/')}").content.decode()

    assert 'name="next" value="/campaigns/"' in page


def test_the_login_redirect_of_a_page_names_only_that_page(alice: User) -> None:
    """A page that needs a login sends its own path as `next` (a hostile query string stays
    inside that path), and logging in with it comes back to the page."""
    response = Client().get("/campaigns/", {"next": "https://evil.example/"})

    assert response.status_code == 302 and urlsplit(response["Location"]).path == "/login/"
    (next_url,) = parse_qs(urlsplit(response["Location"]).query)["next"]
    assert next_url == "/campaigns/?next=https%3A%2F%2Fevil.example%2F"
    logged_in = Client().post(response["Location"], CREDENTIALS)
    assert logged_in.status_code == 302 and urlsplit(logged_in["Location"]).path == "/campaigns/"
