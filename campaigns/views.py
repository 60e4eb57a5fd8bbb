"""HTMX pages for campaigns and contacts (server-rendered; each fragment is a named partial
of its page template and every hx-get has a real href, so pages work without JavaScript)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Max, Q, QuerySet
from django.db.models.functions import TruncMinute
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from campaigns import conversations, pacing, reports, services
from campaigns.forms import (
    CampaignForm,
    ConnectionForm,
    ConsentActionForm,
    ConsentSettingsForm,
    ContactImportForm,
    TestSendForm,
    parse_tags,
)
from campaigns.models import (
    Campaign,
    CampaignActivity,
    Connection,
    ConsentEvent,
    ConsentSettings,
    Contact,
    ContactErasure,
    ContactImport,
    Delivery,
    DeliveryEvent,
    InboundMessage,
    MessageTemplate,
    WebhookEvent,
)
from campaigns.providers import provider_class
from campaigns.snapshot import render_template_values, template_sources
from media.models import Asset
from sense.errors import ServiceError
from sense.pagesupport import render_htmx, tenant_required
from sense.tenancy import TenantHttpRequest, get_for_tenant


def _page(request: TenantHttpRequest, queryset: Any, per_page: int) -> Any:
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


@require_GET
@login_required
@tenant_required
def campaign_list(request: TenantHttpRequest) -> HttpResponse:
    campaigns = Campaign.objects.for_tenant(request.tenant).select_related("connection")
    q = request.GET.get("q", "").strip()
    status = request.GET.get("status", "")
    if q:
        campaigns = campaigns.filter(name__icontains=q)
    if status in Campaign.Status.values:
        campaigns = campaigns.filter(status=status)
    context = {
        "nav": "campaigns",
        "page": _page(request, campaigns, 25),
        "q": q,
        "status": status,
        "statuses": Campaign.Status.choices,
    }
    return render_htmx(request, "campaigns/list.html", "#table", context)


def timeline(campaign: Campaign, minutes: int = 60) -> dict[str, Any]:
    """Status events per minute over the campaign's last MINUTES of activity, as SVG-ready series."""
    last = (
        DeliveryEvent.objects.filter(delivery__campaign=campaign)
        .order_by("-received_at")
        .values_list("received_at", flat=True)
        .first()
    )
    end = (last or timezone.now()).replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=minutes)
    rows = (
        DeliveryEvent.objects.filter(delivery__campaign=campaign, received_at__gte=start, received_at__lt=end)
        .annotate(minute=TruncMinute("received_at"))
        .values("minute", "status")
        .annotate(n=Count("id"))
    )
    series: dict[str, list[int]] = {s: [0] * minutes for s in ("sent", "delivered", "read", "failed")}
    for row in rows:
        index = int((row["minute"] - start).total_seconds() // 60)
        if row["status"] in series and 0 <= index < minutes:
            series[row["status"]][index] += row["n"]
    peak = max([1, *(max(v) for v in series.values())])
    width, height = 600, 120
    step = width / max(1, minutes - 1)
    lines = {
        status: " ".join(f"{i * step:.1f},{height - (v / peak) * (height - 4):.1f}" for i, v in enumerate(values))
        for status, values in series.items()
    }
    return {
        "lines": lines,
        "peak": peak,
        "start": start,
        "end": end,
        "width": width,
        "height": height,
        "total": sum(sum(v) for v in series.values()),
    }


def _deliveries(request: TenantHttpRequest, campaign: Campaign) -> dict[str, Any]:
    deliveries = (
        Delivery.objects.filter(tenant=request.tenant, campaign=campaign).select_related("connection").order_by("id")
    )
    status = request.GET.get("status", "")
    phone = request.GET.get("phone", "").strip()
    if status in Delivery.Status.values:
        deliveries = deliveries.filter(status=status)
    if phone:
        digits = "".join(ch for ch in phone if ch.isdigit())
        deliveries = deliveries.filter(phone__contains=digits) if digits else deliveries.none()
    return {
        "deliveries": _page(request, deliveries, 50),
        "delivery_status": status,
        "phone": phone,
        "delivery_statuses": Delivery.Status.choices,
    }


@require_GET
@login_required
@tenant_required
def campaign_detail(request: TenantHttpRequest, campaign_id: UUID) -> HttpResponse:
    campaign = get_for_tenant(Campaign.objects.select_related("connection"), request.tenant, pk=campaign_id)
    deliveries = _deliveries(request, campaign)
    if request.htmx and request.htmx.target == "deliveries":  # pagination links inside the log
        return render(request, "campaigns/detail.html#deliveries", {"campaign": campaign, **deliveries})
    return _detail_page(request, campaign, deliveries)


def variant_stats(campaign: Campaign) -> list[dict[str, Any]]:
    """Sent, delivered, read and replied per text variant, in one GROUP BY (empty for a
    campaign with one text)."""
    texts = campaign.texts
    if len(texts) <= 1:
        return []
    reached = [Delivery.Status.SENT, Delivery.Status.DELIVERED, Delivery.Status.READ]
    rows = {
        row["variant"]: row
        for row in Delivery.objects.filter(campaign=campaign)
        .values("variant")
        .annotate(
            total=Count("pk"),
            sent=Count("pk", filter=Q(status__in=reached)),
            delivered=Count("pk", filter=Q(status__in=reached[1:])),
            read=Count("pk", filter=Q(status=Delivery.Status.READ)),
            replied=Count("pk", filter=Q(replied_at__isnull=False)),
        )
        .order_by()
    }
    empty = {"total": 0, "sent": 0, "delivered": 0, "read": 0, "replied": 0}
    return [{"variant": i, "text": text, **{**empty, **rows.get(i, {})}} for i, text in enumerate(texts)]


def _detail_page(request: TenantHttpRequest, campaign: Campaign, deliveries: dict[str, Any]) -> HttpResponse:
    """The whole campaign page (its header shows the connection: CAMPAIGN has it joined)."""
    billable = reports.billable_by_category(campaign)
    context = {
        "nav": "campaigns",
        "timeline": timeline(campaign),
        "replies": replies(request, campaign),
        "variants": variant_stats(campaign),
        "connection_names": list(
            Connection.objects.filter(pk__in=campaign.all_connection_ids()).values_list("name", flat=True)
        ),
        "failures": reports.failures_by_code(campaign),
        "billable": billable,
        "cost": reports.cost(campaign, billable),
        **campaign_context(campaign),
        **deliveries,
        "test_form": TestSendForm(),
    }
    return render(request, "campaigns/detail.html", context)


@require_GET
@login_required
@tenant_required
def campaign_stats(request: TenantHttpRequest, campaign_id: UUID) -> HttpResponse:
    campaign = get_for_tenant(Campaign, request.tenant, pk=campaign_id)
    return render(request, "campaigns/detail.html#stats", campaign_context(campaign))


@require_GET
@login_required
@tenant_required
def campaign_deliveries(request: TenantHttpRequest, campaign_id: UUID) -> HttpResponse:
    campaign = get_for_tenant(Campaign.objects.select_related("connection"), request.tenant, pk=campaign_id)
    deliveries = _deliveries(request, campaign)
    if request.htmx:
        return render(request, "campaigns/detail.html#deliveries", {"campaign": campaign, **deliveries})
    return _detail_page(request, campaign, deliveries)


@require_GET
@login_required
@tenant_required
def delivery_modal(request: TenantHttpRequest, delivery_id: int) -> HttpResponse:
    deliveries = Delivery.objects.select_related("campaign__connection", "contact")  # what retryable_at reads
    delivery = get_for_tenant(deliveries, request.tenant, pk=delivery_id)
    events = DeliveryEvent.objects.filter(tenant=request.tenant, delivery=delivery).order_by("occurred_at", "id")
    context = {"delivery": delivery, "events": events, "nav": "campaigns"}
    return render_htmx(request, "campaigns/delivery_page.html", "campaigns/delivery_modal.html", context)


@require_GET
@login_required
@tenant_required
def contact_list(request: TenantHttpRequest) -> HttpResponse:
    contacts = Contact.objects.for_tenant(request.tenant)
    q = request.GET.get("q", "").strip()
    tag = request.GET.get("tag", "").strip()
    if q:
        digits = "".join(ch for ch in q if ch.isdigit())
        query = Q(name__icontains=q)
        if digits:
            query |= Q(phone__contains=digits)
        contacts = contacts.filter(query)
    if tag:
        contacts = contacts.with_any_tag([tag])
    page = _page(request, contacts, 50)
    for contact in page:
        contact.initials = initials(contact)  # type: ignore[attr-defined]
    # Pictures are asked for lazily, in a worker, for the contacts shown; the next view shows them.
    services.contact_avatars_refresh_later(contacts=page)
    context = {"nav": "contacts", "page": page, "q": q, "tag": tag}
    return render_htmx(request, "campaigns/contacts.html", "#table", context)


def funnel(campaign: Campaign) -> list[dict[str, Any]]:
    stats = campaign.stats
    total = stats["total"] or 1
    steps = [
        ("total", _("Total")),
        ("sent", _("Sent")),
        ("delivered", _("Delivered")),
        ("read", _("Read")),
        ("failed", _("Failed")),
        ("replied", _("Replied")),
    ]
    return [{"key": k, "label": label, "value": stats[k], "percent": 100.0 * stats[k] / total} for k, label in steps]


ACTIVITY_PER_PAGE = 20
RETRY_STATUSES = (Campaign.Status.RUNNING, Campaign.Status.PAUSED, Campaign.Status.FINISHED)
TEST_SEND_STATUSES = tuple(s for s in Campaign.Status if s not in (Campaign.Status.CANCELLED, Campaign.Status.FINISHED))


@require_GET
@login_required
@tenant_required
def campaign_activity(request: TenantHttpRequest, campaign_id: UUID) -> HttpResponse:
    """The campaign's activity log, newest first, a page at a time (the campaign page's
    panel loads it; a plain request gets it as a page of its own)."""
    campaign = get_for_tenant(Campaign, request.tenant, pk=campaign_id)
    lines = CampaignActivity.objects.filter(tenant=request.tenant, campaign=campaign).select_related("user")
    context = {"nav": "campaigns", "campaign": campaign, "activity": _page(request, lines, ACTIVITY_PER_PAGE)}
    return render_htmx(request, "campaigns/activity.html", "#activity", context)


@require_POST
@login_required
@tenant_required
def campaign_retry(request: TenantHttpRequest, campaign_id: UUID) -> HttpResponse:
    """Failed deliveries that may succeed go back to pending (the API's and the admin's service)."""
    campaign = get_for_tenant(Campaign, request.tenant, pk=campaign_id)
    notice = ""
    try:
        n = services.deliveries_retry_failed(campaign=campaign, user=request.user)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        notice = str(_("%(n)d failed deliveries queued again.") % {"n": n})
        if not request.htmx:
            messages.success(request, notice)
    if request.htmx:
        campaign.refresh_from_db()
        return render(request, "campaigns/detail.html#actions", {**campaign_context(campaign), "notice": notice})
    return redirect("campaigns:detail", campaign_id=campaign.id)


@require_POST
@login_required
@tenant_required
def campaign_duplicate(request: TenantHttpRequest, campaign_id: UUID) -> HttpResponse:
    """A new draft with the same settings; the answer is its page."""
    campaign = get_for_tenant(Campaign, request.tenant, pk=campaign_id)
    copy = services.campaign_duplicate(campaign=campaign, user=request.user)
    messages.success(request, _("Campaign duplicated: this is the new draft."))
    return redirect("campaigns:detail", campaign_id=copy.id)


@require_POST
@login_required
@tenant_required
def campaign_test_send(request: TenantHttpRequest, campaign_id: UUID) -> HttpResponse:
    """Send the campaign's message now to the phone in the form (nothing counted)."""
    campaign = get_for_tenant(Campaign.objects.select_related("connection"), request.tenant, pk=campaign_id)
    form = TestSendForm(request.POST)
    result = None
    if form.is_valid():
        try:
            result = services.campaign_test_send(campaign=campaign, phone=form.cleaned_data["phone"], user=request.user)
        except ServiceError as exc:
            form.add_error("phone", exc.message)
    if request.htmx:
        return render(
            request, "campaigns/detail.html#test_send", {"campaign": campaign, "test_form": form, "test_result": result}
        )
    if result is not None:
        messages.success(request, _("Test message sent to %(phone)s.") % {"phone": result.phone})
    else:
        messages.error(request, " ".join(str(e) for errors in form.errors.values() for e in errors))
    return redirect("campaigns:detail", campaign_id=campaign.id)


def campaign_actions(campaign: Campaign) -> list[tuple[str, str, str]]:
    """(action, button label, confirmation question) for each transition open to CAMPAIGN."""
    labels = {
        "start": (_("Start"), _("Start sending this campaign now?")),
        "pause": (_("Pause"), _("Pause sending? You can resume later.")),
        "resume": (_("Resume"), _("Resume sending?")),
        "cancel": (_("Cancel"), _("Cancel the campaign? Messages not sent yet will not be sent.")),
    }
    allowed = {
        Campaign.Status.DRAFT: ["start"],
        Campaign.Status.SCHEDULED: ["cancel"],
        Campaign.Status.PREPARING: ["pause", "cancel"],
        Campaign.Status.RUNNING: ["pause", "cancel"],
        Campaign.Status.PAUSED: ["resume", "cancel"],
    }.get(Campaign.Status(campaign.status), [])
    return [(a, str(labels[a][0]), str(labels[a][1])) for a in allowed]


def campaign_context(campaign: Campaign) -> dict[str, Any]:
    return {
        "campaign": campaign,
        "funnel": funnel(campaign),
        "campaign_actions": campaign_actions(campaign),
        "can_retry": campaign.status in RETRY_STATUSES and campaign.stat_failed > 0,
        "can_test": campaign.status in TEST_SEND_STATUSES,
    }


@require_GET
@login_required
@tenant_required
def campaign_actions_fragment(request: TenantHttpRequest, campaign_id: UUID) -> HttpResponse:
    campaign = get_for_tenant(Campaign, request.tenant, pk=campaign_id)
    return render(request, "campaigns/detail.html#actions", campaign_context(campaign))


ACTIONS = {
    "start": "campaign_start",
    "pause": "campaign_pause",
    "resume": "campaign_resume",
    "cancel": "campaign_cancel",
}


@require_POST
@login_required
@tenant_required
def campaign_action(request: TenantHttpRequest, campaign_id: UUID, action: str) -> HttpResponse:
    """Start, pause, resume or cancel through the same services as the API and the admin."""
    campaign = get_for_tenant(Campaign, request.tenant, pk=campaign_id)
    if action not in ACTIONS:
        raise Http404
    try:
        campaign = getattr(services, ACTIONS[action])(campaign=campaign, user=request.user)
    except ServiceError as exc:
        messages.error(request, exc.message)
    if request.htmx:
        campaign.refresh_from_db()
        return render(request, "campaigns/detail.html#actions", campaign_context(campaign))
    return redirect("campaigns:detail", campaign_id=campaign.id)


@login_required
@tenant_required
def campaign_create(request: TenantHttpRequest) -> HttpResponse:
    form = CampaignForm(request.POST or None, tenant=request.tenant)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            campaign = services.campaign_create(
                tenant=request.tenant,
                user=request.user,
                name=data["name"],
                connection_ids=[data["connection"].pk, *[c.pk for c in data["more_connections"] or []]],
                message=data["message"],
                media=data["asset"],
                tags=data["tags"],
                scheduled_at=data["scheduled_at"],
                template_id=data["template"].pk if data["template"] else None,
                template_params=form.template_params(),
                header_media_id=data["header_asset"].pk if data["header_asset"] else None,
                **form.sending_settings(),
            )
        except ServiceError as exc:
            form.add_error(form.ERROR_FIELDS.get(exc.code), exc.message)
        else:
            messages.success(request, _("Campaign created."))
            return redirect("campaigns:detail", campaign_id=campaign.id)
    sample = Contact.objects.for_tenant(request.tenant).first()
    context = {"nav": "campaigns", "form": form, "sample": sample, **_template_section(request, form.data)}
    return render(request, "campaigns/form.html", context)


def _attribute_keys(tenant: Any, limit: int = 500) -> list[str]:
    """Attribute keys of the tenant's contacts (from up to LIMIT of them), for the mapping fields."""
    keys: set[str] = set()
    for attributes in Contact.objects.for_tenant(tenant).order_by("-pk").values_list("attributes", flat=True)[:limit]:
        if isinstance(attributes, dict):
            keys.update(attributes)
    return sorted(keys)


def _template_section(request: TenantHttpRequest, data: Any) -> dict[str, Any]:
    """What the composer's template section shows for the connection and template DATA name:
    whether the connection takes templates, its approved ones, the chosen one's parameters
    (with the values typed so far) and the media for its header."""
    connection = Connection.objects.for_tenant(request.tenant).filter(pk=_uuid(data.get("connection"))).first()
    if connection is None or not provider_class(connection.provider).supports_templates:
        return {"template_connection": None}
    templates = MessageTemplate.objects.for_tenant(request.tenant).filter(
        connection=connection, status=MessageTemplate.Status.APPROVED
    )
    chosen = templates.filter(pk=_int(data.get("template"))).first()
    params = [(key, data.get(f"param:{key}", "")) for key in (chosen.parameters if chosen else [])]
    media = None
    if chosen is not None and chosen.header_media_kind:
        media = Asset.objects.for_tenant(request.tenant).filter(
            status=Asset.Status.READY, file_type=chosen.header_media_kind
        )
    return {
        "template_connection": connection,
        "templates": templates,
        "chosen": chosen,
        "params": params,
        "header_assets": media,
        "header_asset": str(data.get("header_asset") or ""),
        "placeholders": ["{{name}}", "{{phone}}", *(f"{{{{{k}}}}}" for k in _attribute_keys(request.tenant))],
    }


def _uuid(value: Any) -> UUID | None:
    try:
        return UUID(str(value))
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@require_GET
@login_required
@tenant_required
def campaign_template_fields(request: TenantHttpRequest) -> HttpResponse:
    """The composer's template section for the chosen connection and template (htmx)."""
    return render(request, "campaigns/form.html#template-section", _template_section(request, request.GET))


def _template_preview(request: TenantHttpRequest, data: Any, sample: Contact) -> dict[str, Any] | None:
    section = _template_section(request, data)
    template = section.get("chosen")
    if template is None:
        return None
    mapping = dict(section["params"])
    _, sources = template_sources(template, mapping)
    values = render_template_values(sources, name=sample.name, phone=sample.phone, attributes=sample.attributes or {})
    asset = None
    if template.header_media_kind:
        asset = Asset.objects.for_tenant(request.tenant).filter(pk=_uuid(data.get("header_asset"))).first()
    return {
        "template": template,
        "header": template.render_header(values),
        "body": template.render(values),
        "header_asset": asset,
    }


@require_http_methods(["GET", "POST"])
@login_required
@tenant_required
def campaign_preview(request: TenantHttpRequest) -> HttpResponse:
    """The message rendered for a sample contact of the chosen audience (live preview)."""
    data = request.POST if request.method == "POST" else request.GET
    tags = parse_tags(data.get("tags", ""))
    sample = Contact.objects.for_tenant(request.tenant).with_any_tag(tags).sendable().first()
    if sample is None:
        sample = Contact(tenant=request.tenant, name="Maria Silva", phone="+5511999999999", attributes={})
    text = services.render_message(data.get("message", ""), sample)
    context = {"preview": text, "sample": sample, "template_preview": _template_preview(request, data, sample)}
    return render(request, "campaigns/form.html#preview", context)


# --- Message templates ----------------------------------------------------------------------------


@require_GET
@login_required
@tenant_required
def template_list(request: TenantHttpRequest) -> HttpResponse:
    """Each connection that has templates, with its templates as Meta last described them."""
    connections = Connection.objects.for_tenant(request.tenant).order_by("name")
    templates = MessageTemplate.objects.for_tenant(request.tenant).order_by("name", "language")
    connection_id = _uuid(request.GET.get("connection", ""))
    if connection_id is not None:  # one connection's templates (the connections page links here)
        connections = connections.filter(pk=connection_id)
        templates = templates.filter(connection_id=connection_id)
    status = request.GET.get("status", "").upper()
    if status:
        templates = templates.filter(status=status)
    by_connection: dict[Any, list[MessageTemplate]] = {}
    for template in templates:
        by_connection.setdefault(template.connection_id, []).append(template)
    context = {
        "nav": "templates",
        "sections": [
            (c, by_connection.get(c.pk, [])) for c in connections if provider_class(c.provider).supports_templates
        ],
        "connection_id": connection_id,
        "status": status,
        "statuses": MessageTemplate.Status.choices,
        "can_sync": request.membership.is_admin,
    }
    return render(request, "campaigns/templates.html", context)


@require_POST
@login_required
@tenant_required
def template_sync(request: TenantHttpRequest, connection_id: UUID) -> HttpResponse:
    """The "Sync templates" button (admins, like the API's sync)."""
    connection = get_for_tenant(Connection, request.tenant, pk=connection_id)
    if not request.membership.is_admin:
        raise PermissionDenied(_("Only tenant admins may sync templates."))
    try:
        result = services.templates_sync(connection=connection)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            _("%(synced)d templates listed by Meta: %(created)d new, %(updated)d changed, %(deleted)d deleted.")
            % result.as_dict(),
        )
    return redirect(reverse("campaigns:templates") + f"?connection={connection.pk}")


# --- Connections --------------------------------------------------------------------------------

CONNECTIONS_PER_PAGE = 50
CONNECTION_CAMPAIGNS_PER_PAGE = 25
# How far back the pages look for a connection's last webhook: the tenant's events of the last
# hour (its index on tenant and received_at), as the ops page counts them. Over all time
# would read every stored event of a connection that has gone quiet.
LAST_WEBHOOK_WINDOW = timedelta(hours=1)


@dataclass
class ConnectionRow:
    """A connection with its figures for the connections pages."""

    connection: Connection
    sent_today: int
    supports_templates: bool
    templates: int = 0  # not DELETED
    approved: int = 0
    last_webhook: datetime | None = None  # within LAST_WEBHOOK_WINDOW

    @property
    def limit_reached(self) -> bool:
        limit = self.connection.daily_limit
        return limit is not None and self.sent_today >= limit


def connection_rows(tenant: Any, connections: list[Connection]) -> list[ConnectionRow]:
    """CONNECTIONS with today's sends (the daily cap's counters), their last webhook received
    within LAST_WEBHOOK_WINDOW and, for those whose provider has templates, how many: at most
    three queries for any number of connections."""
    ids = [c.pk for c in connections]
    sent = pacing.sent_today(ids)
    last = dict(
        WebhookEvent.objects.filter(
            tenant=tenant, connection_id__in=ids, received_at__gte=timezone.now() - LAST_WEBHOOK_WINDOW
        )
        .values("connection_id")
        .annotate(last=Max("received_at"))
        .values_list("connection_id", "last")
        .order_by()
    )
    rows = [
        ConnectionRow(c, sent.get(c.pk, 0), provider_class(c.provider).supports_templates, last_webhook=last.get(c.pk))
        for c in connections
    ]
    with_templates = [row.connection.pk for row in rows if row.supports_templates]
    if with_templates:
        counts = {
            r["connection_id"]: r
            for r in MessageTemplate.objects.filter(tenant=tenant, connection_id__in=with_templates)
            .exclude(status=MessageTemplate.Status.DELETED)
            .values("connection_id")
            .annotate(total=Count("pk"), approved=Count("pk", filter=Q(status=MessageTemplate.Status.APPROVED)))
            .order_by()
        }
        for row in rows:
            found = counts.get(row.connection.pk)
            if found:
                row.templates, row.approved = found["total"], found["approved"]
    return rows


@require_GET
@login_required
@tenant_required
def connection_list(request: TenantHttpRequest) -> HttpResponse:
    """The tenant's WhatsApp connections: state, today's sends against the daily limit, templates."""
    page = _page(request, Connection.objects.for_tenant(request.tenant).order_by("name", "pk"), CONNECTIONS_PER_PAGE)
    context = {
        "nav": "connections",
        "page": page,
        "rows": connection_rows(request.tenant, list(page)),
        "can_sync": request.membership.is_admin,
    }
    return render_htmx(request, "campaigns/connections.html", "#table", context)


def connection_campaigns(connection: Connection) -> QuerySet[Campaign]:
    """The campaigns that send through CONNECTION, as their first connection or in rotation
    (`extra_connections`), newest first; `is_primary` says which."""
    rotating = Campaign.extra_connections.through.objects.filter(connection_id=connection.pk).values("campaign_id")
    return (
        Campaign.objects.filter(tenant_id=connection.tenant_id)
        .filter(Q(connection_id=connection.pk) | Q(pk__in=rotating))
        .annotate(is_primary=Q(connection_id=connection.pk))
        .order_by("-created_at", "pk")
    )


@require_http_methods(["GET", "POST"])
@login_required
@tenant_required
def connection_detail(request: TenantHttpRequest, connection_id: UUID) -> HttpResponse:
    """One connection: its state and figures, the webhook URL to give its gateway and the
    settings form (admins: the webhook URL holds the connection's secret token, and changing
    a connection is theirs, as in the API), and the campaigns that use it."""
    connection = get_for_tenant(Connection, request.tenant, pk=connection_id)
    can_edit = request.membership.is_admin
    form = None
    if request.method == "POST":
        if not can_edit:
            raise PermissionDenied(_("Only tenant admins may manage connections."))
        form = ConnectionForm(request.POST)
        if form.is_valid():
            try:
                services.connection_update(connection=connection, **form.cleaned_data)
            except ServiceError as exc:
                form.add_error(None, exc.message)
                connection.refresh_from_db()  # the page shows what is stored, not what was refused
            else:
                messages.success(request, _("Connection saved."))
                return redirect("campaigns:connection", connection_id=connection.pk)
    elif can_edit:
        form = ConnectionForm(initial=ConnectionForm.initial_for(connection))
    path = services.connection_webhook_path(connection)
    context = {
        "nav": "connections",
        "row": connection_rows(request.tenant, [connection])[0],
        "connection": connection,
        "form": form,
        "can_edit": can_edit,
        "webhook_url": request.build_absolute_uri(path) if can_edit else None,
        "campaigns": Paginator(connection_campaigns(connection), CONNECTION_CAMPAIGNS_PER_PAGE).get_page(
            request.GET.get("page")
        ),
    }
    return render_htmx(request, "campaigns/connection_detail.html", "#campaigns", context)


@require_GET
@login_required
@tenant_required
def audience_count(request: TenantHttpRequest) -> HttpResponse:
    tags = parse_tags(request.GET.get("tags", ""))
    count = Contact.objects.for_tenant(request.tenant).with_any_tag(tags).sendable().count()
    return render(request, "campaigns/form.html#audience", {"audience": count, "tags": tags})


@require_http_methods(["GET", "POST"])
@login_required
@tenant_required
def contact_import(request: TenantHttpRequest) -> HttpResponse:
    """Small files are imported in the request and reported at once; larger ones go to a
    worker and the answer is their progress (htmx) or a redirect to it."""
    form = ContactImportForm(request.POST or None, request.FILES or None)
    result = job = None
    if request.method == "POST" and form.is_valid():
        try:
            outcome = services.contacts_import_upload(
                tenant=request.tenant, user=request.user, file=form.cleaned_data["file"]
            )
        except ServiceError as exc:
            form.add_error("file", exc.message)
        else:
            if isinstance(outcome, ContactImport):
                job = outcome
                if not request.htmx:
                    return redirect("campaigns:contact_import", import_id=job.pk)
            else:
                result = outcome
    context = {"nav": "contacts", "form": form, "result": result, "job": job}
    if request.htmx:
        response = render(request, "campaigns/import.html#result", context)
        if job is not None:
            response["HX-Push-Url"] = reverse("campaigns:contact_import", kwargs={"import_id": job.pk})
        return response
    context["recent"] = ContactImport.objects.for_tenant(request.tenant)[:5]
    return render(request, "campaigns/import.html", context)


@require_GET
@login_required
@tenant_required
def contact_import_detail(request: TenantHttpRequest, import_id: UUID) -> HttpResponse:
    """A background import's progress (polled by htmx while it runs), then its report."""
    job = get_for_tenant(ContactImport, request.tenant, pk=import_id)
    return render_htmx(request, "campaigns/import_progress.html", "#progress", {"nav": "contacts", "job": job})


@require_GET
@login_required
@tenant_required
def contact_import_errors(request: TenantHttpRequest, import_id: UUID) -> StreamingHttpResponse:
    """Every bad row of a background import, as a CSV download."""
    return contact_import_errors_download(get_for_tenant(ContactImport, request.tenant, pk=import_id))


def contact_import_errors_download(job: ContactImport) -> StreamingHttpResponse:
    """JOB's bad rows streamed as a CSV attachment (the page's and the API's download)."""
    response = StreamingHttpResponse(
        services.contact_import_errors_csv(job=job), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{job.errors_filename}"'
    return response


@require_http_methods(["GET", "POST"])
@login_required
@tenant_required
def contact_erase(request: TenantHttpRequest, contact_id: int) -> HttpResponse:
    """GET: what erasing this contact does, and a button; POST: erase it, back to the list."""
    contact = get_for_tenant(Contact, request.tenant, pk=contact_id)
    if request.method == "POST":
        services.contact_erase(contact=contact, user=request.user, via=ContactErasure.Via.PAGE)
        messages.success(request, _("The contact was erased. Its deliveries remain in the campaigns, anonymized."))
        return redirect("campaigns:contacts")
    deliveries = Delivery.objects.filter(contact=contact).count()
    context = {"nav": "contacts", "contact": contact, "deliveries": deliveries}
    return render(request, "campaigns/contact_erase.html", context)


# --- The contact page: profile, consent and the conversation ----------------------------------

CONVERSATION_PAGE = 30
CONSENT_HISTORY = 50


def contact_avatar_url(contact: Contact) -> str | None:
    """Sense's URL of CONTACT's profile picture (`/contacts/<id>/avatar/`, which asks the
    gateway lazily and serves the picture through the media proxy), or None when its
    gateway said, less than PROFILE_PICTURE_TTL ago, that it has none."""
    checked = contact.avatar_checked_at
    fresh = checked is not None and timezone.now() - checked < timedelta(seconds=settings.PROFILE_PICTURE_TTL)
    if fresh and not contact.avatar_source_url:
        return None
    return reverse("campaigns:contact_avatar", args=[contact.pk])


def initials(contact: Contact) -> str:
    """Up to two letters for the avatar placeholder: of the name, else the phone's last digits."""
    words = [w for w in contact.name.split() if w[:1].isalnum()]
    if words:
        return "".join(w[0] for w in (words[:1] + words[1:][-1:])).upper()
    return contact.phone[-2:]


def _conversation(request: TenantHttpRequest, contact: Contact) -> dict[str, Any]:
    try:
        page = int(request.GET.get("page", "1"))
    except ValueError:
        page = 1
    found = conversations.conversation(contact, page=page, page_size=CONVERSATION_PAGE)
    return {"conversation": found, "messages_list": found["items"]}


def _consent_context(contact: Contact, form: ConsentActionForm | None = None) -> dict[str, Any]:
    events = ConsentEvent.objects.filter(contact=contact, tenant_id=contact.tenant_id).select_related("user")
    return {
        "contact": contact,
        "consent_events": events[:CONSENT_HISTORY],
        "consent_form": form or ConsentActionForm(),
    }


def _contact_page(
    request: TenantHttpRequest, contact: Contact, form: ConsentActionForm | None = None, *, status: int = 200
) -> HttpResponse:
    context = {
        "nav": "contacts",
        "avatar_url": contact_avatar_url(contact),
        "initials": initials(contact),
        **_consent_context(contact, form),
        **_conversation(request, contact),
    }
    return render(request, "campaigns/contact_detail.html", context, status=status)


@require_GET
@login_required
@tenant_required
def contact_detail(request: TenantHttpRequest, contact_id: int) -> HttpResponse:
    contact = get_for_tenant(Contact, request.tenant, pk=contact_id)
    return _contact_page(request, contact)


@require_GET
@login_required
@tenant_required
def contact_messages(request: TenantHttpRequest, contact_id: int) -> HttpResponse:
    """A page of the conversation. htmx: page 1 is the whole list (the page fetches it again
    after its socket reconnected), later pages their lines and the link to the next one."""
    contact = get_for_tenant(Contact, request.tenant, pk=contact_id)
    if not request.htmx:
        return _contact_page(request, contact)
    context = {"contact": contact, **_conversation(request, contact)}
    fragment = "#conversation" if context["conversation"]["page"] == 1 else "#conversation_page"
    return render(request, "campaigns/contact_detail.html" + fragment, context)


@require_GET
@login_required
@tenant_required
def contact_inbound_message(request: TenantHttpRequest, contact_id: int, message_id: int) -> HttpResponse:
    """One received message as a conversation line: the page fetches it when the socket
    says it arrived (`inbound.message` frames)."""
    contact = get_for_tenant(Contact, request.tenant, pk=contact_id)
    message = conversations.inbound_message(contact, message_id)
    if message is None:
        raise Http404
    if not request.htmx:
        return redirect("campaigns:contact", contact_id=contact.pk)
    return render(request, "campaigns/contact_detail.html#message", {"contact": contact, "m": message})


@require_POST
@login_required
@tenant_required
def contact_consent(request: TenantHttpRequest, contact_id: int) -> HttpResponse:
    """An operator opts the contact out, or back in with a reason (a form error without one)."""
    contact = get_for_tenant(Contact, request.tenant, pk=contact_id)
    form = ConsentActionForm(request.POST)
    if form.is_valid():
        action, reason = form.cleaned_data["action"], form.cleaned_data["reason"]
        try:
            if action == "opt_out":
                changed = services.contact_opt_out(
                    contact=contact, source=ConsentEvent.Source.OPERATOR, user=request.user, reason=reason
                )
                done = _("The contact is opted out: it will get no more messages.")
            else:
                changed = services.contact_opt_in(
                    contact=contact, source=ConsentEvent.Source.OPERATOR, user=request.user, reason=reason
                )
                done = _("The contact is opted back in.")
        except ServiceError as exc:
            form.add_error("reason", exc.message)
        else:
            contact.refresh_from_db()
            if changed:
                messages.success(request, done)
            if request.htmx:
                return render(request, "campaigns/contact_detail.html#consent", _consent_context(contact))
            return redirect("campaigns:contact", contact_id=contact.pk)
    if request.htmx:
        return render(request, "campaigns/contact_detail.html#consent", _consent_context(contact, form))
    return _contact_page(request, contact, form)


# --- Campaign replies ---------------------------------------------------------------------------

REPLIES_PAGE = 20


def replies(request: TenantHttpRequest, campaign: Campaign) -> Any:
    """The page of CAMPAIGN's received replies the request asks for (`?replies_page=`), newest first."""
    qs = (
        InboundMessage.objects.filter(tenant=request.tenant, campaign=campaign)
        .select_related("contact", "media")
        .order_by("-received_at", "-id")
    )
    return Paginator(qs, REPLIES_PAGE).get_page(request.GET.get("replies_page"))


@require_GET
@login_required
@tenant_required
def campaign_replies(request: TenantHttpRequest, campaign_id: UUID) -> HttpResponse:
    campaign = get_for_tenant(Campaign, request.tenant, pk=campaign_id)
    if not request.htmx:
        return redirect("campaigns:detail", campaign_id=campaign.pk)
    return render(
        request, "campaigns/detail.html#replies", {"campaign": campaign, "replies": replies(request, campaign)}
    )


# --- Consent keywords (tenant settings) ---------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
@tenant_required
def consent_settings(request: TenantHttpRequest) -> HttpResponse:
    """The tenant's opt-out and re-subscribe keywords and confirmation texts: admins edit
    them, operators read them (their POST is a 403)."""
    can_edit = request.membership.is_admin
    current = ConsentSettings.for_tenant(request.tenant)
    if request.method == "POST":
        if not can_edit:
            raise PermissionDenied(_("Only tenant admins may change the consent keywords."))
        form = ConsentSettingsForm(request.POST)
        if form.is_valid():
            try:
                services.consent_settings_save(tenant=request.tenant, user=request.user, **form.cleaned_data)
            except ServiceError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, _("Consent settings saved."))
                return redirect("campaigns:consent_settings")
    else:
        form = ConsentSettingsForm(initial=ConsentSettingsForm.initial_for(current))
    if not can_edit:
        for field in form.fields.values():
            field.disabled = True
    context = {"nav": "contacts", "form": form, "can_edit": can_edit, "settings": current}
    return render(request, "campaigns/consent_settings.html", context)


def deliveries_csv_download(campaign: Campaign, *, sep: str = ",") -> StreamingHttpResponse:
    """CAMPAIGN's deliveries streamed as a CSV attachment (the page's button and the API)."""
    response = StreamingHttpResponse(
        services.campaign_deliveries_csv(campaign=campaign, sep=sep), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{services.campaign_export_filename(campaign)}"'
    return response
