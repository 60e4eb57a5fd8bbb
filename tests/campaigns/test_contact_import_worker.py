"""The background contact import (`run_contact_import`): chunks committed with their progress,
crashes resumed after the last committed chunk without duplicates, claims, the sweeper, and
the same rules as the import inside a request."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from campaigns import csv_import, services, tasks
from campaigns.models import Contact, ContactImport, ContactImportError, LostClaim
from media import objects
from sense.errors import ServiceError
from sense.models import Tenant
from tests.campaigns.test_contact_import_api import csv_file, phone
from tests.fuzz.test_csv_import_fuzz import Csv, near_valid_csv


class Crash(BaseException):
    """The worker dies here (raised where a SIGKILL could land)."""


def queue(tenant: Tenant, data: bytes, name: str = "contacts.csv") -> ContactImport:
    """An import of DATA queued as the upload queues it (file in storage, job not sent)."""
    upload = ContentFile(data, name=name)
    return services.contact_import_start(
        tenant=tenant, user=None, file=upload, name=name, rows=csv_import.count_lines(upload) - 1
    )


@contextmanager
def crash_at_chunk(number: int, *, killed: bool) -> Iterator[None]:
    """The worker dies as it starts chunk NUMBER (the ones before it are committed). KILLED:
    it gets no chance to put the import back in the queue (SIGKILL); else it does."""
    calls = {"n": 0}
    lock_claim = ContactImport.lock_claim

    def lock(self: ContactImport) -> None:
        calls["n"] += 1
        if calls["n"] == number:
            raise Crash
        lock_claim(self)

    with mock.patch.object(ContactImport, "lock_claim", lock):
        if killed:
            with mock.patch.object(ContactImport, "release", lambda self: True):
                yield
        else:
            yield


def contacts(tenant: Tenant) -> dict[str, tuple[Any, ...]]:
    return {
        c.phone: (c.name, c.tags, c.attributes, c.opted_out)
        for c in Contact.objects.filter(tenant=tenant).order_by("phone")
    }


@pytest.fixture
def chunks_of_4(settings: Any) -> None:
    settings.CONTACT_IMPORT_CHUNK_ROWS = 4


def test_a_killed_worker_is_replaced_and_goes_on_after_the_last_committed_chunk(
    acme: Any, chunks_of_4: None, monkeypatch: Any
) -> None:
    job = queue(acme, csv_file(18, bad={5}))
    with crash_at_chunk(3, killed=True), pytest.raises(Crash):
        services.contact_import_run(import_id=job.pk)

    job.refresh_from_db()
    assert (job.status, job.processed, job.created, job.updated, job.error_count) == ("running", 8, 7, 0, 1)
    assert Contact.objects.filter(tenant=acme).count() == 7
    services.contact_import_run(import_id=job.pk)  # its claim is still fresh: nobody takes over yet
    assert ContactImport.objects.get(pk=job.pk).processed == 8

    sent: list[str] = []
    monkeypatch.setattr(tasks.run_contact_import, "send", lambda import_id: sent.append(import_id))
    ContactImport.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=10))
    assert services.contact_imports_sweep() == 1 and sent == [str(job.pk)]
    written: list[list[str]] = []
    upsert = csv_import.upsert

    def spy(tenant: Tenant, rows: dict[str, Any]) -> tuple[int, int]:
        written.append(list(rows))
        return upsert(tenant, rows)

    monkeypatch.setattr(csv_import, "upsert", spy)
    services.contact_import_run(import_id=sent[0])

    job.refresh_from_db()
    assert (job.status, job.attempts, job.total, job.processed) == ("finished", 2, 18, 18)
    assert (job.created, job.updated, job.error_count) == (17, 0, 1)  # none counted twice
    assert written[0][0] == phone(8)  # the resumed worker started after the committed chunks
    assert sorted(contacts(acme)) == sorted(phone(i) for i in range(18) if i != 5)
    assert list(ContactImportError.objects.filter(contact_import=job).values_list("row", "error")) == [
        (7, "invalid phone")
    ]


def test_an_error_puts_the_import_back_in_the_queue_and_the_retry_goes_on(acme: Any, chunks_of_4: None) -> None:
    job = queue(acme, csv_file(10))
    with crash_at_chunk(2, killed=False), pytest.raises(Crash):
        services.contact_import_run(import_id=job.pk)

    job.refresh_from_db()
    assert (job.status, job.processed, job.claim_token) == ("queued", 4, None)
    services.contact_import_run(import_id=job.pk)  # Dramatiq's retry: claims it at once

    job.refresh_from_db()
    assert (job.status, job.processed, job.created, job.updated) == ("finished", 10, 10, 0)


def test_a_worker_whose_claim_was_taken_over_stops_without_writing(acme: Any) -> None:
    job = queue(acme, csv_file(3))
    first = ContactImport.claim(job.pk, stale_after=60)
    assert first is not None
    assert ContactImport.claim(job.pk, stale_after=60) is None  # a live claim is not taken
    ContactImport.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=61))
    second = ContactImport.claim(job.pk, stale_after=60)
    assert second is not None and second.claim_token != first.claim_token

    with pytest.raises(LostClaim):
        first.lock_claim()
    with pytest.raises(LostClaim):
        first.record_chunk(last_row=4, offset=10, created=3, updated=0, errors=[])
    assert not first.finish() and not first.fail("x") and not first.release()
    assert ContactImport.objects.get(pk=job.pk).processed == 0


def test_an_import_never_clears_an_opt_out_and_merges_like_the_request_import(acme: Any, settings: Any) -> None:
    settings.CONTACT_IMPORT_CHUNK_ROWS = 2
    Contact.objects.create(tenant=acme, phone=phone(1), name="Old", tags=["old"], attributes={"a": "1"}, opted_out=True)
    data = (
        "phone,name,tags,city\n"
        f"{phone(0)},Ana,vip|promo,Recife\n"
        f"{phone(1)},,new|old,Natal\n"
        f"{phone(0)},,late,\n"  # the same phone in the next chunk: updated, name kept
        f"{phone(2)},Bia,,\n"
    ).encode()
    services.contact_import_run(import_id=queue(acme, data).pk)

    assert contacts(acme) == {
        phone(0): ("Ana", ["vip", "promo", "late"], {"city": "Recife"}, False),
        phone(1): ("Old", ["old", "new"], {"a": "1", "city": "Natal"}, True),
        phone(2): ("Bia", [], {}, False),
    }
    job = ContactImport.objects.get()
    assert (job.status, job.created, job.updated) == ("finished", 2, 2)


def test_the_sweeper_sends_lost_and_silent_imports_again_and_leaves_the_others(acme: Any, monkeypatch: Any) -> None:
    sent: list[str] = []
    monkeypatch.setattr(tasks.run_contact_import, "send", lambda import_id: sent.append(import_id))
    long_ago = timezone.now() - timedelta(minutes=10)
    fresh = queue(acme, csv_file(3))
    lost = queue(acme, csv_file(3))
    silent = queue(acme, csv_file(3))
    alive = queue(acme, csv_file(3))
    done = queue(acme, csv_file(3))
    ContactImport.objects.filter(pk=lost.pk).update(heartbeat_at=long_ago)
    ContactImport.objects.filter(pk=silent.pk).update(status="running", claim_token=silent.pk, heartbeat_at=long_ago)
    ContactImport.objects.filter(pk=alive.pk).update(status="running", claim_token=alive.pk)
    ContactImport.objects.filter(pk=done.pk).update(status="finished", heartbeat_at=long_ago)

    assert services.contact_imports_sweep() == 2
    assert sorted(sent) == sorted([str(lost.pk), str(silent.pk)])
    silent.refresh_from_db()
    assert (silent.status, silent.claim_token) == ("queued", None)  # the silent worker's claim is withdrawn
    assert services.contact_imports_sweep() == 0  # sent once, not at every sweep
    statuses = dict(ContactImport.objects.values_list("pk", "status"))
    assert (statuses[fresh.pk], statuses[alive.pk], statuses[done.pk]) == ("queued", "running", "finished")


def test_an_import_interrupted_too_often_fails(acme: Any, settings: Any) -> None:
    job = queue(acme, csv_file(3))
    ContactImport.objects.filter(pk=job.pk).update(attempts=settings.CONTACT_IMPORT_MAX_ATTEMPTS)

    services.contact_import_run(import_id=job.pk)

    job.refresh_from_db()
    assert job.status == "failed" and "interrupted 5 times" in job.failure
    assert not Contact.objects.filter(tenant=acme).exists()


def test_a_stored_file_that_cannot_be_imported_fails_with_the_reason(acme: Any) -> None:
    key = f"tenants/{acme.pk}/imports/broken.csv"
    objects.put_bytes(key, b"name,city\nAna,Recife\n", "text/csv")
    job = ContactImport.objects.create(tenant=acme, file_key=key, original_name="broken.csv", total=1)

    services.contact_import_run(import_id=job.pk)

    job.refresh_from_db()
    assert (job.status, job.failure) == ("failed", "The header must have a `phone` column.")


def test_a_finished_import_is_not_run_again(acme: Any) -> None:
    job = queue(acme, csv_file(3))
    services.contact_import_run(import_id=job.pk)
    Contact.objects.filter(tenant=acme).delete()

    services.contact_import_run(import_id=job.pk)  # a duplicate message

    assert not Contact.objects.filter(tenant=acme).exists()
    assert ContactImport.objects.get(pk=job.pk).attempts == 1


@settings(
    max_examples=int(os.environ.get("SENSE_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(built=near_valid_csv(), chunk_rows=st.integers(1, 5), crash=st.integers(0, 6), killed=st.booleans())
def test_a_background_import_crashed_anywhere_ends_as_the_request_import(
    built: Csv, chunk_rows: int, crash: int, killed: bool, acme: Tenant, globex: Tenant
) -> None:
    """Whatever the file, chunk size and crash point: the same contacts, counts and bad rows."""
    note(repr(built))
    Contact.objects.filter(tenant__in=[acme, globex]).delete()
    with mock.patch("django.conf.settings.CONTACT_IMPORT_CHUNK_ROWS", chunk_rows):
        try:
            expected = csv_import.import_contacts(tenant=acme, lines=ContentFile(built.data))
        except ServiceError:
            return  # refused in the request; the upload refuses it too (its header is checked)
        job = queue(globex, built.data)
        if crash:
            with crash_at_chunk(crash, killed=killed):
                try:
                    services.contact_import_run(import_id=job.pk)
                except Crash:
                    ContactImport.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
        services.contact_import_run(import_id=job.pk)

    job.refresh_from_db()
    assert job.status == "finished", job.failure
    assert contacts(globex) == contacts(acme)
    assert (job.created, job.updated, job.error_count) == (expected.created, expected.updated, expected.error_count)
    assert job.errors == expected.errors
    assert job.processed == job.total
