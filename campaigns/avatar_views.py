"""A contact's profile picture, always from Sense: `/contacts/<id>/avatar/`.

The gateway is asked for the picture's URL on the first request (then at most once per
PROFILE_PICTURE_TTL: `services.contact_avatar_refresh`), and the picture is fetched and
cached by the media proxy (its address checks, size and type limits, Redis cache with
`X-Cache: HIT`/`MISS`). The WhatsApp CDN URL never reaches the browser: not in HTML, not in
a redirect. Accepts a browser session or `Authorization: Bearer <token>`, like media files.
"""

from __future__ import annotations

import hashlib
import logging

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.html import escape
from django.views.decorators.http import require_GET

from campaigns import services
from campaigns.models import Contact
from campaigns.views import initials
from media import proxy
from media.file_views import PROXY_CSP
from sense import tenancy
from sense.errors import json_error

log = logging.getLogger("sense.campaigns")


@require_GET
def contact_avatar(request: HttpRequest, contact_id: int) -> HttpResponse:
    """The picture's bytes (200, X-Cache), or the contact's initials as an SVG when it has none
    (`X-Avatar: initials`); 401 without credentials, 404 for another tenant's contact."""
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
        return _initials(contact)
    try:
        fetched, hit = proxy.serve(url)
    except proxy.ProxyError as exc:
        log.info("[AVATAR] contact %s: picture not proxied (%s)", contact.pk, exc.code)
        return _initials(contact)
    if fetched.status == 404:  # WhatsApp's picture URLs expire: ask the gateway again next time
        services.contact_avatar_forget(contact=contact)
        return _initials(contact)
    response = HttpResponse(fetched.body, content_type=fetched.content_type)
    response["Cache-Control"] = f"private, max-age={min(fetched.ttl, settings.PROFILE_PICTURE_TTL)}"
    response["X-Cache"] = "HIT" if hit else "MISS"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = PROXY_CSP
    return response


COLOURS = ("#128c7e", "#075e54", "#3b82f6", "#8b5cf6", "#b7791f", "#c0392b", "#1e8e3e", "#667085")


def _initials(contact: Contact) -> HttpResponse:
    """A round placeholder with CONTACT's initials (our own SVG: nothing of the gateway's)."""
    colour = COLOURS[int(hashlib.sha256(str(contact.pk).encode()).hexdigest(), 16) % len(COLOURS)]
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
        f'<circle cx="32" cy="32" r="32" fill="{colour}"/>'
        '<text x="32" y="32" dy=".35em" text-anchor="middle" font-family="system-ui, sans-serif" '
        f'font-size="26" font-weight="600" fill="#fff">{escape(initials(contact))}</text></svg>'
    )
    response = HttpResponse(svg, content_type="image/svg+xml")
    response["Cache-Control"] = "private, max-age=300"
    response["X-Avatar"] = "initials"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = PROXY_CSP
    return response
