"""The contacts page's erasure of one contact (LGPD): a confirmation page, then the same
`services.contact_erase` as the API and the admin."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from campaigns import services
from campaigns.models import Contact, ContactErasure, Delivery
from sense.pagesupport import tenant_required
from sense.tenancy import TenantHttpRequest, get_for_tenant


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
