"""The security matrix, one table per concern:

1. tenant isolation: every URL that names a tenant's object answers another tenant 404 and
   changes nothing; every list shows only the caller's tenant; anonymous callers are sent
   to the login page (pages) or get 401 (API);
2. the tenant WebSocket: 4401 without credentials, 4403 for another tenant's members;
3. CSRF: every form and every session-authenticated API write is refused without a token
   and changes nothing, and goes through with one;
4. the media proxy's refusals (SSRF): addresses, schemes, credentials, ports, odd IP forms;
5. webhook authentication: every failed check is refused, stores nothing, moves nothing.

Guards walk the URLconf and the API's OpenAPI schema and fail when a URL, an API operation
or a form is in no table and not in an explicit allow list with its reason, so a new URL
cannot skip the matrix.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpcore
import jwt
import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils import timezone

from campaigns import services, webhook_views
from campaigns.models import Campaign, Connection, Contact, Delivery, DeliveryEvent, WebhookEvent, WebhookRejection
from media import proxy
from media.models import Asset
from sense.api import api
from sense.asgi import application
from sense.models import Membership, Tenant
from sense.realtime import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from sense.tenancy import SESSION_TENANT_KEY
from tests.conftest import PASSWORD, token_for
from tests.core.test_realtime import session_cookie
from tests.dashboard.conftest import login
from tests.media.conftest import _fresh_media_metrics  # noqa: F401 - autouse: no metrics flushed at exit
from tests.media.files import CSV, png
from tests.media.test_proxy import PROXY
from tests.media.upstream import Upstream, upstream
from tests.tracking.conftest import APP_SECRET, JWT_KEY, VERIFY_TOKEN, make_connection, make_deliveries, process_all
from tests.tracking.conftest import make_campaign as make_running_campaign
from tests.webhook_payloads import cloud_notification, cloud_status, dumps, evolution_jwt, evolution_update, sign

# =============================================================================================
# Tables
# =============================================================================================

PAGE, API, MEDIA = "page", "api", "media"  # browser session only; ninja API; media views (token or session)
HX = {"HX-Request": "true"}


@dataclass(frozen=True)
class Req:
    """One request. PATH may name {campaign}, {delivery}, {contact}, {connection}, {asset},
    {globex_campaign}, {globex_connection}, {acme}, {initech} or {token}; SETUP is the status the
    campaign is put in first, so that the request would succeed for its owner."""

    method: str
    path: str
    kind: str
    data: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    setup: str = ""

    def __str__(self) -> str:
        target = self.headers.get("HX-Target")
        hx = f" (htmx{' #' + target if target else ''})" if self.headers else ""
        return f"{self.method.upper()} {self.path}{hx}"

    @property
    def writes(self) -> bool:
        return self.method != "get"


# --- 1. Tenant isolation -------------------------------------------------------------------

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
    Req("get", "/deliveries/{delivery}/", PAGE),  # the delivery log, as a page
    Req("get", "/deliveries/{delivery}/", PAGE, headers=HX),  # and as the modal
    Req("get", "/media/{asset}/card/", PAGE, headers=HX),
    Req("get", "/media/{asset}/preview/", PAGE),
    Req("get", "/media/{asset}/preview/", PAGE, headers=HX),
    Req("post", "/media/{asset}/delete/", PAGE),
    Req("post", "/media/{asset}/delete/", PAGE, headers=HX),
    Req("get", "/contacts/{contact}/erase/", PAGE),
    Req("post", "/contacts/{contact}/erase/", PAGE),
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
    Req("get", "/api/deliveries/{delivery}/events/", API),
    Req("get", "/api/connections/{connection}/", API),
    Req("patch", "/api/connections/{connection}/", API, {"name": "Hijacked", "is_active": False}),
    Req("get", "/api/contacts/{contact}/", API),
    Req("patch", "/api/contacts/{contact}/", API, {"name": "Hijacked", "opted_out": True}),
    Req("delete", "/api/contacts/{contact}/", API),
    Req("get", "/api/media/{asset}/", API),
    Req("delete", "/api/media/{asset}/", API),
    # Media URLs outside the ninja API
    Req("get", "/api/media/{asset}/file/", MEDIA),
    Req("get", "/api/media/{asset}/thumbnail/", MEDIA),
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
    Listing(Req("get", "/media/", PAGE), "acme-secret.png"),
    Listing(Req("get", "/media/?type=image", PAGE, headers=HX), "acme-secret.png"),
    Listing(Req("get", "/api/me/", API), "Acme"),
    Listing(Req("get", "/api/campaigns/", API), "Acme secret campaign"),
    Listing(Req("get", "/api/contacts/", API), "Acme secret contact"),
    Listing(Req("get", "/api/contacts/?q=secret", API), "Acme secret contact"),
    Listing(Req("get", "/api/connections/", API), "Acme secret number"),
    Listing(Req("get", "/api/media/", API), "acme-secret.png"),
]

# URLs that need a login but name no object (creating one in the caller's own tenant, or
# account pages). Anonymous callers are refused; the writes are in the CSRF table too.
LOGIN_ONLY = [
    Req("post", "/campaigns/new/", PAGE),
    Req("post", "/campaigns/preview/", PAGE),
    Req("get", "/contacts/import/", PAGE),
    Req("post", "/contacts/import/", PAGE),
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

WEBHOOK = "provider webhook: a secret token in the path plus a signature or JWT (WEBHOOK_REFUSALS)"
# URL patterns that are public on purpose: route -> (a path to try anonymously, why).
PUBLIC = {
    "": ("/", "home: redirects to the login page or to the campaign list"),
    "login/": ("/login/", "the login form (CSRF-checked: CSRF_FORMS)"),
    "logout/": ("/logout/", "logging out needs no login (CSRF-checked: CSRF_FORMS)"),
    "i18n/setlang/": ("/i18n/setlang/", "Django's language switch: a cookie, no data (CSRF-checked)"),
    "api/": ("/api/", "the API root: a redirect to its documentation"),
    "api/docs": ("/api/docs", "API documentation; every operation in it needs a token"),
    "api/openapi.json": ("/api/openapi.json", "API documentation; every operation in it needs a token"),
    "api/health/": ("/api/health/", "liveness probe"),
    "api/health/ready/": ("/api/health/ready/", "readiness probe: dependency status, no tenant data"),
    "api/health/probe.png": ("/api/health/probe.png", "a static image for the post-deploy check"),
    "metrics": ("/metrics", "Prometheus scrape: its own METRICS_TOKEN, 404 when unset"),
    r"^api/webhooks/evolution/(?P<token>[\w-]+)/*$": ("/api/webhooks/evolution/nope/", WEBHOOK),
    "api/webhooks/evolution/<str:token>/": ("/api/webhooks/evolution/nope/", WEBHOOK),
    r"^api/webhooks/evolution/(?P<token>[\w-]+)/+(?P<event>[\w.-]+)/?$": (
        "/api/webhooks/evolution/nope/messages-update",
        WEBHOOK,
    ),
    r"^api/webhooks/whatsapp/(?P<token>[\w-]+)/*$": ("/api/webhooks/whatsapp/nope/", WEBHOOK),
    "api/webhooks/whatsapp/<str:token>/": ("/api/webhooks/whatsapp/nope/", WEBHOOK),
}
# The Django admin is for staff (Sense's operators), never for tenant users: ADMIN_ROUTES below
# checks that a tenant admin who is not staff is sent to the admin login on every admin URL.
ADMIN_PREFIX = "admin/"
ADMIN_OPEN = {"admin/login/": "the admin login form", "admin/logout/": "logging out of the admin"}


# --- 2. WebSocket ------------------------------------------------------------------------------

OPEN, REFUSED = "open", "refused"  # connected and answering pings; refused at the handshake


@dataclass(frozen=True)
class Ws:
    who: str  # "anonymous", "session:<user>", "token:<user>" or "token:bogus"
    tenant: str  # whose socket: "acme" or "globex"
    expect: int | str
    origin: bytes = b"http://testserver"

    def __str__(self) -> str:
        return f"{self.who} on {self.tenant} from {self.origin.decode()}"


WEBSOCKETS = [
    Ws("anonymous", "acme", CLOSE_UNAUTHENTICATED),
    Ws("token:bogus", "acme", CLOSE_UNAUTHENTICATED),
    Ws("session:charlie", "acme", CLOSE_FORBIDDEN),
    Ws("token:charlie", "acme", CLOSE_FORBIDDEN),
    Ws("session:alice", "globex", CLOSE_FORBIDDEN),
    Ws("token:alice", "globex", CLOSE_FORBIDDEN),
    Ws("session:alice", "acme", OPEN),
    Ws("token:alice", "acme", OPEN),
    Ws("session:bob", "acme", OPEN),  # an operator is a member too
    Ws("session:charlie", "globex", OPEN),
    # Cross-site WebSocket hijacking: another site's page cannot ride alice's session cookie.
    Ws("session:alice", "acme", REFUSED, origin=b"http://evil.example"),
]


# --- 3. CSRF -----------------------------------------------------------------------------------

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
    Form("post", "/contacts/import/", upload=("contacts.csv", CSV)),
    Form("post", "/contacts/{contact}/erase/"),
    # Media pages and the upload (which checks CSRF itself, after streaming the body)
    Form("post", "/media/{asset}/delete/"),
    Form("post", UPLOAD, upload=("photo.png", png())),
    # The JSON API with a browser session (ninja's SessionAuth checks CSRF)
    Form("post", "/api/contacts/", {"phone": NEW_PHONE, "name": "New"}, "json"),
    Form("patch", "/api/contacts/{contact}/", {"name": "Renamed"}, "json"),
    Form("delete", "/api/contacts/{contact}/", encoding="json"),
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
    Form("delete", "/api/media/{asset}/", encoding="json"),
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
    "media.views.upload_media": "checks CSRF itself once the multipart body is streamed (CSRF_FORMS)",
}


# --- 4. Media proxy ----------------------------------------------------------------------------

FORBIDDEN, BAD_URL, BAD_PORT = (403, "forbidden_address"), (400, "bad_url"), (403, "forbidden_port")

PROXY_REFUSALS = [
    ("", BAD_URL),
    ("   ", BAD_URL),
    # Loopback, by name and by number
    ("http://127.0.0.1/a.png", FORBIDDEN),
    ("http://127.8.9.10/a.png", FORBIDDEN),
    ("http://localhost/a.png", FORBIDDEN),
    ("http://LOCALHOST/a.png", FORBIDDEN),
    ("http://[::1]/a.png", FORBIDDEN),
    # Private ranges, their edges included
    ("http://10.0.0.1/a.png", FORBIDDEN),
    ("http://10.255.255.254/a.png", FORBIDDEN),
    ("http://172.16.0.1/a.png", FORBIDDEN),
    ("http://172.31.255.254/a.png", FORBIDDEN),
    ("http://192.168.0.1/a.png", FORBIDDEN),
    ("http://192.168.255.254/a.png", FORBIDDEN),
    ("http://[fd00::1]/a.png", FORBIDDEN),
    # Cloud metadata services
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", FORBIDDEN),
    ("http://[fd00:ec2::254]/latest/meta-data/", FORBIDDEN),
    ("http://100.100.100.200/latest/meta-data/", FORBIDDEN),
    ("http://[fe80::1]/a.png", FORBIDDEN),
    # Unspecified, CGNAT, multicast, broadcast, benchmarking
    ("http://0.0.0.0/a.png", FORBIDDEN),
    ("http://0/a.png", FORBIDDEN),
    ("http://[::]/a.png", FORBIDDEN),
    ("http://100.64.0.1/a.png", FORBIDDEN),
    ("http://224.0.0.1/a.png", FORBIDDEN),
    ("http://255.255.255.255/a.png", FORBIDDEN),
    ("http://198.18.0.1/a.png", FORBIDDEN),
    # IPv4 inside IPv6: mapped, 6to4, NAT64
    ("http://[::ffff:127.0.0.1]/a.png", FORBIDDEN),
    ("http://[::ffff:7f00:1]/a.png", FORBIDDEN),
    ("http://[::ffff:169.254.169.254]/a.png", FORBIDDEN),
    ("http://[::ffff:10.0.0.1]/a.png", FORBIDDEN),
    ("http://[2002:7f00:1::]/a.png", FORBIDDEN),
    ("http://[64:ff9b::a9fe:a9fe]/a.png", FORBIDDEN),
    ("http://[64:ff9b::7f00:1]/a.png", FORBIDDEN),
    # Odd spellings of 127.0.0.1 that the resolver accepts
    ("http://2130706433/a.png", FORBIDDEN),
    ("http://0x7f000001/a.png", FORBIDDEN),
    ("http://017700000001/a.png", FORBIDDEN),
    ("http://127.1/a.png", FORBIDDEN),
    ("http://127\u30020\u30020\u30021/a.png", FORBIDDEN),  # ideographic full stops
    ("http://0177.0.0.1/a.png", BAD_URL),
    ("http://\u2460\u2461\u2466.0.0.1/a.png", BAD_URL),
    # Parser confusion: the host is what httpx connects to, and that is checked
    ("http://127.0.0.1#@example.com/a.png", FORBIDDEN),
    ("http://example.com\\@127.0.0.1/a.png", BAD_URL),
    ("http://127.0.0.1%2f@example.com/a.png", BAD_URL),
    # Credentials
    ("http://user:secret@example.com/a.png", BAD_URL),
    ("http://user@example.com/a.png", BAD_URL),
    ("http://:@example.com/a.png", BAD_URL),
    # Schemes other than http(s), and URLs that are not absolute
    ("file:///etc/passwd", BAD_URL),
    ("ftp://example.com/a.png", BAD_URL),
    ("gopher://127.0.0.1:70/_stats", BAD_URL),
    ("dict://127.0.0.1:11211/stats", BAD_URL),
    ("ldap://127.0.0.1/", BAD_URL),
    ("ws://example.com/a.png", BAD_URL),
    ("javascript:alert(1)", BAD_URL),
    ("data:image/png;base64,iVBORw0KGgo=", BAD_URL),
    ("jar:http://example.com/a.jar!/a.png", BAD_URL),
    ("//example.com/a.png", BAD_URL),
    ("/relative/a.png", BAD_URL),
    ("http:/127.0.0.1/a.png", BAD_URL),
    ("http:127.0.0.1/a.png", BAD_URL),
    # Ports other than 80 and 443 (checked before the address)
    ("http://example.com:8080/a.png", BAD_PORT),
    ("https://example.com:8443/a.png", BAD_PORT),
    ("http://example.com:22/a.png", BAD_PORT),
    ("http://127.0.0.1:6379/a.png", BAD_PORT),
    ("http://[::1]:5432/a.png", BAD_PORT),
    # Overly long
    ("http://example.com/" + "a" * 70_000, BAD_URL),
]

# Where a trusted upstream (127.0.0.1, a real local server) redirects to: checked again.
REDIRECT_REFUSALS = [
    ("file:///etc/passwd", BAD_URL),
    ("gopher://127.0.0.1:70/_stats", BAD_URL),
    ("http://user:secret@example.com/a.png", BAD_URL),
    ("http://example.com:8080/a.png", BAD_PORT),
    ("http://[::1]/a.png", FORBIDDEN),
    ("http://10.0.0.1/a.png", FORBIDDEN),
    ("http://169.254.169.254/latest/meta-data/", FORBIDDEN),
    ("http://[::ffff:169.254.169.254]/", FORBIDDEN),
    ("http://2130706433/a.png", FORBIDDEN),  # another spelling of the trusted host is not trusted
]


# --- 5. Webhooks -------------------------------------------------------------------------------


def _bearer(token: str) -> Callable[[bytes], dict[str, str]]:
    return lambda body: {"Authorization": f"Bearer {token}"}


def _jwt(key: str = JWT_KEY, **claims: Any) -> Callable[[bytes], dict[str, str]]:
    return lambda body: {"Authorization": "Bearer " + evolution_jwt(key, **claims)}


def _raw_jwt(claims: dict[str, Any], key: str = JWT_KEY, algorithm: str = "HS256") -> Callable[..., dict[str, str]]:
    return lambda body: {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm=algorithm)}


def _signed(secret: str = APP_SECRET, over: bytes | None = None) -> Callable[[bytes], dict[str, str]]:
    return lambda body: {"X-Hub-Signature-256": sign(secret, body if over is None else over)}


def _signature(value: str) -> Callable[[bytes], dict[str, str]]:
    return lambda body: {"X-Hub-Signature-256": value}


def _future() -> int:
    return int(timezone.now().timestamp()) + 600


@dataclass(frozen=True)
class Hook:
    """A webhook call that must be refused with STATUS and CODE ("" for the plain-text
    handshake answer). TOKEN: "own", "unknown", "inactive" or "other-provider"; CREDENTIALS
    override the connection's; INSTANCE is the Evolution instance named in the body."""

    label: str
    provider: str
    status: int
    code: str
    headers: Callable[[bytes], dict[str, str]] = field(default=lambda body: {})
    method: str = "post"
    token: str = "own"
    credentials: dict[str, str] = field(default_factory=dict)
    instance: str = "acme-main"
    query: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.provider}: {self.label}"


EVOLUTION, CLOUD = Connection.Provider.EVOLUTION.value, Connection.Provider.CLOUD.value
GOOD_JWT = _jwt()
HANDSHAKE = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "424242"}

WEBHOOK_REFUSALS = [
    # Evolution API (the connection has a JWT key and the instance acme-main)
    Hook("an unknown token", EVOLUTION, 404, "not_found", GOOD_JWT, token="unknown"),
    Hook("a deactivated connection's token", EVOLUTION, 404, "not_found", GOOD_JWT, token="inactive"),
    Hook("a Cloud API connection's token", EVOLUTION, 404, "not_found", GOOD_JWT, token="other-provider"),
    Hook("no Authorization header", EVOLUTION, 401, "missing_jwt"),
    Hook("Basic instead of Bearer", EVOLUTION, 401, "missing_jwt", lambda body: {"Authorization": "Basic YTpi"}),
    Hook("an empty Bearer", EVOLUTION, 401, "missing_jwt", lambda body: {"Authorization": "Bearer "}),
    Hook("the connection's API key as Bearer", EVOLUTION, 403, "invalid_jwt", _bearer("evolution-api-key")),
    Hook("a token that is no JWT", EVOLUTION, 403, "invalid_jwt", _bearer("not.a.jwt")),
    Hook("a JWT signed with another key", EVOLUTION, 403, "invalid_jwt", _jwt("another-key-0123456789abcdef0123")),
    Hook("an expired JWT", EVOLUTION, 403, "expired_jwt", _jwt(expires_in=-3600)),
    Hook("a JWT for another app", EVOLUTION, 403, "invalid_jwt", _jwt(app="typebot")),
    Hook("a JWT for another action", EVOLUTION, 403, "invalid_jwt", _jwt(action="send")),
    Hook("a JWT without exp", EVOLUTION, 403, "invalid_jwt", _raw_jwt({"app": "evolution", "action": "webhook"})),
    Hook(
        "an unsigned JWT (alg none)",
        EVOLUTION,
        403,
        "invalid_jwt",
        lambda body: {
            "Authorization": "Bearer "
            + jwt.encode({"app": "evolution", "action": "webhook", "exp": _future()}, "", algorithm="none")
        },
    ),
    Hook(
        "a HS512 JWT",
        EVOLUTION,
        403,
        "invalid_jwt",
        lambda body: {
            "Authorization": "Bearer "
            + jwt.encode({"app": "evolution", "action": "webhook", "exp": _future()}, JWT_KEY, algorithm="HS512")
        },
    ),
    Hook("another instance's event", EVOLUTION, 403, "wrong_instance", GOOD_JWT, instance="globex-main"),
    # WhatsApp Cloud API (the connection has an app secret and a verify token)
    Hook("an unknown token", CLOUD, 404, "not_found", _signed(), token="unknown"),
    Hook("a deactivated connection's token", CLOUD, 404, "not_found", _signed(), token="inactive"),
    Hook("an Evolution connection's token", CLOUD, 404, "not_found", _signed(), token="other-provider"),
    Hook("no X-Hub-Signature-256", CLOUD, 401, "missing_signature"),
    Hook("a signature of zeros", CLOUD, 403, "bad_signature", _signature("sha256=" + "0" * 64)),
    Hook("an empty signature", CLOUD, 403, "bad_signature", _signature("sha256=")),
    Hook("a SHA-1 signature", CLOUD, 403, "bad_signature", _signature("sha1=" + "0" * 40)),
    Hook("a signature with another secret", CLOUD, 403, "bad_signature", _signed("another-secret")),
    Hook("a signature over another body", CLOUD, 403, "bad_signature", _signed(over=b'{"object": "x"}')),
    Hook("a signature over the empty body", CLOUD, 403, "bad_signature", _signed(over=b"")),
    Hook("a connection with no app secret", CLOUD, 403, "no_app_secret", _signed(""), credentials={"app_secret": ""}),
    Hook("handshake: wrong verify token", CLOUD, 403, "", method="get", query={**HANDSHAKE, "hub.verify_token": "no"}),
    Hook("handshake: not subscribe", CLOUD, 403, "", method="get", query={**HANDSHAKE, "hub.mode": "unsubscribe"}),
    Hook("handshake: no parameters", CLOUD, 403, "", method="get"),
    Hook(
        "handshake: a connection with no verify token",
        CLOUD,
        403,
        "",
        method="get",
        credentials={"verify_token": ""},
        query={**HANDSHAKE, "hub.verify_token": ""},
    ),
    Hook("handshake: an unknown token", CLOUD, 404, "not_found", method="get", token="unknown", query=HANDSHAKE),
]


# =============================================================================================
# Fixtures and helpers
# =============================================================================================

# The HS512 case signs with the connection's own (short) key on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # Nearly every case makes users and logs in; PBKDF2's cost is not what is tested here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class World:
    """Acme's objects (the targets), charlie's own campaign and connection, and a third
    tenant that alice also belongs to (for the tenant switch)."""

    acme: Tenant
    globex: Tenant
    initech: Tenant
    connection: Connection
    campaign: Campaign
    contact: Contact
    delivery: Delivery
    asset: Asset
    globex_connection: Connection
    globex_campaign: Campaign

    def ids(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign.pk,
            "delivery": self.delivery.pk,
            "contact": self.contact.pk,
            "connection": self.connection.pk,
            "asset": self.asset.pk,
            "globex_campaign": self.globex_campaign.pk,
            "globex_connection": self.globex_connection.pk,
            "initech": self.initech.pk,
            "acme": self.acme.pk,
            "token": "abc",
        }

    def prepare(self, status: str) -> None:
        """Put acme's campaign in STATUS (scheduled ones start tomorrow)."""
        if status:
            scheduled_at = timezone.now() + timedelta(days=1) if status == "scheduled" else None
            Campaign.objects.filter(pk=self.campaign.pk).update(status=status, scheduled_at=scheduled_at)


@pytest.fixture
def world(acme: Tenant, globex: Tenant, alice: User, bob: User, charlie: User, monkeypatch: Any) -> World:
    monkeypatch.setattr(services, "_enqueue_senders", lambda campaign_id: None)
    initech = Tenant.objects.create(slug="initech", name="Initech")
    Membership.objects.create(user=alice, tenant=initech, role=Membership.Role.OPERATOR)
    connection = Connection.objects.create(
        tenant=acme,
        name="Acme secret number",
        provider=Connection.Provider.EVOLUTION,
        base_url="http://127.0.0.1:9",
        credentials={"instance": "acme-main", "api_key": "evolution-api-key"},
    )
    campaign = Campaign.objects.create(
        tenant=acme,
        name="Acme secret campaign",
        connection=connection,
        message="Oi {{name}}",
        status=Campaign.Status.RUNNING,
        started_at=timezone.now(),
    )
    contacts = [
        Contact.objects.create(tenant=acme, phone=f"+55119876500{n}", name=f"Acme secret contact {n}") for n in range(3)
    ]
    deliveries = [
        Delivery.objects.create(
            tenant=acme,
            campaign=campaign,
            contact=c,
            phone=c.phone,
            text="Oi",
            status=Delivery.Status.SENT,
            provider_message_id=f"wamid.acme.{n}",
            sent_at=timezone.now(),
        )
        for n, c in enumerate(contacts)
    ]
    DeliveryEvent.objects.create(
        tenant=acme, delivery=deliveries[0], status="sent", occurred_at=timezone.now(), event="messages.update"
    )
    asset = Asset.objects.create(
        tenant=acme,
        original_name="acme-secret.png",
        key=f"tenants/{acme.pk}/media/acme-secret/acme-secret.png",
        file_type=Asset.FileType.IMAGE,
        mime_type="image/png",
        size=68,
        sha256="0" * 64,
        status=Asset.Status.READY,
        thumbnail_key=f"tenants/{acme.pk}/media/acme-secret/thumbnail/320.webp",
    )
    globex_connection = Connection.objects.create(
        tenant=globex,
        name="Globex number",
        provider=Connection.Provider.EVOLUTION,
        base_url="http://127.0.0.1:9",
        credentials={"instance": "globex-main", "api_key": "k"},
    )
    globex_campaign = Campaign.objects.create(
        tenant=globex, name="Globex launch", connection=globex_connection, message="Hi"
    )
    Contact.objects.create(tenant=globex, phone="+5521987650000", name="Globex contact")
    return World(
        acme=acme,
        globex=globex,
        initech=initech,
        connection=connection,
        campaign=campaign,
        contact=contacts[0],
        delivery=deliveries[0],
        asset=asset,
        globex_connection=globex_connection,
        globex_campaign=globex_campaign,
    )


TENANT_MODELS = (Campaign, Connection, Contact, Delivery, DeliveryEvent, Asset, WebhookEvent)


def snapshot(*tenants: Tenant) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tenants' own models, to compare before and after a request."""
    return {
        f"{model.__name__}@{tenant.slug}": [
            dict(row) for row in model.objects.filter(tenant=tenant).order_by("pk").values()
        ]
        for tenant in tenants
        for model in TENANT_MODELS
    }


def fill(template: str, ids: dict[str, Any]) -> str:
    return template.format(**ids)


def fill_data(data: dict[str, Any] | None, ids: dict[str, Any]) -> dict[str, Any]:
    return {
        k: fill(v, ids) if isinstance(v, str) and "{" in v and "{{" not in v else v for k, v in (data or {}).items()
    }


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


def auths(req: Req) -> list[str]:
    return ["session"] if req.kind == PAGE else ["token", "session"]


def error_code(response: Any) -> str | None:
    if not response.get("Content-Type", "").startswith("application/json"):
        return None
    body = response.json()
    return body.get("code") if isinstance(body, dict) else None


SAMPLE_IDS = {
    "campaign": "00000000-0000-4000-8000-000000000001",
    "globex_campaign": "00000000-0000-4000-8000-000000000002",
    "connection": "00000000-0000-4000-8000-000000000003",
    "globex_connection": "00000000-0000-4000-8000-000000000004",
    "asset": "00000000-0000-4000-8000-000000000005",
    "initech": "00000000-0000-4000-8000-000000000006",
    "acme": "00000000-0000-4000-8000-000000000007",
    "delivery": 1,
    "contact": 1,
    "token": "abc",
}


def route_of(path: str) -> str:
    """The URL pattern (as in the URLconf) that PATH resolves to."""
    return str(resolve(fill(path, SAMPLE_IDS).split("?", 1)[0]).route)


def url_patterns() -> Iterator[tuple[str, URLPattern]]:
    """Every URL pattern of the project as (route, pattern), routes joined like
    ResolverMatch.route joins them."""

    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, URLPattern]]:
        for pattern in patterns:
            part = str(pattern.pattern)
            route = prefix + (part.removeprefix("^") if prefix else part)
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, route)
            else:
                yield route, pattern

    yield from walk(get_resolver().url_patterns, "")


def routes() -> set[str]:
    return {route for route, _ in url_patterns()}


ADMIN_ROUTES = sorted(r for r in routes() if r.startswith(ADMIN_PREFIX) and r not in ADMIN_OPEN)


def concrete(route: str, ids: dict[str, Any]) -> str:
    """A path for ROUTE (a path() route or a regex) with its parameters filled from IDS, by
    the parameter's name."""
    values = {
        "campaign_id": ids["campaign"],
        "delivery_id": ids["delivery"],
        "asset_id": ids["asset"],
        "contact_id": ids["contact"],
        "connection_id": ids["connection"],
        "action": "pause",
        "token": "abc",
        "app_label": "campaigns",
        "url": "campaigns/nothing/",
    }
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: str(values.get(m.group(1), "1")), route)
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values.get(m.group(1), "1")), path)
    return "/" + path.replace("^", "").replace("$", "")


# =============================================================================================
# 1. Tenant isolation
# =============================================================================================

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


def _openapi_operations() -> set[tuple[str, str]]:
    """Every (method, route) of the ninja API, from its OpenAPI schema."""
    params = {
        "campaign_id": SAMPLE_IDS["campaign"],
        "connection_id": SAMPLE_IDS["connection"],
        "asset_id": SAMPLE_IDS["asset"],
        "delivery_id": 1,
        "contact_id": 1,
        "token": "abc",
    }
    operations = set()
    for path, methods in api.get_openapi_schema()["paths"].items():
        concrete_path = re.sub(r"\{(\w+)\}", lambda m: str(params[m.group(1)]), path)
        for method in methods:
            operations.add((method, route_of(concrete_path)))
    return operations


def test_every_api_operation_is_in_the_matrix() -> None:
    """Each method of each API path is in a table (one route may serve GET, PATCH and DELETE)."""
    tables = [*OBJECT_URLS, *LOGIN_ONLY, *(item.req for item in LISTINGS)]
    covered = {(req.method, route_of(req.path)) for req in tables if req.kind == API}
    public = {("get", "api/health/"), ("get", "api/health/ready/")}
    missing = sorted(_openapi_operations() - covered - public)
    assert not missing, f"API operations in no security table: {missing}"


# =============================================================================================
# 2. The tenant WebSocket
# =============================================================================================


async def _socket_answers(path: str, headers: list[tuple[bytes, bytes]]) -> int | str:
    """OPEN when the socket answers a ping; REFUSED when the handshake is refused; otherwise
    the code it was closed with (the consumer accepts first, then closes with a code the page
    can read; a ping sent meanwhile waits behind that)."""
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    if not connected:
        return REFUSED
    await communicator.send_json_to({"type": "ping"})
    message = await communicator.receive_output(timeout=5)
    if message["type"] == "websocket.close":
        await communicator.disconnect()
        return int(message["code"])
    assert json.loads(message["text"]) == {"type": "pong"}
    await communicator.disconnect()
    return OPEN


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", WEBSOCKETS, ids=str)
def test_the_tenant_socket_admits_members_only(
    case: Ws, acme: Tenant, globex: Tenant, bob: User, charlie: User
) -> None:
    tenant = {"acme": acme, "globex": globex}[case.tenant]
    path = f"/ws/tenant/{tenant.pk}/"
    headers = [(b"origin", case.origin), (b"host", b"testserver")]
    kind, _, user = case.who.partition(":")
    if kind == "session":
        headers.append(session_cookie(user))
    elif kind == "token":
        home = {"alice": acme, "bob": acme, "charlie": globex}
        token = "sense_bogus" if user == "bogus" else token_for(User.objects.get(username=user), home[user])
        path += f"?token={token}"

    assert asyncio.run(_socket_answers(path, headers)) == case.expect


def test_every_socket_url_is_in_the_table() -> None:
    from sense.routing import websocket_urlpatterns

    assert [str(p.pattern) for p in websocket_urlpatterns] == ["ws/tenant/<uuid:tenant_id>/"]


# =============================================================================================
# 3. CSRF
# =============================================================================================


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


# =============================================================================================
# 4. Media proxy
# =============================================================================================


@pytest.fixture
def connections(monkeypatch: Any) -> Iterator[tuple[list[tuple[str, int]], set[tuple[str, int]]]]:
    """Records every TCP connection the proxy opens; only the addresses a test allows are
    really connected (so a refusal that failed would show here, without a packet sent)."""
    attempts: list[tuple[str, int]] = []
    allowed: set[tuple[str, int]] = set()
    original = httpcore.SyncBackend.connect_tcp

    def connect_tcp(self: Any, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        attempts.append((host, port))
        if (host, port) in allowed:
            return original(self, host, port, *args, **kwargs)
        raise httpcore.ConnectError(f"test: no connection to {host}:{port}")

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect_tcp)
    yield attempts, allowed
    proxy.reset_client()


def proxy_get(client: Client, url: str, token: str) -> Any:
    return client.get(PROXY + quote(url, safe=""), headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize(("url", "expected"), PROXY_REFUSALS, ids=lambda v: str(v)[:60])
def test_the_media_proxy_refuses(
    url: str, expected: tuple[int, str], alice_token: str, connections: Any, settings: Any
) -> None:
    settings.MEDIA_PROXY_TRUSTED_HOSTS = []
    attempts, _ = connections

    response = proxy_get(Client(), url, alice_token)

    assert (response.status_code, error_code(response)) == expected, response.content[:300]
    assert attempts == []  # refused before any connection
    assert proxy.proxy_cache().get(proxy.cache_key(url)) is None


@pytest.fixture
def trusted_upstream(settings: Any, connections: Any) -> Iterator[Upstream]:
    settings.MEDIA_PROXY_TRUSTED_HOSTS = ["127.0.0.1"]
    with upstream() as server:
        connections[1].add(("127.0.0.1", server.server_address[1]))
        yield server


@pytest.mark.parametrize(("target", "expected"), REDIRECT_REFUSALS, ids=str)
def test_the_media_proxy_refuses_a_redirect_to(
    target: str, expected: tuple[int, str], alice_token: str, trusted_upstream: Upstream, connections: Any
) -> None:
    url = f"{trusted_upstream.base}/redirect?to={quote(target, safe='')}"

    response = proxy_get(Client(), url, alice_token)

    assert (response.status_code, error_code(response)) == expected, response.content[:300]
    assert trusted_upstream.hits["/redirect"] == 1
    assert connections[0] == [("127.0.0.1", trusted_upstream.server_address[1])]  # only the upstream


# =============================================================================================
# 5. Webhooks
# =============================================================================================


@dataclass
class Hooks:
    evolution: Connection
    cloud: Connection
    deliveries: dict[str, Delivery]  # by provider


@pytest.fixture
def hooks(acme: Tenant) -> Iterator[Hooks]:
    webhook_views._connections.clear()
    evolution = make_connection(acme, EVOLUTION, jwt_key=JWT_KEY)
    cloud = make_connection(acme, CLOUD)
    deliveries = {
        EVOLUTION: make_deliveries(make_running_campaign(evolution), 1)[0],
        CLOUD: make_deliveries(make_running_campaign(cloud, name="Cloud campaign"), 1)[0],
    }
    yield Hooks(evolution, cloud, deliveries)
    webhook_views._connections.clear()


def webhook_call(hooks: Hooks, hook: Hook) -> Any:
    own = hooks.evolution if hook.provider == EVOLUTION else hooks.cloud
    if hook.credentials:
        own = make_connection(own.tenant, hook.provider, **{**own.credentials, **hook.credentials})
    if hook.token == "inactive":
        own = make_connection(own.tenant, hook.provider)
        Connection.objects.filter(pk=own.pk).update(is_active=False)
    token = {
        "own": own.webhook_token,
        "inactive": own.webhook_token,
        "unknown": "no-such-webhook-token",
        "other-provider": (hooks.cloud if hook.provider == EVOLUTION else hooks.evolution).webhook_token,
    }[hook.token]
    path = f"/api/webhooks/{'evolution' if hook.provider == EVOLUTION else 'whatsapp'}/{token}/"
    if hook.method == "get":
        return Client().get(path, hook.query)
    message_id = hooks.deliveries[hook.provider].provider_message_id
    if hook.provider == EVOLUTION:
        body = dumps(evolution_update(message_id, "READ", instance=hook.instance))
    else:
        body = dumps(cloud_notification([cloud_status(message_id, "read")]))
    return Client().post(path, body, content_type="application/json", headers=hook.headers(body))


@pytest.mark.parametrize("hook", WEBHOOK_REFUSALS, ids=str)
def test_a_webhook_that_fails_authentication_is_refused_and_stores_nothing(hook: Hook, hooks: Hooks) -> None:
    response = webhook_call(hooks, hook)
    process_all()

    assert response.status_code == hook.status, response.content[:300]
    if hook.code:
        assert error_code(response) == hook.code
    else:
        assert b"424242" not in response.content  # the handshake's challenge is not echoed
    assert not WebhookEvent.objects.exists()
    for delivery in hooks.deliveries.values():
        assert Delivery.objects.get(pk=delivery.pk).status == Delivery.Status.SENT
    rejections = list(WebhookRejection.objects.values_list("reason", flat=True))
    if hook.status == 404:
        assert rejections == []  # no connection to count it against
    else:
        assert rejections == [hook.code or "bad_verify_token"]


@pytest.mark.parametrize("provider", [EVOLUTION, CLOUD])
def test_a_webhook_that_passes_authentication_moves_the_delivery(provider: str, hooks: Hooks) -> None:
    """The control for the table above: the same call with the right credentials works."""
    good = GOOD_JWT if provider == EVOLUTION else _signed()
    response = webhook_call(hooks, Hook("valid", provider, 200, "", good))
    process_all()

    assert response.status_code == 200
    assert Delivery.objects.get(pk=hooks.deliveries[provider].pk).status == Delivery.Status.READ


def test_the_handshake_with_the_right_verify_token_echoes_the_challenge(hooks: Hooks) -> None:
    response = webhook_call(hooks, Hook("valid", CLOUD, 200, "", method="get", query=HANDSHAKE))

    assert (response.status_code, response.content) == (200, b"424242")
