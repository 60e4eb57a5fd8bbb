"""The sandbox: a WhatsApp gateway built into Sense, for first runs, demos and tests.

It plays the WhatsApp Cloud API as Sense sees it. `send` answers at once with a `wamid.`
message id (nothing leaves the machine) and plans the status webhooks Meta would send
for that message; a worker (`campaigns.tasks.sandbox_webhooks`) then POSTs each one at
its time over HTTP to Sense's own webhook endpoint (`/api/webhooks/sandbox/<token>/`),
signed as Meta signs (`X-Hub-Signature-256`, HMAC-SHA256 of the raw body with the
connection's app secret), in Meta's shapes: statuses `sent`, `delivered`, `read`, `failed`
with `errors: [{code, title, message, error_data.details}]`, and inbound text messages
for replies (quoting the message they answer; some say "SAIR", which opts the contact out). So what a
newcomer watches is the production ingest path: webhook view -> WebhookEvent -> worker.

Why Meta's shape and not Evolution's: Meta signs every body, so the sandbox exercises a
real verification instead of none (Evolution signs nothing without a JWT key); a failed
Meta status carries the provider's error code and text, where Evolution only says ERROR;
and Meta documents its payloads
(developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components,
.../cloud-api/support/error-codes).

Per connection, two optional credentials: `app_secret` (default: derived from SECRET_KEY
and the connection id, so the sender and the webhook view agree without storing one) and
`outcomes`, the mix, e.g. `delivered=95,read=60,failed=3,reply=5,delivered_after=1-5,
read_after=5-60` (the defaults; see `Outcomes`). The webhooks go to the connection's base
URL (default SANDBOX_WEBHOOK_BASE_URL): Sense as its workers reach it.

Nothing of this runs unless SANDBOX_ENABLED (default: DEBUG): creating a connection,
starting a campaign on one, sending and receiving its webhooks are all refused, so a
production deployment never sends into it by mistake.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
import secrets
import time
from dataclasses import asdict, dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import dramatiq
import httpx
from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils.crypto import salted_hmac

from campaigns.models import Connection
from campaigns.providers import cloud_errors
from campaigns.providers.base import (
    Credential,
    ErrorAction,
    ErrorInfo,
    OutgoingMessage,
    ParsedWebhook,
    Provider,
    ProviderError,
    Rejected,
    SendResult,
    load_json,
)
from campaigns.providers.cloud import parse_notification, signature, verify_signature
from sense.lib.http import shared_client

if TYPE_CHECKING:
    from django.http import HttpRequest

log = logging.getLogger("sense.campaigns")

# The actor that posts the webhooks (campaigns/tasks.py), looked up by name: campaigns.tasks
# imports the sender, which imports this package, so this module must not import it back.
ACTOR_NAME = "sandbox_webhooks"
DISPLAY_PHONE_NUMBER = "15550109999"  # Meta's test numbers are +1 555 ...
ERROR_HREF = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"

# Failures a campaign of free-form text messages meets on the Cloud API, with Meta's titles
# and details (error-codes page), and how often each comes among the failures.
ERRORS: dict[int, tuple[str, str, int]] = {
    131026: (
        "Message undeliverable",
        "Unable to deliver message. Reasons can include: the recipient phone number is not a "
        "WhatsApp phone number; the recipient has not accepted our new Terms of Service and "
        "Privacy Policy; the recipient is using an old WhatsApp version.",
        55,
    ),
    131047: (
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
        20,
    ),
    131049: (
        "This message was not delivered to maintain healthy ecosystem engagement.",
        "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
        20,
    ),
    130472: (
        "User's number is part of an experiment",
        "Failed to send message because this user's phone number is part of an experiment.",
        5,
    ),
}
REPLIES = ["Obrigado!", "Quero saber mais", "Qual o horário de vocês?", "👍", "SAIR"]


# --- The outcome mix ----------------------------------------------------------------------


def _number(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"outcomes: {name}: {raw!r} is not a number") from None


def _percent(name: str, raw: str) -> float:
    value = _number(name, raw)
    if not 0 <= value <= 100:
        raise ValueError(f"outcomes: {name} must be a percentage from 0 to 100")
    return value


def _seconds(name: str, raw: str) -> tuple[float, float]:
    low, _, high = raw.partition("-")
    lo, hi = _number(name, low), _number(name, high or low)
    if not 0 <= lo <= hi <= 3600:
        raise ValueError(f"outcomes: {name} must be seconds or a range of seconds like 1-5 (at most 3600)")
    return lo, hi


@dataclass(frozen=True)
class Outcomes:
    """What happens to the sandbox's messages. Percentages: `failed` and `delivered` of all
    sends (the rest stays `sent`, like a phone that stays off), `read` of the delivered
    ones, `reply` of all sends, drawn among the read ones (so at most delivered x read).
    Delays in seconds, a uniform draw in each range: `delivered_after` from the send to
    delivered (or failed), `read_after` from delivered to read."""

    delivered: float = 95.0
    failed: float = 3.0
    read: float = 60.0
    reply: float = 5.0
    delivered_after: tuple[float, float] = (1.0, 5.0)
    read_after: tuple[float, float] = (5.0, 60.0)

    @classmethod
    def parse(cls, spec: str) -> Outcomes:
        """The mix that SPEC (`name=value,...`; names left out keep their default) describes.
        Raises ValueError naming what is wrong."""
        values: dict[str, Any] = {}
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            name, sep, raw = (s.strip() for s in part.partition("="))
            if not sep or name not in FIELDS or name in values:
                raise ValueError(f"outcomes: {part!r} is not name=value with one of the names {', '.join(FIELDS)}")
            values[name] = _seconds(name, raw) if name.endswith("_after") else _percent(name, raw)
        # One of the two alone makes room for itself: failed=100 or delivered=100 is enough.
        if "failed" in values and "delivered" not in values:
            values["delivered"] = min(cls.delivered, 100 - values["failed"])
        if "delivered" in values and "failed" not in values:
            values["failed"] = min(cls.failed, 100 - values["delivered"])
        outcomes = cls(**values)
        if outcomes.failed + outcomes.delivered > 100:
            raise ValueError("outcomes: failed + delivered must be at most 100")
        return outcomes

    def plan(self, rng: random.Random) -> list[Step]:
        """The webhooks one message gets, in time order (seconds after the send)."""
        lo, hi = self.delivered_after
        reached = rng.uniform(lo, hi)
        steps = [Step(round(rng.uniform(0, min(1.0, lo)), 3), "sent")]
        roll = rng.random() * 100
        if roll < self.failed:
            codes = list(ERRORS)
            code = rng.choices(codes, weights=[ERRORS[c][2] for c in codes])[0]
            steps.append(Step(round(reached, 3), "failed", code=code))
        elif roll < self.failed + self.delivered:
            steps.append(Step(round(reached, 3), "delivered"))
            if rng.random() * 100 < self.read:
                read_at = reached + rng.uniform(*self.read_after)
                steps.append(Step(round(read_at, 3), "read"))
                read_share = self.delivered * self.read / 100  # % of all sends that are read
                if rng.random() * read_share < self.reply:
                    # People answer right after reading.
                    replied_at = read_at + rng.uniform(*self.delivered_after)
                    steps.append(Step(round(replied_at, 3), "reply", text=rng.choice(REPLIES)))
        return steps


FIELDS = tuple(Outcomes.__dataclass_fields__)


@dataclass(frozen=True)
class Step:
    """One webhook of a message's plan: AFTER seconds after the send, EVENT (a Cloud API
    status name, or "reply" for an inbound message), with the error CODE of a failure or the
    TEXT of a reply. Travels in broker messages as a plain dict."""

    after: float
    event: str
    code: int = 0
    text: str = ""


# --- Payloads (Meta's shapes) ---------------------------------------------------------------


def new_message_id(number: str) -> str:
    """A message id shaped like Meta's: `wamid.` + base64 of the recipient and a random id."""
    raw = b"\x1c\x18" + bytes([len(number)]) + number.encode() + b"\x15\x02\x00\x11\x18\x12"
    return "wamid." + base64.b64encode(raw + secrets.token_hex(9).upper().encode() + b"\x00").decode()


def _notification(phone_number_id: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": phone_number_id[::-1],  # the business account id
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": DISPLAY_PHONE_NUMBER,
                                "phone_number_id": phone_number_id,
                            },
                            **value,
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }


def status_body(phone_number_id: str, message_id: str, number: str, step: Step, at: int) -> dict[str, Any]:
    """A Cloud API status notification for STEP of MESSAGE_ID, at epoch second AT."""
    status: dict[str, Any] = {"id": message_id, "status": step.event, "timestamp": str(at), "recipient_id": number}
    if step.event in ("sent", "delivered"):
        conversation = hashlib.sha256(message_id.encode()).hexdigest()[:32]
        status["conversation"] = {"id": conversation, "origin": {"type": "marketing"}}
        if step.event == "sent":
            status["conversation"]["expiration_timestamp"] = str(at + 24 * 3600)
        status["pricing"] = {"billable": True, "pricing_model": "CBP", "category": "marketing"}
    if step.event == "failed":
        title, details, _ = ERRORS.get(step.code, ERRORS[131026])
        error = {"code": step.code, "title": title, "message": title, "error_data": {"details": details}}
        status["errors"] = [{**error, "href": ERROR_HREF}]
    return _notification(phone_number_id, {"statuses": [status]})


def reply_body(phone_number_id: str, message_id: str, number: str, step: Step, at: int) -> dict[str, Any]:
    """A Cloud API inbound text message from NUMBER answering MESSAGE_ID."""
    message = {
        "context": {"from": DISPLAY_PHONE_NUMBER, "id": message_id},
        "from": number,
        "id": new_message_id(number),
        "timestamp": str(at),
        "text": {"body": step.text},
        "type": "text",
    }
    return _notification(
        phone_number_id, {"contacts": [{"profile": {"name": ""}, "wa_id": number}], "messages": [message]}
    )


# --- The provider ---------------------------------------------------------------------------


class SandboxProvider(Provider):
    name = "sandbox"
    # The first names the connection in `addconnection`: never the secret.
    credentials = (
        Credential("outcomes", "Sandbox outcome mix, e.g. delivered=95,read=60,failed=3,reply=5", required=False),
        Credential("app_secret", "App secret (webhook signatures)", required=False),
    )
    webhook_url_name = "webhook-sandbox"

    def __init__(
        self,
        *,
        connection_id: str,
        base_url: str,
        webhook_token: str,
        app_secret: str,
        outcomes: Outcomes | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.connection_id = connection_id
        self.base_url = base_url.rstrip("/")
        self.webhook_token = webhook_token
        self.app_secret = app_secret
        self.outcomes = outcomes or Outcomes()
        self.rng = rng or random.Random()
        # Meta's phone number id, stable per connection.
        self.phone_number_id = str(int(hashlib.sha256(connection_id.encode()).hexdigest(), 16))[:15]

    @classmethod
    def from_connection(cls, connection: Connection) -> SandboxProvider:
        try:
            outcomes = Outcomes.parse(connection.credential("outcomes"))
        except ValueError as exc:  # checked when stored; never stop a campaign over it
            log.warning("[CAMPAIGN] sandbox connection %s: %s; using the default mix", connection.pk, exc)
            outcomes = Outcomes()
        return cls(
            connection_id=str(connection.pk),
            base_url=connection.base_url,
            webhook_token=connection.webhook_token,
            app_secret=connection.credential("app_secret") or derived_app_secret(str(connection.pk)),
            outcomes=outcomes,
        )

    @classmethod
    def default_base_url(cls) -> str:
        return str(settings.SANDBOX_WEBHOOK_BASE_URL)

    @classmethod
    def disabled_reason(cls) -> str:
        if settings.SANDBOX_ENABLED:
            return ""
        return "The sandbox provider is switched off here (set SANDBOX_ENABLED=true to use it)."

    @classmethod
    def check_credentials(cls, credentials: dict[str, str]) -> None:
        Outcomes.parse(credentials.get("outcomes", ""))

    def send(self, message: OutgoingMessage) -> SendResult:
        reason = self.disabled_reason()
        if reason:
            raise ProviderError("permanent", reason, code="sandbox_disabled")
        message_id = new_message_id(message.number)
        steps = [asdict(step) for step in self.outcomes.plan(self.rng)]
        # After the caller's transaction, if any: a rolled-back send gets no webhooks.
        transaction.on_commit(partial(schedule, self.connection_id, message_id, message.number, time.time(), steps))
        return SendResult(message_id=message_id, status_code=200)

    def verify(self, request: HttpRequest, body: bytes) -> None:
        if self.disabled_reason():
            raise Rejected("sandbox_disabled")
        verify_signature(self.app_secret, body, request.headers.get("X-Hub-Signature-256", ""))

    @classmethod
    def error_info(cls, code: str) -> ErrorInfo | None:
        return cloud_errors.lookup(code)  # its webhooks carry the Cloud API's error codes

    @classmethod
    def codes_with_action(cls, action: ErrorAction) -> frozenset[str]:
        return cloud_errors.codes_with_action(action)

    @classmethod
    def parse_webhook(cls, body: bytes | str, hint: str = "") -> ParsedWebhook:
        return parse_notification(load_json(body))

    # --- The gateway's side ------------------------------------------------------------------

    @property
    def webhook_url(self) -> str:
        return self.base_url + reverse(self.webhook_url_name, args=[self.webhook_token])

    def post(self, message_id: str, number: str, step: Step, at: float) -> bool:
        """POST STEP's webhook to Sense, signed. True when Sense took it (200). Raises
        SandboxPostError when trying again may help (no answer, 429, 5xx)."""
        make = reply_body if step.event == "reply" else status_body
        body = json.dumps(make(self.phone_number_id, message_id, number, step, int(at))).encode()
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature(self.app_secret, body)}
        try:
            response = shared_client().post(self.webhook_url, content=body, headers=headers)
        except httpx.TransportError as exc:
            raise SandboxPostError(f"{self.base_url} did not answer ({exc.__class__.__name__})") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise SandboxPostError(f"{self.base_url} answered {response.status_code}")
        if response.status_code != 200:
            log.warning(
                "[CAMPAIGN] sandbox connection %s: its %s webhook was refused with %s",
                self.connection_id,
                step.event,
                response.status_code,
            )
            return False
        return True


class SandboxPostError(Exception):
    """Sense did not take a sandbox webhook, for a reason that may pass (retried)."""


def derived_app_secret(connection_id: str) -> str:
    """The app secret of a sandbox connection that was given none."""
    return salted_hmac("sense.sandbox.app_secret", connection_id).hexdigest()


def schedule(connection_id: str, message_id: str, number: str, sent_at: float, steps: list[dict[str, Any]]) -> None:
    """Have a worker post the first of STEPS (the rest of a message's plan) at its time."""
    if not steps:
        return
    delay_ms = int(max(0.0, sent_at + steps[0]["after"] - time.time()) * 1000)
    try:
        actor = dramatiq.get_broker().get_actor(ACTOR_NAME)
        actor.send_with_options(args=(connection_id, message_id, number, sent_at, steps), delay=delay_ms or None)
    except Exception as exc:  # the send itself succeeded; only its receipts are lost
        log.warning("[CAMPAIGN] sandbox webhooks of %s not scheduled: %s", message_id, exc.__class__.__name__)


def post_next(*, connection_id: str, message_id: str, number: str, sent_at: float, steps: list[dict[str, Any]]) -> None:
    """Post the first of STEPS for MESSAGE_ID, then schedule the others. Nothing is posted
    for a connection that is gone, inactive or no longer a sandbox, nor while the sandbox
    is off. Raises SandboxPostError for a retry."""
    connection = Connection.objects.filter(pk=connection_id, provider=SandboxProvider.name, is_active=True).first()
    if connection is None or SandboxProvider.disabled_reason():
        return
    provider = SandboxProvider.from_connection(connection)
    first = Step(**steps[0])
    if provider.post(message_id, number, first, sent_at + first.after):
        schedule(connection_id, message_id, number, sent_at, steps[1:])
