from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from sense.lib.storage import ensure_bucket
from sense.management.base import JsonCommand


class Command(JsonCommand):
    help = "Create the S3 bucket when it is missing (run by the Procfile's release step)."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            outcome = ensure_bucket()
        except Exception as exc:
            # A release must not fail because the credentials cannot create buckets when
            # the bucket already exists; any other failure is reported and fails.
            raise CommandError(f"[S3] could not check or create the bucket: {exc.__class__.__name__}: {exc}") from exc
        self.emit(options, {"bucket": outcome}, f"[S3] bucket: {outcome}")
