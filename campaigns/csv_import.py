"""Contact import from CSV: streamed line by line, upserted in chunks of rows.

The file may be UTF-8 (with or without BOM) or Latin-1, comma- or semicolon-separated.
The header needs `phone` and may have `name` and `tags` (`|`-separated); every other
column becomes an attribute. A phone seen again updates that contact (name when given,
attributes merged, tags added); an import never changes whether a contact opted out.
Invalid rows are reported with their row number (the header is row 1, as in a
spreadsheet) while valid rows are imported; so are rows with a NUL character (PostgreSQL
cannot store it) or a field over csv.field_size_limit(). A header with either is refused,
before anything is written.

Both ways of importing read the file with `read_chunks`: inside the request
(`import_contacts`, small files) and in a worker (`campaigns.services.contact_import_run`),
which records each chunk's end (row number and byte offset) with its upsert, so that a
resumed import starts reading exactly where the last committed chunk stopped.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models.expressions import RawSQL
from django.utils import timezone

from campaigns.models import Contact, clean_tags, normalize_phone
from sense.errors import ServiceError
from sense.models import Tenant

MAX_REPORTED_ERRORS = 1000
RESERVED = {"phone", "name", "tags"}
READ_SIZE = 1024 * 1024


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


def split_lines(fp: IO[bytes], offset: int = 0) -> Iterator[bytes]:
    """The lines of the binary file FP from byte OFFSET, with their endings, cut exactly as
    iterating a Django File cuts them (\\n, \\r\\n or a lone \\r; an uploaded file is read
    that way); File's own iteration cannot start anywhere but at the beginning."""
    fp.seek(offset)
    buffer_ = b""
    while chunk := fp.read(READ_SIZE):
        for line in chunk.splitlines(True):
            if buffer_:
                if buffer_.endswith(b"\r") and line != b"\n":
                    yield buffer_
                else:
                    line = buffer_ + line
                buffer_ = b""
            if line.endswith(b"\n"):
                yield line
            else:
                buffer_ = line
    if buffer_:
        yield buffer_


def count_lines(fp: IO[bytes]) -> int:
    """About how many lines FP holds (newlines counted, without parsing): cheap enough to
    decide, while answering the upload, whether the import goes to a worker."""
    fp.seek(0)
    newlines = returns = 0
    last = b""
    while chunk := fp.read(READ_SIZE):
        newlines += chunk.count(b"\n")
        returns += chunk.count(b"\r")
        last = chunk[-1:]
    fp.seek(0)
    lines = newlines or returns  # files from old Macs end lines with \r alone
    return lines + (1 if last and last not in b"\r\n" else 0)


class _CountedLines:
    """Iterates LINES, counting their bytes: when the csv reader has returned a record it has
    taken no line beyond it, so `offset` is then where the next record starts."""

    def __init__(self, lines: Iterable[bytes | str], offset: int) -> None:
        self._lines = iter(lines)
        self.offset = offset

    def __iter__(self) -> Iterator[bytes | str]:
        for line in self._lines:
            self.offset += len(line)
            yield line


def decode_lines(lines: Iterable[bytes | str], *, strip_bom: bool = True) -> Iterator[str]:
    """Text lines from raw ones: UTF-8 when a line decodes as such, else Latin-1 (a Latin-1
    accent is never valid UTF-8 on its own, so each line finds its encoding). The first
    line loses its BOM, when STRIP_BOM (the lines start at the file's beginning)."""
    first = strip_bom
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


@dataclass(frozen=True)
class Header:
    columns: list[str]
    delimiter: str


def read_header(text_lines: Iterator[str]) -> Header:
    """The header, from the first line that is not blank (taken from TEXT_LINES). Raises
    ServiceError `invalid_csv` when it cannot be used."""
    header_line = next((line for line in text_lines if line.strip()), None)
    if header_line is None:
        raise ServiceError("The file is empty.", code="invalid_csv")
    if "\x00" in header_line:  # PostgreSQL stores no NUL, and an attribute name may come from here
        raise ServiceError("The header has NUL characters: save the file as UTF-8 or Latin-1 CSV.", code="invalid_csv")
    delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
    try:
        columns = [h.strip().lower() for h in next(csv.reader([header_line], delimiter=delimiter))]
    except csv.Error as exc:  # e.g. a field over csv.field_size_limit()
        raise ServiceError(f"The header cannot be read: {exc}.", code="invalid_csv") from None
    if "phone" not in columns:
        raise ServiceError("The header must have a `phone` column.", code="invalid_csv")
    return Header(columns=columns, delimiter=delimiter)


def header_of(fp: IO[bytes]) -> Header:
    """The header of the binary file FP (ServiceError `invalid_csv` when unusable)."""
    return read_header(decode_lines(split_lines(fp)))


@dataclass
class _Row:
    phone: str
    name: str
    tags: list[str]
    attributes: dict[str, str]


@dataclass
class Chunk:
    """Rows read from LAST_ROW - (chunk size) + 1 to LAST_ROW: the valid ones merged by phone
    (a phone twice: the later row wins, tags and attributes added up), the bad ones as
    errors in row order. OFFSET is the byte where the next row starts."""

    rows: dict[str, _Row]
    errors: list[dict[str, Any]]
    last_row: int
    offset: int


def read_chunks(
    lines: Iterable[bytes | str],
    *,
    chunk_rows: int,
    header: Header | None = None,
    first_row: int = 2,
    offset: int = 0,
) -> Iterator[Chunk]:
    """The rows of LINES in chunks that end at rows 1 + k * CHUNK_ROWS (and at the end).

    LINES start at the beginning of the file (HEADER None: it is read from them) or at byte
    OFFSET, where row FIRST_ROW of a file with HEADER starts (a chunk's end, to resume)."""
    counted = _CountedLines(lines, offset)
    text_lines = decode_lines(counted, strip_bom=header is None)
    if header is None:
        header = read_header(text_lines)
    columns = header.columns
    width = len(columns)
    reader = csv.reader(text_lines, delimiter=header.delimiter)
    rows: dict[str, _Row] = {}
    errors: list[dict[str, Any]] = []
    index = yielded = first_row - 1  # the last row read, and the last row of a chunk yielded
    while True:
        if index > yielded and (index - 1) % chunk_rows == 0:
            yield Chunk(rows=rows, errors=errors, last_row=index, offset=counted.offset)
            rows, errors, yielded = {}, [], index
        index += 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # a field over csv.field_size_limit(): this row only
            errors.append({"row": index, "error": f"unreadable row: {exc}"})
            continue
        if not any(c.strip() for c in cells):
            continue
        if any("\x00" in c for c in cells):  # PostgreSQL stores no NUL: refuse the row, not the chunk
            errors.append({"row": index, "error": "NUL character in the row"})
            continue
        if len(cells) > width:
            errors.append({"row": index, "error": f"{len(cells)} columns, the header has {width}"})
            continue
        values = dict(zip(columns, (c.strip() for c in cells), strict=False))
        try:
            phone = normalize_phone(values.get("phone", ""))
        except ValueError as exc:
            errors.append({"row": index, "error": str(exc)})
            continue
        row = _Row(
            phone=phone,
            name=values.get("name", ""),
            tags=clean_tags(values.get("tags", "").split("|")),
            attributes={k: v for k, v in values.items() if k not in RESERVED and k and v != ""},
        )
        previous = rows.get(phone)
        if previous is not None:  # the same phone twice in one chunk: merge, later wins
            row.name = row.name or previous.name
            row.tags = clean_tags([*previous.tags, *row.tags])
            row.attributes = {**previous.attributes, **row.attributes}
        rows[phone] = row
    if index - 1 > yielded:
        yield Chunk(rows=rows, errors=errors, last_row=index - 1, offset=counted.offset)


def upsert(tenant: Tenant, rows: dict[str, _Row]) -> tuple[int, int]:
    """Create or update the contacts of ROWS in TENANT; returns (created, updated). Existing
    contacts keep their name when the row has none, their tags and attributes (the row's
    are added) and their opt-out."""
    if not rows:
        return 0, 0
    with transaction.atomic():
        if connection.vendor != "postgresql":
            return _merge_and_write(tenant, rows, created=0)
        # New phones first, in one statement that skips the existing ones; only those are then
        # read, merged and written (an import into an empty book reads nothing back).
        with connection.cursor() as cursor:
            cursor.execute(INSERT_NEW_SQL, [tenant.pk, *_now_twice(), _json(rows, {})])
            new = {phone for (phone,) in cursor.fetchall()}
        left = {phone: row for phone, row in rows.items() if phone not in new}
        return _merge_and_write(tenant, left, created=len(new)) if left else (len(new), 0)


def _merge_and_write(tenant: Tenant, rows: dict[str, _Row], *, created: int) -> tuple[int, int]:
    existing = {
        phone: (name, tags, attributes)
        for phone, name, tags, attributes in Contact.objects.filter(tenant=tenant, phone__in=_phones(rows))
        .select_for_update()
        .order_by()
        .values_list("phone", "name", "tags", "attributes")
    }
    if connection.vendor != "postgresql":
        Contact.objects.bulk_create(
            [Contact(tenant=tenant, **c) for c in _merged(rows, existing)],
            update_conflicts=True,
            unique_fields=["tenant", "phone"],
            update_fields=["name", "tags", "attributes", "updated_at"],
        )
    else:
        with connection.cursor() as cursor:
            cursor.execute(UPSERT_SQL, [tenant.pk, *_now_twice(), _json(rows, existing)])
    return created + len(rows) - len(existing), len(existing)


def _merged(rows: dict[str, _Row], existing: dict[str, tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
    """The fields to write for ROWS, merged with the EXISTING contacts' (phone -> name, tags, attributes)."""
    for phone, row in rows.items():
        name, tags, attributes = row.name, row.tags, row.attributes
        if phone in existing:
            old_name, old_tags, old_attributes = existing[phone]
            name = name or old_name
            tags = clean_tags([*(old_tags or []), *tags])
            attributes = {**(old_attributes or {}), **attributes}
        yield {"phone": phone, "name": name[:200], "tags": tags, "attributes": attributes}


def _phones(rows: dict[str, _Row]) -> Any:
    """The phones of ROWS for an `__in` lookup. On PostgreSQL one JSON parameter: with
    thousands of placeholders the query takes longer to parse and plan than to run."""
    if connection.vendor != "postgresql":
        return list(rows)
    return RawSQL("SELECT jsonb_array_elements_text(%s::jsonb)", [json.dumps(list(rows))])


def _json(rows: dict[str, _Row], existing: dict[str, tuple[Any, ...]]) -> str:
    return json.dumps(list(_merged(rows, existing)), ensure_ascii=False)


def _now_twice() -> tuple[datetime, datetime]:
    now = timezone.now()
    return now, now


# The rows travel as one JSON parameter: psycopg dumps list parameters element by element in
# Python, so bulk_create (one array per column, UNNEST) spends more time dumping a chunk than
# PostgreSQL spends writing it. Opt-outs are never written: new contacts are not opted out.
_INSERT = f"""
    INSERT INTO {Contact._meta.db_table}
        (tenant_id, phone, name, tags, attributes, opted_out, source, created_at, updated_at)
    SELECT %s, r.phone, r.name, r.tags, r.attributes, false, 'import', %s, %s
    FROM jsonb_to_recordset(%s::jsonb) AS r(phone text, name text, tags jsonb, attributes jsonb)
"""
INSERT_NEW_SQL = _INSERT + "ON CONFLICT (tenant_id, phone) DO NOTHING RETURNING phone"
UPSERT_SQL = _INSERT + (
    "ON CONFLICT (tenant_id, phone) DO UPDATE SET name = EXCLUDED.name, tags = EXCLUDED.tags, "
    "attributes = EXCLUDED.attributes, updated_at = EXCLUDED.updated_at"
)


def import_contacts(*, tenant: Tenant, lines: Iterable[bytes | str]) -> ImportResult:
    """Import the CSV given as LINES (raw bytes or text lines, e.g. an uploaded file) into
    TENANT, one transaction per chunk of CONTACT_IMPORT_CHUNK_ROWS rows."""
    result = ImportResult()
    for chunk in read_chunks(lines, chunk_rows=settings.CONTACT_IMPORT_CHUNK_ROWS):
        for error in chunk.errors:
            result.error(error["row"], error["error"])
        created, updated = upsert(tenant, chunk.rows)
        result.created += created
        result.updated += updated
    return result
