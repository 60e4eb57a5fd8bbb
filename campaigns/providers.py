"""WhatsApp gateway clients: one class per provider behind one small interface.

`provider_for(connection).send(message)` returns a `SendResult` or raises `ProviderError`,
whose `kind` says what the caller may do next:

- `transient`: 429, 5xx, or the request never reached the provider (connection refused,
  connect timeout). Safe to retry later, not before `retry_after` seconds when given.
- `permanent`: any other 4xx. The delivery fails, keeping the provider's code and message.
- `ambiguous`: the request went out but no answer came back (read timeout, connection
  dropped mid-response). The provider may have sent it; re-sending could duplicate it, so
  the caller records an `unknown` outcome instead.

All HTTP goes through `sense.lib.http.shared_client()`. Credentials are sent in headers
and never logged or put in exception messages.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx
from django.conf import settings

from campaigns.models import Connection
from sense.lib.http import shared_client

ErrorKind = Literal["transient", "permanent", "ambiguous"]


@dataclass(frozen=True)
class Media:
    url: str  # a URL the provider can fetch (presigned, expires)
    file_type: str  # image | video | audio | document
    mime_type: str
    file_name: str


@dataclass(frozen=True)
class OutgoingMessage:
    phone: str  # E.164, with the +
    text: str
    media: Media | None = None

    @property
    def number(self) -> str:
        """The digits-only form both providers take."""
        return self.phone.lstrip("+")


@dataclass(frozen=True)
class SendResult:
    message_id: str
    status_code: int


class ProviderError(Exception):
    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        code: str = "",
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code
        self.status_code = status_code
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return self.kind == "transient"

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


class Provider(Protocol):
    name: str

    def send(self, message: OutgoingMessage) -> SendResult: ...


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _post(url: str, *, headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    """POST, turning transport failures into classified ProviderErrors."""
    try:
        return shared_client().post(url, json=body, headers=headers)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        # Nothing reached the provider: retrying cannot duplicate the message.
        raise ProviderError("transient", f"could not connect ({exc.__class__.__name__})", code="connect") from None
    except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
        raise ProviderError("ambiguous", f"no answer in time ({exc.__class__.__name__})", code="timeout") from None
    except httpx.TransportError as exc:
        raise ProviderError("ambiguous", f"connection lost ({exc.__class__.__name__})", code="transport") from None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _classify(response: httpx.Response, code: str, message: str) -> ProviderError:
    status = response.status_code
    if status == 429 or status >= 500:
        return ProviderError(
            "transient",
            message,
            code=code,
            status_code=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    return ProviderError("permanent", message, code=code, status_code=status)


def _short(value: Any, limit: int = 500) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class EvolutionProvider:
    """Evolution API v2 (EvolutionAPI/evolution-api, src/api/routes/sendMessage.router.ts)."""

    name = "evolution"

    def __init__(self, *, base_url: str, instance: str, api_key: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.instance = instance
        self.api_key = api_key

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
        response = _post(url, headers=headers, body=body)
        data = _json(response)
        if response.status_code in (200, 201):
            message_id = (data or {}).get("key", {}).get("id") if isinstance(data, dict) else None
            if not message_id:
                raise ProviderError("ambiguous", "accepted without a message id", code="no_id")
            return SendResult(message_id=str(message_id), status_code=response.status_code)
        raise _classify(response, str(response.status_code), self._error_message(data, response))

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
        return f"{reason}: {_short(detail)}" if detail else reason


class CloudApiProvider:
    """WhatsApp Cloud API (developers.facebook.com/docs/whatsapp/cloud-api/reference/messages)."""

    name = "cloud"
    # Throttling and outage codes Meta may send with a 400 (error-codes page): retry later.
    TRANSIENT_CODES = frozenset({"1", "2", "4", "80007", "130429", "131000", "131016", "131048", "131056"})

    def __init__(self, *, base_url: str, phone_number_id: str, access_token: str) -> None:
        self.base_url = (base_url or settings.CLOUD_API_BASE_URL).rstrip("/")
        self.phone_number_id = phone_number_id
        self.access_token = access_token

    def send(self, message: OutgoingMessage) -> SendResult:
        body: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": message.number}
        if message.media is None:
            body.update(type="text", text={"body": message.text, "preview_url": False})
        else:
            kind = message.media.file_type
            part: dict[str, Any] = {"link": message.media.url}
            if kind != "audio" and message.text:  # audio takes no caption
                part["caption"] = message.text
            if kind == "document":
                part["filename"] = message.media.file_name
            body.update({"type": kind, kind: part})
        url = f"{self.base_url}/{self.phone_number_id}/messages"
        response = _post(url, headers={"Authorization": f"Bearer {self.access_token}"}, body=body)
        data = _json(response)
        if response.status_code in (200, 201):
            try:
                message_id = data["messages"][0]["id"]
            except (TypeError, KeyError, IndexError):
                raise ProviderError("ambiguous", "accepted without a message id", code="no_id") from None
            return SendResult(message_id=str(message_id), status_code=response.status_code)
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code") or response.status_code)
            text = str(error.get("message") or f"HTTP {response.status_code}")
            details = (
                (error.get("error_data") or {}).get("details") if isinstance(error.get("error_data"), dict) else None
            )
            if details:
                text = f"{text} ({_short(details, 200)})"
        else:
            code, text = str(response.status_code), f"HTTP {response.status_code}"
        failure = _classify(response, code, text)
        if code in self.TRANSIENT_CODES and not failure.transient:
            failure = ProviderError("transient", text, code=code, status_code=response.status_code)
        raise failure


def provider_for(connection: Connection) -> Provider:
    """The client for CONNECTION's provider, with its credentials."""
    if connection.provider == Connection.Provider.EVOLUTION:
        return EvolutionProvider(
            base_url=connection.base_url,
            instance=connection.credential("instance"),
            api_key=connection.credential("api_key"),
        )
    if connection.provider == Connection.Provider.CLOUD:
        return CloudApiProvider(
            base_url=connection.base_url,
            phone_number_id=connection.credential("phone_number_id"),
            access_token=connection.credential("access_token"),
        )
    raise ValueError(f"unknown provider {connection.provider!r}")
