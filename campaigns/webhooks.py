"""Provider webhooks: checking who is calling, and reading their bodies into plain status updates.

Nothing here touches the database: the views verify and store, `campaigns.tracking`
applies. Parsing is strict about the envelope (a body that is not the provider's shape is
refused with 400 so a misconfigured sender notices) and lenient about what it does not
know inside it (an unknown status name is skipped, not an error, so a provider upgrade
never turns into days of retries).

- Evolution API: envelopes `{"event", "instance", "data", "date_time", ...}` posted by
  `webhook.controller.ts`; status events come from `whatsapp.baileys.service.ts`
  (`messages.update`: `{keyId, remoteJid, fromMe, status, messageId, ...}`; v1 spread the
  key instead: `{id, remoteJid, fromMe, status, datetime}`; `send.message`: the sent
  message with `key.id` and status PENDING). `data` may be one object or a list.
- WhatsApp Cloud API: `{"object": "whatsapp_business_account", "entry": [{"changes":
  [{"field": "messages", "value": {"statuses": [...]}}]}]}`
  (https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt

EVOLUTION = "evolution"
CLOUD = "cloud"

# Delivery statuses a provider event can report (values of Delivery.Status).
PENDING, SENT, DELIVERED, READ, FAILED = "pending", "sent", "delivered", "read", "failed"

# Baileys' proto.WebMessageInfo.Status, which Evolution sends as a name or (some
# versions) as the raw number.
EVOLUTION_STATUS_NUMBERS = {0: "ERROR", 1: "PENDING", 2: "SERVER_ACK", 3: "DELIVERY_ACK", 4: "READ", 5: "PLAYED"}
EVOLUTION_STATUSES = {
    "PENDING": PENDING,
    "SERVER_ACK": SENT,
    "DELIVERY_ACK": DELIVERED,
    "READ": READ,
    "PLAYED": READ,
    "ERROR": FAILED,
    # Evolution's Cloud-API channel forwards Meta's names upper-cased.
    "SENT": SENT,
    "DELIVERED": DELIVERED,
    "FAILED": FAILED,
}
EVOLUTION_STATUS_EVENTS = {"messages.update", "send.message"}
CLOUD_STATUSES = {"sent": SENT, "delivered": DELIVERED, "read": READ, "failed": FAILED}

JWT_LEEWAY_SECONDS = 30


class PayloadError(ValueError):
    """The body is not JSON or not the provider's shape (answered with 400)."""


class Rejected(Exception):
    """The caller failed verification (answered with STATUS; nothing is stored)."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class StatusUpdate:
    """One provider status for one message. `status` is a Delivery status name;
    `occurred_at` is the provider's time, or None when it gave none."""

    message_id: str
    status: str
    occurred_at: datetime | None
    error_code: str = ""
    error_message: str = ""
    event: str = ""


@dataclass
class ParsedWebhook:
    """What a webhook call carries: its event type, Evolution's instance name (or "") and
    the status updates in it (empty for messages, contacts, presence... which are ignored)."""

    event_type: str
    instance: str = ""
    statuses: list[StatusUpdate] = field(default_factory=list)


# --- Verification ----------------------------------------------------------------------


def verify_evolution_jwt(jwt_key: str, authorization: str) -> None:
    """Evolution signs nothing, but when the connection has a JWT key it sends
    `Authorization: Bearer <HS256 JWT>` with claims app=evolution, action=webhook and exp.
    Raises Rejected (401 missing, 403 invalid)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Rejected("missing_jwt", status=401)
    try:
        claims = jwt.decode(
            token.strip(),
            jwt_key,
            algorithms=["HS256"],
            options={"require": ["exp"]},
            leeway=JWT_LEEWAY_SECONDS,
        )
    except jwt.ExpiredSignatureError:
        raise Rejected("expired_jwt") from None
    except jwt.PyJWTError:
        raise Rejected("invalid_jwt") from None
    if claims.get("app") != "evolution" or claims.get("action") != "webhook":
        raise Rejected("invalid_jwt")


def cloud_signature(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def verify_cloud_signature(app_secret: str, body: bytes, header: str) -> None:
    """Meta's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`, compared in
    constant time before anything of the body is parsed. Raises Rejected."""
    if not header:
        raise Rejected("missing_signature", status=401)
    if not app_secret:
        # A connection without an app secret cannot verify anything: refuse rather than trust.
        raise Rejected("no_app_secret")
    expected = cloud_signature(app_secret, body)
    if not hmac.compare_digest(expected.encode(), header.strip().lower().encode()):
        raise Rejected("bad_signature")


def verify_cloud_subscription(verify_token: str, mode: str, token: str) -> bool:
    """Meta's GET handshake: hub.mode=subscribe and hub.verify_token equal to ours."""
    return bool(verify_token) and mode == "subscribe" and hmac.compare_digest(verify_token.encode(), token.encode())


# --- Parsing -------------------------------------------------------------------------------


def load_json(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PayloadError("body is not JSON") from None


def normalize_evolution_event(name: str) -> str:
    """ "MESSAGES_UPDATE", "messages-update" and "messages.update" are one event."""
    return name.strip().lower().replace("_", ".").replace("-", ".")


def _timestamp(value: Any, *, millis: bool = False) -> datetime | None:
    """An aware UTC datetime from epoch seconds (or milliseconds), numeric strings, or ISO
    text; None for anything else."""
    if isinstance(value, bool) or value is None or value == "":
        return None
    if isinstance(value, dict) and "low" in value:  # protobuf Long serialized by Baileys
        value = value.get("low")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if not isinstance(value, int | float):
        return None
    seconds = value / 1000 if millis or value > 1e11 else value
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _evolution_status(raw: Any) -> str | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        raw = EVOLUTION_STATUS_NUMBERS.get(raw)
    if isinstance(raw, str):
        return EVOLUTION_STATUSES.get(raw.strip().upper())
    return None


def _evolution_item(item: Any, event: str, fallback_time: datetime | None) -> StatusUpdate | None:
    if not isinstance(item, dict):
        raise PayloadError(f"{event}: data items must be objects")
    key: dict[str, Any] = item["key"] if isinstance(item.get("key"), dict) else {}
    # keyId (v2) is WhatsApp's message id; v2's "messageId" is Evolution's own row id.
    message_id = item.get("keyId") or key.get("id") or item.get("id")
    if not isinstance(message_id, str) or not message_id:
        raise PayloadError(f"{event}: no message id (keyId or key.id)")
    from_me = item.get("fromMe", key.get("fromMe"))
    if from_me is False:
        return None  # a receipt for a message someone sent us: not one of our deliveries
    status = _evolution_status(item.get("status"))
    if status is None:
        return None  # DELETED, or a name this version does not know
    occurred_at = (
        _timestamp(item.get("timestamp"))
        or _timestamp(item.get("messageTimestamp"))
        or _timestamp(item.get("datetime"), millis=True)
        or fallback_time
    )
    error_code, error_message = ("", "")
    if status == FAILED:
        error_code, error_message = "evolution_error", "The provider reported an ERROR status for the message."
    return StatusUpdate(message_id, status, occurred_at, error_code, error_message, event)


def parse_evolution(payload: Any, *, event_hint: str = "") -> ParsedWebhook:
    """Read an Evolution envelope. EVENT_HINT is the by-event URL's slug (or the stored
    event type) for envelopes without "event". Raises PayloadError."""
    if not isinstance(payload, dict):
        raise PayloadError("expected a JSON object")
    raw_event = payload.get("event") or event_hint
    if not isinstance(raw_event, str) or not raw_event.strip():
        raise PayloadError("no event name")
    event = normalize_evolution_event(raw_event)
    instance = payload.get("instance") or ""
    if not isinstance(instance, str):
        raise PayloadError("instance must be a string")
    if "data" not in payload:
        raise PayloadError("no data")
    parsed = ParsedWebhook(event_type=event[:64], instance=instance)
    if event not in EVOLUTION_STATUS_EVENTS:
        return parsed
    data = payload["data"]
    items = data if isinstance(data, list) else [data]
    fallback_time = _timestamp(payload.get("date_time"))
    for item in items:
        update = _evolution_item(item, event, fallback_time)
        if update is not None:
            parsed.statuses.append(update)
    return parsed


def _cloud_status(item: Any) -> StatusUpdate | None:
    if not isinstance(item, dict):
        raise PayloadError("statuses must be objects")
    message_id, raw_status = item.get("id"), item.get("status")
    if not isinstance(message_id, str) or not message_id or not isinstance(raw_status, str):
        raise PayloadError("a status needs an id and a status")
    status = CLOUD_STATUSES.get(raw_status.lower())
    if status is None:
        return None  # "deleted", "warning", ...: not a delivery outcome
    error_code, error_message = "", ""
    errors = item.get("errors")
    if status == FAILED and isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        error_code = str(first.get("code") or "")[:64]
        details: dict[str, Any] = first["error_data"] if isinstance(first.get("error_data"), dict) else {}
        error_message = str(first.get("message") or first.get("title") or "")
        if details.get("details") and details["details"] not in error_message:
            error_message = f"{error_message}: {details['details']}" if error_message else str(details["details"])
    return StatusUpdate(message_id, status, _timestamp(item.get("timestamp")), error_code, error_message, "statuses")


def parse_cloud(payload: Any) -> ParsedWebhook:
    """Read a Cloud API notification: every status of every change of every entry.
    Raises PayloadError."""
    if not isinstance(payload, dict) or payload.get("object") != "whatsapp_business_account":
        raise PayloadError('expected {"object": "whatsapp_business_account", ...}')
    entries = payload.get("entry")
    if not isinstance(entries, list):
        raise PayloadError("entry must be a list")
    statuses: list[StatusUpdate] = []
    fields: list[str] = []
    for entry in entries:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            raise PayloadError("each entry needs a list of changes")
        for change in changes:
            if not isinstance(change, dict) or not isinstance(change.get("value", {}), dict):
                raise PayloadError("each change must be an object with an object value")
            fields.append(str(change.get("field") or ""))
            items = change.get("value", {}).get("statuses") or []
            if not isinstance(items, list):
                raise PayloadError("statuses must be a list")
            for item in items:
                update = _cloud_status(item)
                if update is not None:
                    statuses.append(update)
    event_type = "statuses" if statuses else next((f for f in fields if f), "unknown")
    return ParsedWebhook(event_type=event_type[:64], statuses=statuses)


def parse(provider: str, body: bytes | str, *, event_hint: str = "") -> ParsedWebhook:
    """Parse a stored or received body for PROVIDER. Raises PayloadError."""
    payload = load_json(body)
    if provider == EVOLUTION:
        return parse_evolution(payload, event_hint=event_hint)
    if provider == CLOUD:
        return parse_cloud(payload)
    raise PayloadError(f"unknown provider {provider!r}")
