"""`manage.py recalc_campaign_stats`: recount campaign counters from their deliveries.

The counters change only with each delivery's transition (`Delivery.move`), so this
should find nothing; it is the proof, and the repair if someone edited rows by hand.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.core.management.base import CommandError, CommandParser

from campaigns.models import Campaign
from campaigns.services import campaign_recalc_stats
from sense.management.base import JsonCommand
from sense.models import Tenant


class Command(JsonCommand):
    help = (
        "Recompute campaign stats from deliveries (one aggregate query per batch), print each campaign "
        "whose stored counters differed (before -> after) and fix them; with --check change nothing "
        "and exit 1 on any difference."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--campaign", action="append", default=[], metavar="ID", help="a campaign id (repeatable)")
        parser.add_argument("--tenant", metavar="SLUG", help="every campaign of this tenant")
        parser.add_argument("--all", action="store_true", help="every campaign")
        parser.add_argument("--check", action="store_true", help="report differences only; exit 1 if any")
        parser.add_argument("--batch-size", type=int, default=200, help="campaigns per aggregate query")

    def handle(self, *args: Any, **options: Any) -> None:
        qs = Campaign.objects.all()
        if not (options["campaign"] or options["tenant"] or options["all"]):
            raise CommandError("Say which campaigns: --campaign ID, --tenant SLUG or --all.")
        if options["tenant"]:
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"No tenant {options['tenant']!r}.")
            qs = qs.filter(tenant=tenant)
        if options["campaign"]:
            try:
                wanted = {UUID(value) for value in options["campaign"]}
            except ValueError:
                raise CommandError("--campaign takes campaign ids (UUIDs).") from None
            qs = qs.filter(pk__in=wanted)
            missing = wanted - set(qs.values_list("pk", flat=True))
            if missing:
                raise CommandError(f"No such campaign: {', '.join(sorted(map(str, missing)))}.")
        ids = list(qs.values_list("pk", flat=True))
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        fix = not options["check"]
        drifts = campaign_recalc_stats(campaign_ids=ids, fix=fix, batch_size=options["batch_size"])

        lines = []
        for drift in drifts:
            changes = ", ".join(
                f"{name} {drift.before[name]} -> {drift.after[name]}"
                for name in Campaign.STAT_NAMES
                if drift.before[name] != drift.after[name]
            )
            lines.append(f"{drift.campaign_id} {drift.name!r}: {changes}")
        verb = "fixed" if fix else "differ"
        lines.append(f"{len(ids)} campaign(s) checked, {len(drifts)} {verb}.")
        data = {"checked": len(ids), "fixed": fix and bool(drifts), "differed": [d.as_dict() for d in drifts]}
        self.emit(options, data, "\n".join(lines))
        if drifts and not fix:
            raise CommandError(
                f"{len(drifts)} campaign(s) have counters that differ from their deliveries.", returncode=1
            )
