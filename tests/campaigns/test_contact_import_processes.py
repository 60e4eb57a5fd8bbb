"""A real `rundramatiq` process SIGKILLed in the middle of a contact import: another worker's
sweeper takes the import over and finishes it, every contact once, nothing counted twice."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile

from campaigns import csv_import, services
from campaigns.models import Contact, ContactImport
from tests.campaigns.test_contact_import_api import csv_file
from tests.helpers import wait_for
from tests.live import Process, stack_env, start_worker
from tests.workers import flush_queues

pytestmark = pytest.mark.slow

ROWS = 30_000


@pytest.fixture
def import_workers(transactional_db: Any, tmp_path: Path) -> Iterator[Any]:
    flush_queues()
    started: list[Process] = []

    def start(**overrides: str) -> Process:
        env = stack_env(CONTACT_IMPORT_CHUNK_ROWS="500", **overrides)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        worker = start_worker(env, tmp_path / f"worker-{len(started)}.log", "--queues", "imports")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(signal.SIGKILL)
    flush_queues()


def _job(pk: Any) -> ContactImport:
    return ContactImport.objects.get(pk=pk)


def test_a_worker_killed_mid_import_is_taken_over_and_nothing_is_duplicated(import_workers: Any, acme: Any) -> None:
    first = import_workers(PERIODIC_ENABLED="false")
    upload = ContentFile(csv_file(ROWS), name="big.csv")
    job = services.contact_import_start(
        tenant=acme, user=None, file=upload, name="big.csv", rows=csv_import.count_lines(upload) - 1
    )
    wait_for(lambda: _job(job.pk).processed >= 2_000, timeout=60, what="the import under way")

    first.stop(signal.SIGKILL)  # returns once its database sessions are gone: what it committed is final
    killed_at = _job(job.pk)
    assert killed_at.status == "running" and 0 < killed_at.processed < ROWS, first.output()[-2000:]
    assert Contact.objects.filter(tenant=acme).count() == killed_at.created  # progress matches the rows

    second = import_workers(CONTACT_IMPORT_STALE_SECONDS="2", CONTACT_IMPORT_SWEEP_SECONDS="0.5")
    wait_for(lambda: _job(job.pk).status == "finished", timeout=120, interval=0.2, what="the import finished")

    done = _job(job.pk)
    assert (done.processed, done.created, done.updated, done.error_count) == (ROWS, ROWS, 0, 0), second.output()
    assert done.attempts == 2
    assert Contact.objects.filter(tenant=acme).count() == ROWS
