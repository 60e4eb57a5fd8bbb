"""The JSON API (django-ninja): authentication, the error format, and the core routes.

Apps add their routers in sense/urls.py. Every error is `{"error": "...", "code": "..."}`.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.db import DatabaseError, DataError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.security import HttpBearer, SessionAuth

from sense import tenancy
from sense.errors import ServiceError, json_error
from sense.models import Membership

log = logging.getLogger("sense.api")


class BearerAuth(HttpBearer):
    openapi_description = "An API token issued with `manage.py issuetoken` or in the admin."

    def authenticate(self, request: HttpRequest, token: str) -> Membership | None:
        return tenancy.attach_token(request, token)


class SessionMembershipAuth(SessionAuth):
    """A logged-in browser session with a membership (CSRF checked on unsafe methods)."""

    def authenticate(self, request: HttpRequest, key: str | None) -> Membership | None:
        membership = tenancy.session_membership(request)
        if membership is None:
            return None
        tenancy.attach(request, membership)
        return membership


ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "what went wrong, for a person"},
        "code": {"type": "string", "description": "a stable machine code"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["error", "code"],
}
# Every operation may answer these with the error format above (besides its own responses).
ERROR_RESPONSES = {
    "400": "Bad input",
    "401": "Authentication required",
    "404": "Not found (also another tenant's object)",
    "409": "Conflict with the object's state",
    "422": "Invalid input",
    "429": "Too many requests with an unknown API token from this address",
    "503": "A dependency is unavailable",
}


class SenseNinjaAPI(NinjaAPI):
    def get_openapi_schema(self, **kwargs: Any) -> Any:
        """The schema, with the shared error responses documented on every operation."""
        schema = super().get_openapi_schema(**kwargs)
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
        ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for code, description in ERROR_RESPONSES.items():
                    responses.setdefault(code, {"description": description, "content": ref})
        return schema


api = SenseNinjaAPI(
    title="Sense API",
    version="1.0",
    description="Campaigns, deliveries, contacts and media for one tenant. "
    "Authenticate with `Authorization: Bearer <token>`.",
    auth=[BearerAuth(), SessionMembershipAuth()],
    urls_namespace="api",
    docs_url="/docs",
    openapi_url="/openapi.json",
)


@api.exception_handler(ServiceError)
def _service_error(request: HttpRequest, exc: ServiceError) -> HttpResponse:
    return json_error(exc.message, code=exc.code, status=exc.status)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: Exception) -> HttpResponse:
    return json_error("Authentication required: send a valid Bearer token.", code="unauthenticated", status=401)


@api.exception_handler(PermissionDenied)
def _forbidden(request: HttpRequest, exc: Exception) -> HttpResponse:
    return json_error(str(exc) or "You may not do this.", code="forbidden", status=403)


@api.exception_handler(Http404)
@api.exception_handler(ObjectDoesNotExist)
def _not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
    return json_error("Not found.", code="not_found", status=404)


@api.exception_handler(NinjaValidationError)
def _invalid(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    details = []
    for err in exc.errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "payload"))
        details.append({"field": loc, "message": err.get("msg", "invalid")})
    summary = "; ".join(f"{d['field']}: {d['message']}" if d["field"] else d["message"] for d in details)
    return json_error(f"Invalid input: {summary}", code="invalid", status=422, details=details)


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return json_error(str(exc), code="http_error", status=exc.status_code)


@api.exception_handler(OperationalError)
@api.exception_handler(InterfaceError)
def _db_unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.error("database unavailable: %s", exc.__class__.__name__)
    return json_error("The database is unavailable; try again shortly.", code="unavailable", status=503)


@api.exception_handler(DataError)
def _bad_data(request: HttpRequest, exc: Exception) -> HttpResponse:
    # The database refused a value the schema let through (a NUL character, a number out of range).
    return json_error("Invalid input: a value has invalid characters or is out of range.", code="invalid", status=400)


@api.exception_handler(DatabaseError)
def _db_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.exception("database error")
    return json_error("Internal error.", code="internal", status=500)


@api.exception_handler(Exception)
def _internal(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.exception("unhandled API error")
    return json_error("Internal error.", code="internal", status=500)


class TenantOut(Schema):
    id: UUID
    slug: str
    name: str


class MeOut(Schema):
    username: str
    role: str
    tenant: TenantOut


@api.get("/me/", response=MeOut, tags=["account"], summary="The caller and the tenant it acts for")
def me(request: tenancy.TenantHttpRequest) -> dict[str, Any]:
    membership = request.membership
    return {"username": membership.user.get_username(), "role": membership.role, "tenant": membership.tenant}
