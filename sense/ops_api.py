"""Operational API: the worker round trip used by `postdeploy_check`."""

from __future__ import annotations

import re
import secrets

from django.core.cache import cache
from django.http import Http404, HttpRequest
from ninja import Router, Schema, Status

from sense.errors import Unavailable
from sense.tasks import PING_TTL, ping_key, worker_ping

router = Router(tags=["ops"])
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what secrets.token_urlsafe makes


class PingOut(Schema):
    token: str
    done: bool
    at: str | None = None


@router.post("/worker-ping/", response={202: PingOut}, summary="Send a ping through the broker to a worker")
def send_ping(request: HttpRequest) -> Status[PingOut]:
    token = secrets.token_urlsafe(12)
    try:
        cache.set(ping_key(token), {"done": False}, PING_TTL)
        worker_ping.send(token)
    except Exception as exc:
        raise Unavailable(f"Could not send the ping: {exc.__class__.__name__}") from exc
    return Status(202, PingOut(token=token, done=False))


@router.get("/worker-ping/{token}/", response=PingOut, summary="Whether a worker answered the ping")
def ping_state(request: HttpRequest, token: str) -> PingOut:
    state = cache.get(ping_key(token)) if TOKEN_RE.fullmatch(token) else None
    if state is None:
        raise Http404
    return PingOut(token=token, done=bool(state.get("done")), at=state.get("at"))
