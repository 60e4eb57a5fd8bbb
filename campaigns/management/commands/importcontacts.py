from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from campaigns import services
from sense.errors import ServiceError
from sense.management.base import JsonCommand
from sense.models import Tenant


class Command(JsonCommand):
    help = (
        "Import contacts from a CSV file (UTF-8 or Latin-1, comma or semicolon; header with `phone`, "
        "optional `name` and `tags` separated by |, other columns become attributes)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("file", help="path to the CSV file")
        parser.add_argument("--tenant", required=True, help="tenant slug")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"no tenant with slug {options['tenant']!r}")
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
        try:
            with path.open("rb") as handle:
                result = services.contacts_import(tenant=tenant, file=handle)
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        lines = [f"{result.created} created, {result.updated} updated, {result.error_count} row(s) with errors"]
        lines += [f"  row {e['row']}: {e['error']}" for e in result.errors]
        self.emit(options, result.as_dict(), "\n".join(lines))
