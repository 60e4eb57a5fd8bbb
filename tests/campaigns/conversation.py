"""Inbound messages and deliveries made directly with the models (what the ingest workers
and the senders would have written), for the conversation, consent and replies tests."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from campaigns.models import Campaign, Connection, Contact, Delivery, InboundMessage
from media.models import Asset

_ids = itertools.count(1)


def inbound(
    contact: Contact, connection: Connection, text: str = "Oi!", *, at: datetime | None = None, **fields: Any
) -> InboundMessage:
    """A message CONTACT sent to CONNECTION at AT (default now)."""
    return InboundMessage.objects.create(
        tenant_id=contact.tenant_id,
        connection=connection,
        contact=contact,
        provider_message_id=f"wamid.in.{next(_ids)}",
        text=text,
        phone=contact.phone,
        received_at=at or timezone.now(),
        **fields,
    )


def delivery(
    campaign: Campaign, contact: Contact, *, at: datetime | None = None, status: str = "sent", **fields: Any
) -> Delivery:
    """CAMPAIGN's message to CONTACT, sent at AT (default now; a pending one is not sent)."""
    fields.setdefault("sent_at", None if status == "pending" else at or timezone.now())
    return Delivery.objects.create(
        tenant_id=contact.tenant_id,
        campaign=campaign,
        contact=contact,
        phone=contact.phone,
        text=f"{campaign.name} for {contact.name}",
        status=status,
        **fields,
    )


def image_asset(tenant: Any, name: str = "photo.jpg", origin: str = Asset.Origin.INBOUND) -> Asset:
    return Asset.objects.create(
        tenant=tenant,
        original_name=name,
        key=f"tenants/{tenant.pk}/media/{next(_ids)}/{name}",
        file_type=Asset.FileType.IMAGE,
        mime_type="image/jpeg",
        size=100,
        sha256="0" * 64,
        status=Asset.Status.READY,
        origin=origin,
    )


def ago(**delta: float) -> datetime:
    return timezone.now() - timedelta(**delta)
