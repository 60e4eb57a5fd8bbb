"""S3 unreachable on the full stack: uploads answer 503 with a clear error and leave no row,
readiness reports storage down, and everything else goes on working."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from campaigns.models import Campaign, Connection
from media.models import Asset
from sense.models import Tenant
from tests.conftest import token_for
from tests.helpers import stable_port, wait_for
from tests.live import running_stack, stack_env
from tests.tracking.conftest import make_campaign, make_connection, make_deliveries
from tests.webhook_payloads import evolution_update

pytestmark = pytest.mark.slow


def test_with_s3_unreachable_uploads_fail_cleanly_and_the_rest_works(
    transactional_db: Any, tmp_path: Path, alice: Any, acme: Tenant
) -> None:
    connection: Connection = make_connection(acme, Connection.Provider.EVOLUTION)
    campaign: Campaign = make_campaign(connection)
    [delivery] = make_deliveries(campaign, 1)
    token = token_for(alice, acme)
    # An S3 endpoint nobody listens on, as when MinIO is down.
    env = stack_env(
        ALLOWED_HOSTS="127.0.0.1,localhost", S3_ENDPOINT_URL=f"http://127.0.0.1:{stable_port()}", S3_TIMEOUT="0.5"
    )
    with running_stack(env, tmp_path) as stack:
        api = httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        picture = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 30, 30)).save(picture, "PNG")
        upload = api.post("/api/chat/upload-media/", files={"file": ("photo.png", picture.getvalue(), "image/png")})
        assert upload.status_code == 503
        body = upload.json()
        assert body["success"] is False and body["code"] == "storage_unavailable" and body["error"]
        assert not Asset.objects.exists()

        ready = api.get("/api/health/ready/")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["storage"]["ok"] is False
        assert checks["database"]["ok"] and checks["cache"]["ok"] and checks["broker"]["ok"]

        assert api.get("/api/me/").status_code == 200
        assert api.get("/api/campaigns/").status_code == 200
        webhook = f"/api/webhooks/evolution/{connection.webhook_token}/"
        assert api.post(webhook, json=evolution_update(delivery.provider_message_id, "READ")).status_code == 200

        def read() -> bool:
            campaign.refresh_from_db()
            return campaign.stat_read == 1

        wait_for(read, timeout=90, what="the webhook to be applied")  # incl. the worker start
