"""Media workflows: creating an asset from an upload, making its thumbnail, deleting it.

Views, API endpoints, the thumbnail actor, the management command and the demo seed all
call these functions.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import re
import time
import unicodedata
import uuid
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.db import transaction
from django.db.models import ProtectedError, Q
from django.utils import timezone

from media import counters, objects, sniff
from media.models import Asset
from sense.errors import Conflict, ServiceError, Unavailable
from sense.lib import images
from sense.models import Tenant
from sense.realtime import broadcast

log = logging.getLogger("sense.media")

THUMBNAIL_CLAIM_SECONDS = 120
_UNSAFE = re.compile(r"[^\w.\-]+", re.UNICODE)


class UploadRefused(ServiceError):
    """An upload we do not store; `status` is 400, 413 or 415."""


def upload_limits() -> dict[str, int]:
    return {
        sniff.IMAGE: settings.MEDIA_MAX_IMAGE_BYTES,
        sniff.AUDIO: settings.MEDIA_MAX_AUDIO_BYTES,
        sniff.VIDEO: settings.MEDIA_MAX_VIDEO_BYTES,
        sniff.DOCUMENT: settings.MEDIA_MAX_DOCUMENT_BYTES,
    }


def safe_name(name: str, *, max_length: int = 120) -> str:
    """NAME as the last part of an object key: no directories, no control characters, no
    leading dots; letters of any script are kept (NFC). Never empty."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())
    name = _UNSAFE.sub("_", name).strip("._ ") or "file"
    if len(name) > max_length:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:16]
        name = (stem[: max_length - len(ext) - 1] + dot + ext) if dot else name[:max_length]
    return name


def object_key(tenant_id: Any, asset_id: Any, name: str) -> str:
    return f"tenants/{tenant_id}/media/{asset_id}/{safe_name(name)}"


def thumbnail_key_for(asset: Asset) -> str:
    # A subfolder: the original's own name can never contain "/", so the keys cannot clash.
    return f"tenants/{asset.tenant_id}/media/{asset.id}/thumbnail/{settings.MEDIA_THUMBNAIL_SIZE}.webp"


def _sha256(fp: IO[bytes]) -> str:
    fp.seek(0)
    digest = hashlib.sha256()
    while chunk := fp.read(1024 * 1024):
        digest.update(chunk)
    fp.seek(0)
    return digest.hexdigest()


def _announce(asset: Asset) -> None:
    message = {
        "type": "media.updated",
        "id": str(asset.id),
        "status": asset.status,
        "thumbnail_url": asset.thumbnail_url(),
    }
    tenant_id = asset.tenant_id
    transaction.on_commit(lambda: broadcast(tenant_id, message))


def asset_create(
    *,
    tenant: Tenant,
    user: Any,
    upload: IO[bytes],
    name: str,
    size: int,
    sha256: str | None = None,
    enqueue: bool = True,
    origin: str = Asset.Origin.UPLOAD,
) -> Asset:
    """Validate UPLOAD (a seekable file of SIZE bytes named NAME) and store it. Returns the new
    asset (images: status processing, a thumbnail job sent on commit; others: ready).
    SHA256 is the content's hex digest when the caller computed it while receiving; ORIGIN
    is `inbound` for a contact's attachment.

    Raises UploadRefused (400/413/415) before anything is stored, or Unavailable (503) when
    storage cannot be reached; in both cases no row and no object remain."""
    checked = _check_upload(upload, name=name, size=size)
    digest = sha256 or _sha256(upload)
    asset_id = uuid.uuid4()
    key = object_key(tenant.id, asset_id, name)
    _put_object(key, upload, checked.mime_type)
    asset = _insert_asset(
        Asset(
            id=asset_id,
            tenant=tenant,
            origin=origin,
            uploaded_by=user if getattr(user, "pk", None) else None,
            original_name=name[:255],
            key=key,
            file_type=checked.file_type,
            mime_type=checked.mime_type,
            size=size,
            sha256=digest,
            width=checked.width,
            height=checked.height,
        ),
        enqueue=enqueue,
    )
    log.info("[S3] stored %s (%s, %d bytes) for tenant %s", key, checked.mime_type, size, tenant.slug)
    return asset


@dataclass(frozen=True)
class _Checked:
    file_type: str
    mime_type: str
    width: int | None = None
    height: int | None = None


def _check_upload(upload: IO[bytes], *, name: str, size: int) -> _Checked:
    """UPLOAD's type by its content and, for images, its displayed size; raises UploadRefused
    for an empty, unknown, oversized or corrupt file."""
    if size <= 0:
        raise UploadRefused("The file is empty.", code="empty", status=400)
    try:
        found = sniff.sniff(upload, name, settings.MEDIA_ALLOWED_TYPES)
    except sniff.Refused as exc:
        raise UploadRefused(exc.message, code=exc.code, status=exc.status) from exc
    limit = upload_limits()[found.file_type]
    if size > limit:
        raise UploadRefused(
            f"The file is {size / 1e6:.1f} MB; {found.file_type} files may be at most {limit / 1e6:.0f} MB.",
            code="too_large",
            status=413,
        )
    if found.file_type != sniff.IMAGE:
        return _Checked(found.file_type, found.mime_type)
    width, height = _image_size(upload, found.mime_type)
    return _Checked(found.file_type, found.mime_type, width, height)


def _image_size(upload: IO[bytes], mime_type: str) -> tuple[int, int]:
    """(width, height) of the image once every pixel decoded; raises UploadRefused when it does
    not decode, has too many pixels, or is not the MIME_TYPE its first bytes claimed."""
    upload.seek(0)
    try:
        info = images.inspect(upload, max_pixels=settings.MEDIA_MAX_IMAGE_PIXELS)
    except images.ImageRefused as exc:
        status = 413 if exc.code == "too_many_pixels" else 400
        raise UploadRefused(exc.message, code=exc.code, status=status) from exc
    if info.mime_type != mime_type:
        raise UploadRefused("The image's content does not match its type.", code="unsupported_type", status=415)
    return info.width, info.height


def _put_object(key: str, upload: IO[bytes], mime_type: str) -> None:
    try:
        objects.put_file(key, upload, mime_type)
    except objects.StorageUnavailable as exc:
        raise Unavailable("File storage is unreachable; try again shortly.", code="storage_unavailable") from exc


def _insert_asset(asset: Asset, *, enqueue: bool) -> Asset:
    """Save ASSET (its object already stored): processing with a thumbnail job on commit for an
    image, ready otherwise. If the row is not written the object is deleted again."""
    is_image = asset.file_type == sniff.IMAGE
    asset.status = Asset.Status.PROCESSING if is_image else Asset.Status.READY
    asset_id = asset.id
    try:
        with transaction.atomic():
            asset.save(force_insert=True)
            if is_image and enqueue:
                transaction.on_commit(lambda: _send_thumbnail_job(asset_id))
    except Exception:
        objects.delete(asset.key)  # the row is what makes an object reachable: no row, no object
        raise
    return asset


def _send_thumbnail_job(asset_id: uuid.UUID) -> None:
    from media.tasks import make_thumbnail

    try:
        make_thumbnail.send(str(asset_id))
    except Exception as exc:
        # The thumbnail URL makes it on demand, and regenerate_thumbnails redoes it.
        log.error("[RABBITMQ] thumbnail job for %s not sent: %s", asset_id, exc.__class__.__name__)


# --- Thumbnails -----------------------------------------------------------------------


def thumbnail_claim(asset_id: Any, *, now: datetime.datetime | None = None) -> bool:
    """Claim a processing image for thumbnailing (conditional UPDATE); False when it is done,
    failed, not an image, or claimed by someone else less than THUMBNAIL_CLAIM_SECONDS ago."""
    now = now or timezone.now()
    stale = now - datetime.timedelta(seconds=THUMBNAIL_CLAIM_SECONDS)
    return (
        Asset.objects.filter(id=asset_id, status=Asset.Status.PROCESSING, file_type=Asset.FileType.IMAGE)
        .filter(Q(thumbnail_claimed_at__isnull=True) | Q(thumbnail_claimed_at__lt=stale))
        .update(thumbnail_claimed_at=now)
        == 1
    )


def _thumbnail_release(asset_id: Any, claimed_at: datetime.datetime) -> None:
    # Only our own claim: had it gone stale, someone else may have taken it over meanwhile.
    Asset.objects.filter(id=asset_id, thumbnail_claimed_at=claimed_at).update(thumbnail_claimed_at=None)


def _render(asset: Asset) -> bytes:
    source = objects.open_object(asset.key)
    try:
        data, _, _ = images.thumbnail(
            source,
            box=settings.MEDIA_THUMBNAIL_SIZE,
            quality=settings.MEDIA_THUMBNAIL_QUALITY,
            max_pixels=settings.MEDIA_MAX_IMAGE_PIXELS,
        )
    finally:
        source.close()
    return data


def _mark_failed(asset: Asset, reason: str) -> None:
    with transaction.atomic():
        changed = (
            Asset.objects.filter(id=asset.id)
            .exclude(status=Asset.Status.FAILED)
            .update(status=Asset.Status.FAILED, failure_reason=reason, thumbnail_claimed_at=None)
        )
        if changed:
            asset.status, asset.failure_reason = Asset.Status.FAILED, reason
            _announce(asset)
    log.warning("[IMG] thumbnail of asset %s failed: %s", asset.id, reason)


def _render_and_store(asset: Asset, *, from_statuses: tuple[str, ...]) -> bool:
    """Render, write to the thumbnail key and mark the asset ready if its status is one of
    FROM_STATUSES. Returns False when the image was refused (the asset is then failed).
    Storage errors raise StorageUnavailable (the job retries)."""
    started = timezone.now()
    try:
        data = _render(asset)
    except images.ImageRefused as exc:
        _mark_failed(asset, exc.message)
        return False
    key = thumbnail_key_for(asset)
    objects.put_bytes(key, data, "image/webp")
    with transaction.atomic():
        changed = Asset.objects.filter(id=asset.id, status__in=from_statuses).update(
            status=Asset.Status.READY,
            thumbnail_key=key,
            thumbnail_size=len(data),
            failure_reason="",
            thumbnail_claimed_at=None,
            updated_at=timezone.now(),
        )
        if changed:
            status_changed = asset.status != Asset.Status.READY
            asset.status, asset.thumbnail_key, asset.thumbnail_size = Asset.Status.READY, key, len(data)
            if status_changed:
                _announce(asset)
    if changed:
        counters.record(asset.tenant_id, counters.THUMBNAIL_BYTES, len(data))
        log.info(
            "[IMG] thumbnail of %s: %d bytes in %.0f ms",
            asset.id,
            len(data),
            (timezone.now() - started).total_seconds() * 1000,
        )
    return True


def thumbnail_generate(*, asset_id: Any) -> str:
    """The thumbnail job. Idempotent: returns "done" (made now), "skipped" (already made,
    failed, not an image, or claimed by another live job) or "failed" (image refused)."""
    claimed_at = timezone.now()
    if not thumbnail_claim(asset_id, now=claimed_at):
        return "skipped"
    asset = Asset.objects.get(id=asset_id)
    try:
        ok = _render_and_store(asset, from_statuses=(Asset.Status.PROCESSING,))
    except Exception:
        _thumbnail_release(asset_id, claimed_at)  # let the retry claim it
        raise
    finally:
        counters.flush()
    return "done" if ok else "failed"


def _thumbnail_failed(asset: Asset) -> ServiceError:
    return ServiceError(f"The thumbnail could not be made: {asset.failure_reason}", code="thumbnail_failed", status=404)


def thumbnail_ensure(*, asset: Asset) -> str:
    """The thumbnail key of ASSET, making it now if the job has not yet (same code, same key).

    Single-flight across processes: the request claims the asset as the job does. When the
    job or another request holds a live claim, it polls the row for up to
    MEDIA_THUMBNAIL_WAIT_SECONDS and returns what the holder produced, rather than rendering
    a duplicate. Raises ServiceError 404 for assets without a thumbnail or whose thumbnail
    failed, Unavailable 503 when storage is down or the holder has not finished in time."""
    if not asset.has_thumbnail:
        raise ServiceError("This file has no thumbnail.", code="no_thumbnail", status=404)
    deadline = time.monotonic() + settings.MEDIA_THUMBNAIL_WAIT_SECONDS
    pause = 0.05
    while True:
        if asset.status == Asset.Status.READY and asset.thumbnail_key:
            return asset.thumbnail_key
        if asset.status == Asset.Status.FAILED:
            raise _thumbnail_failed(asset)
        claimed_at = timezone.now()
        # Only a processing image can be claimed; a ready one without a key (never expected)
        # is rendered unclaimed, as before.
        if thumbnail_claim(asset.id, now=claimed_at) or asset.status != Asset.Status.PROCESSING:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            log.info("[IMG] thumbnail of %s still being made elsewhere; answered 503", asset.id)
            raise Unavailable("The thumbnail is being made; try again shortly.", code="thumbnail_pending")
        # Backing off keeps a few waiting requests from hammering the row while a big image renders.
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.5)
        try:
            asset.refresh_from_db(fields=["status", "thumbnail_key", "thumbnail_size", "failure_reason"])
        except Asset.DoesNotExist:
            raise ServiceError("Not found.", code="not_found", status=404) from None
    try:
        ok = _render_and_store(asset, from_statuses=(Asset.Status.PROCESSING,))
    except objects.StorageUnavailable as exc:
        _thumbnail_release(asset.id, claimed_at)
        raise Unavailable("File storage is unreachable; try again shortly.", code="storage_unavailable") from exc
    except Exception:
        _thumbnail_release(asset.id, claimed_at)
        raise
    if not ok:
        raise _thumbnail_failed(asset)
    return thumbnail_key_for(asset)


def thumbnail_regenerate(*, asset: Asset) -> bool:
    """Make ASSET's thumbnail again whatever its status (the management command). Returns
    False when the image is refused (the asset is marked failed)."""
    if not asset.has_thumbnail:
        return False
    return _render_and_store(asset, from_statuses=tuple(Asset.Status.values))


# --- Deleting -------------------------------------------------------------------------


def asset_delete(*, asset: Asset, user: Any = None) -> None:
    """Delete ASSET and, after commit, its objects. Raises Conflict when a campaign uses it."""
    # `campaigns` is the reverse accessor of campaigns.Campaign.media: media must not import
    # the campaigns app. PROTECT on that foreign key covers a campaign attached meanwhile.
    in_use = asset.campaigns.count()  # type: ignore[attr-defined]
    if in_use:
        raise Conflict(
            f"This file is attached to {in_use} campaign(s); detach it from them before deleting it.",
            code="asset_in_use",
        )
    keys = [asset.key, asset.thumbnail_key]
    try:
        with transaction.atomic():
            asset.delete()
            transaction.on_commit(lambda: objects.delete(*keys))
        log.info("[S3] deleted asset %s (%s) by %s", asset.id, asset.original_name, getattr(user, "pk", None))
    except ProtectedError:
        raise Conflict(
            "This file is attached to a campaign; detach it before deleting it.", code="asset_in_use"
        ) from None
