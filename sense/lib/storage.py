"""Object storage helpers: the S3 storage class, its client config, and bucket checks.

MinIO and moto want path-style addressing and SigV4. boto3 >= 1.36 adds CRC checksums
to every request by default, which older MinIO releases reject, so checksums are only
computed when an operation requires them.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import boto3
from botocore.config import Config
from django.conf import settings
from django.core.files.storage import Storage, default_storage
from storages.backends.s3 import S3Storage

log = logging.getLogger("sense.storage")


def client_config(*, connect_timeout: float = 5.0, read_timeout: float = 30.0) -> Config:
    return Config(
        s3={"addressing_style": "path"},
        signature_version="s3v4",
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": 2, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=20,
    )


class MediaS3Storage(S3Storage):
    """Private S3 storage whose presigned URLs may be signed for a public endpoint.

    When S3_PUBLIC_ENDPOINT_URL is set (the internal endpoint is e.g. minio.railway.internal,
    which browsers cannot reach), URLs are signed by a client pointed at the public endpoint:
    the host is part of the SigV4 signature, so rewriting the URL afterwards would break it.
    """

    _public_clients = threading.local()

    def _public_client(self) -> Any:
        client = getattr(self._public_clients, "client", None)
        if client is None:
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=settings.S3_PUBLIC_ENDPOINT_URL,
                region_name=self.region_name,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                config=self.client_config,
            )
            self._public_clients.client = client
        return client

    def url(self, name: str, parameters: Any = None, expire: Any = None, http_method: Any = None) -> str:
        if not settings.S3_PUBLIC_ENDPOINT_URL:
            return super().url(name, parameters=parameters, expire=expire, http_method=http_method)
        params = dict(parameters or {})
        params["Bucket"] = self.bucket_name
        params["Key"] = self._normalize_name(name)
        return str(
            self._public_client().generate_presigned_url(
                "get_object",
                Params=params,
                ExpiresIn=expire or self.querystring_expire,
                HttpMethod=http_method,
            )
        )


def is_s3(storage: Storage | None = None) -> bool:
    return isinstance(storage or default_storage, S3Storage)


def s3_client() -> Any:
    """The boto3 client of the default S3 storage (same credentials, endpoint and config)."""
    storage = default_storage
    assert isinstance(storage, S3Storage)
    return storage.connection.meta.client


def ensure_bucket() -> str:
    """Create the bucket when it is missing. Returns "exists", "created" or "local"."""
    if not is_s3():
        return "local"
    client = s3_client()
    bucket = settings.S3_BUCKET
    try:
        client.head_bucket(Bucket=bucket)
        return "exists"
    except client.exceptions.ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status != 404:
            raise
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if settings.S3_REGION and settings.S3_REGION != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.S3_REGION}
    client.create_bucket(**kwargs)
    log.info("[S3] created bucket %s", bucket)
    return "created"


def check_storage() -> None:
    """Raise if the default storage cannot be reached."""
    if is_s3():
        s3_client().head_bucket(Bucket=settings.S3_BUCKET)
        return
    root = settings.MEDIA_ROOT
    root.mkdir(parents=True, exist_ok=True)
    probe = root / ".ready-probe"
    probe.write_bytes(b"ok")
    probe.unlink()
