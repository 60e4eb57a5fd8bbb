"""Media background jobs (Dramatiq). Thin: the work is in media.services."""

from __future__ import annotations

import dramatiq

from media import services


@dramatiq.actor(queue_name="media", max_retries=5, min_backoff=1_000, max_backoff=60_000, time_limit=120_000)
def make_thumbnail(asset_id: str) -> None:
    """Make the thumbnail of one asset. Safe to run twice: the asset is claimed first, and a
    retried job finds it done. Storage errors raise, so Dramatiq retries with backoff."""
    services.thumbnail_generate(asset_id=asset_id)
