"""Reading and writing media objects in the default storage (S3 or local files).

Writes go straight to the key we chose (Django's storage API would rename an existing
key, which a regenerated thumbnail must overwrite). Every S3 failure becomes
StorageUnavailable so that callers answer 503 instead of 500.
"""

from __future__ import annotations

import logging
from typing import IO, Any
from urllib.parse import quote

from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage

from sense.lib.storage import is_s3, s3_client

log = logging.getLogger("sense.media")

STORAGE_ERRORS: tuple[type[BaseException], ...] = (BotoCoreError, ClientError, Boto3Error, OSError)


class StorageUnavailable(Exception):
    pass


def transfer_config() -> TransferConfig:
    """Multipart above the threshold; at most CONCURRENCY parts of CHUNK bytes in memory at once."""
    config = TransferConfig(
        multipart_threshold=settings.MEDIA_MULTIPART_THRESHOLD,
        multipart_chunksize=settings.MEDIA_MULTIPART_CHUNK_SIZE,
        max_concurrency=settings.MEDIA_UPLOAD_CONCURRENCY,
        max_io_queue=settings.MEDIA_UPLOAD_CONCURRENCY * 2,
        use_threads=True,
    )
    # s3transfer reads a file object's parts into memory as it queues them (boto3 does not
    # expose this knob): a short queue keeps that to a few parts instead of the whole file.
    config.max_request_queue_size = settings.MEDIA_UPLOAD_CONCURRENCY * 2
    return config


def put_file(key: str, fp: IO[bytes], content_type: str) -> None:
    """Upload FP (seekable, positioned anywhere) to KEY."""
    fp.seek(0)
    try:
        if is_s3() and hasattr(fp, "temporary_file_path"):
            # By path, s3transfer opens each part lazily: only the parts in flight are in memory.
            s3_client().upload_file(
                fp.temporary_file_path(),
                settings.S3_BUCKET,
                key,
                ExtraArgs={"ContentType": content_type},
                Config=transfer_config(),
            )
        elif is_s3():
            s3_client().upload_fileobj(
                fp,
                settings.S3_BUCKET,
                key,
                ExtraArgs={"ContentType": content_type},
                Config=transfer_config(),
            )
        else:
            if default_storage.exists(key):
                default_storage.delete(key)
            saved = default_storage.save(key, File(fp))
            if saved != key:  # pragma: no cover - only if a storage renames despite the delete
                raise OSError(f"storage saved {key!r} as {saved!r}")
    except STORAGE_ERRORS as exc:
        log.error("[S3] upload of %s failed: %s", key, exc.__class__.__name__)
        raise StorageUnavailable(str(exc)) from exc


def put_bytes(key: str, data: bytes, content_type: str) -> None:
    try:
        if is_s3():
            s3_client().put_object(Bucket=settings.S3_BUCKET, Key=key, Body=data, ContentType=content_type)
        else:
            if default_storage.exists(key):
                default_storage.delete(key)
            default_storage.save(key, ContentFile(data))
    except STORAGE_ERRORS as exc:
        log.error("[S3] write of %s failed: %s", key, exc.__class__.__name__)
        raise StorageUnavailable(str(exc)) from exc


def open_object(key: str) -> IO[bytes]:
    try:
        return default_storage.open(key, "rb")  # type: ignore[return-value]
    except STORAGE_ERRORS as exc:
        log.error("[S3] read of %s failed: %s", key, exc.__class__.__name__)
        raise StorageUnavailable(str(exc)) from exc


def download(key: str, fp: IO[bytes], *, chunk_size: int = 1024 * 1024) -> None:
    """Copy the object KEY into the binary file FP, CHUNK_SIZE bytes at a time (the S3
    storage's own open() would buffer the whole object in memory)."""
    try:
        if is_s3():
            body = s3_client().get_object(Bucket=settings.S3_BUCKET, Key=key)["Body"]
            for chunk in body.iter_chunks(chunk_size):
                fp.write(chunk)
        else:
            with default_storage.open(key, "rb") as source:
                while chunk := source.read(chunk_size):
                    fp.write(chunk)
    except STORAGE_ERRORS as exc:
        log.error("[S3] read of %s failed: %s", key, exc.__class__.__name__)
        raise StorageUnavailable(str(exc)) from exc
    fp.flush()


def delete(*keys: str) -> None:
    """Delete KEYS (missing ones are fine). Errors are logged: an orphan object is harmless."""
    for key in keys:
        if not key:
            continue
        try:
            default_storage.delete(key)
        except STORAGE_ERRORS as exc:
            log.error("[S3] delete of %s failed: %s", key, exc.__class__.__name__)


def signed_url(key: str, *, content_type: str, filename: str, attachment: bool) -> str:
    """A presigned GET URL valid for MEDIA_URL_EXPIRY seconds (signed for the public endpoint
    when S3_PUBLIC_ENDPOINT_URL is set: sense.lib.storage.MediaS3Storage.url)."""
    disposition = "attachment" if attachment else "inline"
    params: dict[str, Any] = {
        "ResponseContentType": content_type,
        "ResponseContentDisposition": f"{disposition}; filename*=UTF-8''{quote(filename)}",
    }
    return default_storage.url(key, parameters=params, expire=settings.MEDIA_URL_EXPIRY)  # type: ignore[call-arg]
