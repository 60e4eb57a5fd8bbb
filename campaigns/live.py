"""Live campaign stats: a `campaign.stats` frame to the tenant's socket group whenever a
campaign's counters or status change (with the audience snapshot's progress while it is
being taken: `preparation`, see `Campaign.preparation`).

Best effort and coalesced, here and nowhere else (the socket and the page pass frames on as
they come): the first change to a campaign goes out at once; changes after it within
LIVE_FRAME_INTERVAL_SECONDS (0.252 s: at most 4 frames a second) become one frame carrying
the latest state, read with one query for every campaign marked, and a change is always
followed by a frame read after it. Work that changes a campaign calls
`broadcast_stats_on_commit` inside its transaction, so a frame never shows state that was
rolled back.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from campaigns.models import Campaign
from sense import realtime
from sense.lib.coalesce import Coalescer

log = logging.getLogger("sense.campaigns")


def _publish_stats(campaign_ids: set[Any]) -> float | None:
    """One query for every campaign whose counters or status changed, then one frame each;
    returns when the frames were made (the coalescer's next interval starts there)."""
    names = [f"stat_{n}" for n in Campaign.STAT_NAMES]
    try:
        campaigns = list(
            Campaign.objects.filter(pk__in=campaign_ids).only(
                "id",
                "tenant_id",
                "status",
                "pause_reason",
                "prepare_cursor",
                "audience_count",
                "waiting_reason",
                "next_send_at",
                *names,
            )
        )
    except Exception as exc:  # a live update must never fail the work that triggered it
        log.warning("[CAMPAIGN] stats broadcast skipped: %s", exc.__class__.__name__)
        return None
    made, sent_at = time.monotonic(), timezone.now().isoformat()
    for campaign in campaigns:
        realtime.broadcast(
            campaign.tenant_id,
            {
                "type": "campaign.stats",
                "campaign_id": str(campaign.id),
                "status": campaign.status,
                "pause_reason": campaign.pause_reason,
                "stats": campaign.stats,
                "preparation": campaign.preparation,
                # Why a running campaign does not send now, and when it expects to go on.
                "waiting_reason": campaign.waiting_reason or None,
                "next_send_at": campaign.next_send_at.isoformat() if campaign.next_send_at else None,
                # When the frame was made: what the at-most-4-a-second rule is kept by (a
                # frame may reach a browser later than the next one, by network and load).
                "sent_at": sent_at,
            },
        )
    return made


_stats_coalescer = Coalescer(_publish_stats, interval=settings.LIVE_FRAME_INTERVAL_SECONDS, name="live-stats")


def broadcast_stats(campaign_id: Any) -> None:
    """Send CAMPAIGN_ID's status and counters to its tenant's live group: at once, or with the
    latest state at most LIVE_FRAME_INTERVAL_SECONDS after the previous frame (best effort)."""
    _stats_coalescer.mark(campaign_id)


def broadcast_stats_on_commit(campaign_id: Any) -> None:
    """`broadcast_stats` once the current transaction commits."""
    transaction.on_commit(lambda: broadcast_stats(campaign_id))
