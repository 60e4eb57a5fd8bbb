"""Domain errors that every entry point (API, pages, admin, commands) turns into a clear answer."""

from __future__ import annotations


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
