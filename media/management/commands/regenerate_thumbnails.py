from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db.models import Q

from media import counters, objects, services
from media.models import Asset
from sense.management.base import JsonCommand
from sense.models import Tenant


class Command(JsonCommand):
    help = (
        "Make image thumbnails again, here and now (same code as the worker). "
        "--missing-only: only images without a ready thumbnail."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--tenant", help="tenant slug (default: every tenant)")
        parser.add_argument("--missing-only", action="store_true", help="skip images whose thumbnail is ready")

    def handle(self, *args: Any, **options: Any) -> None:
        qs = Asset.objects.filter(file_type=Asset.FileType.IMAGE).order_by("created_at")
        if options["tenant"]:
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"no tenant with slug {options['tenant']!r}")
            qs = qs.filter(tenant=tenant)
        if options["missing_only"]:
            qs = qs.filter(~Q(status=Asset.Status.READY) | Q(thumbnail_key=""))
        made = failed = unavailable = 0
        lines = []
        for asset in qs.iterator():
            try:
                ok = services.thumbnail_regenerate(asset=asset)
            except objects.StorageUnavailable:
                unavailable += 1
                lines.append(f"{asset.id} {asset.original_name}: storage unavailable")
                continue
            if ok:
                made += 1
            else:
                failed += 1
                lines.append(f"{asset.id} {asset.original_name}: failed ({asset.failure_reason})")
        counters.flush()
        summary = f"{made} thumbnail(s) made, {failed} failed, {unavailable} skipped (storage unavailable)"
        self.emit(
            options,
            {"made": made, "failed": failed, "unavailable": unavailable},
            "\n".join([*lines, summary]),
        )
        if unavailable:
            raise CommandError("storage unavailable for some assets; run again")
