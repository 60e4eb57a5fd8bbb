"""Contact import fed arbitrary and near-valid CSV bytes through the API and the page.

Whatever the bytes: no 5xx; a refusal is a 4xx `{"error", "code"}` (a form error on the
page) and writes nothing; a success reports as many `created` as rows appeared; every
stored phone is valid E.164 in the caller's tenant; importing the same bytes again adds
nothing. For CSV we build ourselves, the stored phones and names are exactly the valid
rows' (bad rows are reported by number, good ones imported: that is the import's contract).
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import phonenumbers
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from campaigns.models import Contact
from sense.models import Tenant
from tests.conftest import ApiClient

FIELD_LIMIT = csv.field_size_limit()
GLOBEX_PHONE = "+5511987650001"  # another tenant's contact, a phone the strategies also produce
FUZZ = settings(
    max_examples=int(os.environ.get("SENSE_FUZZ_EXAMPLES", "150")),  # raise it for a deeper run
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Outcome:
    """One import as the caller saw it: refused (with a code) or counts and bad rows."""

    refused: str | None = None
    created: int = 0
    updated: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


def import_by_api(api: ApiClient, data: bytes) -> Outcome:
    response = api.post(
        "/api/contacts/import/",
        {"file": SimpleUploadedFile("contacts.csv", data, content_type="text/csv")},
        HTTP_AUTHORIZATION=f"Bearer {api.token}",
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert response.status_code < 500, response.content[:500]
    body = response.json()
    if response.status_code != 200:
        assert 400 <= response.status_code < 500
        assert set(body) >= {"error", "code"} and body["error"], body
        assert body["code"] == "invalid_csv", body  # the one refusal of a file that was sent
        return Outcome(refused=body["code"])
    assert set(body) == {"created", "updated", "errors"}, body
    assert body["created"] >= 0 and body["updated"] >= 0
    for error in body["errors"]:
        assert set(error) == {"row", "error"} and error["row"] >= 2 and error["error"], error
    return Outcome(created=body["created"], updated=body["updated"], errors=body["errors"])


def import_by_page(client: Client, data: bytes) -> Outcome:
    response = client.post(
        "/contacts/import/", {"file": SimpleUploadedFile("contacts.csv", data, content_type="text/csv")}
    )
    assert response.status_code == 200, response.content[:500]
    form, result = response.context["form"], response.context["result"]
    if result is None:
        assert form.errors.get("file"), form.errors
        assert b'class="form-error"' in response.content
        return Outcome(refused="form_error")
    assert not form.errors
    return Outcome(created=result.created, updated=result.updated, errors=result.errors)


def stored(tenant: Tenant) -> dict[str, Contact]:
    return {c.phone: c for c in Contact.objects.filter(tenant=tenant)}


def assert_valid_e164(contacts: dict[str, Contact], tenant: Tenant) -> None:
    for phone, contact in contacts.items():
        number = phonenumbers.parse(phone, None)  # no region: it must carry its country code
        assert phonenumbers.is_valid_number(number), phone
        assert phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == phone
        assert contact.tenant_id == tenant.id


@pytest.fixture
def page_alice(alice: Any) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def globex_contact(globex: Tenant) -> Contact:
    return Contact.objects.create(tenant=globex, phone=GLOBEX_PHONE, name="Globex", tags=["theirs"])


def assert_globex_untouched(contact: Contact) -> None:
    assert list(Contact.objects.filter(tenant=contact.tenant).values_list("phone", "name", "tags")) == [
        (GLOBEX_PHONE, "Globex", ["theirs"])
    ]


# --- Strategies -------------------------------------------------------------------------

VALID_PHONES = [
    "11987650001",
    "(11) 98765-0002",
    "+55 11 98765-0003",
    "+5521987650004",
    "(21) 3456-7890",
    "+1 650 253 0000",
    "+44 20 7946 0958",
    "+351 912 345 678",
    "+81 3-1234-5678",
    "+5511987650001",  # globex has this one: importing it into acme must not touch theirs
]
INVALID_PHONES = ["", " ", "12", "abc", "+999 123", "119876500", "+55 11 98765-00010", "0055 11 98765 0005", "0", "+"]
ACCENTS = "".join(chr(c) for c in range(0xC0, 0x100))  # latin-1 bytes that never form UTF-8 on their own

phone_cells = st.one_of(
    st.sampled_from(VALID_PHONES),
    st.sampled_from(INVALID_PHONES),
    st.from_regex(r"\(?[1-9]{2}\)? ?9[0-9]{4}-?[0-9]{4}", fullmatch=True),  # national BR mobiles, mostly valid
    st.from_regex(r"\+[0-9]{1,3} [0-9]{4,12}", fullmatch=True),
    st.text(max_size=20),
)
names = st.one_of(st.text(max_size=30), st.sampled_from(["Ana", "João", "Zé Ninguém", "مريم", "李雷", "  padded  "]))


@dataclass
class Csv:
    """A CSV file we wrote, with everything needed to say what the import must do with it."""

    data: bytes
    header: list[str]  # as the import reads it (stripped, lower case)
    rows: list[list[str]]  # records after the header, as the csv module will read them back
    readable: bool  # UTF-8/Latin-1 and a header with a phone column

    def __repr__(self) -> str:
        return f"Csv({_short(self.data)!r})"


def _fit(text: str, encoding: str) -> str:
    if encoding == "latin-1":
        # Latin-1 is told from UTF-8 line by line; restrict it to text that cannot pass for UTF-8.
        return "".join(ch if ch < "\x80" or ch in ACCENTS else "?" for ch in text)
    return text


@st.composite
def near_valid_csv(draw: st.DrawFn) -> Csv:
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    delimiter = draw(st.sampled_from([",", ";"]))
    has_phone = draw(st.integers(0, 9)) > 0
    phone_title = draw(st.sampled_from(["phone", "Phone", " PHONE ", "phone\t"]))
    others = draw(
        st.lists(st.sampled_from(["name", "Name", "tags", "city", "Cidade", "e-mail", ""]), min_size=1, max_size=4)
    )
    titles = (
        [phone_title, *others] if has_phone else [draw(st.sampled_from(["telefone", "fone", "ＰＨＯＮＥ"])), *others]
    )
    titles = [_fit(t, encoding) for t in draw(st.permutations(titles))]
    header = [t.strip().lower() for t in titles]
    width = len(header)

    rows: list[list[str]] = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["row", "row", "row", "short", "long_cell", "extra", "blank", "nul"]))
        cells = [_fit(draw(names), encoding) for _ in range(width)]
        if has_phone:
            cells[header.index("phone")] = _fit(draw(phone_cells), encoding)
        if kind == "short":
            cells = cells[: draw(st.integers(0, width))]
        elif kind == "long_cell":  # a very long line, over the csv module's field limit or not
            at = draw(st.sampled_from([i for i, h in enumerate(header) if h != "phone"]))
            cells[at] = "x" * draw(st.sampled_from([5_000, FIELD_LIMIT + 1]))
            # The reader drops the rest of the line after an over-long field; a quoted newline
            # there would leave the rest of that record to be read as new (bad) rows.
            cells = [c.replace("\r", " ").replace("\n", " ") for c in cells]
        elif kind == "extra":
            cells = [*cells, "surplus"]
        elif kind == "blank":
            cells = [" "] * width
        elif kind == "nul":
            cells[draw(st.integers(0, width - 1))] += "\x00"
        rows.append(cells)

    quoting: Literal[0, 1] = csv.QUOTE_ALL if draw(st.booleans()) else csv.QUOTE_MINIMAL
    out = io.StringIO()
    out.write(draw(st.sampled_from(["", "\n", "\r\n\r\n"])))  # blank lines before the header
    for cells in [titles, *rows]:
        # Written with "\r\n" so that the writer quotes any field holding \r or \n (it only
        # quotes its own terminator's characters), then ended with \n, \r\n or \r at random.
        record = io.StringIO()
        csv.writer(record, delimiter=delimiter, quoting=quoting, lineterminator="\r\n").writerow(cells)
        line = record.getvalue().removesuffix("\r\n")
        terminator = draw(st.sampled_from(["\n", "\r\n", "\r"]))
        if not line and out.getvalue().endswith("\r") and terminator == "\n":
            terminator = "\r"  # "\r" then "\n" would be one line ending, not an empty line
        out.write(line + terminator)
    text = out.getvalue()
    if draw(st.booleans()):  # no line ending at the end of the file
        text = text.rstrip("\r\n") if rows and any(c.strip() for c in rows[-1]) else text
    if encoding == "latin-1":
        data = text.encode("latin-1")
    elif encoding == "utf-16":
        data = text.encode("utf-16")
    else:
        data = text.encode(encoding)
    readable = has_phone and encoding != "utf-16" and "\x00" not in "".join(titles)
    return Csv(data=data, header=header, rows=rows, readable=readable)


def _mutate(draw: st.DrawFn, data: bytes) -> bytes:
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        mutation = draw(st.sampled_from(["insert", "nul", "cut", "crlf", "bom"]))
        if mutation == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        elif mutation == "nul":
            data = data[:at] + b"\x00" + data[at:]
        elif mutation == "cut":
            data = data[:at]
        elif mutation == "crlf":
            data = data.replace(b"\n", b"\r\n", draw(st.integers(1, 3)))
        else:
            data = b"\xef\xbb\xbf" + data
    return data


@st.composite
def any_bytes(draw: st.DrawFn) -> bytes:
    """Noise, near-valid CSV, and near-valid CSV with bytes inserted, NULs, cuts and BOMs."""
    choice = draw(st.sampled_from(["noise", "csv", "mutated"]))
    if choice == "noise":
        return draw(
            st.one_of(st.binary(max_size=2000), st.just(b""), st.binary(max_size=50).map(lambda b: b"phone\n" + b))
        )
    built: bytes = draw(near_valid_csv()).data
    return built if choice == "csv" else _mutate(draw, built)


# --- Expectations for the CSV we built -----------------------------------------------------


def _e164(cell: str) -> str | None:
    text = cell.strip()
    if not text:
        return None
    try:
        number = phonenumbers.parse(text, "BR")  # DEFAULT_PHONE_REGION
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _short(value: Any) -> Any:
    """VALUE with any run of 100+ "x" (the very long cells) shortened, for readable notes."""
    if isinstance(value, bytes):
        return re.sub(rb"x{100,}", lambda m: b"<%d x>" % len(m.group()), value)
    return re.sub(r"x{100,}", lambda m: f"<{len(m.group())} x>", value)


def expected_import(built: Csv) -> tuple[dict[str, str], list[int]]:
    """{phone: name} that must be stored, and the numbers of the rows that must be reported."""
    contacts: dict[str, str] = {}
    bad_rows: list[int] = []
    for number, cells in enumerate(built.rows, start=2):
        if not any(c.strip() for c in cells):
            continue
        values = dict(zip(built.header, (c.strip() for c in cells), strict=False))
        phone = _e164(values.get("phone", ""))
        if (
            any("\x00" in c for c in cells)
            or any(len(c) > FIELD_LIMIT for c in cells)
            or len(cells) > len(built.header)
            or phone is None
        ):
            bad_rows.append(number)
            continue
        name = values.get("name", "")
        contacts[phone] = name or contacts.get(phone, "")  # a later row's name wins when it has one
    return {phone: name[:200] for phone, name in contacts.items()}, bad_rows


# --- Properties ----------------------------------------------------------------------------


@FUZZ
@given(data=any_bytes(), page_first=st.booleans())
def test_any_bytes_import_cleanly_or_are_refused_without_writing(
    data: bytes, page_first: bool, api_alice: ApiClient, page_alice: Client, acme: Tenant, globex_contact: Contact
) -> None:
    note(f"data={_short(data)!r}, page_first={page_first}")  # this Hypothesis prints no argument values
    Contact.objects.filter(tenant=acme).delete()

    first = import_by_page(page_alice, data) if page_first else import_by_api(api_alice, data)
    event("refused" if first.refused else f"imported, {min(first.created, 3)}+ created, bad rows: {bool(first.errors)}")
    after_first = stored(acme)
    if first.refused:
        assert after_first == {}, "a refused import wrote rows"
    else:
        assert len(after_first) == first.created
        assert first.updated == 0  # one batch into an empty book: nothing to update
    assert_valid_e164(after_first, acme)
    assert_globex_untouched(globex_contact)

    # The same bytes again, by the other entry point: the same verdict, nothing new.
    again = import_by_api(api_alice, data) if page_first else import_by_page(page_alice, data)
    assert bool(again.refused) == bool(first.refused)
    assert stored(acme).keys() == after_first.keys()
    if not again.refused:
        assert (again.created, again.updated) == (0, len(after_first))
        assert again.errors == first.errors
    assert_globex_untouched(globex_contact)


@FUZZ
@given(built=near_valid_csv())
def test_a_built_csv_imports_exactly_its_valid_rows(
    built: Csv, api_alice: ApiClient, acme: Tenant, globex_contact: Contact
) -> None:
    note(repr(built))  # this Hypothesis prints no argument values
    Contact.objects.filter(tenant=acme).delete()

    first = import_by_api(api_alice, built.data)

    if not built.readable:
        event("refused: UTF-16 or no phone column")
        assert first.refused == "invalid_csv"
        assert stored(acme) == {}
        return
    expected, bad_rows = expected_import(built)
    event(f"{min(len(expected), 3)}+ contacts, {min(len(bad_rows), 3)}+ bad rows")
    assert first.refused is None
    contacts = stored(acme)
    assert {phone: c.name for phone, c in contacts.items()} == expected
    assert (first.created, first.updated) == (len(expected), 0)
    assert [e["row"] for e in first.errors] == bad_rows
    assert_valid_e164(contacts, acme)
    assert_globex_untouched(globex_contact)

    again = import_by_api(api_alice, built.data)
    assert (again.created, again.updated) == (0, len(expected))
    assert again.errors == first.errors
    assert Contact.objects.filter(tenant=acme).count() == len(expected)
