from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, CommandParser
from django.db import transaction

from sense.management.base import JsonCommand
from sense.models import Membership, Tenant


class Command(JsonCommand):
    help = "Add a user (created if needed) to a tenant with a role."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("username")
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--role", choices=[r.value for r in Membership.Role], default=Membership.Role.OPERATOR)
        parser.add_argument("--password", default=None, help="set this password (new or existing user)")
        parser.add_argument("--email", default="")
        parser.add_argument("--staff", action="store_true", help="let the user into the Django admin")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        try:
            tenant = Tenant.objects.get(slug=options["tenant"])
        except Tenant.DoesNotExist:
            raise CommandError(f"no tenant with slug {options['tenant']!r}") from None
        User = get_user_model()
        user, user_created = User.objects.get_or_create(
            username=options["username"], defaults={"email": options["email"]}
        )
        if options["password"]:
            user.set_password(options["password"])
        elif user_created:
            user.set_unusable_password()
        if options["staff"]:
            user.is_staff = True
        user.save()
        membership, created = Membership.objects.update_or_create(
            tenant=tenant, user=user, defaults={"role": options["role"]}
        )
        self.emit(
            options,
            {
                "user_id": user.pk,
                "username": user.get_username(),
                "tenant": tenant.slug,
                "role": membership.role,
                "user_created": user_created,
                "created": created,
            },
            f"{user.get_username()} is {membership.role} of {tenant.slug}",
        )
