"""A contact's profile picture, always from Sense: `/contacts/<id>/avatar/`.

The gateway is asked for the picture's URL on the first request (then at most once per
PROFILE_PICTURE_TTL: `services.contact_avatar_refresh`), and the picture is fetched and
cached by the media proxy (its address checks, size and type limits, Redis cache with
`X-Cache: HIT`/`MISS`). The WhatsApp CDN URL never reaches the browser: not in HTML, not in
a redirect. Accepts a browser session or `Authorization: Bearer <token>`, like media files.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from campaigns import services
from campaigns.models import Contact
from media import proxy
from media.file_views import PROXY_CSP
from sense import tenancy
from sense.errors import json_error

log = logging.getLogger("sense.campaigns")


@require_GET
def contact_avatar(request: HttpRequest, contact_id: int) -> HttpResponse:
    """The picture's bytes (200, X-Cache), or 404 `no_avatar` when the contact has none (the
    page shows its initials), 401 without credentials, 404 for another tenant's contact."""
    membership = tenancy.authenticate(request)
    if membership is None:
        return json_error(
            "Authentication required: log in or send a valid Bearer token.", code="unauthenticated", status=401
        )
    try:
        contact = tenancy.get_for_tenant(Contact, membership.tenant, pk=contact_id)
    except Http404:
        return json_error("Not found.", code="not_found", status=404)
    url = services.contact_avatar_refresh(contact=contact)
    if not url:
        return _none()
    try:
        fetched, hit = proxy.serve(url)
    except proxy.ProxyError as exc:
        log.info("[AVATAR] contact %s: picture not proxied (%s)", contact.pk, exc.code)
        return _none()
    if fetched.status == 404:  # WhatsApp's picture URLs expire: ask the gateway again next time
        services.contact_avatar_forget(contact=contact)
        return _none()
    response = HttpResponse(fetched.body, content_type=fetched.content_type)
    response["Cache-Control"] = f"private, max-age={min(fetched.ttl, settings.PROFILE_PICTURE_TTL)}"
    response["X-Cache"] = "HIT" if hit else "MISS"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = PROXY_CSP
    return response


def _none() -> HttpResponse:
    response = json_error("This contact has no profile picture.", code="no_avatar", status=404)
    response["Cache-Control"] = "private, max-age=300"
    return response
