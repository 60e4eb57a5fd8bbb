"""HTMX pages for campaigns and contacts (server-rendered; each fragment is a named partial
of its page template and every hx-get has a real href, so pages work without JavaScript)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.db.models.functions import TruncMinute
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from campaigns import services
from campaigns.forms import CampaignForm, ContactImportForm, parse_tags
from campaigns.models import Campaign, Connection, Contact, ContactErasure, ContactImport, Delivery, DeliveryEvent
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
    context = {
        "nav": "campaigns",
        "timeline": timeline(campaign),
        "variants": variant_stats(campaign),
        "connection_names": list(
            Connection.objects.filter(pk__in=campaign.all_connection_ids()).values_list("name", flat=True)
        ),
        **campaign_context(campaign),
        **deliveries,
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
    delivery = get_for_tenant(Delivery.objects.select_related("campaign"), request.tenant, pk=delivery_id)
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
    context = {"nav": "contacts", "page": _page(request, contacts, 50), "q": q, "tag": tag}
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
    ]
    return [{"key": k, "label": label, "value": stats[k], "percent": 100.0 * stats[k] / total} for k, label in steps]


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
    return {"campaign": campaign, "funnel": funnel(campaign), "campaign_actions": campaign_actions(campaign)}


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
        campaign = getattr(services, ACTIONS[action])(campaign=campaign)
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
                **form.sending_settings(),
            )
        except ServiceError as exc:
            form.add_error(form.ERROR_FIELDS.get(exc.code), exc.message)
        else:
            messages.success(request, _("Campaign created."))
            return redirect("campaigns:detail", campaign_id=campaign.id)
    sample = Contact.objects.for_tenant(request.tenant).first()
    return render(request, "campaigns/form.html", {"nav": "campaigns", "form": form, "sample": sample})


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
    return render(request, "campaigns/form.html#preview", {"preview": text, "sample": sample})


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
