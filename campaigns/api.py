"""JSON API for contacts, connections and campaigns: schemas in, a service call, schemas out.

Every lookup is scoped to the caller's tenant: another tenant's object is a 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils import translation
from ninja import Field, File, Router, Schema
from ninja.files import UploadedFile
from ninja.responses import Status

from campaigns import conversations, reports, services
from campaigns.models import (
    Campaign,
    CampaignActivity,
    Connection,
    ConsentEvent,
    Contact,
    ContactErasure,
    ContactImport,
    Delivery,
    DeliveryEvent,
    InboundMessage,
    MessageTemplate,
)
from campaigns.providers import error_info
from campaigns.views import contact_avatar_url, contact_import_errors_download, deliveries_csv_download
from sense.errors import ServiceError
from sense.pagination import PAGE_SIZE, paginate
from sense.tenancy import TenantHttpRequest, get_for_tenant


def _in_english(text: Any) -> str:
    """TEXT (a lazy translation) in English, whatever the request's language: the API's
    error guidance stays as stable as the Meta titles and error messages beside it; the pages
    show it translated."""
    with translation.override("en"):
        return str(text)


def _require_admin(request: TenantHttpRequest) -> None:
    if not request.membership.is_admin:
        raise PermissionDenied("Only tenant admins may manage connections.")


# --- Contacts --------------------------------------------------------------------------------

contacts_router = Router(tags=["contacts"])


class ContactOut(Schema):
    id: int
    phone: str
    name: str
    attributes: dict[str, Any]
    tags: list[str]
    opted_out: bool
    opted_out_at: datetime | None
    opt_out_source: str
    avatar_url: str | None
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_avatar_url(obj: Contact) -> str | None:
        """Sense's URL of the profile picture (never the gateway's), or None when the
        gateway said it has none."""
        return contact_avatar_url(obj)


class ContactIn(Schema):
    phone: str
    name: str = ""
    attributes: dict[str, Any] = {}
    tags: list[str] = []
    opted_out: bool = False


class ContactPatch(Schema):
    phone: str | None = None
    name: str | None = None
    attributes: dict[str, Any] | None = None
    tags: list[str] | None = None
    opted_out: bool | None = None


class ContactPage(Schema):
    count: int
    items: list[ContactOut]


class ImportError_(Schema):
    row: int
    error: str


class ImportOut(Schema):
    created: int
    updated: int
    errors: list[ImportError_]


@contacts_router.get("/", response=ContactPage, summary="Contacts, filtered by tag, text or opt-out")
def list_contacts(
    request: TenantHttpRequest,
    q: str = "",
    tag: str = "",
    opted_out: bool | None = None,
    page: int = 1,
    page_size: int = PAGE_SIZE,
) -> dict[str, Any]:
    qs: Any = Contact.objects.for_tenant(request.tenant).order_by("name", "phone", "pk")
    if tag:
        qs = qs.with_any_tag([tag])
    if q:
        qs = qs.filter(Q(name__icontains=q) | Q(phone__contains=q))
    if opted_out is not None:
        qs = qs.filter(opted_out=opted_out)
    return paginate(qs, page=page, page_size=page_size)


@contacts_router.post("/", response={201: ContactOut}, summary="Add a contact (phone normalized to E.164)")
def create_contact(request: TenantHttpRequest, payload: ContactIn) -> Status[Contact]:
    return Status(201, services.contact_create(tenant=request.tenant, user=request.user, **payload.dict()))


class ImportQueued(Schema):
    import_id: UUID
    status_url: str


class ContactImportOut(Schema):
    id: UUID
    status: str
    file_name: str
    total: int
    processed: int
    created: int
    updated: int
    error_count: int
    errors: list[ImportError_]
    failure: str
    errors_url: str
    created_at: datetime
    finished_at: datetime | None

    @staticmethod
    def resolve_file_name(obj: ContactImport) -> str:
        return obj.original_name

    @staticmethod
    def resolve_errors_url(obj: ContactImport) -> str:
        return reverse("api:contact_import_errors", kwargs={"import_id": obj.pk})


@contacts_router.post(
    "/import/",
    response={200: ImportOut, 202: ImportQueued},
    summary="Import contacts from a CSV file (field `file`): at once up to CONTACT_IMPORT_SYNC_MAX_ROWS rows, "
    "else 202 and a worker imports it",
)
def import_contacts_csv(request: TenantHttpRequest, file: UploadedFile = File(...)) -> Any:  # noqa: B008
    outcome = services.contacts_import_upload(tenant=request.tenant, user=request.user, file=file)
    if isinstance(outcome, ContactImport):
        status_url = reverse("api:contact_import", kwargs={"import_id": outcome.pk})
        return Status(202, {"import_id": outcome.pk, "status_url": status_url})
    return outcome.as_dict()


@contacts_router.get(
    "/imports/{uuid:import_id}/",
    response=ContactImportOut,
    url_name="contact_import",
    summary="A background import: status, progress, counts and the first 1,000 bad rows",
)
def get_contact_import(request: TenantHttpRequest, import_id: UUID) -> ContactImport:
    return get_for_tenant(ContactImport, request.tenant, pk=import_id)


@contacts_router.get(
    "/imports/{uuid:import_id}/errors/",
    response={200: None},
    url_name="contact_import_errors",
    summary="Every bad row of a background import, as CSV (`row,error`)",
    openapi_extra={"responses": {200: {"description": "CSV", "content": {"text/csv": {}}}}},
)
def get_contact_import_errors(request: TenantHttpRequest, import_id: UUID) -> StreamingHttpResponse:
    return contact_import_errors_download(get_for_tenant(ContactImport, request.tenant, pk=import_id))


@contacts_router.get("/{int:contact_id}/", response=ContactOut)
def get_contact(request: TenantHttpRequest, contact_id: int) -> Contact:
    return get_for_tenant(Contact, request.tenant, pk=contact_id)


@contacts_router.patch("/{int:contact_id}/", response=ContactOut, summary="Change a contact (e.g. opt it out)")
def update_contact(request: TenantHttpRequest, contact_id: int, payload: ContactPatch) -> Contact:
    contact = get_for_tenant(Contact, request.tenant, pk=contact_id)
    return services.contact_update(contact=contact, user=request.user, **payload.dict(exclude_unset=True))


class MediaOut(Schema):
    id: UUID
    file_url: str
    thumbnail_url: str | None


class MessageOut(Schema):
    kind: str
    id: int
    at: datetime
    type: str
    text: str
    status: str
    campaign_id: UUID | None
    media: MediaOut | None


class MessagePage(Schema):
    count: int
    items: list[MessageOut]


@contacts_router.get(
    "/{int:contact_id}/messages/",
    response=MessagePage,
    summary="A contact's conversation, newest first: what was sent to it (`delivery`) and what it sent (`inbound`)",
)
def contact_messages(
    request: TenantHttpRequest, contact_id: int, page: int = 1, page_size: int = PAGE_SIZE
) -> dict[str, Any]:
    contact = get_for_tenant(Contact, request.tenant, pk=contact_id)
    found = conversations.conversation(contact, page=page, page_size=page_size)
    return {"count": found["count"], "items": [m.as_dict() for m in found["items"]]}


class ConsentEventOut(Schema):
    opted_out: bool
    source: str
    reason: str
    user: str | None
    inbound_id: int | None
    at: datetime

    @staticmethod
    def resolve_user(obj: ConsentEvent) -> str | None:
        return obj.user.get_username() if obj.user is not None else None


@contacts_router.get(
    "/{int:contact_id}/consent/", response=list[ConsentEventOut], summary="A contact's consent history, newest first"
)
def contact_consent(request: TenantHttpRequest, contact_id: int) -> QuerySet[ConsentEvent]:
    contact = get_for_tenant(Contact, request.tenant, pk=contact_id)
    return ConsentEvent.objects.filter(contact=contact, tenant=request.tenant).select_related("user")


class ConsentIn(Schema):
    reason: str = ""


@contacts_router.post(
    "/{int:contact_id}/opt-in/",
    response=ContactOut,
    summary="Opt a contact back in (a reason is required: 400 `reason_required` without one)",
)
def contact_opt_in(request: TenantHttpRequest, contact_id: int, payload: ConsentIn) -> Contact:
    contact = get_for_tenant(Contact, request.tenant, pk=contact_id)
    services.contact_opt_in(contact=contact, source=ConsentEvent.Source.API, user=request.user, reason=payload.reason)
    contact.refresh_from_db()
    return contact


@contacts_router.post(
    "/{int:contact_id}/opt-out/",
    response=ContactOut,
    summary="Opt a contact out: its pending deliveries are cancelled and it gets no further messages",
)
def contact_opt_out(request: TenantHttpRequest, contact_id: int, payload: ConsentIn) -> Contact:
    contact = get_for_tenant(Contact, request.tenant, pk=contact_id)
    services.contact_opt_out(contact=contact, source=ConsentEvent.Source.API, user=request.user, reason=payload.reason)
    contact.refresh_from_db()
    return contact


@contacts_router.delete(
    "/{int:contact_id}/",
    response={204: None},
    summary="Erase a contact (LGPD): its data goes, its deliveries stay as anonymous rows",
)
def delete_contact(request: TenantHttpRequest, contact_id: int) -> Status[None]:
    contact = get_for_tenant(Contact, request.tenant, pk=contact_id)
    services.contact_erase(contact=contact, user=request.user, via=ContactErasure.Via.API)
    return Status(204, None)


# --- Connections -------------------------------------------------------------------------------

connections_router = Router(tags=["connections"])


class ConnectionOut(Schema):
    id: UUID
    name: str
    provider: str
    base_url: str
    rate_per_minute: int
    daily_limit: int | None
    is_active: bool
    state: str | None
    state_reason: str
    state_since: datetime | None
    webhook_url: str | None
    credentials_set: list[str]
    created_at: datetime

    @staticmethod
    def resolve_webhook_url(obj: Connection, context: dict[str, Any]) -> str | None:
        """The path to give the provider, for admins; None for operators: it holds the
        connection's secret webhook token (the only secret of an Evolution connection
        without a JWT key), which would let them forge delivery statuses."""
        request = context["request"]
        return services.connection_webhook_path(obj) if request.membership.is_admin else None

    @staticmethod
    def resolve_credentials_set(obj: Connection) -> list[str]:
        """Which credentials are stored (their values are write-only)."""
        return sorted(k for k, v in obj.credentials.items() if v)

    @staticmethod
    def resolve_state(obj: Connection) -> str | None:
        """open, connecting, close or refused as the gateway last reported; None: never told."""
        return obj.state or None


class ConnectionIn(Schema):
    name: str
    provider: str
    base_url: str = ""
    rate_per_minute: int = 60
    daily_limit: int | None = None
    is_active: bool = True
    credentials: dict[str, str]


class ConnectionPatch(Schema):
    name: str | None = None
    base_url: str | None = None
    rate_per_minute: int | None = None
    daily_limit: int | None = None
    is_active: bool | None = None
    credentials: dict[str, str] | None = None


@connections_router.get("/", response=list[ConnectionOut])
def list_connections(request: TenantHttpRequest) -> QuerySet[Connection]:
    return Connection.objects.for_tenant(request.tenant).order_by("name")


@connections_router.post("/", response={201: ConnectionOut}, summary="Add a WhatsApp connection (admins)")
def create_connection(request: TenantHttpRequest, payload: ConnectionIn) -> Status[Connection]:
    _require_admin(request)
    return Status(201, services.connection_create(tenant=request.tenant, **payload.dict()))


@connections_router.get("/{uuid:connection_id}/", response=ConnectionOut)
def get_connection(request: TenantHttpRequest, connection_id: UUID) -> Connection:
    return get_for_tenant(Connection, request.tenant, pk=connection_id)


@connections_router.patch("/{uuid:connection_id}/", response=ConnectionOut, summary="Change a connection (admins)")
def update_connection(request: TenantHttpRequest, connection_id: UUID, payload: ConnectionPatch) -> Connection:
    connection = get_for_tenant(Connection, request.tenant, pk=connection_id)
    _require_admin(request)
    return services.connection_update(connection=connection, **payload.dict(exclude_unset=True))


class TemplateSyncOut(Schema):
    synced: int
    created: int
    updated: int
    deleted: int


@connections_router.post(
    "/{uuid:connection_id}/templates/sync/",
    response=TemplateSyncOut,
    summary="Sync the connection's message templates from Meta (admins): new, changed, and no longer listed (DELETED)",
)
def sync_connection_templates(request: TenantHttpRequest, connection_id: UUID) -> dict[str, int]:
    connection = get_for_tenant(Connection, request.tenant, pk=connection_id)
    _require_admin(request)
    return services.templates_sync(connection=connection).as_dict()


# --- Message templates -------------------------------------------------------------------------

templates_router = Router(tags=["templates"])


class TemplateOut(Schema):
    id: int
    connection_id: UUID
    name: str
    language: str
    status: str
    status_reason: str
    category: str
    parameter_format: str
    quality_score: str
    header_format: str | None
    header_text: str
    body_text: str
    footer_text: str
    parameters: list[str]
    buttons: list[dict[str, Any]]
    synced_at: datetime | None


class TemplatePage(Schema):
    count: int
    items: list[TemplateOut]


@templates_router.get("/", response=TemplatePage, summary="Message templates, by connection and status")
def list_templates(
    request: TenantHttpRequest,
    connection_id: UUID | None = None,
    status: str = "",
    page: int = 1,
    page_size: int = PAGE_SIZE,
) -> dict[str, Any]:
    qs = MessageTemplate.objects.for_tenant(request.tenant).order_by("name", "language", "pk")
    if connection_id is not None:
        qs = qs.filter(connection_id=connection_id)
    if status:
        qs = qs.filter(status=status.upper())
    return paginate(qs, page=page, page_size=page_size)


@templates_router.get("/{int:template_id}/", response=TemplateOut)
def get_template(request: TenantHttpRequest, template_id: int) -> MessageTemplate:
    return get_for_tenant(MessageTemplate, request.tenant, pk=template_id)


# --- Campaigns ---------------------------------------------------------------------------------

campaigns_router = Router(tags=["campaigns"])


class Stats(Schema):
    total: int
    pending: int
    sent: int
    delivered: int
    read: int
    failed: int
    cancelled: int
    unknown: int
    replied: int = Field(description="deliveries that got a reply (quoted, or within REPLY_ATTRIBUTION_HOURS)")


class Preparation(Schema):
    prepared: int
    total: int | None


class SendWindow(Schema):
    days: list[int] = [1, 2, 3, 4, 5, 6, 7]
    start: str
    end: str


class CampaignOut(Schema):
    id: UUID
    name: str
    status: str
    connection_id: UUID
    connection_ids: list[UUID]
    rotation: str
    interval_min_seconds: int
    interval_max_seconds: int
    pause_every: int
    pause_seconds: int
    typing_seconds: int
    send_window: SendWindow | None
    skip_dates: list[str]
    variants: list[str]
    waiting_reason: str | None
    next_send_at: datetime | None
    scheduled_at: datetime | None
    started_at: datetime | None
    prepared_at: datetime | None
    finished_at: datetime | None
    stats: Stats
    preparation: Preparation | None
    message: str
    media_id: UUID | None
    template_id: int | None
    template_params: dict[str, str]
    header_media_id: UUID | None
    tags: list[str]
    pause_reason: str
    created_at: datetime

    @staticmethod
    def resolve_connection_ids(obj: Campaign) -> list[Any]:
        return obj.all_connection_ids()

    @staticmethod
    def resolve_waiting_reason(obj: Campaign) -> str | None:
        """window, daily_limit or connection while a running campaign may not send; else None."""
        return obj.waiting_reason or None if obj.status == Campaign.Status.RUNNING else None


class CampaignPage(Schema):
    count: int
    items: list[CampaignOut]


class Cost(Schema):
    currency: str
    category: str
    unit_price: float | None
    audience: int
    estimated: float | None
    billable: int
    running: float
    unpriced: list[str]


class FailureOut(Schema):
    code: str
    count: int
    title: str | None
    guidance: str | None
    action: str | None


class CampaignDetailOut(CampaignOut):
    """One campaign with what its page reports: failures by error code, billable messages by
    pricing category, and its cost (null without CLOUD_PRICE_TABLE or off the Cloud API)."""

    failures: list[FailureOut]
    billable: dict[str, int]
    cost: Cost | None

    @staticmethod
    def resolve_failures(obj: Campaign) -> list[dict[str, Any]]:
        return [
            {
                "code": f.code,
                "count": f.count,
                "title": f.info.title if f.info else None,
                "guidance": _in_english(f.info.guidance) if f.info else None,
                "action": f.info.action if f.info else None,
            }
            for f in reports.failures_by_code(obj)
        ]

    @staticmethod
    def resolve_billable(obj: Campaign) -> dict[str, int]:
        return reports.billable_by_category(obj)

    @staticmethod
    def resolve_cost(obj: Campaign) -> dict[str, Any] | None:
        return reports.cost(obj)


class CampaignIn(Schema):
    name: str
    connection_id: UUID | None = None
    connection_ids: list[UUID] | None = None
    message: str = ""  # may be empty with a template
    media_id: UUID | None = None
    template_id: int | None = None
    template_params: dict[str, str] = {}
    header_media_id: UUID | None = None
    tags: list[str] = []
    scheduled_at: datetime | None = None
    rotation: str = "round_robin"
    interval_min_seconds: int = 0
    interval_max_seconds: int = 0
    pause_every: int = 0
    pause_seconds: int = 0
    typing_seconds: int = 0
    send_window: dict[str, Any] | None = None
    skip_dates: list[str] = []
    variants: list[str] = []


class CampaignPatch(Schema):
    name: str | None = None
    connection_id: UUID | None = None
    connection_ids: list[UUID] | None = None
    message: str | None = None
    media_id: UUID | None = None
    template_id: int | None = None
    template_params: dict[str, str] | None = None
    header_media_id: UUID | None = None
    tags: list[str] | None = None
    scheduled_at: datetime | None = None
    rotation: str | None = None
    interval_min_seconds: int | None = None
    interval_max_seconds: int | None = None
    pause_every: int | None = None
    pause_seconds: int | None = None
    typing_seconds: int | None = None
    send_window: dict[str, Any] | None = None
    skip_dates: list[str] | None = None
    variants: list[str] | None = None


class DeliveryOut(Schema):
    id: int
    phone: str
    status: str
    provider_message_id: str | None
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
    failed_at: datetime | None
    replied_at: datetime | None
    error: str | None
    error_code: str
    error_title: str | None
    error_guidance: str | None
    retryable_at: datetime | None
    not_retryable_reason: str | None
    attempts: int
    connection_id: UUID | None
    variant: int | None

    @staticmethod
    def resolve_error(obj: Delivery) -> str | None:
        return obj.error_message or None

    @staticmethod
    def resolve_error_title(obj: Delivery) -> str | None:
        info = error_info(obj.campaign.connection.provider, obj.error_code)
        return info.title if info else None

    @staticmethod
    def resolve_error_guidance(obj: Delivery) -> str | None:
        info = error_info(obj.campaign.connection.provider, obj.error_code)
        return _in_english(info.guidance) if info else None

    @staticmethod
    def resolve_retryable_at(obj: Delivery) -> datetime | None:
        return obj.retryable_at()

    @staticmethod
    def resolve_not_retryable_reason(obj: Delivery) -> str | None:
        with translation.override("en"):  # in English, as the error guidance (`_in_english`)
            return obj.not_retryable_reason() or None


class DeliveryPage(Schema):
    count: int
    items: list[DeliveryOut]


def _campaign(request: TenantHttpRequest, campaign_id: UUID) -> Campaign:
    return get_for_tenant(Campaign.objects.select_related("connection", "tenant"), request.tenant, pk=campaign_id)


@campaigns_router.get("/", response=CampaignPage, summary="Campaigns, newest first")
def list_campaigns(request: TenantHttpRequest, status: str = "", page: int = 1, page_size: int = PAGE_SIZE) -> Any:
    qs = Campaign.objects.for_tenant(request.tenant).prefetch_related("extra_connections").order_by("-created_at")
    if status:
        qs = qs.filter(status=status)
    return paginate(qs, page=page, page_size=page_size)


@campaigns_router.post("/", response={201: CampaignOut}, summary="Create a draft campaign")
def create_campaign(request: TenantHttpRequest, payload: CampaignIn) -> Status[Campaign]:
    campaign = services.campaign_create(tenant=request.tenant, user=request.user, **payload.dict())
    return Status(201, campaign)


@campaigns_router.get("/{uuid:campaign_id}/", response=CampaignDetailOut)
def get_campaign(request: TenantHttpRequest, campaign_id: UUID) -> Campaign:
    return _campaign(request, campaign_id)


@campaigns_router.patch("/{uuid:campaign_id}/", response=CampaignOut, summary="Edit a draft campaign")
def update_campaign(request: TenantHttpRequest, campaign_id: UUID, payload: CampaignPatch) -> Campaign:
    campaign = _campaign(request, campaign_id)
    return services.campaign_update(campaign=campaign, user=request.user, **payload.dict(exclude_unset=True))


@campaigns_router.post("/{uuid:campaign_id}/start/", response=CampaignOut, summary="Start (or schedule) a draft")
def start_campaign(request: TenantHttpRequest, campaign_id: UUID) -> Campaign:
    """The campaign is `preparing` at once, whatever its audience size: a worker takes the
    audience snapshot (`preparation` shows its progress), then it is `running`."""
    return services.campaign_start(campaign=_campaign(request, campaign_id), user=request.user)


@campaigns_router.post("/{uuid:campaign_id}/pause/", response=CampaignOut)
def pause_campaign(request: TenantHttpRequest, campaign_id: UUID) -> Campaign:
    return services.campaign_pause(campaign=_campaign(request, campaign_id), user=request.user)


@campaigns_router.post("/{uuid:campaign_id}/resume/", response=CampaignOut)
def resume_campaign(request: TenantHttpRequest, campaign_id: UUID) -> Campaign:
    return services.campaign_resume(campaign=_campaign(request, campaign_id), user=request.user)


@campaigns_router.post("/{uuid:campaign_id}/cancel/", response=CampaignOut)
def cancel_campaign(request: TenantHttpRequest, campaign_id: UUID) -> Campaign:
    return services.campaign_cancel(campaign=_campaign(request, campaign_id), user=request.user)


@campaigns_router.post("/{uuid:campaign_id}/unschedule/", response=CampaignOut, summary="Scheduled back to draft")
def unschedule_campaign(request: TenantHttpRequest, campaign_id: UUID) -> Campaign:
    return services.campaign_unschedule(campaign=_campaign(request, campaign_id), user=request.user)


class RetryOut(Schema):
    requeued: int


@campaigns_router.post("/{uuid:campaign_id}/retry/", response=RetryOut, summary="Send failed deliveries again")
def retry_campaign(request: TenantHttpRequest, campaign_id: UUID) -> dict[str, int]:
    """Failed deliveries whose error may go away on a second try go back to pending (a
    finished campaign runs again). Never requeued: opted-out contacts, numbers not on
    WhatsApp, provider codes that say stop, `unknown` outcomes (they may have been sent)."""
    campaign = _campaign(request, campaign_id)
    return {"requeued": services.deliveries_retry_failed(campaign=campaign, user=request.user)}


class TestSendIn(Schema):
    phone: str
    contact_id: int | None = None


class TestSendOut(Schema):
    phone: str
    text: str
    message_id: str
    connection_id: UUID


class ProviderRefusal(Schema):
    error: str
    code: str


@campaigns_router.post(
    "/{uuid:campaign_id}/test/",
    response={200: TestSendOut, 502: ProviderRefusal},
    summary="Send the message to one phone now",
)
def test_send_campaign(request: TenantHttpRequest, campaign_id: UUID, payload: TestSendIn) -> dict[str, Any]:
    """Renders the message for CONTACT_ID (or a sample contact with that phone) and sends it
    at once through the campaign's first connection: no delivery, no counter changes."""
    sent = services.campaign_test_send(
        campaign=_campaign(request, campaign_id), phone=payload.phone, contact_id=payload.contact_id, user=request.user
    )
    return {"phone": sent.phone, "text": sent.text, "message_id": sent.message_id, "connection_id": sent.connection.pk}


@campaigns_router.post(
    "/{uuid:campaign_id}/duplicate/", response={201: CampaignOut}, summary="A new draft with the same settings"
)
def duplicate_campaign(request: TenantHttpRequest, campaign_id: UUID) -> Status[Campaign]:
    return Status(201, services.campaign_duplicate(campaign=_campaign(request, campaign_id), user=request.user))


class ActivityOut(Schema):
    id: int
    at: datetime
    kind: str
    message: str
    user: str | None
    data: dict[str, Any]

    @staticmethod
    def resolve_user(obj: CampaignActivity) -> str | None:
        return obj.user.get_username() if obj.user is not None else None


class ActivityPage(Schema):
    count: int
    items: list[ActivityOut]


@campaigns_router.get("/{uuid:campaign_id}/activity/", response=ActivityPage, summary="A campaign's log, newest first")
def campaign_activity(
    request: TenantHttpRequest, campaign_id: UUID, page: int = 1, page_size: int = PAGE_SIZE
) -> dict[str, Any]:
    campaign = _campaign(request, campaign_id)
    qs = CampaignActivity.objects.filter(tenant=request.tenant, campaign=campaign).select_related("user")
    return paginate(qs.order_by("-at", "-id"), page=page, page_size=page_size)


@campaigns_router.get(
    "/{uuid:campaign_id}/deliveries.csv",
    response={200: None},
    summary="Every delivery, as CSV",
    openapi_extra={"responses": {200: {"description": "CSV (UTF-8 with a BOM)", "content": {"text/csv": {}}}}},
)
def export_deliveries(request: TenantHttpRequest, campaign_id: UUID, sep: str = ",") -> StreamingHttpResponse:
    """Streamed as it is read (a million rows in bounded memory), UTF-8 with a byte order
    mark so that Excel opens it right; `sep=;` for spreadsheets in a decimal-comma locale."""
    campaign = _campaign(request, campaign_id)
    return deliveries_csv_download(campaign, sep=services.export_separator(sep))


@campaigns_router.get("/{uuid:campaign_id}/deliveries/", response=DeliveryPage, summary="A campaign's deliveries")
def list_deliveries(
    request: TenantHttpRequest, campaign_id: UUID, status: str = "", page: int = 1, page_size: int = PAGE_SIZE
) -> dict[str, Any]:
    campaign = _campaign(request, campaign_id)
    qs = Delivery.objects.filter(campaign=campaign, tenant=request.tenant)
    qs = qs.select_related("campaign__connection", "contact").order_by("pk")
    if status:
        if status not in Delivery.Status.values:
            raise ServiceError(f"Unknown status {status!r}.", code="invalid", status=422)
        qs = qs.filter(status=status)
    return paginate(qs, page=page, page_size=page_size)


@campaigns_router.get("/{uuid:campaign_id}/deliveries/{int:delivery_id}/", response=DeliveryOut)
def get_delivery(request: TenantHttpRequest, campaign_id: UUID, delivery_id: int) -> Delivery:
    campaign = _campaign(request, campaign_id)
    deliveries = Delivery.objects.filter(campaign=campaign).select_related("campaign__connection", "contact")
    return get_for_tenant(deliveries, request.tenant, pk=delivery_id)


# --- Deliveries ------------------------------------------------------------------------------

deliveries_router = Router(tags=["deliveries"])


class EventError(Schema):
    code: str
    message: str


class DeliveryEventOut(Schema):
    status: str
    occurred_at: datetime
    received_at: datetime
    event: str
    error: EventError | None


@deliveries_router.get(
    "/{delivery_id}/events/", response=list[DeliveryEventOut], summary="A delivery's status events, in order"
)
def delivery_events(request: TenantHttpRequest, delivery_id: int) -> list[dict[str, object]]:
    """Every status event received for the delivery, oldest first by the provider's time,
    with the time Sense received it and the provider's event type; failures carry the
    provider's error code and message."""
    delivery = get_for_tenant(Delivery, request.tenant, pk=delivery_id)
    events = DeliveryEvent.objects.filter(delivery=delivery).order_by("occurred_at", "received_at", "pk")
    return [
        {
            "status": e.status,
            "occurred_at": e.occurred_at,
            "received_at": e.received_at,
            "event": e.event,
            "error": {"code": e.error_code, "message": e.error_message} if (e.error_code or e.error_message) else None,
        }
        for e in events
    ]


# --- Inbound messages --------------------------------------------------------------------------

inbound_router = Router(tags=["inbound"])


class InboundOut(Schema):
    id: int
    contact_id: int | None
    campaign_id: UUID | None
    delivery_id: int | None
    connection_id: UUID
    type: str
    text: str
    phone: str
    profile_name: str
    media: MediaOut | None
    media_status: str
    received_at: datetime

    @staticmethod
    def resolve_media(obj: InboundMessage) -> dict[str, Any] | None:
        asset = obj.media
        if asset is None:
            return None
        return {"id": asset.id, "file_url": asset.file_url(), "thumbnail_url": asset.thumbnail_url()}


class InboundPage(Schema):
    count: int
    items: list[InboundOut]


@inbound_router.get("/", response=InboundPage, summary="Messages contacts sent, newest first (by campaign, text)")
def list_inbound(
    request: TenantHttpRequest,
    campaign_id: UUID | None = None,
    contact_id: int | None = None,
    q: str = "",
    page: int = 1,
    page_size: int = PAGE_SIZE,
) -> dict[str, Any]:
    """A campaign or contact of another tenant is a 404."""
    qs = InboundMessage.objects.filter(tenant=request.tenant).select_related("media").order_by("-received_at", "-id")
    if campaign_id is not None:
        qs = qs.filter(campaign=get_for_tenant(Campaign, request.tenant, pk=campaign_id))
    if contact_id is not None:
        qs = qs.filter(contact=get_for_tenant(Contact, request.tenant, pk=contact_id))
    if q.strip():
        qs = qs.filter(text__icontains=q.strip())
    return paginate(qs, page=page, page_size=page_size)
