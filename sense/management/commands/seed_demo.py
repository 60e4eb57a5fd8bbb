from __future__ import annotations

import secrets
from importlib import import_module
from importlib.util import find_spec
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management.base import CommandParser
from django.db import transaction

from sense.management.base import JsonCommand
from sense.models import Membership, Tenant


class Command(JsonCommand):
    help = (
        "Create the demo tenant and its admin user (password printed once), then let each app "
        "add its demo data (an app's `demo.seed(tenant=, user=, log=)`)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", default=None, help="default: a random one, printed")
        parser.add_argument("--tenant", default="demo", help="tenant slug")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        with transaction.atomic():
            tenant, _ = Tenant.objects.get_or_create(slug=options["tenant"], defaults={"name": "Demo"})
            user, created = User.objects.get_or_create(username=options["username"])
            password = options["password"]
            if created or password:
                password = password or secrets.token_urlsafe(12)
                user.set_password(password)
            user.is_staff = user.is_superuser = True
            user.save()
            Membership.objects.update_or_create(tenant=tenant, user=user, defaults={"role": Membership.Role.ADMIN})

        notes: list[str] = []
        for app in apps.get_app_configs():
            module_name = f"{app.name}.demo"
            if app.name == "sense" or find_spec(app.name) is None or find_spec(module_name) is None:
                continue
            import_module(module_name).seed(tenant=tenant, user=user, log=notes.append)

        login = (
            f"user {user.get_username()!r} password {password!r}"
            if password
            else f"user {user.get_username()!r} (password unchanged)"
        )
        human = "\n".join(
            [f"Demo tenant {tenant.slug} ({tenant.id}); log in at /login/ (or /admin/) as {login}", *notes]
        )
        self.emit(
            options,
            {
                "tenant": tenant.slug,
                "tenant_id": str(tenant.id),
                "username": user.get_username(),
                "password": password,
                "notes": notes,
            },
            human,
        )
