"""Domain errors that every entry point (API, pages, admin, commands) turns into a clear answer,
and the one JSON error body every endpoint answers with."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse


def json_error(message: str, *, code: str, status: int, **extra: Any) -> JsonResponse:
    """`{"error": MESSAGE, "code": CODE, **EXTRA}` with HTTP STATUS: `error` is for a person,
    `code` is stable for machines; EXTRA adds fields such as `details`."""
    return JsonResponse({"error": message, "code": code, **extra}, status=status)


class ServiceError(Exception):
    """A refusal a person can act on. `code` is stable for machines; `status` is the HTTP one."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class Unavailable(ServiceError):
    status = 503
    code = "unavailable"
