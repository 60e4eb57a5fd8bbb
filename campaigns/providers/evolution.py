"""Evolution API v2 (EvolutionAPI/evolution-api).

- Sending: `src/api/routes/sendMessage.router.ts` (`/message/sendText/{instance}`,
  `/message/sendMedia/{instance}`, header `apikey`).
- Webhooks: envelopes `{"event", "instance", "data", "date_time", ...}` posted by
  `webhook.controller.ts`; status events come from `whatsapp.baileys.service.ts`
  (`messages.update`: `{keyId, remoteJid, fromMe, status, messageId, ...}`; v1 spread the
  key instead: `{id, remoteJid, fromMe, status, datetime}`; `send.message`: the sent
  message with `key.id` and status PENDING). `data` may be one object or a list.
  Evolution signs nothing, but with a JWT key on the connection it sends
  `Authorization: Bearer <HS256 JWT>`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import jwt

from campaigns.providers.base import (
    DELIVERED,
    FAILED,
    PENDING,
    READ,
    SENT,
    ConnectionState,
    Credential,
    OutgoingMessage,
    ParsedWebhook,
    PayloadError,
    Provider,
    ProviderError,
    Rejected,
    SendResult,
    StatusUpdate,
    classify,
    load_json,
    post,
    response_json,
    short,
    timestamp,
)

if TYPE_CHECKING:
    from django.http import HttpRequest

    from campaigns.models import Connection

# Baileys' proto.WebMessageInfo.Status, which Evolution sends as a name or (some
# versions) as the raw number.
STATUS_NUMBERS = {0: "ERROR", 1: "PENDING", 2: "SERVER_ACK", 3: "DELIVERY_ACK", 4: "READ", 5: "PLAYED"}
STATUSES = {
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
STATUS_EVENTS = {"messages.update", "send.message"}
# `connection.update` (whatsapp.baileys.service.ts): data {instance, wuid, state, statusReason}
# with state open | connecting | close, or refused when the QR code was not read in time.
CONNECTION_EVENT = "connection.update"
CONNECTION_STATES = {"open", "connecting", "close", "refused"}

JWT_LEEWAY_SECONDS = 30


def normalize_event(name: str) -> str:
    """ "MESSAGES_UPDATE", "messages-update" and "messages.update" are one event."""
    return name.strip().lower().replace("_", ".").replace("-", ".")


def verify_jwt(jwt_key: str, authorization: str) -> None:
    """Evolution's `Authorization: Bearer <HS256 JWT>` with claims app=evolution,
    action=webhook and exp. Raises Rejected (401 missing, 403 invalid)."""
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


def _status(raw: Any) -> str | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        raw = STATUS_NUMBERS.get(raw)
    if isinstance(raw, str):
        return STATUSES.get(raw.strip().upper())
    return None


def _item(item: Any, event: str, fallback_time: datetime | None) -> StatusUpdate | None:
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
    status = _status(item.get("status"))
    if status is None:
        return None  # DELETED, or a name this version does not know
    occurred_at = (
        timestamp(item.get("timestamp"))
        or timestamp(item.get("messageTimestamp"))
        or timestamp(item.get("datetime"), millis=True)
        or fallback_time
    )
    error_code, error_message = ("", "")
    if status == FAILED:
        error_code, error_message = "evolution_error", "The provider reported an ERROR status for the message."
    return StatusUpdate(message_id, status, occurred_at, error_code, error_message, event)


def _connection_state(data: Any, occurred_at: datetime | None) -> ConnectionState | None:
    if not isinstance(data, dict):
        raise PayloadError(f"{CONNECTION_EVENT}: data must be an object")
    state = str(data.get("state") or "").strip().lower()
    if state not in CONNECTION_STATES:
        return None  # a state this version does not know: stored, changes nothing
    reason = data.get("statusReason")
    return ConnectionState(state=state, reason="" if reason is None else str(reason)[:200], occurred_at=occurred_at)


def parse_envelope(payload: Any, *, event_hint: str = "") -> ParsedWebhook:
    """Read an Evolution envelope. EVENT_HINT is the by-event URL's slug (or the stored
    event type) for envelopes without "event". Raises PayloadError."""
    if not isinstance(payload, dict):
        raise PayloadError("expected a JSON object")
    raw_event = payload.get("event") or event_hint
    if not isinstance(raw_event, str) or not raw_event.strip():
        raise PayloadError("no event name")
    event = normalize_event(raw_event)
    instance = payload.get("instance") or ""
    if not isinstance(instance, str):
        raise PayloadError("instance must be a string")
    if "data" not in payload:
        raise PayloadError("no data")
    parsed = ParsedWebhook(event_type=event[:64], instance=instance)
    if event == CONNECTION_EVENT:
        parsed.connection_state = _connection_state(payload["data"], timestamp(payload.get("date_time")))
        return parsed
    if event not in STATUS_EVENTS:
        return parsed
    data = payload["data"]
    items = data if isinstance(data, list) else [data]
    fallback_time = timestamp(payload.get("date_time"))
    for item in items:
        update = _item(item, event, fallback_time)
        if update is not None:
            parsed.statuses.append(update)
    return parsed


class EvolutionProvider(Provider):
    name = "evolution"
    credentials = (
        Credential("instance", "Evolution instance name"),
        Credential("api_key", "Evolution API key"),
        Credential("jwt_key", "Evolution webhook JWT key", required=False),
    )
    webhook_url_name = "webhook-evolution"

    def __init__(self, *, base_url: str, instance: str, api_key: str, jwt_key: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.instance = instance
        self.api_key = api_key
        self.jwt_key = jwt_key

    @classmethod
    def from_connection(cls, connection: Connection) -> EvolutionProvider:
        return cls(
            base_url=connection.base_url,
            instance=connection.credential("instance"),
            api_key=connection.credential("api_key"),
            jwt_key=connection.credential("jwt_key"),
        )

    def send(self, message: OutgoingMessage) -> SendResult:
        headers = {"apikey": self.api_key}
        if message.media is None:
            url = f"{self.base_url}/message/sendText/{self.instance}"
            body: dict[str, Any] = {"number": message.number, "text": message.text}
        else:
            url = f"{self.base_url}/message/sendMedia/{self.instance}"
            body = {
                "number": message.number,
                "mediatype": message.media.file_type,
                "mimetype": message.media.mime_type,
                "caption": message.text,
                "fileName": message.media.file_name,
                "media": message.media.url,
            }
        if message.typing_seconds:
            # Evolution shows "typing…" (or "recording…") for `delay` ms, then sends.
            body["delay"] = int(message.typing_seconds * 1000)
        response = post(url, headers=headers, body=body)
        data = response_json(response)
        if response.status_code in (200, 201):
            message_id = (data or {}).get("key", {}).get("id") if isinstance(data, dict) else None
            if not message_id:
                raise ProviderError("ambiguous", "accepted without a message id", code="no_id")
            return SendResult(message_id=str(message_id), status_code=response.status_code)
        raise classify(response, str(response.status_code), self._error_message(data, response))

    @staticmethod
    def _error_message(data: Any, response: httpx.Response) -> str:
        # Errors look like {"status": 400, "error": "Bad Request", "response": {"message": [...]}};
        # an unknown number is [{"exists": false, "jid": ..., "number": ...}].
        if not isinstance(data, dict):
            return f"HTTP {response.status_code}"
        detail = (data.get("response") or {}).get("message") if isinstance(data.get("response"), dict) else None
        if isinstance(detail, list) and detail and isinstance(detail[0], dict) and detail[0].get("exists") is False:
            return f"number is not on WhatsApp ({detail[0].get('number', '')})"
        if isinstance(detail, list) and len(detail) == 1:
            detail = detail[0]
        reason = str(data.get("error") or f"HTTP {response.status_code}")
        return f"{reason}: {short(detail)}" if detail else reason

    def verify(self, request: HttpRequest, body: bytes) -> None:
        if self.jwt_key:
            verify_jwt(self.jwt_key, request.headers.get("Authorization", ""))

    def verify_parsed(self, parsed: ParsedWebhook) -> None:
        if parsed.instance and self.instance and parsed.instance != self.instance:
            raise Rejected("wrong_instance")

    @classmethod
    def parse_webhook(cls, body: bytes | str, hint: str = "") -> ParsedWebhook:
        return parse_envelope(load_json(body), event_hint=hint)
