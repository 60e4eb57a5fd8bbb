"""The security matrix's world: acme's objects (the targets), charlie's own, and the helpers
the tables share. One module per table:

1. test_tenant_isolation.py: every URL that names a tenant's object answers another tenant
   404 and changes nothing; every list shows only the caller's tenant; anonymous callers are
   sent to the login page (pages) or get 401 (API);
2. test_socket_access.py: the tenant WebSocket closes with 4401 without credentials, 4403 for
   another tenant's members;
3. test_csrf.py: every form and every session-authenticated API write is refused without a
   token and changes nothing, and goes through with one;
4. test_proxy_refusals.py: the media proxy's refusals (SSRF): addresses, schemes,
   credentials, ports, odd IP forms;
5. test_webhook_auth.py: every failed webhook check is refused, stores nothing, moves nothing.

Guards walk the URLconf and the API's OpenAPI schema and fail when a URL, an API operation
or a form is in no table and not in an explicit allow list with its reason, so a new URL
cannot skip the matrix.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils import timezone

from campaigns import services
from campaigns.models import (
    Campaign,
    CampaignActivity,
    Connection,
    ConsentEvent,
    ConsentSettings,
    Contact,
    ContactImport,
    ContactImportError,
    Delivery,
    DeliveryEvent,
    InboundMessage,
    MessageTemplate,
    WebhookEvent,
)
from campaigns.providers import OutgoingMessage, SendResult
from media.models import Asset
from sense.api import api
from sense.models import Membership, Tenant
from tests.media.conftest import _fresh_media_metrics  # noqa: F401 - autouse: no metrics flushed at exit
from tests.simulator import ProviderSimulator

PAGE, API, MEDIA = "page", "api", "media"  # browser session only; ninja API; media views (token or session)
HX = {"HX-Request": "true"}


@dataclass(frozen=True)
class Req:
    """One request. PATH may name {campaign}, {delivery}, {contact}, {connection}, {asset},
    {contact_import}, {cloud_connection}, {template}, {inbound}, {globex_campaign}, {globex_connection},
    {acme}, {initech} or {token}; SETUP is the status the campaign is put in first (or
    "opted_out": the contact is), so that the request would succeed for its owner."""

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


WEBHOOK = "provider webhook: a secret token in the path plus a signature or JWT (test_webhook_auth.py)"
# URL patterns that are public on purpose: route -> (a path to try anonymously, why).
PUBLIC = {
    "": ("/", "home: redirects to the login page or to the campaign list"),
    "login/": ("/login/", "the login form (CSRF-checked: test_csrf.py)"),
    "logout/": ("/logout/", "logging out needs no login (CSRF-checked: test_csrf.py)"),
    "i18n/setlang/": ("/i18n/setlang/", "Django's language switch: a cookie, no data (CSRF-checked)"),
    "api/": ("/api/", "the API root: a redirect to its documentation"),
    "api/docs": ("/api/docs", "API documentation; every operation in it needs a token"),
    "api/openapi.json": ("/api/openapi.json", "API documentation; every operation in it needs a token"),
    "api/health/": ("/api/health/", "liveness probe"),
    "api/health/ready/": ("/api/health/ready/", "readiness probe: dependency status, no tenant data"),
    "api/health/probe.png": ("/api/health/probe.png", "a static image for the post-deploy check"),
    "metrics": ("/metrics", "Prometheus scrape: its own METRICS_TOKEN, 404 when unset"),
    r"api/webhooks/evolution/(?P<token>[\w-]+)$": ("/api/webhooks/evolution/nope", WEBHOOK),
    "api/webhooks/evolution/<str:token>/": ("/api/webhooks/evolution/nope/", WEBHOOK),
    r"api/webhooks/evolution/(?P<token>[\w-]+)/+(?P<event>[\w.-]+)/?$": (
        "/api/webhooks/evolution/nope/messages-update",
        WEBHOOK,
    ),
    r"api/webhooks/whatsapp/(?P<token>[\w-]+)$": ("/api/webhooks/whatsapp/nope", WEBHOOK),
    "api/webhooks/whatsapp/<str:token>/": ("/api/webhooks/whatsapp/nope/", WEBHOOK),
    "api/webhooks/sandbox/<str:token>/": ("/api/webhooks/sandbox/nope/", WEBHOOK),
}
# The Django admin is for staff (Sense's operators), never for tenant users: ADMIN_ROUTES in
# test_tenant_isolation.py checks that a tenant admin who is not staff is sent to the admin
# login on every admin URL.
ADMIN_PREFIX = "admin/"


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
    contact_import: ContactImport
    inbound: InboundMessage
    globex_connection: Connection
    globex_campaign: Campaign
    cloud_connection: Connection  # acme's Cloud API number, on a simulator that lists its templates
    template: MessageTemplate

    def ids(self) -> dict[str, Any]:
        return {
            "cloud_connection": self.cloud_connection.pk,
            "template": self.template.pk,
            "campaign": self.campaign.pk,
            "delivery": self.delivery.pk,
            "contact": self.contact.pk,
            "connection": self.connection.pk,
            "asset": self.asset.pk,
            "contact_import": self.contact_import.pk,
            "inbound": self.inbound.pk,
            "globex_campaign": self.globex_campaign.pk,
            "globex_connection": self.globex_connection.pk,
            "initech": self.initech.pk,
            "acme": self.acme.pk,
            "token": "abc",
        }

    def prepare(self, status: str) -> None:
        """Put acme's campaign in STATUS (scheduled ones start tomorrow), or opt acme's
        contact out ("opted_out")."""
        if status == "opted_out":
            services.contact_consent_change(contact=self.contact, opted_out=True, source=ConsentEvent.Source.KEYWORD)
        elif status:
            scheduled_at = timezone.now() + timedelta(days=1) if status == "scheduled" else None
            Campaign.objects.filter(pk=self.campaign.pk).update(status=status, scheduled_at=scheduled_at)


class _AcceptingProvider:
    """Accepts every send; has no profile picture for anyone (the avatar is initials)."""

    def send(self, message: OutgoingMessage) -> SendResult:
        return SendResult(message_id="wamid.test", status_code=200)

    def profile_picture_url(self, phone: str) -> str | None:
        return None


@pytest.fixture
def world(acme: Tenant, globex: Tenant, alice: User, bob: User, charlie: User, monkeypatch: Any, request: Any) -> World:
    monkeypatch.setattr(services, "_enqueue_senders", lambda campaign_id: None)
    sim = ProviderSimulator().start()
    request.addfinalizer(sim.stop)
    sim.add_template("acme-waba", "acme_secret_template", components=[{"type": "BODY", "text": "Oi {{1}}"}])
    cloud_connection = Connection.objects.create(
        tenant=acme,
        name="Acme secret cloud number",
        provider=Connection.Provider.CLOUD,
        base_url=sim.base_url,
        credentials={
            "phone_number_id": "1",
            "access_token": "t",
            "app_secret": "s",
            "verify_token": "v",
            "waba_id": "acme-waba",
        },
    )
    template = MessageTemplate.objects.create(
        tenant=acme,
        connection=cloud_connection,
        name="acme_secret_template",
        language="en_US",
        status="APPROVED",
        components=[{"type": "BODY", "text": "Oi {{1}}"}],
    )
    # The Evolution connections point at a closed port; a test send (the one provider call
    # made in a request besides the template sync, which talks to the simulator) reaches a
    # provider that accepts it.
    real_provider_for = services.provider_for
    monkeypatch.setattr(
        services,
        "provider_for",
        lambda connection: (
            real_provider_for(connection) if connection.provider == Connection.Provider.CLOUD else _AcceptingProvider()
        ),
    )
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
    contact_import = ContactImport.objects.create(
        tenant=acme,
        file_key=f"tenants/{acme.pk}/imports/acme-secret.csv",
        original_name="acme-secret-list.csv",
        status=ContactImport.Status.FINISHED,
        total=2,
        processed=2,
        created=1,
        error_count=1,
        errors=[{"row": 3, "error": "invalid phone"}],
    )
    ContactImportError.objects.create(tenant=acme, contact_import=contact_import, row=3, error="invalid phone")
    reply = InboundMessage.objects.create(
        tenant=acme,
        connection=connection,
        contact=contacts[0],
        campaign=campaign,
        delivery=deliveries[0],
        provider_message_id="wamid.acme.in.0",
        text="Acme secret reply",
        phone=contacts[0].phone,
        received_at=timezone.now(),
    )
    ConsentSettings.objects.create(tenant=acme, opt_out_keywords=["SAIR", "Acme secret stop"])
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
        contact_import=contact_import,
        inbound=reply,
        globex_connection=globex_connection,
        globex_campaign=globex_campaign,
        cloud_connection=cloud_connection,
        template=template,
    )


TENANT_MODELS = (
    Campaign,
    CampaignActivity,
    Connection,
    Contact,
    ContactImport,
    ContactImportError,
    Delivery,
    DeliveryEvent,
    Asset,
    WebhookEvent,
    MessageTemplate,
    InboundMessage,
    ConsentEvent,
    ConsentSettings,
)


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
    "contact_import": "00000000-0000-4000-8000-000000000008",
    "cloud_connection": "00000000-0000-4000-8000-000000000009",
    "template": 1,
    "inbound": 1,
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


def concrete(route: str, ids: dict[str, Any]) -> str:
    """A path for ROUTE (a path() route or a regex) with its parameters filled from IDS, by
    the parameter's name."""
    values = {
        "campaign_id": ids["campaign"],
        "delivery_id": ids["delivery"],
        "asset_id": ids["asset"],
        "contact_id": ids["contact"],
        "connection_id": ids["connection"],
        "import_id": ids["contact_import"],
        "message_id": ids["inbound"],
        "action": "pause",
        "token": "abc",
        "app_label": "campaigns",
        "url": "campaigns/nothing/",
    }
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: str(values.get(m.group(1), "1")), route)
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values.get(m.group(1), "1")), path)
    return "/" + path.replace("^", "").replace("$", "")


def _openapi_operations() -> set[tuple[str, str]]:
    """Every (method, route) of the ninja API, from its OpenAPI schema."""
    params = {
        "campaign_id": SAMPLE_IDS["campaign"],
        "connection_id": SAMPLE_IDS["connection"],
        "asset_id": SAMPLE_IDS["asset"],
        "import_id": SAMPLE_IDS["contact_import"],
        "delivery_id": 1,
        "contact_id": 1,
        "template_id": 1,
        "token": "abc",
    }
    operations = set()
    for path, methods in api.get_openapi_schema()["paths"].items():
        concrete_path = re.sub(r"\{(\w+)\}", lambda m: str(params[m.group(1)]), path)
        for method in methods:
            operations.add((method, route_of(concrete_path)))
    return operations
