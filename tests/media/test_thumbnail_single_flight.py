"""The on-demand thumbnail is single-flight: a request claims the asset as the job does, and
one that finds it claimed waits for the holder instead of rendering the image again."""

from __future__ import annotations

import datetime
import io
import threading
import time
from typing import Any
from unittest import mock
from urllib.parse import urlparse

import pytest
from django.db import connection
from django.utils import timezone

from media import objects, services
from media.models import Asset
from tests.conftest import ApiClient
from tests.helpers import at_once, wait_for
from tests.media import files

real_render = services._render


class Renders:
    """Stands in for media.services._render: notes the claim each render ran under (so counts
    them), takes DELAY seconds like a big image, then renders or raises FAILURE."""

    def __init__(self, delay: float = 0.0, failure: Exception | None = None) -> None:
        self.delay, self.failure = delay, failure
        self.claims: list[datetime.datetime | None] = []
        self.lock = threading.Lock()

    @property
    def count(self) -> int:
        return len(self.claims)

    def __call__(self, asset: Asset) -> bytes:
        claim = Asset.objects.values_list("thumbnail_claimed_at", flat=True).get(id=asset.id)
        with self.lock:
            self.claims.append(claim)
        time.sleep(self.delay)
        if self.failure is not None:
            raise self.failure
        return real_render(asset)


@pytest.fixture
def image(acme: Any, alice: Any) -> Asset:
    """An uploaded image whose thumbnail job has not run yet."""
    data = files.jpeg((1200, 900))
    return services.asset_create(
        tenant=acme, user=alice, upload=io.BytesIO(data), name="big.jpg", size=len(data), enqueue=False
    )


def _url(asset: Asset) -> str:
    return asset.thumbnail_url() or ""


def test_concurrent_requests_render_the_thumbnail_once(transactional_db: Any, image: Asset, alice_token: str) -> None:
    renders = Renders(delay=0.5)

    with mock.patch("media.services._render", renders):
        responses = at_once(lambda: ApiClient(alice_token).get_json(_url(image)), threads=6)

    assert renders.count == 1
    image.refresh_from_db()
    assert image.status == "ready" and image.thumbnail_claimed_at is None
    assert [r.status_code for r in responses] == [302] * 6
    assert all(urlparse(r["Location"]).path.endswith("/" + image.thumbnail_key) for r in responses)


@pytest.mark.parametrize("outcome", ["ready", "failed"])
def test_a_request_waits_for_the_job_that_holds_the_claim_and_answers_with_its_result(
    transactional_db: Any, image: Asset, api_alice: ApiClient, settings: Any, outcome: str
) -> None:
    if outcome == "failed":
        settings.MEDIA_MAX_IMAGE_PIXELS = 1000  # the cap was lowered after the upload
    renders = Renders(delay=0.6)
    results: list[str] = []

    def job() -> None:
        try:
            results.append(services.thumbnail_generate(asset_id=image.id))
        finally:
            connection.close()

    with mock.patch("media.services._render", renders):
        holder = threading.Thread(target=job)
        holder.start()
        try:
            wait_for(lambda: renders.count == 1, timeout=15, what="the job to claim and start rendering")
            response = api_alice.get_json(_url(image))
        finally:
            holder.join()

    assert renders.count == 1
    assert results == ["done" if outcome == "ready" else "failed"]
    image.refresh_from_db()
    assert image.status == outcome and image.thumbnail_claimed_at is None
    if outcome == "ready":
        assert response.status_code == 302
        assert urlparse(response["Location"]).path.endswith("/" + image.thumbnail_key)
    else:
        assert response.status_code == 404
        assert response.json()["code"] == "thumbnail_failed" and "pixels" in response.json()["error"]


def test_a_request_answers_503_when_the_holder_does_not_finish_in_time(
    db: Any, image: Asset, api_alice: ApiClient, settings: Any
) -> None:
    settings.MEDIA_THUMBNAIL_WAIT_SECONDS = 0.3
    assert services.thumbnail_claim(image.id)  # a job that is still rendering
    held = Asset.objects.get(id=image.id).thumbnail_claimed_at
    renders = Renders()

    started = time.monotonic()
    with mock.patch("media.services._render", renders):
        response = api_alice.get_json(_url(image), HTTP_ACCEPT_LANGUAGE="en")
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.json() == {"error": "The thumbnail is being made; try again shortly.", "code": "thumbnail_pending"}
    assert renders.count == 0
    assert 0.3 <= elapsed < 3
    image.refresh_from_db()
    assert image.status == "processing" and image.thumbnail_claimed_at == held  # still the holder's


def test_a_stale_claim_is_taken_over_without_waiting(
    db: Any, image: Asset, api_alice: ApiClient, settings: Any
) -> None:
    settings.MEDIA_THUMBNAIL_WAIT_SECONDS = 0  # a live claim would answer 503 at once
    stale = timezone.now() - datetime.timedelta(seconds=services.THUMBNAIL_CLAIM_SECONDS + 1)
    assert services.thumbnail_claim(image.id, now=stale)  # a worker that died mid-render
    renders = Renders()

    with mock.patch("media.services._render", renders):
        response = api_alice.get_json(_url(image))

    assert response.status_code == 302
    assert renders.count == 1
    claim = renders.claims[0]
    assert claim is not None and claim > stale  # rendered under a claim of its own
    image.refresh_from_db()
    assert image.status == "ready" and image.thumbnail_claimed_at is None


def test_a_storage_failure_while_rendering_answers_503_and_releases_the_claim(
    db: Any, image: Asset, api_alice: ApiClient
) -> None:
    renders = Renders(failure=objects.StorageUnavailable("connection refused"))

    with mock.patch("media.services._render", renders):
        response = api_alice.get_json(_url(image))

    assert response.status_code == 503 and response.json()["code"] == "storage_unavailable"
    assert renders.count == 1 and renders.claims[0] is not None  # it rendered under its claim
    image.refresh_from_db()
    assert image.status == "processing" and image.thumbnail_claimed_at is None
    assert api_alice.get_json(_url(image)).status_code == 302  # the next request is not kept waiting
