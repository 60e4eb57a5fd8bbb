"""Media endpoints that are not plain JSON: the upload (its own contract, streamed to a
temporary file), the stable file and thumbnail URLs, and the media proxy.

All accept a browser session or `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from media import counters, objects, proxy, services, uploads
from media.models import Asset
from sense import tenancy
from sense.errors import ServiceError, json_error
from sense.lib.storage import is_s3

log = logging.getLogger("sense.media")

# The proxied bytes are someone else's: never let a browser run them as a page.
PROXY_CSP = "default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'; sandbox"
MULTIPART_OVERHEAD = 64 * 1024
UNAUTHENTICATED = "Authentication required: log in or send a valid Bearer token."


def _unauthenticated() -> JsonResponse:
    return json_error(UNAUTHENTICATED, code="unauthenticated", status=401)


# --- Upload ---------------------------------------------------------------------------


@csrf_exempt  # CSRF is checked below for sessions, after our upload handler has read the body
@require_POST
def upload_media(request: HttpRequest) -> JsonResponse:
    """Store one file (multipart field `file`). 201 with the asset, or `{"success": false,
    "error", "code"}` with 400/401/403/413/415/503; a refused upload stores nothing."""
    membership = tenancy.authenticate(request)
    if membership is None:
        return _upload_failed(None, ServiceError(UNAUTHENTICATED, code="unauthenticated", status=401))
    tenant = membership.tenant
    counters.record(tenant.id, counters.UPLOAD_ATTEMPTED)
    limits = services.upload_limits()
    handler = uploads.LimitedUploadHandler(request, limits)
    try:
        _check_envelope(request, limits)
        parser = _read_body(request, handler)
        _check_csrf(request)
        upload = _uploaded_file(request, parser)
        asset = services.asset_create(
            tenant=tenant,
            user=request.user,
            upload=upload,
            name=upload.name or "",
            size=upload.size or 0,
            sha256=handler.digest.hexdigest(),
        )
    except ServiceError as exc:
        return _upload_failed(tenant.id, exc)
    finally:
        handler.discard()
    counters.record(tenant.id, counters.UPLOAD_SUCCEEDED)
    return JsonResponse(_upload_body(asset), status=201)


def _check_envelope(request: HttpRequest, limits: dict[str, int]) -> None:
    """Refuse before reading the body: not multipart, or a declared length no type allows."""
    if request.content_type != "multipart/form-data":
        raise ServiceError("Send the file as multipart/form-data in the field `file`.", code="no_file")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > max(limits.values()) + MULTIPART_OVERHEAD:
        raise ServiceError("The file is larger than any allowed type.", code="too_large", status=413)


def _read_body(request: HttpRequest, handler: uploads.LimitedUploadHandler) -> uploads.UploadParser:
    """Stream the body into HANDLER's temporary file; refuse an unreadable one, or one that
    passed its type's limit (reading stopped there)."""
    try:
        parser = uploads.parse(request, handler)
    except MultiPartParserError:
        raise ServiceError("The upload could not be read.", code="unreadable") from None
    if handler.over_limit:
        raise ServiceError(
            f"The file is larger than {handler.limit / 1e6:.0f} MB, the limit for its type.",
            code="too_large",
            status=413,
        )
    return parser


def _check_csrf(request: HttpRequest) -> None:
    """A browser session must pass Django's CSRF check (a Bearer token needs none). Only after
    _read_body: the check reads request.POST, which must come from our limited handler."""
    if tenancy.bearer_token(request) is not None:
        return
    if CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, None, (), {}) is not None:  # type: ignore[arg-type]
        raise ServiceError("CSRF check failed: reload the page and try again.", code="csrf", status=403)


def _uploaded_file(request: HttpRequest, parser: uploads.UploadParser) -> UploadedFile:
    """The `file` field; refused when its name tried to climb out of its folder, or absent."""
    if parser.traversal:
        raise ServiceError("The file name must not contain folders.", code="invalid_name")
    upload = request.FILES.get(uploads.FIELD)
    if upload is None:
        raise ServiceError("No file was sent in the field `file`.", code="no_file")
    return upload


def _upload_failed(tenant_id: Any, exc: ServiceError) -> JsonResponse:
    if tenant_id is not None:
        counters.record(tenant_id, counters.UPLOAD_FAILED + exc.code)
    return json_error(exc.message, code=exc.code, status=exc.status, success=False)


def _upload_body(asset: Asset) -> dict[str, Any]:
    return {
        "success": True,
        "id": str(asset.id),
        "file_url": asset.file_url(),
        "thumbnail_url": asset.thumbnail_url(),
        "file_type": asset.file_type,
        "mime_type": asset.mime_type,
        "size": asset.size,
    }


# --- Files and thumbnails -------------------------------------------------------------


def _asset_for(request: HttpRequest, asset_id: UUID) -> Asset | JsonResponse:
    """The caller's asset, or the answer instead: 401 without credentials, 404 when the
    caller's tenant has no such asset (another tenant's included)."""
    membership = tenancy.authenticate(request)
    if membership is None:
        return _unauthenticated()
    try:
        return tenancy.get_for_tenant(Asset, membership.tenant, id=asset_id)
    except Http404:
        return json_error("Not found.", code="not_found", status=404)


def _serve(key: str, *, content_type: str, filename: str, attachment: bool) -> HttpResponse | FileResponse:
    """A 302 to a presigned URL (S3), or the file itself (local storage)."""
    response: HttpResponse | FileResponse
    if is_s3():
        response = HttpResponseRedirect(
            objects.signed_url(key, content_type=content_type, filename=filename, attachment=attachment)
        )
    else:
        try:
            handle = objects.open_object(key)
        except objects.StorageUnavailable:  # open_object turns FileNotFoundError into it too
            return json_error("The file is missing from storage.", code="missing", status=404)
        response = FileResponse(handle, content_type=content_type, as_attachment=attachment, filename=filename)
    # The redirect target expires: a browser must come back here rather than reuse it.
    response["Cache-Control"] = "private, no-cache"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_GET
def asset_file(request: HttpRequest, asset_id: UUID) -> HttpResponse | FileResponse:
    asset = _asset_for(request, asset_id)
    if not isinstance(asset, Asset):
        return asset
    return _serve(
        asset.key,
        content_type=asset.mime_type,
        filename=asset.original_name,
        attachment=asset.file_type == Asset.FileType.DOCUMENT,
    )


@require_GET
def asset_thumbnail(request: HttpRequest, asset_id: UUID) -> HttpResponse | FileResponse:
    asset = _asset_for(request, asset_id)
    if not isinstance(asset, Asset):
        return asset
    try:
        key = services.thumbnail_ensure(asset=asset)
    except ServiceError as exc:
        return json_error(exc.message, code=exc.code, status=exc.status)
    stem = asset.original_name.rsplit(".", 1)[0] or "thumbnail"
    return _serve(key, content_type="image/webp", filename=f"{stem}.webp", attachment=False)


# --- Media proxy ----------------------------------------------------------------------


@require_GET
def media_proxy(request: HttpRequest) -> HttpResponse:
    """`?url=<absolute URL>`: the remote bytes with X-Cache MISS or HIT; errors as JSON."""
    membership = tenancy.authenticate(request)
    if membership is None:
        return _unauthenticated()
    url = request.GET.get("url", "").strip()
    if not url:
        return json_error("Pass the remote file's address as ?url=.", code="bad_url", status=400)
    started = time.monotonic()
    try:
        fetched, hit = proxy.serve(url)
    except proxy.ProxyError as exc:
        return json_error(exc.message, code=exc.code, status=exc.status)
    elapsed_ms = (time.monotonic() - started) * 1000
    counters.record(membership.tenant_id, counters.PROXY_HIT_MS if hit else counters.PROXY_MISS_MS, elapsed_ms)
    response: HttpResponse
    if fetched.status == 404:
        response = json_error("The remote file was not found.", code="upstream_not_found", status=404)
        response["Cache-Control"] = "private, max-age=60"
    else:
        response = HttpResponse(fetched.body, content_type=fetched.content_type)
        response["Cache-Control"] = f"private, max-age={min(fetched.ttl, settings.MEDIA_PROXY_CACHE_TTL)}"
    response["X-Cache"] = "HIT" if hit else "MISS"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = PROXY_CSP
    return response
