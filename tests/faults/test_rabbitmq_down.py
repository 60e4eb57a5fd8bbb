"""RabbitMQ stopped during a webhook storm, on a node of its own: every webhook still gets
200 (it is stored before it is answered), nothing is lost, and once the node is back the
counters are exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from campaigns.models import Campaign, Connection
from sense.models import Tenant
from tests.conftest import token_for
from tests.faults.storm import Storm, assert_exact, settled, storm_bodies
from tests.helpers import rabbitmq_node, wait_for
from tests.live import running_stack, stack_env
from tests.tracking.conftest import make_campaign, make_connection, make_deliveries

pytestmark = pytest.mark.slow

TOTAL = 150


def test_rabbitmq_stopped_during_a_webhook_storm_loses_nothing(
    transactional_db: Any, tmp_path: Path, alice: Any, acme: Tenant
) -> None:
    connection: Connection = make_connection(acme, Connection.Provider.EVOLUTION)
    campaign: Campaign = make_campaign(connection)
    bodies = storm_bodies(make_deliveries(campaign, TOTAL))
    first, second, third = (
        bodies[: len(bodies) // 3],
        bodies[len(bodies) // 3 : 2 * len(bodies) // 3],
        bodies[2 * len(bodies) // 3 :],
    )

    with rabbitmq_node(tmp_path / "rabbitmq") as node:
        env = stack_env(
            ALLOWED_HOSTS="127.0.0.1,localhost",
            RABBITMQ_URL=node.url,
            WEBHOOK_SWEEP_SECONDS="1",
            WEBHOOK_SWEEP_GRACE_SECONDS="2",
        )
        with running_stack(env, tmp_path) as stack:
            storm = Storm(stack.base_url, connection)
            api = httpx.Client(
                base_url=stack.base_url, headers={"Authorization": f"Bearer {token_for(alice, acme)}"}, timeout=60
            )
            try:
                storm.post(first)
                # The node goes away while the first third is still being posted.
                wait_for(lambda: storm.answered() >= len(first) // 2, timeout=60, what="the storm under way")
                node.stop()
                ready = api.get("/api/health/ready/")
                assert ready.status_code == 503
                assert ready.json()["checks"]["broker"]["ok"] is False
                assert ready.json()["checks"]["database"]["ok"] is True
                ping = api.post("/api/ops/worker-ping/")  # work that needs the broker says so
                assert ping.status_code == 503 and ping.json()["code"] == "unavailable", ping.text

                # The second third arrives with no broker at all.
                storm.post(second)
                wait_for(lambda: storm.answered() == len(first) + len(second), timeout=120, what="second third")

                # The node comes back during the last third; web and worker reconnect on their own.
                storm.post(third)
                node.start()
                wait_for(lambda: storm.answered() == len(bodies), timeout=120, what="last third")

                statuses = storm.statuses()
                assert statuses == [200] * len(bodies), {s: statuses.count(s) for s in set(statuses)}
                wait_for(lambda: settled(campaign, TOTAL), timeout=90, interval=0.5, what="every event applied")
                assert_exact(campaign, posted=len(bodies), total=TOTAL)
                assert api.get("/api/health/ready/").status_code == 200
                # Both sides reconnected: a task goes through the node to a worker and back.
                token = api.post("/api/ops/worker-ping/").json()["token"]
                wait_for(lambda: api.get(f"/api/ops/worker-ping/{token}/").json()["done"], timeout=60, what="ping")
            except Exception:
                print("--- rabbitmq\n" + node.log())
                raise
            finally:
                storm.close()
                api.close()
