from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import CommandError, CommandParser

from campaigns import services
from campaigns.models import Connection
from sense.management.base import JsonCommand
from sense.models import Tenant


class Command(JsonCommand):
    help = (
        "Sync message templates from Meta for every active Cloud API connection with a WhatsApp "
        "Business Account id (or one --connection, or one --tenant's). Exits 1 when any failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--connection", default=None, help="connection id")
        parser.add_argument("--tenant", default=None, help="tenant slug")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = None
        if options["tenant"]:
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"no tenant with slug {options['tenant']!r}")
        connection_id = options["connection"]
        if (
            connection_id
            and not Connection.objects.filter(pk__in=[connection_id] if _uuid(connection_id) else []).exists()
        ):
            raise CommandError(f"no connection {connection_id!r}")
        results = services.templates_sync_all(tenant=tenant, connection_id=connection_id)
        lines = []
        for pk, result in results.items():
            if "error" in result:
                lines.append(f"{pk}: failed ({result['code']}): {result['error']}")
            else:
                lines.append(
                    f"{pk}: {result['synced']} listed, {result['created']} new, {result['updated']} changed, "
                    f"{result['deleted']} deleted"
                )
        self.emit(options, {"connections": results}, "\n".join(lines) or "No connection with templates to sync.")
        if any("error" in result for result in results.values()):
            raise SystemExit(1)


def _uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
