"""The media library page: thumbnail grid, type filter, drag-and-drop upload (to the upload
API), preview modal and delete. Cards refresh live on `media.updated` frames."""

from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from media import services
from media.models import Asset
from sense.errors import ServiceError
from sense.pagesupport import render_htmx, tenant_required
from sense.tenancy import TenantHttpRequest, get_for_tenant


@require_GET
@login_required
@tenant_required
def library(request: TenantHttpRequest) -> HttpResponse:
    assets = Asset.objects.for_tenant(request.tenant)
    file_type = request.GET.get("type", "")
    if file_type in Asset.FileType.values:
        assets = assets.filter(file_type=file_type)
    # Files contacts sent (origin inbound) are shown on asking only.
    origin = request.GET.get("origin", "")
    origin = origin if origin in (*Asset.Origin.values, "all") else Asset.Origin.UPLOAD
    if origin != "all":
        assets = assets.filter(origin=origin)
    page = Paginator(assets, 48).get_page(request.GET.get("page"))
    context = {
        "nav": "media",
        "page": page,
        "file_type": file_type,
        "origin": origin,
        "types": Asset.FileType.choices,
    }
    return render_htmx(request, "media/library.html", "#grid", context)


@require_GET
@login_required
@tenant_required
def card(request: TenantHttpRequest, asset_id: UUID) -> HttpResponse:
    asset = get_for_tenant(Asset, request.tenant, pk=asset_id)
    return render(request, "media/library.html#card", {"asset": asset})


@require_GET
@login_required
@tenant_required
def preview(request: TenantHttpRequest, asset_id: UUID) -> HttpResponse:
    asset = get_for_tenant(Asset, request.tenant, pk=asset_id)
    return render_htmx(request, "media/preview_page.html", "media/preview_modal.html", {"asset": asset, "nav": "media"})


@require_POST
@login_required
@tenant_required
def delete(request: TenantHttpRequest, asset_id: UUID) -> HttpResponse:
    asset = get_for_tenant(Asset, request.tenant, pk=asset_id)
    try:
        services.asset_delete(asset=asset, user=request.user)
    except ServiceError as exc:
        if request.htmx:
            return render(request, "media/library.html#card", {"asset": asset, "error": exc.message}, status=409)
        messages.error(request, exc.message)
        return redirect("media:library")
    if request.htmx:
        return HttpResponse("")  # the card disappears
    messages.success(request, _("Deleted %(name)s.") % {"name": asset.original_name})
    return redirect("media:library")
