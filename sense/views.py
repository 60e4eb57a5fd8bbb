"""Account pages shared by every area: tenant switching (login, logout and password change
are Django's auth views with Sense's templates, wired in sense/urls.py)."""

from __future__ import annotations

import logging
import sys
import uuid
from typing import cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from sense.errors import json_error
from sense.models import Membership
from sense.tenancy import SESSION_TENANT_KEY

log = logging.getLogger("sense.db")


def safe_next(request: HttpRequest, fallback: str = "/") -> str:
    target = request.POST.get("next") or request.GET.get("next") or fallback
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return fallback


@login_required
@require_POST
def switch_tenant(request: HttpRequest) -> HttpResponse:
    """Make another of the user's tenants the current one; any other tenant is a 404."""
    try:
        tenant_id = uuid.UUID(request.POST.get("tenant", ""))
    except ValueError:
        raise Http404 from None
    membership = (
        Membership.objects.select_related("tenant").filter(user=cast(User, request.user), tenant_id=tenant_id).first()
    )
    if membership is None:
        raise Http404
    request.session[SESSION_TENANT_KEY] = str(membership.tenant_id)
    messages.success(request, _("Now working in %(tenant)s.") % {"tenant": membership.tenant.name})
    return HttpResponseRedirect(safe_next(request))


def home(request: HttpRequest) -> HttpResponse:
    return redirect(settings.HOME_URL) if request.user.is_authenticated else redirect("login")


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: a database that is down (e.g. restarting) is a 503 the client may retry,
    wherever it was hit (a view, the session or tenancy middleware); anything else is a 500.
    The psycopg pool checks connections on checkout, so the app recovers by itself."""
    exc = sys.exc_info()[1]
    if isinstance(exc, (OperationalError, InterfaceError)):
        log.error("database unavailable on %s: %s", request.path, exc.__class__.__name__)
        message = _("The database is unavailable; try again shortly.")
        status, code = 503, "unavailable"
    else:
        message, status, code = _("Internal error."), 500, "internal"
    if request.path.startswith("/api/"):
        response: HttpResponse = json_error(str(message), code=code, status=status)
    else:
        response = HttpResponse(str(message), status=status, content_type="text/plain; charset=utf-8")
    if status == 503:
        response["Retry-After"] = "5"
    return response


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: JSON under /api/ (a malformed id never matches a route), a page elsewhere."""
    if request.path.startswith("/api/"):
        return json_error("Not found.", code="not_found", status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception or Http404())
