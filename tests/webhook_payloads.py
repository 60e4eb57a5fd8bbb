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
