from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.utils.text import slugify

from sense.management.base import JsonCommand
from sense.models import Tenant


class Command(JsonCommand):
    help = "Create a tenant, or return the existing one with that slug."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("slug")
        parser.add_argument("--name", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        slug = options["slug"]
        if slugify(slug) != slug or not slug:
            raise CommandError(f"invalid slug {slug!r}: use lowercase letters, digits and hyphens")
        tenant, created = Tenant.objects.get_or_create(slug=slug, defaults={"name": options["name"] or slug})
        self.emit(
            options,
            {"id": str(tenant.id), "slug": tenant.slug, "name": tenant.name, "created": created},
            f"{'Created' if created else 'Found'} tenant {tenant.slug} ({tenant.id})",
        )
