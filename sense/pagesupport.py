"""Helpers for HTML pages: a logged-in user must have a tenant to see any tenant page, and
an htmx request gets its fragment where a plain one gets the whole page."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render


def tenant_required(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Pages need request.tenant; a logged-in user with no membership gets a clear 403 page."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if getattr(request, "tenant", None) is None:
            return render(request, "account/no_tenant.html", status=403)
        return view(request, *args, **kwargs)

    return wrapper


def render_htmx(
    request: HttpRequest, page: str, fragment: str, context: Mapping[str, Any] | None = None, *, status: int = 200
) -> HttpResponse:
    """FRAGMENT when htmx asks (an `hx-get` swap), PAGE otherwise: a plain request, or a boosted
    navigation, which replaces the whole body. A FRAGMENT starting with "#" names a partial of
    PAGE ("#panels" is "ops/ops.html#panels"); otherwise it is a template of its own."""
    htmx = getattr(request, "htmx", None)
    if not htmx or htmx.boosted:
        return render(request, page, context, status=status)
    return render(request, page + fragment if fragment.startswith("#") else fragment, context, status=status)
