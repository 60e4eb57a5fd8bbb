"""A contact's conversation: what we sent it (deliveries) and what it sent us (inbound
messages), merged newest first and paged, for the contact page and the API.

A contact can have thousands of inbound messages but only one delivery per campaign. Each
side is read by its own index (inbound: `inbound_contact_time`) as (time, id) keys only, up
to the end of the page asked for; the keys are merged in Python and only the page's rows
are then loaded whole, with their campaign and media. The cost of a page is its depth in
keys, never the whole history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.db.models.functions import Coalesce

from campaigns.models import Contact, Delivery, InboundMessage
from media.models import Asset
from sense.pagination import MAX_PAGE_SIZE, PAGE_SIZE

INBOUND, DELIVERY = "inbound", "delivery"


@dataclass(frozen=True)
class Message:
    """One line of a conversation. `status` is the delivery's status, "received" for an
    inbound message; `media` the asset shown (a delivery's campaign media, a message's
    stored attachment), `media_status` an inbound attachment's state."""

    kind: str
    id: int
    at: datetime
    type: str
    text: str
    status: str
    campaign_id: Any
    campaign_name: str
    media: Asset | None
    media_status: str = ""
    error: str = ""
    status_label: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}-{self.id}"

    def as_dict(self) -> dict[str, Any]:
        media = None
        if self.media is not None:
            media = {
                "id": self.media.id,
                "file_url": self.media.file_url(),
                "thumbnail_url": self.media.thumbnail_url(),
            }
        return {
            "kind": self.kind,
            "id": self.id,
            "at": self.at,
            "type": self.type,
            "text": self.text,
            "status": self.status,
            "campaign_id": self.campaign_id,
            "media": media,
        }


def _deliveries(contact: Contact) -> QuerySet[Delivery]:
    return Delivery.objects.filter(contact=contact, tenant_id=contact.tenant_id)


def _inbound(contact: Contact) -> QuerySet[InboundMessage]:
    return InboundMessage.objects.filter(contact=contact, tenant_id=contact.tenant_id)


def from_delivery(delivery: Delivery) -> Message:
    campaign = delivery.campaign
    media = campaign.media if campaign.media_id else None
    return Message(
        kind=DELIVERY,
        id=delivery.pk,
        at=delivery.sent_at or delivery.created_at,
        type=media.file_type if media is not None else "text",
        text=delivery.text,
        status=delivery.status,
        campaign_id=campaign.pk,
        campaign_name=campaign.name,
        media=media,
        error=delivery.error_message,
        status_label=str(delivery.get_status_display()),
    )


def from_inbound(message: InboundMessage) -> Message:
    return Message(
        kind=INBOUND,
        id=message.pk,
        at=message.received_at,
        type=message.type,
        text=message.text,
        status="received",
        campaign_id=message.campaign_id,
        campaign_name=message.campaign.name if message.campaign_id and message.campaign else "",
        media=message.media if message.media_id else None,
        media_status=message.media_status,
    )


def conversation(contact: Contact, *, page: int = 1, page_size: int = PAGE_SIZE) -> dict[str, Any]:
    """`{"count", "items": [Message]}`: page PAGE (from 1, PAGE_SIZE clamped to 1..500) of
    CONTACT's messages both ways, newest first (ties: inbound before delivery, then id)."""
    page = max(page, 1)
    page_size = min(max(page_size, 1), MAX_PAGE_SIZE)
    start, end = (page - 1) * page_size, page * page_size
    deliveries, inbound = _deliveries(contact), _inbound(contact)
    count = deliveries.count() + inbound.count()
    sent = Coalesce("sent_at", "created_at")  # a pending delivery sits at its creation time
    delivery_keys = deliveries.order_by(sent.desc(), "-id").values_list(sent, "id")[:end]
    inbound_keys = inbound.order_by("-received_at", "-id").values_list("received_at", "id")[:end]
    keys = [*((at, DELIVERY, pk) for at, pk in delivery_keys), *((at, INBOUND, pk) for at, pk in inbound_keys)]
    keys.sort(reverse=True)
    wanted = keys[start:end]
    delivery_ids = [pk for _, kind, pk in wanted if kind == DELIVERY]
    inbound_ids = [pk for _, kind, pk in wanted if kind == INBOUND]
    rows: dict[tuple[str, int], Message] = {}
    if delivery_ids:
        for d in Delivery.objects.filter(pk__in=delivery_ids).select_related("campaign", "campaign__media"):
            rows[(DELIVERY, d.pk)] = from_delivery(d)
    if inbound_ids:
        for m in InboundMessage.objects.filter(pk__in=inbound_ids).select_related("campaign", "media"):
            rows[(INBOUND, m.pk)] = from_inbound(m)
    items = [rows[(kind, pk)] for _, kind, pk in wanted if (kind, pk) in rows]
    return {"count": count, "items": items, "page": page, "page_size": page_size, "has_next": end < count}


def inbound_message(contact: Contact, message_id: int) -> Message | None:
    """CONTACT's inbound message MESSAGE_ID as a conversation line, or None."""
    message = _inbound(contact).select_related("campaign", "media").filter(pk=message_id).first()
    return from_inbound(message) if message is not None else None
