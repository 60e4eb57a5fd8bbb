"""A management command base whose --json flag prints one JSON object on stdout."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class JsonCommand(BaseCommand):
    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    def emit(self, options: dict[str, Any], data: dict[str, Any], human: str) -> None:
        if options.get("json"):
            self.stdout.write(json.dumps(data, default=str))
        else:
            self.stdout.write(human)
