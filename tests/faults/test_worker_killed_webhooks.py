"""A worker killed with SIGKILL in the middle of webhook processing: the transaction it had
open rolls back, RabbitMQ hands its unacknowledged messages to the next worker, the sweeper
takes whatever is left, and the counters come out exact. (The kill during a campaign's
sending is in tests/campaigns/test_worker_processes.py.)"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from campaigns.models import Campaign, Connection, WebhookEvent
from sense.models import Tenant
from tests.faults.storm import Storm, assert_exact, settled, storm_bodies
from tests.helpers import wait_for
from tests.live import running_stack, stack_env
from tests.tracking.conftest import make_campaign, make_connection, make_deliveries

pytestmark = pytest.mark.slow

TOTAL = 300


def _processed() -> int:
    return WebhookEvent.objects.filter(status=WebhookEvent.Status.PROCESSED).count()


def test_a_worker_killed_while_processing_webhooks_leaves_exact_counters(
    transactional_db: Any, tmp_path: Path, acme: Tenant
) -> None:
    connection: Connection = make_connection(acme, Connection.Provider.EVOLUTION)
    campaign: Campaign = make_campaign(connection)
    bodies = storm_bodies(make_deliveries(campaign, TOTAL))
    env = stack_env(ALLOWED_HOSTS="127.0.0.1,localhost", WEBHOOK_SWEEP_SECONDS="1", WEBHOOK_SWEEP_GRACE_SECONDS="5")
    with running_stack(env, tmp_path, worker=False) as stack:
        first = stack.start_worker(name="killed-worker")
        storm = Storm(stack.base_url, connection)
        try:
            storm.post(bodies)
            wait_for(lambda: _processed() >= len(bodies) // 5, timeout=120, interval=0.02, what="processing under way")
            first.stop(signal.SIGKILL)
            # stop() returns once the worker's database sessions are gone: a COMMIT it had
            # already sent has landed by then (CI once read 200, then 207).
            processed_at_kill = _processed()
            stored_at_kill = WebhookEvent.objects.count()
            # Killed mid-storm: some events were applied, others are still waiting.
            assert 0 < processed_at_kill < stored_at_kill <= len(bodies)

            # With no worker the events keep arriving and are stored; none is applied.
            wait_for(lambda: storm.answered() == len(bodies), timeout=120, what="the whole storm answered")
            assert _processed() == processed_at_kill
            statuses = storm.statuses()
            assert statuses == [200] * len(bodies), {s: statuses.count(s) for s in set(statuses)}

            stack.start_worker(name="next-worker")
            wait_for(lambda: settled(campaign, TOTAL), timeout=120, interval=0.5, what="every event applied")
            assert_exact(campaign, posted=len(bodies), total=TOTAL)
        finally:
            storm.close()
