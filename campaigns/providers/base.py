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
# What Sense does about a provider's error code (Provider.error_info):
# - fail: the delivery fails (retryable by an operator at once);
# - throttle: a rate limit: back off and send it again within the campaign (neither a
#   failure nor an error towards the campaign's auto-pause);
# - retry: the provider had a problem: sent again later, like a 5xx;
# - wait: it fails and may be retried only after RETRY_WAIT (Meta's per-user marketing cap);
# - opt_out: it fails and the contact is opted out (never retried);
# - never: it fails and is never retried: the number cannot receive it, so the same message
#   fails the same way (not on WhatsApp, undeliverable);
# - never_free_text: it fails; retried only by a template campaign (free text outside the
#   customer service window is refused again, a template is not);
# - template: it fails and counts towards the campaign's run of template errors.
# The retry rule (`Delivery.retryable_at`, `DeliveryQuerySet.retryable`) reads the last five
# from `Delivery.ERROR_ACTIONS`; the sender reads throttle, opt_out and template.
ErrorAction = Literal["fail", "throttle", "retry", "wait", "opt_out", "never", "never_free_text", "template"]

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
class TemplateParameter:
    """One filled-in parameter of a template send: NAME is the template's own (a NAMED
    template's `first_name`; "" for a positional one, which goes by order)."""

    value: str
    name: str = ""


@dataclass(frozen=True)
class TemplateButton:
    """A button with a variable part (a URL button's `{{1}}`), by its index in the template."""

    index: int
    sub_type: str  # url
    parameters: tuple[TemplateParameter, ...]


@dataclass(frozen=True)
class TemplateMessage:
    """An approved message template to send: by NAME and LANGUAGE, with its header (a media
    or text parameters), body parameters and button parameters, in the template's order."""

    name: str
    language: str
    header_media: Media | None = None
    header_parameters: tuple[TemplateParameter, ...] = ()
    body_parameters: tuple[TemplateParameter, ...] = ()
    buttons: tuple[TemplateButton, ...] = ()


@dataclass(frozen=True)
class OutgoingMessage:
    phone: str  # E.164, with the +
    text: str  # what the contact reads (a template's body with its parameters filled in)
    media: Media | None = None
    template: TemplateMessage | None = None  # sent instead of TEXT and MEDIA when set
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


@dataclass(frozen=True)
class ErrorInfo:
    """A provider's error code explained: its TITLE (as the provider names it), one line of
    GUIDANCE for the operator (translatable) and the ACTION Sense takes."""

    code: str
    title: str
    guidance: Any  # a lazy translation string
    action: ErrorAction = "fail"


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
    # Cloud API pricing (`statuses[].pricing`): None / "" when the provider gave none.
    billable: bool | None = None
    pricing_category: str = ""
    pricing_model: str = ""
    pricing_type: str = ""
    # `statuses[].conversation` (older pricing): its id and origin type.
    conversation_id: str = ""
    conversation_origin: str = ""


@dataclass(frozen=True)
class TemplateUpdate:
    """A provider's news about one message template: its new STATUS (Meta's name, upper
    case) and REASON, or its new QUALITY score ("" when the event does not say). Templates
    are found by the provider's id, else by name and language."""

    template_id: str
    name: str = ""
    language: str = ""
    status: str = ""
    reason: str = ""
    quality: str = ""


# Types of inbound messages (values of InboundMessage.Type).
INBOUND_TYPES = frozenset(
    {
        "text",
        "image",
        "audio",
        "video",
        "document",
        "sticker",
        "location",
        "contacts",
        "button",
        "interactive",
        "reaction",
        "other",
    }
)
MEDIA_TYPES = frozenset({"image", "audio", "video", "document", "sticker"})


@dataclass(frozen=True)
class InboundMedia:
    """What a provider says about an inbound message's attachment: never its bytes. Where
    to get them: Cloud's media id (`media_id`), Evolution's `url` (its S3 on) or the body
    itself (`in_body`: Evolution's webhook base64 option on)."""

    mime_type: str = ""
    file_name: str = ""
    media_id: str = ""
    url: str = ""
    in_body: bool = False
    voice: bool = False  # a push-to-talk voice note

    def as_info(self) -> dict[str, Any]:
        """The JSON kept on the InboundMessage (`media_info`)."""
        info: dict[str, Any] = {"mime_type": self.mime_type, "file_name": self.file_name}
        if self.media_id:
            info["media_id"] = self.media_id
        if self.url:
            info["url"] = self.url
        if self.in_body:
            info["in_body"] = True
        if self.voice:
            info["voice"] = True
        return info


@dataclass(frozen=True)
class InboundUpdate:
    """One message someone sent to the connection. `phone` is E.164 or "" (a Cloud username
    user comes with a `wa_user_id` only; an Evolution `@lid` without its phone); `type` is
    one of INBOUND_TYPES; `text` the body, the caption or the title of the button or list
    row chosen; `quoted_id` the provider id of the message it answers."""

    message_id: str
    phone: str
    type: str
    text: str = ""
    wa_user_id: str = ""
    profile_name: str = ""
    quoted_id: str = ""
    media: InboundMedia | None = None
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class ConsentUpdate:
    """A provider telling that someone stopped (OPTED_OUT) or resumed marketing messages
    (Cloud's `user_preferences`)."""

    phone: str
    opted_out: bool
    wa_user_id: str = ""
    occurred_at: datetime | None = None


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
    status updates, template status or quality changes, inbound messages and consent changes
    in it, and a connection state report if it is one (all empty for contacts, presence,
    group messages, our own echoes... which are stored as ignored)."""

    event_type: str
    instance: str = ""
    statuses: list[StatusUpdate] = field(default_factory=list)
    templates: list[TemplateUpdate] = field(default_factory=list)
    messages: list[InboundUpdate] = field(default_factory=list)
    consents: list[ConsentUpdate] = field(default_factory=list)
    connection_state: ConnectionState | None = None

    @property
    def actionable(self) -> bool:
        """Whether applying it can change anything (else it is stored as ignored)."""
        return bool(
            self.statuses or self.templates or self.messages or self.consents or self.connection_state is not None
        )


@dataclass(frozen=True)
class RemoteTemplate:
    """One message template as the provider lists it (Meta's fields, kept as given)."""

    template_id: str
    name: str
    language: str
    status: str
    category: str
    parameter_format: str
    components: list[dict[str, Any]]
    quality_score: str = ""
    reason: str = ""


@dataclass(frozen=True)
class MediaSource:
    """Where an inbound attachment's bytes are: DATA itself (it came in the webhook body),
    or URL, fetched with HEADERS (which may hold a credential: never log them)."""

    data: bytes | None = None
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict, repr=False)


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

    # Whether the provider has message templates (list_templates, OutgoingMessage.template).
    supports_templates: ClassVar[bool] = False

    def send(self, message: OutgoingMessage) -> SendResult:
        raise NotImplementedError

    def list_templates(self) -> list[RemoteTemplate]:
        """Every message template of the account, all pages. Raises ProviderError (code:
        the provider's, e.g. Meta's 190 bad token, 100 unknown account; `not_configured`
        when the connection lacks what listing needs)."""
        raise ProviderError("permanent", "This provider has no message templates.", code="not_supported")

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

    @classmethod
    def error_info(cls, code: str) -> ErrorInfo | None:
        """What the provider's error CODE means and what Sense does about it; None for a code
        this provider does not explain (the delivery then simply fails)."""
        return None

    @classmethod
    def codes_with_action(cls, action: ErrorAction) -> frozenset[str]:
        """Every error code of this provider on which Sense takes ACTION."""
        return frozenset()

    # Whether `profile_picture_url` can ever answer (the Cloud API has no such call).
    supports_profile_pictures: ClassVar[bool] = False

    def profile_picture_url(self, phone: str) -> str | None:
        """The URL of PHONE's (E.164) WhatsApp profile picture, or None when it has none or
        hides it (privacy settings) or the gateway cannot tell. Raises ProviderError when the
        gateway could not be asked. The URL is the provider's CDN's: never show it to a
        browser (Sense serves it through its media proxy)."""
        return None

    def media_source(self, media_info: dict[str, Any], *, body: str, message_id: str) -> MediaSource:
        """Where to get the attachment of inbound MESSAGE_ID (MEDIA_INFO: `InboundMedia.as_info()`,
        BODY: the stored webhook body, "" once pruned). Raises ProviderError."""
        raise ProviderError("permanent", "this provider gives no inbound media", code="no_media")


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


def e164(raw: Any) -> str:
    """RAW (digits, a `<digits>@s.whatsapp.net` JID, with or without +) as E.164, or ""
    when it is not a valid phone number. Brazilian mobile ids without the ninth digit get it."""
    from campaigns.models import normalize_phone

    if not isinstance(raw, str) or not raw.strip():
        return ""
    digits = raw.split("@", 1)[0].split(":", 1)[0].strip().lstrip("+")
    if not digits.isdigit():
        return ""
    if len(digits) == 12 and digits.startswith("55") and digits[4] in "6789":
        # A Brazilian mobile registered on WhatsApp before the ninth digit was added: its id
        # still lacks it (551199990000), while the number (and our contact) has it.
        digits = digits[:4] + "9" + digits[4:]
    try:
        return normalize_phone("+" + digits)
    except ValueError:
        return ""


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


def get(url: str, *, headers: dict[str, str], params: dict[str, Any] | None = None) -> httpx.Response:
    """GET, turning transport failures into transient ProviderErrors (a read changes nothing)."""
    try:
        return shared_client().get(url, params=params, headers=headers)
    except httpx.TransportError as exc:
        raise ProviderError(
            "transient", f"could not reach the provider ({exc.__class__.__name__})", code="connect"
        ) from None


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
