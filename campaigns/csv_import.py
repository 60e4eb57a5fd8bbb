"""Contact import from CSV: streamed line by line, upserted in batches.

The file may be UTF-8 (with or without BOM) or Latin-1, comma- or semicolon-separated.
The header needs `phone` and may have `name` and `tags` (`|`-separated); every other
column becomes an attribute. A phone seen again updates that contact (name when given,
attributes merged, tags added). Invalid rows are reported with their row number (the
header is row 1, as in a spreadsheet) while valid rows are imported; so are rows with a NUL
character (PostgreSQL cannot store it) or a field over csv.field_size_limit(). A header
with either is refused, before anything is written.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from campaigns.models import Contact, clean_tags, normalize_phone
from sense.errors import ServiceError
from sense.models import Tenant

BATCH = 1000
MAX_REPORTED_ERRORS = 1000
RESERVED = {"phone", "name", "tags"}


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0

    def error(self, row: int, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"row": row, "error": message})

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "errors": self.errors,
            "error_count": self.error_count,
        }


def decode_lines(lines: Iterable[bytes | str]) -> Iterator[str]:
    """Text lines from raw ones: UTF-8 when a line decodes as such, else Latin-1 (a Latin-1
    accent is never valid UTF-8 on its own, so each line finds its encoding)."""
    first = True
    for raw in lines:
        if isinstance(raw, str):
            text = raw
        else:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
        if first:
            text = text.lstrip("\ufeff")
            first = False
        yield text


def _delimiter(header: str) -> str:
    return ";" if header.count(";") > header.count(",") else ","


@dataclass
class _Row:
    phone: str
    name: str
    tags: list[str]
    attributes: dict[str, str]


def import_contacts(*, tenant: Tenant, lines: Iterable[bytes | str]) -> ImportResult:
    """Import the CSV given as LINES (raw bytes or text lines, e.g. an uploaded file) into TENANT."""
    text_lines = decode_lines(lines)
    header_line = next((line for line in text_lines if line.strip()), None)
    if header_line is None:
        raise ServiceError("The file is empty.", code="invalid_csv")
    if "\x00" in header_line:  # PostgreSQL stores no NUL, and an attribute name may come from here
        raise ServiceError("The header has NUL characters: save the file as UTF-8 or Latin-1 CSV.", code="invalid_csv")
    delimiter = _delimiter(header_line)
    try:
        header = [h.strip().lower() for h in next(csv.reader([header_line], delimiter=delimiter))]
    except csv.Error as exc:  # e.g. a field over csv.field_size_limit()
        raise ServiceError(f"The header cannot be read: {exc}.", code="invalid_csv") from None
    if "phone" not in header:
        raise ServiceError("The header must have a `phone` column.", code="invalid_csv")
    reader = csv.reader(text_lines, delimiter=delimiter)
    result = ImportResult()
    batch: dict[str, _Row] = {}
    index = 1
    while True:
        index += 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # a field over csv.field_size_limit(): this row only
            result.error(index, f"unreadable row: {exc}")
            continue
        if not any(c.strip() for c in cells):
            continue
        if any("\x00" in c for c in cells):  # PostgreSQL stores no NUL: refuse the row, not the batch
            result.error(index, "NUL character in the row")
            continue
        if len(cells) > len(header):
            result.error(index, f"{len(cells)} columns, the header has {len(header)}")
            continue
        values = dict(zip(header, (c.strip() for c in cells), strict=False))
        try:
            phone = normalize_phone(values.get("phone", ""))
        except ValueError as exc:
            result.error(index, str(exc))
            continue
        row = _Row(
            phone=phone,
            name=values.get("name", ""),
            tags=clean_tags(values.get("tags", "").split("|")),
            attributes={k: v for k, v in values.items() if k not in RESERVED and k and v != ""},
        )
        previous = batch.get(phone)
        if previous is not None:  # the same phone twice in one batch: merge, later wins
            row.name = row.name or previous.name
            row.tags = clean_tags([*previous.tags, *row.tags])
            row.attributes = {**previous.attributes, **row.attributes}
        batch[phone] = row
        if len(batch) >= BATCH:
            _upsert(tenant, batch, result)
            batch = {}
    if batch:
        _upsert(tenant, batch, result)
    return result


def _upsert(tenant: Tenant, batch: dict[str, _Row], result: ImportResult) -> None:
    with transaction.atomic():
        existing = {
            phone: (name, tags, attributes)
            for phone, name, tags, attributes in Contact.objects.filter(tenant=tenant, phone__in=list(batch))
            .select_for_update()
            .values_list("phone", "name", "tags", "attributes")
        }
        contacts = []
        for phone, row in batch.items():
            name, tags, attributes = row.name, row.tags, row.attributes
            if phone in existing:
                old_name, old_tags, old_attributes = existing[phone]
                name = name or old_name
                tags = clean_tags([*(old_tags or []), *tags])
                attributes = {**(old_attributes or {}), **attributes}
            contacts.append(Contact(tenant=tenant, phone=phone, name=name[:200], tags=tags, attributes=attributes))
        Contact.objects.bulk_create(
            contacts,
            update_conflicts=True,
            unique_fields=["tenant", "phone"],
            update_fields=["name", "tags", "attributes", "updated_at"],
        )
    result.updated += len(existing)
    result.created += len(batch) - len(existing)
