from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from campaigns import services
from campaigns.models import Connection
from sense.errors import ServiceError
from sense.management.base import JsonCommand
from sense.models import Tenant


class Command(JsonCommand):
    help = (
        "Add a WhatsApp connection to a tenant. Evolution: --base-url --instance --api-key [--jwt-key]; "
        "Cloud API: [--base-url] --phone-number-id --access-token --app-secret --verify-token. "
        "Prints the webhook path the provider must call."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--provider", required=True, choices=[p.value for p in Connection.Provider])
        parser.add_argument("--name", default="", help="default: the provider and instance or number id")
        parser.add_argument("--base-url", default="", help="gateway URL (Cloud API default: CLOUD_API_BASE_URL)")
        parser.add_argument("--rate", type=int, default=60, help="messages per minute (0: no limit)")
        parser.add_argument("--instance", default="", help="Evolution instance name")
        parser.add_argument("--api-key", default="", help="Evolution API key")
        parser.add_argument("--jwt-key", default="", help="Evolution webhook JWT key (optional)")
        parser.add_argument("--phone-number-id", default="", help="Cloud API phone number id")
        parser.add_argument("--access-token", default="", help="Cloud API access token")
        parser.add_argument("--app-secret", default="", help="Cloud API app secret (webhook signatures)")
        parser.add_argument("--verify-token", default="", help="Cloud API webhook verify token")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"no tenant with slug {options['tenant']!r}")
        provider = options["provider"]
        credentials = {name: options[name] for name in services.ALLOWED_CREDENTIALS[provider] if options[name]}
        label = credentials.get("instance") or credentials.get("phone_number_id") or ""
        try:
            connection = services.connection_create(
                tenant=tenant,
                name=options["name"] or f"{provider} {label}".strip(),
                provider=provider,
                base_url=options["base_url"],
                credentials=credentials,
                rate_per_minute=options["rate"],
            )
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        webhook = services.connection_webhook_path(connection)
        self.emit(
            options,
            {"id": str(connection.id), "webhook_url": webhook},
            f"Connection {connection.name} ({connection.id}) added to {tenant.slug}.\n"
            f"Point the provider's webhook at {webhook} on this server.",
        )
