"""Fixtures for campaign tests: the provider simulator, connections on it, contacts, and
real `rundramatiq` worker processes for the tests that kill or multiply workers."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from campaigns import ratelimit
from campaigns.models import Campaign, Connection, Contact
from sense.models import Tenant
from tests.live import Process, stack_env, start_worker
from tests.simulator import ProviderSimulator


@pytest.fixture
def sim() -> Iterator[ProviderSimulator]:
    with ProviderSimulator() as simulator:
        yield simulator


@pytest.fixture(autouse=True)
def _fresh_limiter() -> Iterator[None]:
    ratelimit.reset()
    yield
    ratelimit.reset()


@pytest.fixture
def evolution(acme: Tenant, sim: ProviderSimulator) -> Connection:
    return Connection.objects.create(
        tenant=acme,
        name="Evolution on the simulator",
        provider=Connection.Provider.EVOLUTION,
        base_url=sim.base_url,
        credentials={"instance": "acme-1", "api_key": "evo-secret-key"},
        rate_per_minute=0,
    )


@pytest.fixture
def cloud(acme: Tenant, sim: ProviderSimulator) -> Connection:
    return Connection.objects.create(
        tenant=acme,
        name="Cloud API on the simulator",
        provider=Connection.Provider.CLOUD,
        base_url=f"{sim.base_url}/v21.0",
        credentials={
            "phone_number_id": "1234567890",
            "access_token": "cloud-secret-token",
            "app_secret": "app-secret",
            "verify_token": "verify",
        },
        rate_per_minute=0,
    )


def phone(i: int) -> str:
    """A valid Brazilian mobile number, distinct for each I."""
    return f"+55119{10000000 + i:08d}"


@pytest.fixture
def make_contacts(acme: Tenant) -> Callable[..., list[Contact]]:
    def make(n: int, *, tenant: Tenant | None = None, start: int = 0, **fields: Any) -> list[Contact]:
        return Contact.objects.bulk_create(
            [
                Contact(tenant=tenant or acme, phone=phone(start + i), name=f"Contact {start + i}", **fields)
                for i in range(n)
            ]
        )

    return make


@pytest.fixture
def make_campaign(acme: Tenant, alice: Any) -> Callable[..., Campaign]:
    def make(connection: Connection, **fields: Any) -> Campaign:
        fields.setdefault("name", "Spring sale")
        fields.setdefault("message", "Hi {{name}}")
        return Campaign.objects.create(tenant=connection.tenant, connection=connection, created_by=alice, **fields)

    return make


@pytest.fixture
def worker_processes(transactional_db: Any, tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start real worker processes on the campaign queue: `start(**env_overrides)`.
    `stop(signal.SIGKILL)` kills one; all are killed at the end."""
    from tests.workers import flush_queues

    flush_queues()
    started: list[Process] = []

    def start(**overrides: str) -> Process:
        env = stack_env(PERIODIC_ENABLED="false", **overrides)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        log = tmp_path / f"worker-{len(started)}.log"
        worker = start_worker(env, log, "--queues", settings.CAMPAIGN_QUEUE)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(signal.SIGKILL)
    flush_queues()


def tcp_ports_of_group(pgid: int) -> set[int]:
    """Local TCP ports of every process in process group PGID (from /proc: no psutil)."""
    inodes: set[str] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # fields after the name: state, ppid, pgrp, ...
                continue
            for fd in os.listdir(f"/proc/{entry}/fd"):
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except (OSError, IndexError, ValueError):
            continue
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[9] in inodes:
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


def queue_consumers(queue: str) -> int:
    """How many consumers RabbitMQ has on QUEUE."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(settings.RABBITMQ_URL))
    try:
        channel = connection.channel()
        return int(channel.queue_declare(queue=queue, passive=True, durable=True).method.consumer_count)
    finally:
        connection.close()
