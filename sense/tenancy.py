"""Resolving a request to one (user, tenant) pair, and tenant-scoped lookups.

Browser sessions carry the chosen tenant in the session (default: the user's first
membership); API clients send `Authorization: Bearer <token>`, whose membership fixes
the tenant. Another tenant's object always answers 404, never 403, so its existence
is not confirmed.
"""

from __future__ import annotations

from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import models
from django.http import Http404, HttpRequest, HttpResponse
from django_htmx.middleware import HtmxDetails

from sense import throttle
from sense.lib.middleware import follow_mode
from sense.models import ApiToken, Membership, Tenant

SESSION_TENANT_KEY = "sense_tenant_id"

M = TypeVar("M", bound=models.Model)


class TenantHttpRequest(HttpRequest):
    """A request resolved to a membership (for type hints in views)."""

    membership: Membership
    tenant: Tenant
    api_token: ApiToken | None
    htmx: HtmxDetails


def bearer_token(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def membership_for_session(request: HttpRequest) -> Membership | None:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    memberships = Membership.objects.select_related("tenant", "user").filter(user=user)
    wanted = request.session.get(SESSION_TENANT_KEY) if hasattr(request, "session") else None
    if wanted:
        membership = memberships.filter(tenant_id=wanted).first()
        if membership is not None:
            return membership
    return memberships.order_by("tenant__name").first()


def session_membership(request: HttpRequest) -> Membership | None:
    """The session's membership as TenantMiddleware resolved it for this request (its
    queries are not run again); resolved here only when the middleware has not run."""
    if hasattr(request, "membership"):
        return request.membership  # type: ignore[no-any-return]
    return membership_for_session(request)


def attach(request: HttpRequest, membership: Membership) -> None:
    request.membership = membership  # type: ignore[attr-defined]
    request.tenant = membership.tenant  # type: ignore[attr-defined]
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        request.user = membership.user


def attach_token(request: HttpRequest, raw: str) -> Membership | None:
    """Attach the membership of the active API token RAW (and the token); None if there is none."""
    token = ApiToken.authenticate(raw)
    if token is None:
        throttle.check_token_failure(request)  # 429 past API_TOKEN_FAILURE_LIMIT a minute
        return None
    request.api_token = token  # type: ignore[attr-defined]
    attach(request, token.membership)
    return token.membership


def authenticate(request: HttpRequest) -> Membership | None:
    """Resolve a request by Bearer token first, then by session; attach and return the membership."""
    raw = bearer_token(request)
    if raw is not None:
        return attach_token(request, raw)
    membership = session_membership(request)
    if membership is not None:
        attach(request, membership)
    return membership


def get_for_tenant(queryset: models.QuerySet[M] | type[M], tenant: Tenant, **lookup: Any) -> M:
    """The object matching LOOKUP inside TENANT, or Http404 (also for other tenants' objects)."""
    qs = queryset._default_manager.all() if isinstance(queryset, type) else queryset
    try:
        return qs.get(tenant=tenant, **lookup)
    except (ObjectDoesNotExist, ValueError, ValidationError):  # a malformed UUID is a 404 too
        raise Http404 from None


class TenantMiddleware:
    """Sets request.membership and request.tenant for logged-in browser sessions.

    Bearer tokens are resolved by the API's auth classes (and `authenticate`) instead, so
    a page request never treats a token as a session.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.is_async = follow_mode(self, get_response)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        self._resolve(request)
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        # Under ASGI the chain stays on the event loop; only a request that carries a session
        # cookie needs the database (in the request's thread, as its sync view will).
        if settings.SESSION_COOKIE_NAME in request.COOKIES:
            await sync_to_async(self._resolve)(request)
        else:
            self._clear(request)
        response: HttpResponse = await self.get_response(request)
        return response

    @staticmethod
    def _clear(request: HttpRequest) -> None:
        request.membership = None  # type: ignore[attr-defined]
        request.tenant = None  # type: ignore[attr-defined]
        request.api_token = None  # type: ignore[attr-defined]

    def _resolve(self, request: HttpRequest) -> None:
        self._clear(request)
        membership = membership_for_session(request)
        if membership is not None:
            attach(request, membership)


def tenant_context(request: HttpRequest) -> dict[str, Any]:
    """Template context: the current tenant and, for the switcher, the user's other tenants."""
    membership = getattr(request, "membership", None)
    if membership is None:
        return {"current_tenant": None, "user_memberships": []}
    return {
        "current_tenant": membership.tenant,
        "current_membership": membership,
        "user_memberships": Membership.objects.filter(user=membership.user).select_related("tenant"),
    }
