"""Contact import through the API: small files in the request (200, as before), larger ones
in a worker (202, then `GET /api/contacts/imports/{id}/` and the bad rows as CSV)."""

from __future__ import annotations

import csv
import io
from typing import Any

import dramatiq
import pytest
from asgiref.sync import async_to_sync
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from campaigns import services
from campaigns.models import Contact, ContactImport, ContactImportError
from media import objects
from tests.conftest import ApiClient
from tests.helpers import wait_for


def phone(i: int) -> str:
    return f"+55119{20000000 + i:08d}"


def csv_file(rows: int, *, start: int = 0, header: str = "phone,name,segment", bad: set[int] | None = None) -> bytes:
    """A CSV of ROWS contacts; data rows whose index (0-based) is in BAD get an invalid phone."""
    lines = [header]
    for i in range(start, start + rows):
        lines.append(f"{'not a phone' if bad and i - start in bad else phone(i)},Person {i},s{i % 7}")
    return ("\n".join(lines) + "\n").encode()


def streamed(response: Any) -> str:
    """The body of a response whose content is an async iterator, read as ASGI reads it."""

    async def collect() -> bytes:
        return b"".join([part async for part in response.streaming_content])

    return async_to_sync(collect)().decode()


def upload(api: ApiClient, data: bytes, name: str = "contacts.csv") -> Any:
    return api.post(
        "/api/contacts/import/",
        {"file": SimpleUploadedFile(name, data, content_type="text/csv")},
        HTTP_AUTHORIZATION=f"Bearer {api.token}",
    )


@pytest.fixture
def small_limit(settings: Any) -> None:
    settings.CONTACT_IMPORT_SYNC_MAX_ROWS = 10
    settings.CONTACT_IMPORT_CHUNK_ROWS = 4


def test_a_file_up_to_the_limit_is_imported_in_the_request(api_alice: ApiClient, acme: Any, small_limit: None) -> None:
    response = upload(api_alice, csv_file(10))

    assert response.status_code == 200, response.content
    assert response.json() == {"created": 10, "updated": 0, "errors": []}
    assert Contact.objects.filter(tenant=acme).count() == 10
    assert not ContactImport.objects.exists()


def test_a_larger_file_answers_202_at_once_and_is_queued_in_storage(
    api_alice: ApiClient, acme: Any, alice: Any, small_limit: None
) -> None:
    response = upload(api_alice, csv_file(11), name="spring list.csv")

    assert response.status_code == 202, response.content
    body = response.json()
    job = ContactImport.objects.get(pk=body["import_id"])
    assert body == {"import_id": str(job.pk), "status_url": f"/api/contacts/imports/{job.pk}/"}
    assert (job.tenant, job.created_by, job.original_name) == (acme, alice, "spring list.csv")
    assert (job.status, job.total, job.processed) == ("queued", 11, 0)
    assert not Contact.objects.filter(tenant=acme).exists()  # nothing imported inside the request
    with objects.open_object(job.file_key) as stored:  # the file is where any worker can read it
        assert stored.read() == csv_file(11)
    status = api_alice.get_json(body["status_url"]).json()
    assert {k: status[k] for k in ("status", "total", "processed", "created", "updated", "error_count")} == {
        "status": "queued",
        "total": 11,
        "processed": 0,
        "created": 0,
        "updated": 0,
        "error_count": 0,
    }


def test_a_larger_file_without_a_phone_column_is_refused_and_nothing_is_kept(
    api_alice: ApiClient, acme: Any, small_limit: None
) -> None:
    response = upload(api_alice, csv_file(20, header="telefone,name,segment"))

    assert response.status_code == 400 and response.json()["code"] == "invalid_csv"
    assert not ContactImport.objects.exists()
    assert not Contact.objects.filter(tenant=acme).exists()


def test_the_status_shows_the_progress_then_the_final_counts(
    api_alice: ApiClient, acme: Any, small_limit: None, monkeypatch: Any
) -> None:
    Contact.objects.create(tenant=acme, phone=phone(0), name="Already here")
    body = upload(api_alice, csv_file(12)).json()
    seen: list[dict[str, Any]] = []
    record_chunk = ContactImport.record_chunk

    def record_and_look(self: ContactImport, **kwargs: Any) -> None:
        record_chunk(self, **kwargs)
        seen.append(api_alice.get_json(body["status_url"]).json())

    monkeypatch.setattr(ContactImport, "record_chunk", record_and_look)

    services.contact_import_run(import_id=body["import_id"])

    assert [(s["status"], s["processed"], s["created"], s["updated"]) for s in seen] == [
        ("running", 4, 3, 1),
        ("running", 8, 7, 1),
        ("running", 12, 11, 1),
    ]
    final = api_alice.get_json(body["status_url"]).json()
    assert {k: final[k] for k in ("status", "total", "processed", "created", "updated", "error_count", "errors")} == {
        "status": "finished",
        "total": 12,
        "processed": 12,
        "created": 11,
        "updated": 1,
        "error_count": 0,
        "errors": [],
    }
    assert Contact.objects.filter(tenant=acme).count() == 12


def test_bad_rows_are_listed_and_all_of_them_downloadable_as_csv(
    api_alice: ApiClient, acme: Any, small_limit: None, monkeypatch: Any
) -> None:
    monkeypatch.setattr(ContactImport, "MAX_REPORTED_ERRORS", 3)
    data = csv_file(20, bad={1, 5, 6, 9, 19}) + b"+5511987650001,Extra,s,surplus\n"
    body = upload(api_alice, data).json()

    services.contact_import_run(import_id=body["import_id"])

    status = api_alice.get_json(body["status_url"]).json()
    assert status["status"] == "finished" and status["created"] == 15
    assert status["error_count"] == 6
    assert status["errors"] == [
        {"row": 3, "error": "invalid phone"},
        {"row": 7, "error": "invalid phone"},
        {"row": 8, "error": "invalid phone"},
    ]
    download = api_alice.get_json(status["errors_url"])
    assert download.status_code == 200
    assert download["Content-Type"] == "text/csv; charset=utf-8"
    assert download["Content-Disposition"] == f'attachment; filename="import-{body["import_id"]}-errors.csv"'
    rows = list(csv.reader(io.StringIO(streamed(download))))
    assert rows == [
        ["row", "error"],
        ["3", "invalid phone"],
        ["7", "invalid phone"],
        ["8", "invalid phone"],
        ["11", "invalid phone"],
        ["21", "invalid phone"],
        ["22", "4 columns, the header has 3"],
    ]
    assert ContactImportError.objects.filter(tenant=acme).count() == 6


def test_another_tenants_import_is_not_found(
    api_alice: ApiClient, api_charlie: ApiClient, small_limit: None, acme: Any
) -> None:
    body = upload(api_alice, csv_file(11)).json()
    services.contact_import_run(import_id=body["import_id"])

    for path in (body["status_url"], f"{body['status_url']}errors/"):
        response = api_charlie.get_json(path)
        assert response.status_code == 404 and response.json()["code"] == "not_found"
        assert api_alice.get_json(path).status_code == 200


def test_a_50000_row_file_answers_at_once_and_a_worker_imports_it(
    api_alice: ApiClient, acme: Any, dramatiq_worker: dramatiq.Worker
) -> None:
    response = upload(api_alice, csv_file(50_000))

    assert response.status_code == 202, response.content
    status_url = response.json()["status_url"]

    def finished() -> bool:
        return bool(api_alice.get_json(status_url).json()["status"] == "finished")

    wait_for(finished, timeout=120, interval=0.2, what="the import to finish")
    status = api_alice.get_json(status_url).json()
    assert (status["total"], status["processed"], status["created"], status["errors"]) == (50_000, 50_000, 50_000, [])
    assert Contact.objects.filter(tenant=acme).count() == 50_000
    assert not default_storage.exists(ContactImport.objects.get().file_key)  # deleted once done
