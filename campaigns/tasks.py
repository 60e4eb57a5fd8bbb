"""Dramatiq actors and periodic jobs of the campaigns app. Actors are thin: they take ids
and call the service functions, which hold the business rules."""

from __future__ import annotations

from typing import Any

import dramatiq
from django.conf import settings

from campaigns import inbound, retention, sending, services, tracking
from campaigns.providers import sandbox
from sense.scheduler import periodic

# --- Delivery tracking ---------------------------------------------------------------------


@dramatiq.actor(queue_name="webhooks", max_retries=5, min_backoff=500, max_backoff=30_000)
def process_webhook_events() -> None:
    """Apply pending webhook events in batches while they keep coming (one thread per worker
    process, `tracking.drain_pending`). The webhook views send this as a wake-up, coalesced
    per process; several worker processes woken at once split the work."""
    if tracking.drain_pending():  # stopped at its budget with events still coming
        process_webhook_events.send()


@periodic(settings.WEBHOOK_SWEEP_SECONDS)
def sweep_webhooks() -> None:
    """Stored events the actor never got (broker down), and early status events whose
    message id has been recorded since."""
    tracking.sweep()


@periodic(300)
def prune_webhooks() -> None:
    """Raw bodies of processed and ignored events past WEBHOOK_RETENTION_DAYS, at most ~10 s
    of batches per run so the other periodic jobs of this thread are not held up."""
    retention.webhook_events_prune(budget=10.0)


# --- Inbound messages ----------------------------------------------------------------------


@dramatiq.actor(
    actor_name=inbound.MEDIA_ACTOR,
    queue_name="media",
    max_retries=4,
    min_backoff=2_000,
    max_backoff=60_000,
    time_limit=120_000,
)
def fetch_inbound_media(inbound_id: int) -> None:
    """Fetch one inbound message's attachment into the media library. Safe to run twice: the
    message is claimed first; a failure that may pass raises (retried with backoff)."""
    inbound.inbound_media_fetch(inbound_id=inbound_id)


@periodic(60)
def sweep_inbound_media() -> None:
    """Attachments whose job the broker lost, or whose worker died."""
    inbound.inbound_media_sweep()


@dramatiq.actor(
    actor_name=inbound.CONFIRMATION_ACTOR,
    queue_name=settings.CAMPAIGN_QUEUE,
    max_retries=10,
    min_backoff=1_000,
    max_backoff=60_000,
)
def send_consent_confirmation(consent_event_id: int) -> None:
    """Send the confirmation of one keyword opt-out or re-subscription (at most once: claimed
    first), waiting for the connection's rate budget."""
    outcome = inbound.consent_confirmation_send(consent_event_id=consent_event_id)
    if outcome.status == "retry":
        delay = int((outcome.retry_in or 1.0) * 1000)
        send_consent_confirmation.send_with_options(args=(consent_event_id,), delay=max(delay, 100))


# --- Preparing (the audience snapshot) ------------------------------------------------------


@dramatiq.actor(
    queue_name=settings.CAMPAIGN_QUEUE, max_retries=5, min_backoff=1_000, max_backoff=60_000, time_limit=300_000
)
def prepare_campaign(campaign_id: str) -> None:
    """Take a preparing campaign's audience snapshot for a while, then hand over to a fresh
    message (the campaign runs once it is complete)."""
    if services.campaign_prepare(campaign_id=campaign_id).again:
        prepare_campaign.send(campaign_id)


# --- Sending ---------------------------------------------------------------------------------


@dramatiq.actor(
    queue_name=settings.CAMPAIGN_QUEUE, max_retries=3, min_backoff=1_000, max_backoff=30_000, time_limit=300_000
)
def dispatch_campaign(campaign_id: str) -> None:
    """Send a running campaign's deliveries for a while, then hand over to a fresh message."""
    outcome = sending.dispatch(campaign_id)
    if outcome.reschedule_in is not None:
        dispatch_campaign.send_with_options(args=(campaign_id,), delay=int(outcome.reschedule_in * 1000) or None)


@dramatiq.actor(
    actor_name=sandbox.ACTOR_NAME,
    queue_name="sandbox",
    max_retries=3,
    min_backoff=1_000,
    max_backoff=10_000,
    time_limit=30_000,
)
def sandbox_webhooks(
    connection_id: str, message_id: str, number: str, sent_at: float, steps: list[dict[str, Any]]
) -> None:
    """The sandbox gateway's webhooks for one sent message: post the first of STEPS to Sense's
    own webhook endpoint, then schedule the next at its time."""
    sandbox.post_next(connection_id=connection_id, message_id=message_id, number=number, sent_at=sent_at, steps=steps)


@periodic(settings.CAMPAIGN_DUE_CHECK_SECONDS)
def start_due_campaigns() -> None:
    services.campaigns_start_due()


@periodic(30)
def sweep_stale_deliveries() -> None:
    services.deliveries_sweep_stale()


@periodic(15)
def kick_stalled_campaigns() -> None:
    """Senders and audience snapshots whose worker or message was lost."""
    services.campaigns_kick_stalled()


@periodic(settings.CLOUD_TEMPLATE_SYNC_SECONDS)
def sync_templates() -> None:
    """Message templates of every Cloud API connection with a WABA id, from Meta. Every worker
    runs it: a connection another worker synced in the last half interval is skipped, and two
    syncs of one connection take turns on its row."""
    services.templates_sync_all(fresh_for=settings.CLOUD_TEMPLATE_SYNC_SECONDS / 2)


# --- Contacts' profile pictures ---------------------------------------------------------------


@dramatiq.actor(queue_name="contacts", max_retries=1, min_backoff=5_000, time_limit=120_000)
def refresh_contact_avatars(contact_ids: list[int]) -> None:
    """Ask the gateways for the profile pictures of contacts a page showed (each at most
    once per PROFILE_PICTURE_TTL, whoever asks: the check is claimed per contact)."""
    services.contact_avatars_refresh(contact_ids=contact_ids)


# --- Contact imports -------------------------------------------------------------------------


@dramatiq.actor(queue_name="imports", max_retries=3, min_backoff=1_000, max_backoff=60_000, time_limit=7_200_000)
def run_contact_import(import_id: str) -> None:
    """Import (or go on importing) one uploaded CSV. Safe to run twice: the import is claimed
    first, and each chunk is committed with its progress."""
    services.contact_import_run(import_id=import_id)


@periodic(settings.CONTACT_IMPORT_SWEEP_SECONDS)
def sweep_contact_imports() -> None:
    services.contact_imports_sweep()
