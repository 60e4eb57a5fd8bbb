from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from campaigns import services
from campaigns.providers import registry
from sense.errors import ServiceError
from sense.management.base import JsonCommand
from sense.models import Tenant


class Command(JsonCommand):
    help = (
        "Add a WhatsApp connection to a tenant with the credentials its provider declares "
        "(see the options). Prints the webhook path the provider must call."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--provider", required=True, choices=list(registry))
        parser.add_argument("--name", default="", help="default: the provider and instance or number id")
        parser.add_argument("--base-url", default="", help="gateway URL (Cloud API default: CLOUD_API_BASE_URL)")
        parser.add_argument("--rate", type=int, default=60, help="messages per minute (0: no limit)")
        seen = set()
        for cls in registry.values():
            for cred in cls.credentials:
                if cred.name not in seen:
                    seen.add(cred.name)
                    optional = "" if cred.required else " (optional)"
                    parser.add_argument(f"--{cred.name.replace('_', '-')}", default="", help=cred.label + optional)

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"no tenant with slug {options['tenant']!r}")
        provider = options["provider"]
        credentials = {name: options[name] for name in registry[provider].allowed_credentials() if options[name]}
        # The first declared credential names the account (Evolution's instance, Cloud's
        # number id); never another one, which may be a secret.
        label = credentials.get(registry[provider].credentials[0].name, "")
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
