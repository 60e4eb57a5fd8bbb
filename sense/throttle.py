"""Throttling of credential guessing: browser logins (django-axes) and unknown API tokens.

Logins: django-axes counts failures per (username, client address) in its database table;
`LOGIN_FAILURE_LIMIT` of them within `LOGIN_LOCKOUT_MINUTES` lock that pair out (other users
and other addresses are not affected) until the minutes pass or an admin deletes the
attempt in the admin ("Access attempts"). `lockout_response` is the 429 page.

API tokens are long random secrets, so they are not locked out; but requests with an
unknown token are counted per client address in the cache (Redis in production) and
answered 429 past `API_TOKEN_FAILURE_LIMIT` a minute, which stops scanners and shows them.
A valid token is always accepted, so a client sharing an address (NAT) with a scanner
keeps working.

The client address is REMOTE_ADDR. Behind the PaaS router, uvicorn rewrites it from
X-Forwarded-For, walking the header from the right past the hops listed in
FORWARDED_ALLOW_IPS (the Procfile), so a client cannot choose its address by sending the
header itself.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import timedelta
from typing import Any

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.deprecation import MiddlewareMixin

from sense.errors import ServiceError

log = logging.getLogger("sense.auth")

TOKEN_WINDOW_SECONDS = 60


def client_address(request: HttpRequest) -> str | None:
    """The address the request came from (uvicorn already applied the trusted proxy header)."""
    return request.META.get("REMOTE_ADDR") or None


# --- Logins ---------------------------------------------------------------------------


class LoginThrottleBackend(AxesStandaloneBackend):
    """django-axes' check, for logins that come with a request (the login pages, the admin).

    `authenticate()` without a request (the test client's `login()`, a shell) is no
    guessing over HTTP and has no address to count against; axes itself would raise."""

    def authenticate(self, request: HttpRequest | None, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if request is None:
            return None
        return super().authenticate(request, *args, **kwargs)  # type: ignore[no-any-return]


def lockout_ends_at(username: str | None, address: str | None) -> Any:
    """When the lockout of (USERNAME, ADDRESS) ends: the newest failures that reach the limit
    leave the window then. None when the pair is not locked out."""
    from axes.models import AccessAttempt

    window: timedelta = settings.AXES_COOLOFF_TIME
    attempts = AccessAttempt.objects.filter(
        username=username, ip_address=address, attempt_time__gte=timezone.now() - window
    ).order_by("-attempt_time")
    failures = 0
    for attempt_time, count in attempts.values_list("attempt_time", "failures_since_start"):
        failures += count
        if failures >= settings.AXES_FAILURE_LIMIT:
            return attempt_time + window
    return None


def lockout_response(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """The 429 page for a locked-out login, with the minutes left (axes' AXES_LOCKOUT_CALLABLE;
    axes passes the original response and credentials in different orders on its sync and
    async paths, so neither is used)."""
    from axes.helpers import get_client_username

    username = get_client_username(request, getattr(request, "axes_credentials", None))
    address = client_address(request)
    ends_at = lockout_ends_at(username, address) or timezone.now() + settings.AXES_COOLOFF_TIME
    seconds = max(1, math.ceil((ends_at - timezone.now()).total_seconds()))
    minutes = max(1, math.ceil(seconds / 60))
    log.warning("[AUTH] login refused: %r from %s is locked out for %d more minute(s)", username, address, minutes)
    response = render(request, "account/locked_out.html", {"minutes": minutes}, status=429)
    response["Retry-After"] = str(seconds)
    return response


# --- API tokens -----------------------------------------------------------------------


class TooManyTokenFailures(ServiceError):
    status = 429
    code = "too_many_token_failures"


def _token_key(address: str | None) -> str:
    return f"token-failures:{address or '-'}:{int(time.time() // TOKEN_WINDOW_SECONDS)}"


def token_failed(address: str | None) -> int:
    """Count one unknown API token from ADDRESS in the current minute; returns the count (0
    when the cache is unreachable: a Redis outage must not lock API clients out)."""
    key = _token_key(address)
    try:
        cache.add(key, 0, timeout=TOKEN_WINDOW_SECONDS * 2)
        return int(cache.incr(key))
    except Exception as exc:
        log.warning("[AUTH] unknown-token counter unavailable: %s", exc.__class__.__name__)
        return 0


def check_token_failure(request: HttpRequest) -> None:
    """Count an unknown API token for REQUEST's address; raise TooManyTokenFailures (429)
    once the address is past API_TOKEN_FAILURE_LIMIT this minute."""
    address = client_address(request)
    count = token_failed(address)
    if count <= settings.API_TOKEN_FAILURE_LIMIT:
        return
    if count == settings.API_TOKEN_FAILURE_LIMIT + 1:
        log.warning("[AUTH] %s sent more than %d unknown API tokens this minute", address, count - 1)
    retry = TOKEN_WINDOW_SECONDS - int(time.time()) % TOKEN_WINDOW_SECONDS
    raise TooManyTokenFailures(f"Too many requests with an unknown API token; try again in {retry} seconds.")


class TokenThrottleMiddleware(MiddlewareMixin):
    """Answers TooManyTokenFailures raised in a plain view (the upload, file and proxy
    endpoints) as the API's JSON error; the ninja API answers it itself."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, TooManyTokenFailures):
            return None
        return JsonResponse({"error": exception.message, "code": exception.code}, status=exception.status)
