"""WhatsApp Cloud API (Meta's Graph API).

- Sending: developers.facebook.com/docs/whatsapp/cloud-api/reference/messages
  (`POST {base_url}/{phone_number_id}/messages`, bearer token).
- Webhooks: `{"object": "whatsapp_business_account", "entry": [{"changes":
  [{"field": "messages", "value": {"statuses": [...]}}]}]}`
  (developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components), signed with
  `X-Hub-Signature-256` (HMAC-SHA256 of the raw body with the app secret); the callback
  URL is checked first with a GET handshake carrying our verify token. Template news comes
  in changes with `field: "message_template_status_update"` (`event`, `message_template_id`,
  `message_template_name`, `message_template_language`, `reason`) and
  `"message_template_quality_update"` (`new_quality_score`)
  (developers.facebook.com/docs/graph-api/webhooks/reference/whatsapp-business-account).
- Templates: `GET {base_url}/{waba_id}/message_templates` pages through the account's
  templates (`paging.next`); a template send is `type: "template"` with `template: {name,
  language: {code}, components: [header, body, button parameters]}`
  (developers.facebook.com/docs/whatsapp/cloud-api/guides/send-message-templates).
  URL is checked first with a GET handshake carrying our verify token.
- Inbound: `value.messages[]` (`from`, `id`, `timestamp`, `type` and the part named by
  it: text, image/audio/video/document/sticker with a media `id`, button, interactive
  `button_reply`/`list_reply`, reaction, location, contacts; `context.id` for a reply)
  with `value.contacts[]` (`profile.name`, `wa_id`, `user_id`). Username users may come
  without `wa_id`/`from`, with a business-scoped `user_id` (`from_user_id`) instead.
  `field: "user_preferences"`: `value.user_preferences[]` of `{wa_id, category:
  "marketing_messages", value: "stop" | "resume", timestamp}`.
- Media: `GET {base_url}/{media-id}` with the token answers `{url, mime_type, ...}`, a
  short-lived URL fetched with the same token (.../cloud-api/reference/media).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from campaigns.providers.base import (
    DELIVERED,
    FAILED,
    INBOUND_TYPES,
    MEDIA_TYPES,
    READ,
    SENT,
    ConsentUpdate,
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
    RemoteTemplate,
    SendResult,
    StatusUpdate,
    TemplateMessage,
    TemplateParameter,
    TemplateUpdate,
    classify,
    e164,
    get,
    load_json,
    parse_retry_after,
    post,
    response_json,
    timestamp,
)
from campaigns.providers.cloud_errors import THROTTLE_CODES, codes_with_action, lookup
from sense.lib.http import shared_client

if TYPE_CHECKING:
    from django.http import HttpRequest

    from campaigns.models import Connection

STATUSES = {"sent": SENT, "delivered": DELIVERED, "read": READ, "failed": FAILED}


def signature(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(app_secret: str, body: bytes, header: str) -> None:
    """Meta's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`, compared in
    constant time before anything of the body is parsed. Raises Rejected."""
    if not header:
        raise Rejected("missing_signature", status=401)
    if not app_secret:
        # A connection without an app secret cannot verify anything: refuse rather than trust.
        raise Rejected("no_app_secret")
    expected = signature(app_secret, body)
    if not hmac.compare_digest(expected.encode(), header.strip().lower().encode()):
        raise Rejected("bad_signature")


def error_text(error: dict[str, Any]) -> str:
    """An error's title and details as one line ("(#131047) Re-engagement message: Message
    failed to send because more than 24 hours have passed..."): Graph errors carry the title
    in `message`, status webhooks in `title` (and often `message`); details are in
    `error_data.details`."""
    title = str(error.get("title") or error.get("message") or "").strip()
    data = error.get("error_data")
    details = str(data.get("details") or "").strip() if isinstance(data, dict) else ""
    if details and details not in title:
        return f"{title}: {details}" if title else details
    return title


def _pricing(item: dict[str, Any]) -> dict[str, Any]:
    """The StatusUpdate fields of a status's `pricing` and `conversation` objects."""
    fields: dict[str, Any] = {}
    pricing = item.get("pricing")
    if isinstance(pricing, dict):
        if isinstance(pricing.get("billable"), bool):
            fields["billable"] = pricing["billable"]
        for key, name in (
            ("category", "pricing_category"),
            ("pricing_model", "pricing_model"),
            ("type", "pricing_type"),
        ):
            if isinstance(pricing.get(key), str):
                fields[name] = pricing[key][:32]
    conversation = item.get("conversation")
    if isinstance(conversation, dict):
        if isinstance(conversation.get("id"), str):
            fields["conversation_id"] = conversation["id"][:128]
        origin = conversation.get("origin")
        if isinstance(origin, dict) and isinstance(origin.get("type"), str):
            fields["conversation_origin"] = origin["type"][:32]
            # Before per-message pricing (2025-07) the category was the conversation's origin.
            fields.setdefault("pricing_category", origin["type"][:32])
    return fields


def _status(item: Any) -> StatusUpdate | None:
    if not isinstance(item, dict):
        raise PayloadError("statuses must be objects")
    message_id, raw_status = item.get("id"), item.get("status")
    if not isinstance(message_id, str) or not message_id or not isinstance(raw_status, str):
        raise PayloadError("a status needs an id and a status")
    status = STATUSES.get(raw_status.lower())
    if status is None:
        return None  # "deleted", "warning", ...: not a delivery outcome
    error_code, error_message = "", ""
    errors = item.get("errors")
    if status == FAILED and isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        error_code = str(first.get("code") or "")[:64]
        error_message = error_text(first)
    return StatusUpdate(
        message_id,
        status,
        timestamp(item.get("timestamp")),
        error_code,
        error_message,
        "statuses",
        **_pricing(item),
    )


TEMPLATE_FIELDS = ("message_template_status_update", "message_template_quality_update")


def _template_update(field: str, value: dict[str, Any]) -> TemplateUpdate | None:
    """A template status or quality change; None when it names no template."""
    template_id = str(value.get("message_template_id") or "")
    name = str(value.get("message_template_name") or "")
    if not template_id and not name:
        return None
    common = {
        "template_id": template_id[:64],
        "name": name[:512],
        "language": str(value.get("message_template_language") or "")[:16],
    }
    if field == "message_template_status_update":
        status = str(value.get("event") or "").upper()[:32]
        reason = value.get("reason")
        other: dict[str, Any] = value["other_info"] if isinstance(value.get("other_info"), dict) else {}
        text = "" if reason in (None, "NONE") else str(reason)
        if other.get("description"):
            text = f"{text}: {other['description']}" if text else str(other["description"])
        return TemplateUpdate(status=status, reason=text[:1000], **common) if status else None
    quality = str(value.get("new_quality_score") or "").upper()[:16]
    return TemplateUpdate(quality=quality, **common) if quality else None


def _part(message: dict[str, Any], name: str) -> dict[str, Any]:
    value = message.get(name)
    return value if isinstance(value, dict) else {}


def _text(kind: str, message: dict[str, Any]) -> str:
    part = _part(message, kind)
    if kind == "text":
        return str(part.get("body") or "")
    if kind in MEDIA_TYPES:
        return str(part.get("caption") or "")
    if kind == "button":
        return str(part.get("text") or part.get("payload") or "")
    if kind == "interactive":
        reply = _part(part, str(part.get("type") or "")) or _part(part, "button_reply") or _part(part, "list_reply")
        return str(reply.get("title") or reply.get("id") or "")
    if kind == "reaction":
        return str(part.get("emoji") or "")
    if kind == "location":
        place = " ".join(str(part.get(k) or "") for k in ("name", "address")).strip()
        return place or f"{part.get('latitude', '')},{part.get('longitude', '')}"
    if kind == "contacts":
        people = message["contacts"] if isinstance(message.get("contacts"), list) else []
        names = [str((p.get("name") or {}).get("formatted_name") or "") for p in people if isinstance(p, dict)]
        return ", ".join(n for n in names if n)
    return ""


def _inbound(item: Any, profiles: dict[str, tuple[str, str]]) -> InboundUpdate | None:
    if not isinstance(item, dict):
        raise PayloadError("messages must be objects")
    message_id = item.get("id")
    if not isinstance(message_id, str) or not message_id:
        raise PayloadError("a message needs an id")
    raw_type = str(item.get("type") or "")
    kind = raw_type if raw_type in INBOUND_TYPES else "other"
    sender = str(item.get("from") or "")
    user_id = str(item.get("from_user_id") or item.get("user_id") or "")
    name, contact_user_id = profiles.get(sender) or profiles.get(user_id) or ("", "")
    if not name and len(profiles) == 1:  # one sender per notification is the usual case
        name, contact_user_id = next(iter(profiles.values()))
    media = None
    if kind in MEDIA_TYPES:
        part = _part(item, kind)
        media = InboundMedia(
            mime_type=str(part.get("mime_type") or "")[:127],
            file_name=str(part.get("filename") or "")[:255],
            media_id=str(part.get("id") or "")[:128],
            voice=bool(part.get("voice")),
        )
    quoted = _part(item, "context").get("id") or ""
    if kind == "reaction":
        quoted = _part(item, "reaction").get("message_id") or quoted
    return InboundUpdate(
        message_id=message_id[:128],
        phone=e164(sender),
        type=kind,
        text=_text(kind, item),
        wa_user_id=(user_id or contact_user_id)[:128],
        profile_name=name[:200],
        quoted_id=str(quoted)[:128],
        media=media,
        occurred_at=timestamp(item.get("timestamp")),
    )


def _profiles(value: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """`value.contacts[]` as wa_id (and user_id) -> (profile name, user_id)."""
    found: dict[str, tuple[str, str]] = {}
    contacts = value.get("contacts")
    for contact in contacts if isinstance(contacts, list) else []:
        if not isinstance(contact, dict):
            continue
        profile = _part(contact, "profile")
        entry = (str(profile.get("name") or ""), str(contact.get("user_id") or ""))
        for key in (contact.get("wa_id"), contact.get("user_id")):
            if isinstance(key, str) and key:
                found[key] = entry
    return found


def _preference(item: Any) -> ConsentUpdate | None:
    if not isinstance(item, dict) or item.get("category") != "marketing_messages":
        return None
    value = str(item.get("value") or "").lower()
    if value not in ("stop", "resume"):
        return None
    return ConsentUpdate(
        phone=e164(item.get("wa_id")),
        opted_out=value == "stop",
        wa_user_id=str(item.get("user_id") or "")[:128],
        occurred_at=timestamp(item.get("timestamp")),
    )


def _list(value: dict[str, Any], name: str) -> list[Any]:
    items = value.get(name) or []
    if not isinstance(items, list):
        raise PayloadError(f"{name} must be a list")
    return items


def parse_notification(payload: Any) -> ParsedWebhook:
    """Read a Cloud API notification: every status of every change of every entry.
    Raises PayloadError."""
    if not isinstance(payload, dict) or payload.get("object") != "whatsapp_business_account":
        raise PayloadError('expected {"object": "whatsapp_business_account", ...}')
    entries = payload.get("entry")
    if not isinstance(entries, list):
        raise PayloadError("entry must be a list")
    parsed = ParsedWebhook(event_type="unknown")
    statuses = parsed.statuses
    fields: list[str] = []
    for entry in entries:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            raise PayloadError("each entry needs a list of changes")
        for change in changes:
            if not isinstance(change, dict) or not isinstance(change.get("value", {}), dict):
                raise PayloadError("each change must be an object with an object value")
            fields.append(str(change.get("field") or ""))
            if change.get("field") in TEMPLATE_FIELDS:
                template = _template_update(str(change["field"]), change.get("value") or {})
                if template is not None:
                    parsed.templates.append(template)
                continue
            value = change.get("value", {})
            for item in _list(value, "statuses"):
                update = _status(item)
                if update is not None:
                    statuses.append(update)
            profiles = _profiles(value)
            for item in _list(value, "messages"):
                inbound = _inbound(item, profiles)
                if inbound is not None:
                    parsed.messages.append(inbound)
            for item in _list(value, "user_preferences"):
                consent = _preference(item)
                if consent is not None:
                    parsed.consents.append(consent)
    event_type = "statuses" if statuses else next((f for f in fields if f), "unknown")
    parsed.event_type = event_type[:64]
    return parsed


def _parameter(parameter: TemplateParameter) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "text", "text": parameter.value}
    if parameter.name:  # a NAMED template's parameters carry their names; positional go by order
        part["parameter_name"] = parameter.name
    return part


def template_components(template: TemplateMessage) -> list[dict[str, Any]]:
    """The `components` of a template send: header, body and button parameters."""
    components: list[dict[str, Any]] = []
    if template.header_media is not None:
        kind = template.header_media.file_type
        media: dict[str, Any] = {"link": template.header_media.url}
        if kind == "document":
            media["filename"] = template.header_media.file_name
        components.append({"type": "header", "parameters": [{"type": kind, kind: media}]})
    elif template.header_parameters:
        components.append({"type": "header", "parameters": [_parameter(p) for p in template.header_parameters]})
    if template.body_parameters:
        components.append({"type": "body", "parameters": [_parameter(p) for p in template.body_parameters]})
    for button in template.buttons:
        components.append(
            {
                "type": "button",
                "sub_type": button.sub_type,
                "index": str(button.index),
                "parameters": [{"type": "text", "text": p.value} for p in button.parameters],
            }
        )
    return components


def _remote_template(item: Any) -> RemoteTemplate | None:
    if not isinstance(item, dict) or not item.get("name") or not item.get("language"):
        return None
    components = item.get("components")
    return RemoteTemplate(
        template_id=str(item.get("id") or "")[:64],
        name=str(item["name"])[:512],
        language=str(item["language"])[:16],
        status=str(item.get("status") or "PENDING").upper()[:32],
        category=str(item.get("category") or "").upper()[:32],
        parameter_format=str(item.get("parameter_format") or "POSITIONAL").upper()[:16],
        components=[c for c in components if isinstance(c, dict)] if isinstance(components, list) else [],
        quality_score=str((item.get("quality_score") or {}).get("score") or "")[:16]
        if isinstance(item.get("quality_score"), dict)
        else "",
        reason=str(item.get("rejected_reason") or "") if item.get("rejected_reason") not in (None, "NONE") else "",
    )


def _graph_error(response: Any, data: Any) -> ProviderError:
    """A Graph API error answer as a ProviderError with Meta's code and message."""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or response.status_code)
        text = error_text(error)[:2000] or f"HTTP {response.status_code}"
    else:
        code, text = str(response.status_code), f"HTTP {response.status_code}"
    return classify(response, code, text)


class CloudApiProvider(Provider):
    name = "cloud"
    credentials = (
        Credential("phone_number_id", "Cloud API phone number id"),
        Credential("access_token", "Cloud API access token"),
        Credential("app_secret", "Cloud API app secret (webhook signatures)"),
        Credential("verify_token", "Cloud API webhook verify token"),
        # Needed for message templates only: free text goes by the phone number id.
        Credential("waba_id", "WhatsApp Business Account id (for message templates)", required=False),
    )
    supports_templates = True
    # Pages of the template listing followed at most (100 templates each).
    MAX_TEMPLATE_PAGES = 100
    webhook_url_name = "webhook-whatsapp"
    webhook_methods = ("GET", "POST")
    # Throttling and outage codes Meta may send with a 400 (error-codes page): retry later.
    TRANSIENT_CODES = THROTTLE_CODES

    def __init__(
        self,
        *,
        base_url: str,
        phone_number_id: str,
        access_token: str,
        app_secret: str = "",
        verify_token: str = "",
        waba_id: str = "",
    ) -> None:
        self.base_url = (base_url or settings.CLOUD_API_BASE_URL).rstrip("/")
        self.phone_number_id = phone_number_id
        self.access_token = access_token
        self.app_secret = app_secret
        self.verify_token = verify_token
        self.waba_id = waba_id

    @classmethod
    def from_connection(cls, connection: Connection) -> CloudApiProvider:
        return cls(
            base_url=connection.base_url,
            phone_number_id=connection.credential("phone_number_id"),
            access_token=connection.credential("access_token"),
            app_secret=connection.credential("app_secret"),
            verify_token=connection.credential("verify_token"),
            waba_id=connection.credential("waba_id"),
        )

    @classmethod
    def default_base_url(cls) -> str:
        return str(settings.CLOUD_API_BASE_URL)

    def send(self, message: OutgoingMessage) -> SendResult:
        body: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": message.number}
        if message.template is not None:
            template = message.template
            spec: dict[str, Any] = {
                "name": template.name,
                "language": {"code": template.language, "policy": "deterministic"},
            }
            components = template_components(template)
            if components:
                spec["components"] = components
            body.update(type="template", template=spec)
        elif message.media is None:
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
        response = post(url, headers={"Authorization": f"Bearer {self.access_token}"}, body=body)
        data = response_json(response)
        if response.status_code in (200, 201):
            try:
                message_id = data["messages"][0]["id"]
            except (TypeError, KeyError, IndexError):
                raise ProviderError("ambiguous", "accepted without a message id", code="no_id") from None
            return SendResult(message_id=str(message_id), status_code=response.status_code)
        failure = _graph_error(response, data)
        if failure.code in self.TRANSIENT_CODES and not failure.transient:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            failure = ProviderError(
                "transient",
                failure.message,
                code=failure.code,
                status_code=response.status_code,
                retry_after=retry_after,
            )
        raise failure

    @classmethod
    def error_info(cls, code: str) -> ErrorInfo | None:
        return lookup(code)

    @classmethod
    def codes_with_action(cls, action: ErrorAction) -> frozenset[str]:
        return codes_with_action(action)

    def list_templates(self) -> list[RemoteTemplate]:
        if not self.waba_id:
            raise ProviderError(
                "permanent", "The connection has no WhatsApp Business Account id (waba_id).", code="not_configured"
            )
        headers = {"Authorization": f"Bearer {self.access_token}"}
        url: str | None = f"{self.base_url}/{self.waba_id}/message_templates"
        params: dict[str, Any] | None = {"limit": 100}
        origin = urlsplit(self.base_url)[:2]
        templates: list[RemoteTemplate] = []
        for _ in range(self.MAX_TEMPLATE_PAGES):
            if url is None:
                return templates
            response = get(url, headers=headers, params=params)
            data = response_json(response)
            if response.status_code != 200 or not isinstance(data, dict):
                raise _graph_error(response, data)
            items = data.get("data")
            if not isinstance(items, list):
                raise ProviderError("permanent", "The template listing has no data.", code="bad_answer")
            templates += [t for t in map(_remote_template, items) if t is not None]
            paging: dict[str, Any] = data["paging"] if isinstance(data.get("paging"), dict) else {}
            url, params = paging.get("next") or None, None
            # The bearer token goes only to the host it was given for.
            if url is not None and urlsplit(str(url))[:2] != origin:
                raise ProviderError("permanent", "The next page is on another host.", code="bad_answer")
        raise ProviderError("permanent", "The template listing does not end.", code="bad_answer")

    def verify(self, request: HttpRequest, body: bytes) -> None:
        verify_signature(self.app_secret, body, request.headers.get("X-Hub-Signature-256", ""))

    def verify_subscription(self, request: HttpRequest) -> str | None:
        """Meta's GET handshake: with hub.mode=subscribe and hub.verify_token equal to ours,
        echo hub.challenge."""
        mode, token = request.GET.get("hub.mode", ""), request.GET.get("hub.verify_token", "")
        if (
            self.verify_token
            and mode == "subscribe"
            and hmac.compare_digest(self.verify_token.encode(), token.encode())
        ):
            return request.GET.get("hub.challenge", "")
        return None

    @classmethod
    def parse_webhook(cls, body: bytes | str, hint: str = "") -> ParsedWebhook:
        return parse_notification(load_json(body))

    def media_source(self, media_info: dict[str, Any], *, body: str, message_id: str) -> MediaSource:
        """`GET {base_url}/{media-id}` with the token answers a short-lived `url`, itself
        fetched with the same token (.../cloud-api/reference/media#download-media)."""
        media_id = media_info.get("media_id")
        if not isinstance(media_id, str) or not media_id or "/" in media_id:
            raise ProviderError("permanent", "the message carried no media id", code="no_media")
        headers = {"Authorization": f"Bearer {self.access_token}"}
        try:
            response = shared_client().get(f"{self.base_url}/{media_id}", headers=headers)
        except httpx.TransportError as exc:
            raise ProviderError("transient", f"could not reach the provider ({exc.__class__.__name__})") from None
        data = response_json(response)
        if response.status_code != 200:
            raise classify(response, str(response.status_code), f"media lookup answered {response.status_code}")
        url = data.get("url") if isinstance(data, dict) else None
        if not isinstance(url, str) or not url:
            raise ProviderError("permanent", "the media lookup gave no url", code="no_media")
        return MediaSource(url=url, headers=headers)
