"""Evolution API v2 (EvolutionAPI/evolution-api).

- Sending: `src/api/routes/sendMessage.router.ts` (`/message/sendText/{instance}`,
  `/message/sendMedia/{instance}`, header `apikey`).
- Webhooks: envelopes `{"event", "instance", "data", "date_time", ...}` posted by
  `webhook.controller.ts`; status events come from `whatsapp.baileys.service.ts`
  (`messages.update`: `{keyId, remoteJid, fromMe, status, messageId, ...}`; v1 spread the
  key instead: `{id, remoteJid, fromMe, status, datetime}`; `send.message`: the sent
  message with `key.id` and status PENDING). `data` may be one object or a list.
- Inbound: `messages.upsert` with `key.fromMe: false` (`fromMe: true` is our own echo):
  `{key: {remoteJid, remoteJidAlt?, senderPn?, fromMe, id}, pushName, message:
  {conversation | extendedTextMessage | imageMessage | ... , base64?, mediaUrl?},
  contextInfo?, messageType, messageTimestamp}`. `remoteJid` may be a `<digits>@lid`
  privacy id: the phone is then in `key.remoteJidAlt` (2.3.6+) or `senderPn` (2.3.0+, on
  the key or on data). The quoted id is `contextInfo.stanzaId`, top level in 2.3.x or
  inside the message part. `base64` is there with the webhook's base64 option on,
  `mediaUrl` with Evolution's S3 on. Groups (`@g.us`), broadcasts and newsletters are not
  conversations with a contact: skipped.
  Evolution signs nothing, but with a JWT key on the connection it sends
  `Authorization: Bearer <HS256 JWT>`.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import jwt
from django.utils.translation import gettext_lazy

from campaigns.providers.base import (
    DELIVERED,
    FAILED,
    MEDIA_TYPES,
    PENDING,
    READ,
    SENT,
    ConnectionState,
    Credential,
    ErrorAction,
    ErrorInfo,
    InboundMedia,
    InboundUpdate,
    MediaSource,
    OutgoingMessage,
    ParsedWebhook,
    PayloadError,
    Provider,
    ProviderError,
    Rejected,
    SendResult,
    StatusUpdate,
    classify,
    e164,
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
INBOUND_EVENT = "messages.upsert"

# Baileys message parts (proto.Message fields) -> our inbound type.
MESSAGE_PARTS = {
    "conversation": "text",
    "extendedTextMessage": "text",
    "imageMessage": "image",
    "audioMessage": "audio",
    "videoMessage": "video",
    "ptvMessage": "video",
    "documentMessage": "document",
    "stickerMessage": "sticker",
    "locationMessage": "location",
    "liveLocationMessage": "location",
    "contactMessage": "contacts",
    "contactsArrayMessage": "contacts",
    "buttonsResponseMessage": "button",
    "templateButtonReplyMessage": "button",
    "listResponseMessage": "interactive",
    "interactiveResponseMessage": "interactive",
    "reactionMessage": "reaction",
}
# Wrappers around the real part (disappearing messages, view once, a document's caption).
WRAPPERS = (
    "ephemeralMessage",
    "viewOnceMessage",
    "viewOnceMessageV2",
    "viewOnceMessageV2Extension",
    "documentWithCaptionMessage",
)
# Chats that are not a conversation with one person.
NOT_A_PERSON = ("@g.us", "@broadcast", "@newsletter")

# `connection.update` (whatsapp.baileys.service.ts): data {instance, wuid, state, statusReason}
# with state open | connecting | close, or refused when the QR code was not read in time.
CONNECTION_EVENT = "connection.update"
CONNECTION_STATES = {"open", "connecting", "close", "refused"}

JWT_LEEWAY_SECONDS = 30
# How a send to a number that is not on WhatsApp is described (Delivery.NOT_ON_WHATSAPP_TEXT:
# the rows stored before it had a code of its own) and the stable code it gets, which a retry
# of failed deliveries never sends again.
NOT_ON_WHATSAPP = "number is not on WhatsApp"
NOT_ON_WHATSAPP_INFO = ErrorInfo(
    code="not_on_whatsapp",
    title="Number not on WhatsApp",
    guidance=gettext_lazy("The number has no WhatsApp account: check the number."),
    action="never",
)


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


def _unwrap(message: dict[str, Any]) -> dict[str, Any]:
    """The message part inside ephemeral, view-once and document-with-caption wrappers."""
    for _ in range(3):
        inner = next((message[w] for w in WRAPPERS if isinstance(message.get(w), dict)), None)
        if inner is None or not isinstance(inner.get("message"), dict):
            break
        message = {k: v for k, v in message.items() if k not in WRAPPERS} | inner["message"]
    return message


def _obj(holder: dict[str, Any], name: str) -> dict[str, Any]:
    value = holder.get(name)
    return value if isinstance(value, dict) else {}


def _text(kind: str, part: Any) -> str:
    """The text a person reads in PART (a Baileys message part of type KIND)."""
    if isinstance(part, str):
        return part  # conversation
    if not isinstance(part, dict):
        return ""
    if kind == "buttonsResponseMessage":
        return str(part.get("selectedDisplayText") or part.get("selectedButtonId") or "")
    if kind == "templateButtonReplyMessage":
        return str(part.get("selectedDisplayText") or part.get("selectedId") or "")
    if kind == "listResponseMessage":
        reply = _obj(part, "singleSelectReply")
        return str(part.get("title") or reply.get("selectedRowId") or "")
    if kind == "interactiveResponseMessage":
        body = _obj(part, "body")
        return str(body.get("text") or "")
    if kind == "reactionMessage":
        return str(part.get("text") or "")
    if kind in ("locationMessage", "liveLocationMessage"):
        place = [str(part.get(k) or "") for k in ("name", "address")]
        coordinates = f"{part.get('degreesLatitude', '')},{part.get('degreesLongitude', '')}"
        return " ".join(p for p in place if p) or coordinates
    if kind == "contactMessage":
        return str(part.get("displayName") or "")
    if kind == "contactsArrayMessage":
        return str(part.get("displayName") or "")
    return str(part.get("text") or part.get("caption") or "")


def _quoted(item: dict[str, Any], part: Any) -> str:
    for holder in (item, part if isinstance(part, dict) else {}):
        context = holder.get("contextInfo")
        if isinstance(context, dict) and isinstance(context.get("stanzaId"), str) and context["stanzaId"]:
            return str(context["stanzaId"])[:128]
    if isinstance(part, dict) and isinstance(part.get("key"), dict):  # a reaction names its message
        return str(part["key"].get("id") or "")[:128]
    return ""


def _sender_phone(item: dict[str, Any], key: dict[str, Any]) -> str:
    """The sender's phone: the JID itself for a phone JID, else (an `@lid` privacy id) the
    phone Evolution puts beside it."""
    remote = str(key.get("remoteJid") or "")
    if remote.endswith("@s.whatsapp.net") or remote.endswith("@c.us"):
        phone = e164(remote)
        if phone:
            return phone
    for alt in (key.get("remoteJidAlt"), key.get("senderPn"), item.get("senderPn")):
        phone = e164(alt)
        if phone:
            return phone
    return ""


def _inbound(item: Any, fallback_time: datetime | None) -> InboundUpdate | None:
    """An inbound message from one `messages.upsert` item, or None for our own echoes,
    groups, broadcasts and items without a message id."""
    if not isinstance(item, dict):
        raise PayloadError("messages.upsert: data items must be objects")
    key: dict[str, Any] = item["key"] if isinstance(item.get("key"), dict) else {}
    message_id = key.get("id")
    if key.get("fromMe") is not False or not isinstance(message_id, str) or not message_id:
        return None
    remote = str(key.get("remoteJid") or "")
    if remote.endswith(NOT_A_PERSON) or remote == "status@broadcast":
        return None
    message = _unwrap(item["message"] if isinstance(item.get("message"), dict) else {})
    message_type = str(item.get("messageType") or "")
    kind = message_type if message_type in MESSAGE_PARTS and message_type in message else ""
    if not kind:
        kind = next((k for k in MESSAGE_PARTS if k in message), "")
    part = message.get(kind) if kind else None
    inbound_type = MESSAGE_PARTS.get(kind, "other")
    media = None
    if inbound_type in MEDIA_TYPES and isinstance(part, dict):
        media = InboundMedia(
            mime_type=str(part.get("mimetype") or "")[:127],
            file_name=str(part.get("fileName") or "")[:255],
            url=str(message.get("mediaUrl") or "") if isinstance(message.get("mediaUrl"), str) else "",
            in_body=isinstance(message.get("base64"), str) and bool(message["base64"]),
            voice=bool(part.get("ptt")),
        )
    lid = remote if remote.endswith("@lid") else ""
    return InboundUpdate(
        message_id=message_id[:128],
        phone=_sender_phone(item, key),
        type=inbound_type,
        text=_text(kind, part) if kind else "",
        wa_user_id=lid[:128],
        profile_name=str(item.get("pushName") or "")[:200],
        quoted_id=_quoted(item, part),
        media=media,
        occurred_at=timestamp(item.get("messageTimestamp")) or fallback_time,
    )


def media_base64(body: bytes | str, message_id: str) -> str | None:
    """The base64 text of MESSAGE_ID's attachment in a stored `messages.upsert` BODY, or None."""
    try:
        payload = load_json(body)
    except PayloadError:
        return None
    data = payload.get("data") if isinstance(payload, dict) else None
    for item in data if isinstance(data, list) else [data]:
        if not isinstance(item, dict) or not isinstance(item.get("key"), dict):
            continue
        if item["key"].get("id") != message_id or not isinstance(item.get("message"), dict):
            continue
        encoded = _unwrap(item["message"]).get("base64")
        return encoded if isinstance(encoded, str) and encoded else None
    return None


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
    if event not in STATUS_EVENTS and event != INBOUND_EVENT:
        return parsed
    data = payload["data"]
    items = data if isinstance(data, list) else [data]
    fallback_time = timestamp(payload.get("date_time"))
    if event == INBOUND_EVENT:
        for item in items:
            inbound = _inbound(item, fallback_time)
            if inbound is not None:
                parsed.messages.append(inbound)
        return parsed
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
        text = self._error_message(data, response)
        # Stable, so that a retry of failed deliveries can leave unknown numbers out.
        code = NOT_ON_WHATSAPP_INFO.code if text.startswith(NOT_ON_WHATSAPP) else str(response.status_code)
        raise classify(response, code, text)

    @classmethod
    def error_info(cls, code: str) -> ErrorInfo | None:
        return NOT_ON_WHATSAPP_INFO if code == NOT_ON_WHATSAPP_INFO.code else None

    @classmethod
    def codes_with_action(cls, action: ErrorAction) -> frozenset[str]:
        return frozenset({NOT_ON_WHATSAPP_INFO.code}) if action == NOT_ON_WHATSAPP_INFO.action else frozenset()

    @staticmethod
    def _error_message(data: Any, response: httpx.Response) -> str:
        # Errors look like {"status": 400, "error": "Bad Request", "response": {"message": [...]}};
        # an unknown number is [{"exists": false, "jid": ..., "number": ...}].
        if not isinstance(data, dict):
            return f"HTTP {response.status_code}"
        detail = (data.get("response") or {}).get("message") if isinstance(data.get("response"), dict) else None
        if isinstance(detail, list) and detail and isinstance(detail[0], dict) and detail[0].get("exists") is False:
            return f"{NOT_ON_WHATSAPP} ({detail[0].get('number', '')})"
        if isinstance(detail, list) and len(detail) == 1:
            detail = detail[0]
        reason = str(data.get("error") or f"HTTP {response.status_code}")
        return f"{reason}: {short(detail)}" if detail else reason

    supports_profile_pictures = True

    def profile_picture_url(self, phone: str) -> str | None:
        """`POST /chat/fetchProfilePictureUrl/{instance}` with `{"number"}` answers
        `{"wuid", "profilePictureUrl"}`; the URL is null when the user's privacy settings hide
        the picture (src/api/controllers/chat.controller.ts, `fetchProfilePicture`)."""
        url = f"{self.base_url}/chat/fetchProfilePictureUrl/{self.instance}"
        response = post(url, headers={"apikey": self.api_key}, body={"number": phone.lstrip("+")})
        data = response_json(response)
        if response.status_code not in (200, 201):
            raise classify(response, str(response.status_code), self._error_message(data, response))
        picture = data.get("profilePictureUrl") if isinstance(data, dict) else None
        return picture if isinstance(picture, str) and picture.startswith(("http://", "https://")) else None

    def verify(self, request: HttpRequest, body: bytes) -> None:
        if self.jwt_key:
            verify_jwt(self.jwt_key, request.headers.get("Authorization", ""))

    def verify_parsed(self, parsed: ParsedWebhook) -> None:
        if parsed.instance and self.instance and parsed.instance != self.instance:
            raise Rejected("wrong_instance")

    @classmethod
    def parse_webhook(cls, body: bytes | str, hint: str = "") -> ParsedWebhook:
        return parse_envelope(load_json(body), event_hint=hint)

    def media_source(self, media_info: dict[str, Any], *, body: str, message_id: str) -> MediaSource:
        """The base64 of the webhook body when it came with one, else Evolution's `mediaUrl`
        (its S3: a presigned or public URL, fetched without our API key)."""
        encoded = media_base64(body, message_id) if media_info.get("in_body") and body else None
        if encoded:
            try:
                return MediaSource(data=base64.b64decode(encoded.split(",", 1)[-1], validate=True))
            except (binascii.Error, ValueError):
                raise ProviderError("permanent", "the webhook's base64 is not valid", code="bad_base64") from None
        url = media_info.get("url")
        if isinstance(url, str) and url:
            return MediaSource(url=url)
        raise ProviderError("permanent", "the webhook carried neither base64 nor a media URL", code="no_media")
