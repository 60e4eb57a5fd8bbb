"""Provider webhook bodies as Evolution API and the WhatsApp Cloud API send them, plus
the credentials they carry (Evolution's webhook JWT, Meta's body signature)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

import jwt

# Our status names -> what each provider sends for them.
EVOLUTION_NAMES = {"pending": "PENDING", "sent": "SERVER_ACK", "delivered": "DELIVERY_ACK", "read": "READ"}
EVOLUTION_NAMES["failed"] = "ERROR"


def evolution_update(
    message_id: str | None,
    status: str | int,
    *,
    instance: str = "acme-main",
    event: str | None = "messages.update",
    from_me: bool = True,
    as_list: bool = False,
    date_time: str | None = None,
) -> dict[str, Any]:
    """A v2 `messages.update` envelope (whatsapp.baileys.service.ts): STATUS is Evolution's
    name (SERVER_ACK, DELIVERY_ACK, READ, PLAYED, ERROR, DELETED) or its number."""
    data = {
        "messageId": "cm3xevolutionrowid",  # Evolution's own row id, not WhatsApp's
        "keyId": message_id,
        "remoteJid": "5511999990000@s.whatsapp.net",
        "fromMe": from_me,
        "participant": "5511999990000@s.whatsapp.net",
        "status": status,
        "instanceId": "2f1c1c7e-0000-4000-8000-000000000001",
    }
    body: dict[str, Any] = {
        "instance": instance,
        "data": [data] if as_list else data,
        "destination": "https://sense.example/api/webhooks/evolution/token/",
        "date_time": date_time or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "sender": "5511988880000@s.whatsapp.net",
        "server_url": "http://evolution:8080",
        "apikey": "instance-token",
    }
    if event is not None:
        body["event"] = event
    return body


def evolution_send_message(message_id: str, *, instance: str = "acme-main", timestamp: int | None = None) -> dict:
    """`send.message`: fired with the sent message (status PENDING) before the send call returns."""
    return {
        "event": "send.message",
        "instance": instance,
        "data": {
            "key": {"remoteJid": "5511999990000@s.whatsapp.net", "fromMe": True, "id": message_id},
            "pushName": "",
            "status": "PENDING",
            "message": {"conversation": "Hello"},
            "messageType": "conversation",
            "messageTimestamp": timestamp or int(time.time()),
            "instanceId": "2f1c1c7e-0000-4000-8000-000000000001",
            "source": "unknown",
        },
        "date_time": datetime.now(UTC).isoformat(),
        "sender": "5511988880000@s.whatsapp.net",
        "server_url": "http://evolution:8080",
        "apikey": "instance-token",
    }


def evolution_incoming_message(*, instance: str = "acme-main") -> dict[str, Any]:
    return {
        "event": "messages.upsert",
        "instance": instance,
        "data": {
            "key": {"remoteJid": "5511999990000@s.whatsapp.net", "fromMe": False, "id": "3EB0INCOMING"},
            "pushName": "Maria",
            "message": {"conversation": "Oi!"},
            "messageType": "conversation",
            "messageTimestamp": int(time.time()),
        },
        "date_time": datetime.now(UTC).isoformat(),
    }


def evolution_jwt(key: str, *, app: str = "evolution", action: str = "webhook", expires_in: int = 600) -> str:
    """The Bearer token Evolution sends when the webhook has a JWT key (HS256)."""
    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + expires_in, "app": app, "action": action}, key, algorithm="HS256")


def cloud_status(
    message_id: str | None,
    status: str,
    *,
    timestamp: int | None = None,
    error: tuple[int, str] | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": message_id,
        "status": status,
        "timestamp": str(timestamp if timestamp is not None else int(time.time())),
        "recipient_id": "5511999990000",
    }
    if status in ("sent", "delivered"):
        item["conversation"] = {"id": "CONVERSATION_ID", "origin": {"type": "marketing"}}
        item["pricing"] = {"billable": True, "pricing_model": "CBP", "category": "marketing"}
    if error is not None:
        code, title = error
        item["errors"] = [
            {"code": code, "title": title, "message": title, "error_data": {"details": f"{title} (details)"}}
        ]
    return item


def cloud_notification(*entries: list[dict[str, Any]], phone_number_id: str = "1098765") -> dict[str, Any]:
    """A Cloud API notification with one entry per argument, each a list of statuses."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": f"WABA{i}",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550001111", "phone_number_id": phone_number_id},
                            "statuses": statuses,
                        },
                    }
                ],
            }
            for i, statuses in enumerate(entries)
        ],
    }


def cloud_incoming_message() -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "WABA0",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "1098765"},
                            "contacts": [{"profile": {"name": "Maria"}, "wa_id": "5511999990000"}],
                            "messages": [
                                {
                                    "from": "5511999990000",
                                    "id": "wamid.INCOMING",
                                    "timestamp": str(int(time.time())),
                                    "text": {"body": "Oi!"},
                                    "type": "text",
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }


def sign(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def dumps(payload: Any) -> bytes:
    return json.dumps(payload).encode()


# --- Inbound messages (issue 13) -------------------------------------------------------------
# Evolution v2 `messages.upsert` items as whatsapp.baileys.service.ts builds them
# (`prepareMessage`: key, pushName, status, message, contextInfo (2.3.x), messageType,
# messageTimestamp, instanceId, source), with `message.base64` when the webhook's base64
# option is on and `message.mediaUrl` when Evolution's S3 is.

# A 1x1 PNG: real bytes for the sniffer and the thumbnailer.
PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a1d5c5b30000000049454e44ae426082"
)
# The first bytes of an Ogg Opus voice note (WhatsApp's ptt).
OGG_OPUS = b"OggS\x00\x02" + b"\x00" * 20 + b"\x01\x13OpusHead\x01\x01" + b"\x00" * 40


def evolution_message_item(
    part: dict[str, Any],
    *,
    message_id: str = "3EB0C0FFEE0001",
    remote_jid: str = "5511999990000@s.whatsapp.net",
    from_me: bool = False,
    push_name: str = "Maria",
    timestamp: int | None = None,
    context: dict[str, Any] | None = None,
    key_extra: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One `messages.upsert` data item whose message is PART (e.g. {"conversation": "Oi"})."""
    message_type = next((k for k in part if k not in ("base64", "mediaUrl", "messageContextInfo")), "conversation")
    item: dict[str, Any] = {
        "key": {"remoteJid": remote_jid, "fromMe": from_me, "id": message_id, **(key_extra or {})},
        "pushName": push_name,
        "status": "DELIVERY_ACK",
        "message": {**part, "messageContextInfo": {"deviceListMetadataVersion": 2}},
        "messageType": message_type,
        "messageTimestamp": timestamp or int(time.time()),
        "instanceId": "2f1c1c7e-0000-4000-8000-000000000001",
        "source": "android",
    }
    if context is not None:
        item["contextInfo"] = context
    item.update(extra or {})
    return item


def evolution_upsert(*items: dict[str, Any], instance: str = "acme-main", as_list: bool = False) -> dict[str, Any]:
    """A `messages.upsert` envelope of ITEMS (one object, or a list when AS_LIST or several)."""
    data: Any = list(items) if as_list or len(items) != 1 else items[0]
    return {
        "event": "messages.upsert",
        "instance": instance,
        "data": data,
        "destination": "https://sense.example/api/webhooks/evolution/token/",
        "date_time": datetime.now(UTC).isoformat(),
        "sender": "5511988880000@s.whatsapp.net",
        "server_url": "http://evolution:8080",
        "apikey": "instance-token",
    }


def evolution_image(*, base64: bytes | None = None, media_url: str = "", caption: str = "Olha isso") -> dict[str, Any]:
    import base64 as b64

    part: dict[str, Any] = {
        "imageMessage": {
            "url": "https://mmg.whatsapp.net/o1/v/t62.7118-24/f1/m231/abc.enc",
            "mimetype": "image/jpeg",
            "caption": caption,
            "fileSha256": "k3f...",
            "fileLength": "1234",
            "height": 1,
            "width": 1,
            "mediaKey": "…",
            "jpegThumbnail": "/9j/4AAQ",
        }
    }
    if base64 is not None:
        part["base64"] = b64.b64encode(base64).decode()
    if media_url:
        part["mediaUrl"] = media_url
    return part


def evolution_audio(*, base64: bytes | None = None) -> dict[str, Any]:
    import base64 as b64

    part: dict[str, Any] = {
        "audioMessage": {"mimetype": "audio/ogg; codecs=opus", "seconds": 3, "ptt": True, "fileLength": "4096"}
    }
    if base64 is not None:
        part["base64"] = b64.b64encode(base64).decode()
    return part


def evolution_buttons_reply(text: str = "Quero saber mais", button_id: str = "more") -> dict[str, Any]:
    return {
        "buttonsResponseMessage": {
            "selectedButtonId": button_id,
            "selectedDisplayText": text,
            "contextInfo": {"stanzaId": "BAE5QUOTED", "participant": "5511988880000@s.whatsapp.net"},
        }
    }


def evolution_list_reply(title: str = "Plano anual", row_id: str = "annual") -> dict[str, Any]:
    return {
        "listResponseMessage": {
            "title": title,
            "listType": "SINGLE_SELECT",
            "singleSelectReply": {"selectedRowId": row_id},
            "contextInfo": {"stanzaId": "BAE5QUOTED"},
        }
    }


# Cloud API `value.messages[]` items (developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components).


def cloud_message(
    part: dict[str, Any],
    *,
    message_id: str = "wamid.HBgNNTUxMTk5OTk5MDAwMBUCABIYFjNFQjBDMEZGRUUwMDAxAA==",
    sender: str = "5511999990000",
    timestamp: int | None = None,
    context_id: str = "",
) -> dict[str, Any]:
    """One message whose typed part is PART (e.g. {"text": {"body": "Oi"}})."""
    kind = next(iter(part))
    item: dict[str, Any] = {"from": sender, "id": message_id, "timestamp": str(timestamp or int(time.time()))}
    item.update(part)
    item["type"] = kind
    if context_id:
        item["context"] = {"from": "15550001111", "id": context_id}
    return item


def cloud_inbound(
    *messages: dict[str, Any],
    name: str = "Maria",
    wa_id: str = "5511999990000",
    user_id: str = "",
    field: str = "messages",
) -> dict[str, Any]:
    contact: dict[str, Any] = {"profile": {"name": name}, "wa_id": wa_id}
    if user_id:
        contact["user_id"] = user_id
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "WABA0",
                "changes": [
                    {
                        "field": field,
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "1098765"},
                            "contacts": [contact],
                            "messages": list(messages),
                        },
                    }
                ],
            }
        ],
    }


def cloud_user_preferences(wa_id: str = "5511999990000", value: str = "stop") -> dict[str, Any]:
    """Meta's `user_preferences` webhook: the user stopped (or resumed) marketing messages."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "WABA0",
                "changes": [
                    {
                        "field": "user_preferences",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "1098765"},
                            "contacts": [{"profile": {"name": "Maria"}, "wa_id": wa_id}],
                            "user_preferences": [
                                {
                                    "wa_id": wa_id,
                                    "detail": "User requested to stop marketing messages",
                                    "category": "marketing_messages",
                                    "value": value,
                                    "timestamp": int(time.time()),
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
