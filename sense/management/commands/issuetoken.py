from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from sense.management.base import JsonCommand
from sense.models import ApiToken, Membership


class Command(JsonCommand):
    help = "Issue an API token for a member of a tenant. The token is printed once."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("username")
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--name", default="", help="a label for the token")

    def handle(self, *args: Any, **options: Any) -> None:
        membership = (
            Membership.objects.select_related("tenant", "user")
            .filter(user__username=options["username"], tenant__slug=options["tenant"])
            .first()
        )
        if membership is None:
            raise CommandError(f"{options['username']!r} is not a member of tenant {options['tenant']!r}")
        token, raw = ApiToken.issue(membership=membership, name=options["name"])
        self.emit(
            options,
            {"token": raw, "id": token.pk, "prefix": token.prefix, "tenant": membership.tenant.slug},
            raw,
        )
