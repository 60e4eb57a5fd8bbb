"""Consent: opting a contact out of (or back into) campaign messages, with its history.

Every entry point calls `contact_consent_change` (re-exported by campaigns.services): the
API and the contact page (an operator), the import, and applying inbound webhooks (a
keyword, the provider's own opt-out), which is why it lives outside campaigns.services.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from campaigns.live import broadcast_stats_on_commit
from campaigns.models import Campaign, ConsentEvent, Contact, Delivery
from sense.tenancy import get_for_tenant

log = logging.getLogger("sense.campaigns")


def acting_user(user: Any) -> Any:
    """USER when it is a signed-in user (what an audit row may point at), else None."""
    return user if user is not None and user.is_authenticated else None


# Campaigns whose pending deliveries an opt-out cancels (a draft or scheduled campaign has
# none; its snapshot skips opted-out contacts).
_OPT_OUT_CANCELS = (Campaign.Status.PREPARING, Campaign.Status.RUNNING, Campaign.Status.PAUSED)


def contact_consent_change(
    *,
    contact: Contact,
    opted_out: bool,
    source: str,
    inbound: Any = None,
    user: Any = None,
    reason: str = "",
) -> bool:
    """Opt CONTACT out (OPTED_OUT true) or back in, recording a ConsentEvent (SOURCE: a
    ConsentEvent.Source; INBOUND the message that asked for it, USER the operator, REASON
    why). Opting out cancels its pending deliveries in preparing, running or paused
    campaigns (reason `opted_out`, counters exact); a sender that claimed one first sends
    it. Returns False, recording nothing, when the contact already was in that state."""
    campaigns: set[Any] = set()
    with transaction.atomic():
        contact = get_for_tenant(Contact.objects.select_for_update(), contact.tenant, pk=contact.pk)
        if contact.opted_out == opted_out:
            return False
        now = timezone.now()
        Contact.objects.filter(pk=contact.pk).update(
            opted_out=opted_out,
            opted_out_at=now if opted_out else None,
            opt_out_source=source if opted_out else "",
            updated_at=now,
        )
        ConsentEvent.objects.create(
            tenant_id=contact.tenant_id,
            contact=contact,
            opted_out=opted_out,
            source=source,
            inbound=inbound,
            user=acting_user(user),
            reason=reason,
            at=now,
        )
        if opted_out:
            unsent = Delivery.objects.filter(
                contact=contact, status=Delivery.Status.PENDING, campaign__status__in=_OPT_OUT_CANCELS
            ).values_list("pk", "campaign_id")
            by_campaign: dict[Any, list[int]] = {}
            for delivery_id, campaign_id in unsent:
                by_campaign.setdefault(campaign_id, []).append(delivery_id)
            for campaign_id, ids in sorted(by_campaign.items(), key=lambda item: str(item[0])):
                if Delivery.move_many(
                    campaign_id=campaign_id,
                    ids=ids,
                    from_status=Delivery.Status.PENDING,
                    to_status=Delivery.Status.CANCELLED,
                    error_code="opted_out",
                ):
                    campaigns.add(campaign_id)
                    broadcast_stats_on_commit(campaign_id)
    for campaign_id in campaigns:
        if Campaign.finish_if_done(campaign_id):
            broadcast_stats_on_commit(campaign_id)
    log.info(
        "[CONSENT] contact %s of tenant %s opted %s (source %s; %d campaigns' pending deliveries cancelled)",
        contact.pk,
        contact.tenant_id,
        "out" if opted_out else "in",
        source,
        len(campaigns),
    )
    return True


def contacts_opt_out_by_provider(*, delivery_ids: Sequence[int], reason: str = "") -> None:
    """Opt out the contacts of DELIVERY_IDS (failed with the provider's "user stopped
    marketing messages"), source `provider`: recorded as a consent event, their pending
    deliveries cancelled. Each contact in its own transaction; a failure is logged, never
    raised, so it cannot undo the send outcome already recorded."""
    contacts = Contact.objects.filter(deliveries__pk__in=delivery_ids, opted_out=False).select_related("tenant")
    for contact in contacts.distinct():
        try:
            contact_consent_change(
                contact=contact,
                opted_out=True,
                source=ConsentEvent.Source.PROVIDER,
                reason=(reason or "The user stopped marketing messages")[:1000],
            )
        except Exception:
            log.exception("[CONSENT] contact %s not opted out after the provider's opt-out error", contact.pk)
