"""Redis down on the full stack: webhooks are still accepted and processed, the media proxy
serves uncached, and readiness reports the cache down. Uses its own redis-server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from campaigns.models import Campaign, Connection
from sense.models import Tenant
from tests.conftest import token_for
from tests.helpers import redis_server, wait_for
from tests.live import running_stack, stack_env
from tests.tracking.conftest import make_campaign, make_connection, make_deliveries
from tests.webhook_payloads import evolution_update

pytestmark = pytest.mark.slow


def test_with_redis_down_webhooks_still_land_and_the_proxy_serves_uncached(
    transactional_db: Any, tmp_path: Path, alice: Any, acme: Tenant
) -> None:
    connection: Connection = make_connection(acme, Connection.Provider.EVOLUTION)
    campaign: Campaign = make_campaign(connection)
    deliveries = make_deliveries(campaign, 5)
    token = token_for(alice, acme)
    with redis_server() as (redis_url, redis_proc):
        env = stack_env(
            ALLOWED_HOSTS="127.0.0.1,localhost",
            REDIS_URL=redis_url,
            REDIS_TIMEOUT="0.5",
            MEDIA_PROXY_TRUSTED_HOSTS="127.0.0.1",
        )
        with running_stack(env, tmp_path) as stack:
            api = httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=20)
            assert api.get("/api/health/ready/").status_code == 200
            redis_proc.kill()
            redis_proc.wait()

            ready = api.get("/api/health/ready/")
            assert ready.status_code == 503
            checks = ready.json()["checks"]
            assert checks["cache"]["ok"] is False and checks["database"]["ok"] and checks["broker"]["ok"]

            url = f"/api/webhooks/evolution/{connection.webhook_token}/"
            for delivery in deliveries:
                body = evolution_update(delivery.provider_message_id, "DELIVERY_ACK")
                assert api.post(url, json=body, headers={"Authorization": ""}).status_code == 200

            def delivered() -> bool:
                campaign.refresh_from_db()
                return campaign.stat_delivered == 5

            wait_for(delivered, timeout=90, what="the webhooks to be applied without Redis")  # incl. the worker start

            probe = f"{stack.base_url}/api/health/probe.png"
            for _ in range(2):
                proxied = api.get("/api/chat/media-proxy/", params={"url": probe})
                assert proxied.status_code == 200, proxied.text
                assert proxied.headers["X-Cache"] == "MISS"  # no cache to hit
                assert proxied.headers["content-type"] == "image/png"
