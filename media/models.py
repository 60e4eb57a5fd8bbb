"""Media assets: files uploaded by operators, stored in S3 (or local files), with thumbnails."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from sense.models import TenantOwned


class Asset(TenantOwned):
    class FileType(models.TextChoices):
        IMAGE = "image", _("Image")
        VIDEO = "video", _("Video")
        AUDIO = "audio", _("Audio")
        DOCUMENT = "document", _("Document")

    class Status(models.TextChoices):
        PROCESSING = "processing", _("Processing")
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed")

    class Origin(models.TextChoices):
        UPLOAD = "upload", _("Uploaded")
        INBOUND = "inbound", _("Received")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Received media (a contact's attachment) stay out of the campaign media picker by default.
    origin = models.CharField(_("origin"), max_length=16, choices=Origin.choices, default=Origin.UPLOAD)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    original_name = models.CharField(_("original name"), max_length=255)
    key = models.CharField(_("object key"), max_length=512, unique=True)
    file_type = models.CharField(_("type"), max_length=16, choices=FileType.choices)
    mime_type = models.CharField(_("MIME type"), max_length=127)
    size = models.BigIntegerField(_("size"))
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.PROCESSING)
    failure_reason = models.TextField(_("failure reason"), blank=True)
    thumbnail_key = models.CharField(max_length=512, blank=True)
    thumbnail_size = models.PositiveIntegerField(null=True, blank=True)
    # Set by whoever makes the thumbnail (the job, or a request in thumbnail_ensure, which
    # otherwise waits for the holder); a stale claim (a process that died) may be taken over
    # after THUMBNAIL_CLAIM_SECONDS.
    thumbnail_claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="asset_tenant_created")]
        verbose_name = _("asset")
        verbose_name_plural = _("assets")

    def __str__(self) -> str:
        return self.original_name

    @property
    def has_thumbnail(self) -> bool:
        """Images get a thumbnail; other kinds have none (their thumbnail_url is null)."""
        return self.file_type == self.FileType.IMAGE

    def file_url(self) -> str:
        return reverse("media-file", args=[self.id])

    def thumbnail_url(self) -> str | None:
        return reverse("media-thumbnail", args=[self.id]) if self.has_thumbnail else None


class DailyMetric(models.Model):
    """One counter of one tenant on one day: plain counters use bucket 0; histograms
    (latencies, thumbnail sizes) keep one row per bucket, `total` summing the observed
    values so that averages are exact and percentiles come from the buckets.

    Rows are only ever incremented with F() (media.counters.flush), so several web and
    worker processes can write the same row."""

    tenant = models.ForeignKey("sense.Tenant", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    name = models.CharField(max_length=64)
    bucket = models.SmallIntegerField(default=0)
    count = models.BigIntegerField(default=0)
    total = models.FloatField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "day", "name", "bucket"], name="media_dailymetric_unique")
        ]
        indexes = [models.Index(fields=["day", "name"], name="media_dailymetric_day")]

    def __str__(self) -> str:
        return f"{self.day} {self.name}[{self.bucket}]={self.count}"
