"""`GET /api/deliveries/{id}/events/`: a delivery's status history (the delivery-log modal)."""

from __future__ import annotations

from datetime import datetime

from ninja import Router, Schema

from campaigns.models import Delivery, DeliveryEvent
from sense.tenancy import TenantHttpRequest, get_for_tenant

router = Router(tags=["deliveries"])


class EventError(Schema):
    code: str
    message: str


class DeliveryEventOut(Schema):
    status: str
    occurred_at: datetime
    received_at: datetime
    event: str
    error: EventError | None


@router.get("/{delivery_id}/events/", response=list[DeliveryEventOut], summary="A delivery's status events, in order")
def delivery_events(request: TenantHttpRequest, delivery_id: int) -> list[dict[str, object]]:
    """Every status event received for the delivery, oldest first by the provider's time,
    with the time Sense received it and the provider's event type; failures carry the
    provider's error code and message."""
    delivery = get_for_tenant(Delivery, request.tenant, pk=delivery_id)
    events = DeliveryEvent.objects.filter(delivery=delivery).order_by("occurred_at", "received_at", "pk")
    return [
        {
            "status": e.status,
            "occurred_at": e.occurred_at,
            "received_at": e.received_at,
            "event": e.event,
            "error": {"code": e.error_code, "message": e.error_message} if (e.error_code or e.error_message) else None,
        }
        for e in events
    ]
