"""Helpers for HTML pages: a logged-in user must have a tenant to see any tenant page."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest
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
