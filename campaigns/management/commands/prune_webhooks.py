"""`manage.py prune_webhooks`: delete raw bodies of processed and ignored webhook events past
the retention window (the periodic job does the same every few minutes)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from campaigns.retention import PRUNE_BATCH, webhook_events_prune
from sense.management.base import JsonCommand


class Command(JsonCommand):
    help = (
        "Delete processed and ignored webhook events received more than --days ago (default "
        "WEBHOOK_RETENTION_DAYS), in short batches; pending and failed ones are kept, and so is "
        "every delivery's status history. Prints {deleted, kept_pending}."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--days", type=int, default=None, help="retention in days (default WEBHOOK_RETENTION_DAYS)")
        parser.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
        parser.add_argument("--batch-size", type=int, default=PRUNE_BATCH, help="rows per transaction")

    def handle(self, *args: Any, **options: Any) -> None:
        days = settings.WEBHOOK_RETENTION_DAYS if options["days"] is None else options["days"]
        if days < 1:
            raise CommandError("--days must be at least 1.")
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        result = webhook_events_prune(days=days, dry_run=options["dry_run"], batch_size=options["batch_size"])
        verb = "would be deleted" if options["dry_run"] else "deleted"
        human = (
            f"{result.deleted} processed or ignored webhook event(s) older than {days} day(s) {verb}; "
            f"{result.kept_pending} pending or failed kept."
        )
        self.emit(options, result.as_dict(), human)
