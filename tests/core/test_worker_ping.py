from __future__ import annotations

import dramatiq

from tests.conftest import ApiClient
from tests.helpers import wait_for


def test_a_ping_goes_through_rabbitmq_to_a_worker_and_back(dramatiq_worker: dramatiq.Worker, alice_token: str) -> None:
    client = ApiClient(alice_token)
    sent = client.post_json("/api/ops/worker-ping/")
    assert sent.status_code == 202
    token = sent.json()["token"]
    wait_for(lambda: client.get_json(f"/api/ops/worker-ping/{token}/").json()["done"], timeout=15, what="the ping")
    assert client.get_json(f"/api/ops/worker-ping/{token}/").json()["at"]


def test_an_unknown_ping_is_404(api_alice: ApiClient) -> None:
    response = api_alice.get_json("/api/ops/worker-ping/nope/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_pings_need_authentication(anon_api: ApiClient) -> None:
    assert anon_api.post_json("/api/ops/worker-ping/").status_code == 401
