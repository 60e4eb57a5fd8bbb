"""What every WhatsApp gateway shares: the `Provider` interface, the plain dataclasses it
takes and returns, its errors, and the HTTP and parsing helpers its modules use.

`provider.send(message)` returns a `SendResult` or raises `ProviderError`, whose `kind`
says what the caller may do next:

- `transient`: 429, 5xx, or the request never reached the provider (connection refused,
  connect timeout). Safe to retry later, not before `retry_after` seconds when given.
- `permanent`: any other 4xx. The delivery fails, keeping the provider's code and message.
- `ambiguous`: the request went out but no answer came back (read timeout, connection
  dropped mid-response). The provider may have sent it; re-sending could duplicate it, so
  the caller records an `unknown` outcome instead.

Webhooks: `verify(request, body)` checks who is calling before anything of the body is
trusted (raises `Rejected`); `parse_webhook(body, hint)` reads the body into plain status
updates without touching the database (raises `PayloadError`). Parsing is strict about
the envelope (a body that is not the provider's shape is refused with 400, so a
misconfigured sender notices) and lenient inside it (an unknown status name is skipped,
so a provider upgrade never turns into days of retries).

All HTTP goes through `sense.lib.http.shared_client()`. Credentials are sent in headers
and never logged or put in exception messages.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import httpx

from sense.lib.http import shared_client

if TYPE_CHECKING:
    from django.http import HttpRequest

    from campaigns.models import Connection

ErrorKind = Literal["transient", "permanent", "ambiguous"]

# Delivery statuses a provider event can report (values of Delivery.Status).
PENDING, SENT, DELIVERED, READ, FAILED = "pending", "sent", "delivered", "read", "failed"


# --- What goes out -----------------------------------------------------------------------


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
    typing_seconds: int = 0  # Evolution shows "typing…" this long before sending (its `delay`)

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


# --- What comes in -------------------------------------------------------------------------


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


@dataclass(frozen=True)
class ConnectionState:
    """The gateway's report on the number's session (Evolution's `connection.update`):
    `state` is open, connecting, close or refused; `reason` its status reason."""

    state: str
    reason: str = ""
    occurred_at: datetime | None = None


@dataclass
class ParsedWebhook:
    """What a webhook call carries: its event type, Evolution's instance name (or ""), the
    status updates in it (empty for messages, contacts, presence... which are ignored) and
    a connection state report, if it is one."""

    event_type: str
    instance: str = ""
    statuses: list[StatusUpdate] = field(default_factory=list)
    connection_state: ConnectionState | None = None


# --- The interface ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """One credential a provider takes: its key in `Connection.credentials`, a label for
    forms and a help text for the command line. Every credential is write-only."""

    name: str
    label: str
    required: bool = True


class Provider:
    """One gateway. Subclasses declare their credentials, their webhook route and whether a
    base URL is needed, and implement `send`, `verify` and `parse_webhook`."""

    name: ClassVar[str]
    credentials: ClassVar[tuple[Credential, ...]] = ()
    # The URL name of the webhook route (campaigns/urls.py) and the methods it answers.
    webhook_url_name: ClassVar[str]
    webhook_methods: ClassVar[tuple[str, ...]] = ("POST",)

    @classmethod
    def from_connection(cls, connection: Connection) -> Provider:
        raise NotImplementedError

    @classmethod
    def default_base_url(cls) -> str:
        """The base URL of a connection created without one ("" when one is required)."""
        return ""

    @classmethod
    def disabled_reason(cls) -> str:
        """Why connections of this provider may not be created nor send here ("" when they
        may): the sandbox is off unless SANDBOX_ENABLED."""
        return ""

    @classmethod
    def check_credentials(cls, credentials: dict[str, str]) -> None:
        """Check the values of CREDENTIALS (names are checked by the caller). Raises
        ValueError with a message for a person."""

    @classmethod
    def required_credentials(cls) -> tuple[str, ...]:
        return tuple(c.name for c in cls.credentials if c.required)

    @classmethod
    def allowed_credentials(cls) -> tuple[str, ...]:
        return tuple(c.name for c in cls.credentials)

    def send(self, message: OutgoingMessage) -> SendResult:
        raise NotImplementedError

    def verify(self, request: HttpRequest, body: bytes) -> None:
        """Check the caller of a webhook POST (signature, JWT). Raises Rejected."""
        raise NotImplementedError

    def verify_parsed(self, parsed: ParsedWebhook) -> None:
        """Checks that need the parsed body (Evolution's instance name). Raises Rejected."""

    def verify_subscription(self, request: HttpRequest) -> str | None:
        """A GET handshake on the webhook URL (Meta's): the text to answer with, or None to
        refuse (always, for a provider without one)."""
        return None

    @classmethod
    def parse_webhook(cls, body: bytes | str, hint: str = "") -> ParsedWebhook:
        """Read a received or stored BODY; HINT is what the URL or the stored event type says
        of the event. Raises PayloadError."""
        raise NotImplementedError


# --- Helpers for provider modules -------------------------------------------------------------


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


def post(url: str, *, headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
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


def response_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def classify(response: httpx.Response, code: str, message: str) -> ProviderError:
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


def short(value: Any, limit: int = 500) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_json(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PayloadError("body is not JSON") from None


def timestamp(value: Any, *, millis: bool = False) -> datetime | None:
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
