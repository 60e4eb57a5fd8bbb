"""A local WhatsApp gateway that speaks both providers' send APIs over real HTTP.

Tests and benchmarks point a `Connection.base_url` at `sim.base_url` and Sense talks to
it exactly as it would to Evolution API v2 or Meta's Cloud API:

- Evolution: `POST /message/sendText/{instance}` and `POST /message/sendMedia/{instance}`
  with header `apikey`; answers 201 with the message id at `key.id`.
- Cloud API: `POST /{phone_number_id}/messages` (optionally under a version prefix such as
  `/v21.0/`) with `Authorization: Bearer ...`; answers 200 with `messages[0].id`.

Every accepted message is appended to `sim.sends` (so a test can count duplicates per
number); every request, accepted or not, to `sim.requests`. Knobs:

- `latency`: seconds each send waits before answering (the send is recorded on arrival,
  so a worker killed during the wait has already "sent" it, as with a real provider);
- `fail_next(status, count=1, body=None, retry_after=None)`: the next COUNT sends answer
  STATUS with the provider's error body (429 may carry Retry-After);
- `fail_number(number, status, body=None)`: every send to NUMBER fails that way;
- `fail_next_cloud(code, count=1)` / `fail_number_cloud(number, code)`: the same with a
  Graph API error of that Cloud error code (title and details as Meta words them);
- `api_keys` / `access_tokens`: when set, requests with other credentials answer 401;
- `profile_pictures`: number -> JPEG bytes for Evolution's `POST /chat/fetchProfilePictureUrl/{instance}`,
  whose URL points at `GET /pictures/<number>.jpg` here (the CDN); other numbers answer null;
- `add_media(body, mime_type, token=...)`: an inbound attachment served the Cloud API way
  (`GET /{media-id}` -> `{url, ...}`, then `GET` of that URL with the token) or at a plain
  URL (`media_url(id)`, as Evolution's S3 gives);
- `webhook_hook` (alias `on_send`): a callable run in a background thread with the send
  record after the response is written; `post_webhook(...)`, `evolution_status(...)` and
  `cloud_status(...)` build and send providers' status webhooks back to Sense (a Cloud
  status may carry `errors` (`cloud_error_item(code)`), `pricing` and `conversation`).

Cloud API message templates, as the Graph API has them:

- `add_template(waba_id, name, language, components, ...)` stores one (Meta's shape);
  `GET /{waba_id}/message_templates?limit=N` lists them in pages of at most
  `template_page_size` with `paging.next` (cursor `after`); an unknown WABA answers 400
  code 100, a token not in `access_tokens` 401 code 190;
- a `type: "template"` send is checked as Meta checks it: unknown name or language → 132001,
  a paused or disabled template → 132015 / 132016, the wrong number of body or header
  parameters → 132000, a NAMED template's parameters without their `parameter_name` →
  132000, a media header without its media (or of another kind) → 132012. An accepted one
  is recorded with `text` = the body as the contact reads it and `template` = the payload;
- `template_status(waba_id, template, event, reason)` and `template_quality(...)` build the
  `message_template_status_update` / `..._quality_update` webhooks;
- `service_window`: when a set of numbers, free-form (non-template) sends to any other number
  fail as Meta fails them outside the 24-hour window: 400, code 131047.

Usage::

    with ProviderSimulator(latency=0.0) as sim:
        connection.base_url = sim.base_url
        ...
        assert max(sim.count_by_number().values()) == 1
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

EVOLUTION_SEND = re.compile(r"^/message/(sendText|sendMedia)/([^/?]+)$")
EVOLUTION_PICTURE = re.compile(r"^/chat/fetchProfilePictureUrl/([^/?]+)$")
PICTURE = re.compile(r"^/pictures/(\d+)\.jpg$")
CLOUD_SEND = re.compile(r"^(?:/v\d+(?:\.\d+)?)?/([^/?]+)/messages$")
CLOUD_TEMPLATES = re.compile(r"^(?:/v\d+(?:\.\d+)?)?/([^/?]+)/message_templates$")
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
CLOUD_MEDIA = re.compile(r"^(?:/v\d+(?:\.\d+)?)?/(\d+)$")
MEDIA_FILE = re.compile(r"^/media-files/([^/?]+)$")

Record = dict[str, Any]


def evolution_error_body(status: int, message: Any = None) -> dict[str, Any]:
    """The shape of Evolution API v2 errors (src/api/abstract/abstract.router.ts)."""
    reason = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}.get(
        status, "Internal Server Error"
    )
    return {"status": status, "error": reason, "response": {"message": message if message is not None else [reason]}}


def cloud_error_body(status: int, message: str | None = None, code: int | None = None) -> dict[str, Any]:
    """The shape of Graph API errors (developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes)."""
    defaults = {
        400: (131026, "(#131026) Message undeliverable"),
        401: (190, "Invalid OAuth access token."),
        429: (130429, "(#130429) Rate limit hit"),
    }
    default_code, default_message = defaults.get(status, (131000, "(#131000) Something went wrong"))
    return {
        "error": {
            "message": message or default_message,
            "type": "OAuthException",
            "code": code or default_code,
            "fbtrace_id": secrets.token_hex(8),
        }
    }


# Cloud error codes the simulator words like Meta (title, details); others get a generic text.
CLOUD_ERRORS: dict[int, tuple[str, str]] = {
    4: ("Too many API calls", "The app has reached its API call rate limit."),
    80007: ("Rate limit issues", "The WhatsApp Business Account has reached its rate limit."),
    130429: ("Rate limit hit", "Cloud API message throughput has been reached."),
    131026: ("Message undeliverable", "Unable to deliver message."),
    131047: (
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
    ),
    131049: (
        "This message was not delivered to maintain healthy ecosystem engagement.",
        "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
    ),
    131050: ("Unable to deliver the message. This recipient has chosen to stop receiving marketing messages.", ""),
    131051: ("Unsupported message type", "Message type is not currently supported."),
    131052: ("Media download error", "Unable to download the media sent by the user."),
    131053: ("Media upload error", "Unable to upload the media used in the message."),
    131056: ("(Business Account, Consumer Account) pair rate limit hit", "Too many messages sent to this number."),
    132000: (
        "Number of parameters does not match the expected number of params",
        "body: number of localizable_params (2) does not match the expected number of params (3)",
    ),
    132001: ("Template name does not exist in the translation", "template name (x) does not exist in en_US"),
    132012: ("Parameter format does not match format in the created template", "header: Format mismatch"),
}


def cloud_error(code: int, *, status: int = 400, details: str | None = None) -> dict[str, Any]:
    """A Graph API error body for Cloud error CODE (`{"error": {message, type, code,
    error_data: {messaging_product, details}, fbtrace_id}}`)."""
    title, default_details = CLOUD_ERRORS.get(code, (f"Error {code}", ""))
    body = cloud_error_body(status, f"(#{code}) {title}", code)
    if details or default_details:
        body["error"]["error_data"] = {"messaging_product": "whatsapp", "details": details or default_details}
    return body


def cloud_error_item(code: int, *, details: str | None = None) -> dict[str, Any]:
    """One `statuses[].errors[]` item of a failed Cloud status webhook."""
    title, default_details = CLOUD_ERRORS.get(code, (f"Error {code}", ""))
    item: dict[str, Any] = {"code": code, "title": title, "message": title}
    if details or default_details:
        item["error_data"] = {"details": details or default_details}
    return item


def cloud_pricing(category: str = "marketing", *, billable: bool = True) -> dict[str, Any]:
    """A status webhook's `pricing` object (per-message pricing since 2025-07)."""
    return {"billable": billable, "pricing_model": "PMP", "category": category, "type": "regular"}


def _request_record(
    provider: str,
    number: str,
    text: str,
    media: dict[str, Any] | None,
    *,
    at: float,
    headers: Any,
    instance: str | None = None,
    phone_number_id: str | None = None,
) -> Record:
    """What every send request is recorded with, before its outcome (message id, status)."""
    return {
        "provider": provider,
        "number": number,
        "to": number,
        "text": text,
        "media": media,
        "instance": instance,
        "phone_number_id": phone_number_id,
        "at": at,
        "headers": {k.lower(): v for k, v in headers.items()},
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx's pool expects
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        try:
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            self.close_connection = True

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        sim = self.server.sim
        if path.rstrip("/") in ("", "/health"):
            self._reply(200, {"status": 200, "message": "Provider simulator"})
            return
        if match := CLOUD_TEMPLATES.match(path):
            host = self.headers.get("Host") or f"{sim.host}:{sim.port}"
            status, body = sim._list_templates(match.group(1), path, urllib.parse.parse_qs(query), self.headers, host)
            self._reply(status, body)
            return
        if match := PICTURE.match(path):
            self._picture(match.group(1))
            return
        with sim._lock:
            sim.media_requests.append({"path": path, "authorization": self.headers.get("Authorization", "")})
        if match := MEDIA_FILE.match(path):
            media = sim.media.get(match.group(1))
            if media is None:
                self._reply(404, {"error": "not found"})
            elif media.get("token") and self.headers.get("Authorization") != f"Bearer {media['token']}":
                self._reply(401, cloud_error_body(401))
            else:
                self._raw(200, media["body"], media["mime_type"])
            return
        match = CLOUD_MEDIA.match(path)
        media = sim.media.get(match.group(1)) if match else None
        if media is None or media.get("evolution"):
            self._reply(404, cloud_error_body(400, "Unsupported get request.", 100))
        elif media.get("token") and self.headers.get("Authorization") != f"Bearer {media['token']}":
            self._reply(401, cloud_error_body(401))
        else:
            # Meta's media lookup (.../cloud-api/reference/media#retrieve-media-url).
            self._reply(
                200,
                {
                    "messaging_product": "whatsapp",
                    "url": f"{sim.base_url}/media-files/{match.group(1)}",  # type: ignore[union-attr]
                    "mime_type": media["mime_type"],
                    "sha256": hashlib.sha256(media["body"]).hexdigest(),
                    "file_size": len(media["body"]),
                    "id": match.group(1),  # type: ignore[union-attr]
                },
            )

    def _raw(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _picture(self, number: str) -> None:
        """The profile picture CDN: NUMBER's picture as a JPEG, 404 once it is gone."""
        sim = self.server.sim
        with sim._lock:
            sim.picture_downloads.append(number)
            body = sim.profile_pictures.get(number)
        if body is None:
            self._reply(404, {"error": "not found"})
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        sim = self.server.sim
        at = time.time()
        try:
            payload = json.loads(raw or b"{}")
        except ValueError:
            self._reply(400, {"error": "invalid JSON"})
            return
        path = self.path.split("?", 1)[0]
        client = {"client_port": self.client_address[1]}
        if match := EVOLUTION_PICTURE.match(path):
            status, body = sim._evolution_picture(match.group(1), payload, self.headers)
            self._reply(status, body)
            return
        if match := EVOLUTION_SEND.match(path):
            status, body, headers, record = sim._evolution(match.group(1), match.group(2), payload, self.headers, at)
            if record is not None:
                record.update(client)
        elif match := CLOUD_SEND.match(path):
            status, body, headers, record = sim._cloud(match.group(1), payload, self.headers, at)
            if record is not None:
                record.update(client)
        else:
            self._reply(404, {"error": f"no route for POST {path}"})
            return
        if sim.latency:
            time.sleep(sim.latency)
        self._reply(status, body, headers)
        hook = sim.webhook_hook
        if record is not None and hook is not None:
            threading.Thread(target=sim._run_hook, args=(hook, record), daemon=True).start()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    sim: ProviderSimulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (killed worker, timeout) is part of the tests


class ProviderSimulator:
    """See the module docstring. Thread-safe; start()/stop() or use as a context manager."""

    def __init__(self, latency: float = 0.0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.latency = latency
        self.host = host
        self.port = port
        self.sends: list[Record] = []
        self.requests: list[Record] = []
        self.webhooks: list[dict[str, Any]] = []  # webhook posts made by post_webhook: url, status, body
        self.webhook_hook: Callable[[Record], None] | None = None
        self.hook_errors: list[BaseException] = []
        self.api_keys: set[str] | None = None
        self.access_tokens: set[str] | None = None
        # Evolution's fetchProfilePictureUrl: number (digits) -> the JPEG served at
        # /pictures/<number>.jpg; numbers not in it have a hidden picture (null URL).
        self.profile_pictures: dict[str, bytes] = {}
        self.picture_requests: list[str] = []  # numbers asked for by fetchProfilePictureUrl
        self.picture_downloads: list[str] = []  # numbers whose picture was downloaded
        # Inbound attachments it serves: Cloud media id (or an Evolution file name) -> body.
        self.media: dict[str, dict[str, Any]] = {}
        self.media_requests: list[Record] = []
        self._failures: collections.deque[tuple[int, Any, float | None]] = collections.deque()
        self._number_failures: dict[str, tuple[int, Any]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.templates: dict[str, list[dict[str, Any]]] = {}  # WABA id -> its templates, in Meta's shape
        self.template_page_size = 100
        self.template_requests: list[Record] = []  # every listing request: waba_id, query, status
        self.service_window: set[str] | None = None  # numbers that wrote in the last 24 h
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> ProviderSimulator:
        server = _Server((self.host, self.port), _Handler)
        server.sim = self
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ProviderSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- knobs -------------------------------------------------------------------------

    @property
    def on_send(self) -> Callable[[Record], None] | None:
        return self.webhook_hook

    @on_send.setter
    def on_send(self, hook: Callable[[Record], None] | None) -> None:
        self.webhook_hook = hook

    def fail_next(self, status: int, count: int = 1, body: Any = None, retry_after: float | None = None) -> None:
        """Answer the next COUNT sends with STATUS (and BODY, default: the provider's error shape)."""
        with self._lock:
            for _ in range(count):
                self._failures.append((status, body, retry_after))

    def fail_next_cloud(
        self, code: int, count: int = 1, *, status: int = 400, retry_after: float | None = None
    ) -> None:
        """Answer the next COUNT Cloud sends with a Graph API error of CODE."""
        self.fail_next(status, count=count, body=cloud_error(code, status=status), retry_after=retry_after)

    def fail_number_cloud(self, number: str, code: int, *, status: int = 400) -> None:
        """Answer every Cloud send to NUMBER with a Graph API error of CODE."""
        self.fail_number(number, status, body=cloud_error(code, status=status))

    def fail_number(self, number: str, status: int, body: Any = None) -> None:
        """Answer every send to NUMBER (digits, with or without +) with STATUS."""
        with self._lock:
            self._number_failures[number.lstrip("+")] = (status, body)

    def add_media(self, body: bytes, mime_type: str, *, token: str = "", media_id: str = "") -> str:
        """Serve BODY as an inbound attachment: its Cloud media id (`GET /{id}` answers Meta's
        lookup with a URL, `GET /media-files/{id}` the bytes; with TOKEN, both want
        `Authorization: Bearer TOKEN`). Returns the id; `media_url(id)` is Evolution's S3 URL."""
        media_id = media_id or str(1_000_000_000_000 + next(self._ids))
        with self._lock:
            self.media[media_id] = {"body": body, "mime_type": mime_type, "token": token}
        return media_id

    def media_url(self, media_id: str) -> str:
        return f"{self.base_url}/media-files/{media_id}"

    def reset(self) -> None:
        with self._lock:
            self.sends.clear()
            self.requests.clear()
            self.webhooks.clear()
            self.picture_requests.clear()
            self.picture_downloads.clear()
            self._failures.clear()
            self._number_failures.clear()

    def add_template(
        self,
        waba_id: str,
        name: str,
        language: str = "en_US",
        components: list[dict[str, Any]] | None = None,
        *,
        status: str = "APPROVED",
        category: str = "MARKETING",
        parameter_format: str = "POSITIONAL",
        quality: str = "GREEN",
    ) -> dict[str, Any]:
        """Store a template of WABA_ID (replacing one of the same name and language)."""
        template = {
            "id": str(900000000000 + next(self._ids)),
            "name": name,
            "language": language,
            "status": status,
            "category": category,
            "parameter_format": parameter_format,
            "components": components or [{"type": "BODY", "text": f"{name} body"}],
            "quality_score": {"score": quality},
        }
        with self._lock:
            found = self.templates.setdefault(waba_id, [])
            found[:] = [t for t in found if (t["name"], t["language"]) != (name, language)]
            found.append(template)
        return template

    def remove_template(self, waba_id: str, name: str) -> None:
        with self._lock:
            self.templates[waba_id] = [t for t in self.templates.get(waba_id, []) if t["name"] != name]

    def _find_template(self, name: str, language: str) -> dict[str, Any] | None:
        with self._lock:
            for templates in self.templates.values():
                for template in templates:
                    if template["name"] == name and template["language"] == language:
                        return template
        return None

    # -- what happened -----------------------------------------------------------------

    def count_by_number(self) -> dict[str, int]:
        """Accepted sends per number (digits, no +)."""
        with self._lock:
            return dict(collections.Counter(r["number"] for r in self.sends))

    def duplicates(self) -> dict[str, int]:
        return {number: n for number, n in self.count_by_number().items() if n > 1}

    def send_times(self) -> list[float]:
        """Arrival time (time.time()) of every accepted send, sorted."""
        with self._lock:
            return sorted(r["at"] for r in self.sends)

    @staticmethod
    def max_in_window(times: list[float], window: float) -> int:
        """The largest number of TIMES inside any half-open interval [t, t + WINDOW)."""
        times = sorted(times)
        best = start = 0
        for end, t in enumerate(times):
            while times[start] <= t - window:
                start += 1
            best = max(best, end - start + 1)
        return best

    # -- webhooks back to Sense ----------------------------------------------------------

    def _run_hook(self, hook: Callable[[Record], None], record: Record) -> None:
        try:
            hook(record)
        except BaseException as exc:  # recorded for the test to assert on
            self.hook_errors.append(exc)

    def post_webhook(
        self,
        url: str,
        body: Any,
        *,
        headers: dict[str, str] | None = None,
        app_secret: str | None = None,
        delay: float = 0.0,
    ) -> int:
        """POST BODY as JSON to URL (a Cloud API post is signed with APP_SECRET as Meta does,
        in X-Hub-Signature-256). Returns the HTTP status."""
        if delay:
            time.sleep(delay)
        data = json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if app_secret is not None:
            digest = hmac.new(app_secret.encode(), data, hashlib.sha256).hexdigest()
            all_headers["X-Hub-Signature-256"] = f"sha256={digest}"
        response = httpx.post(url, content=data, headers=all_headers, timeout=10.0)
        with self._lock:
            self.webhooks.append({"url": url, "status": response.status_code, "body": body})
        return response.status_code

    @staticmethod
    def evolution_status(record: Record, status: str, *, event: str = "messages.update") -> dict[str, Any]:
        """An Evolution v2 status webhook for RECORD; STATUS is SERVER_ACK, DELIVERY_ACK, READ,
        PLAYED or ERROR."""
        return {
            "event": event,
            "instance": record.get("instance") or "",
            "data": {
                "keyId": record["message_id"],
                "remoteJid": f"{record['number']}@s.whatsapp.net",
                "fromMe": True,
                "status": status,
                "messageId": record["message_id"],
                "instanceId": record.get("instance") or "",
            },
            "date_time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "sender": "",
        }

    @staticmethod
    def cloud_status(
        record: Record,
        status: str,
        *,
        timestamp: int | None = None,
        errors: list[dict[str, Any]] | None = None,
        pricing: dict[str, Any] | None = None,
        conversation: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A Cloud API status webhook for RECORD; STATUS is sent, delivered, read or failed,
        with ERRORS (`cloud_error_item(code)`), PRICING (`cloud_pricing(...)`) and
        CONVERSATION (`{"id", "origin": {"type"}}`) when given."""
        item: dict[str, Any] = {
            "id": record["message_id"],
            "status": status,
            "timestamp": str(timestamp or int(time.time())),
            "recipient_id": record["number"],
        }
        if errors:
            item["errors"] = errors
        if pricing:
            item["pricing"] = pricing
        if conversation:
            item["conversation"] = conversation
        return {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "WABA-SIM",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550000000",
                                    "phone_number_id": record.get("phone_number_id") or "",
                                },
                                "statuses": [item],
                            },
                        }
                    ],
                }
            ],
        }

    @staticmethod
    def template_status(waba_id: str, template: dict[str, Any], event: str, reason: str = "NONE") -> dict[str, Any]:
        """A `message_template_status_update` webhook: TEMPLATE (as add_template returned it)
        is now EVENT (APPROVED, PAUSED, DISABLED, REJECTED, ...)."""
        value = {
            "event": event,
            "message_template_id": int(template["id"]),
            "message_template_name": template["name"],
            "message_template_language": template["language"],
            "reason": reason,
        }
        return {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": waba_id,
                    "time": int(time.time()),
                    "changes": [{"field": "message_template_status_update", "value": value}],
                }
            ],
        }

    @staticmethod
    def template_quality(waba_id: str, template: dict[str, Any], score: str) -> dict[str, Any]:
        value = {
            "previous_quality_score": "GREEN",
            "new_quality_score": score,
            "message_template_id": int(template["id"]),
            "message_template_name": template["name"],
            "message_template_language": template["language"],
        }
        return {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": waba_id,
                    "time": int(time.time()),
                    "changes": [{"field": "message_template_quality_update", "value": value}],
                }
            ],
        }

    # -- protocol --------------------------------------------------------------------------

    def _token_ok(self, headers: Any) -> bool:
        auth = headers.get("Authorization") or ""
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        return self.access_tokens is None or token in self.access_tokens

    def _list_templates(
        self, waba_id: str, path: str, query: dict[str, list[str]], headers: Any, host: str
    ) -> tuple[int, Any]:
        record: Record = {"waba_id": waba_id, "query": {k: v[0] for k, v in query.items()}}
        if not self._token_ok(headers):
            status, body = 401, cloud_error_body(401)
        elif waba_id not in self.templates:
            message = (
                f"Unsupported get request. Object with ID '{waba_id}' does not exist, cannot be loaded due to "
                "missing permissions, or does not support this operation."
            )
            status, body = 400, cloud_error_body(400, message, 100)
        else:
            limit = min(int((query.get("limit") or ["25"])[0]), self.template_page_size)
            start = int((query.get("after") or ["0"])[0])
            with self._lock:
                items = list(self.templates[waba_id])
            page = items[start : start + limit]
            paging: dict[str, Any] = {"cursors": {"before": str(start), "after": str(start + len(page))}}
            if start + limit < len(items):
                paging["next"] = f"http://{host}{path}?limit={limit}&after={start + limit}"
            status, body = 200, {"data": page, "paging": paging}
        with self._lock:
            self.template_requests.append({**record, "status": status})
        return status, body

    def _check_template(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any] | None, tuple[int, str] | None]:
        """(the body as the contact reads it, header media, or the Graph error (code, message))."""
        spec = payload.get("template") or {}
        name = str(spec.get("name") or "")
        language = str((spec.get("language") or {}).get("code") or "")
        template = self._find_template(name, language)
        if template is None:
            return "", None, (132001, f"(#132001) Template name does not exist in the translation: {name} ({language})")
        if template["status"] == "PAUSED":
            return "", None, (132015, "(#132015) Template is Paused")
        if template["status"] == "DISABLED":
            return "", None, (132016, "(#132016) Template is Disabled")
        if template["status"] != "APPROVED":
            return "", None, (132001, f"(#132001) Template name does not exist in the translation: {name}")
        sent = {str(c.get("type") or "").lower(): c for c in spec.get("components") or [] if c.get("type") != "button"}
        parts = {str(c.get("type") or "").upper(): c for c in template["components"]}
        named = template.get("parameter_format") == "NAMED"
        texts: dict[str, str] = {}
        media = None
        for kind in ("HEADER", "BODY"):
            component = parts.get(kind)
            given = (sent.get(kind.lower()) or {}).get("parameters") or []
            if kind == "HEADER" and component and component.get("format", "TEXT") != "TEXT":
                wanted = str(component["format"]).lower()
                part = given[0] if given else {}
                if part.get("type") != wanted or not (part.get(wanted) or {}).get("link"):
                    return (
                        "",
                        None,
                        (
                            132012,
                            "(#132012) Parameter format does not match format in the created template: "
                            f"header needs {wanted}",
                        ),
                    )
                media = {"type": wanted, **part[wanted]}
                continue
            names = list(dict.fromkeys(PLACEHOLDER.findall(str((component or {}).get("text") or ""))))
            if len(given) != len(names):
                return (
                    "",
                    None,
                    (
                        132000,
                        "(#132000) Number of parameters does not match the expected number of params "
                        f"({kind.lower()}: {len(names)} expected, {len(given)} given)",
                    ),
                )
            for index, (param_name, part) in enumerate(zip(names, given, strict=True)):
                if named and part.get("parameter_name") != param_name:
                    return (
                        "",
                        None,
                        (132000, f"(#132000) Number of parameters does not match: missing parameter_name {param_name}"),
                    )
                texts[f"{kind}.{param_name if named else index + 1}"] = str(part.get("text") or "")
        body = str((parts.get("BODY") or {}).get("text") or "")
        counter = itertools.count(1)

        def fill(match: re.Match[str]) -> str:
            key = match.group(1) if named else str(next(counter))
            return texts.get(f"BODY.{key}", "")

        return PLACEHOLDER.sub(fill, body), media, None

    def _failure(self, number: str) -> tuple[int, Any, float | None] | None:
        with self._lock:
            if self._failures:
                return self._failures.popleft()
            if number in self._number_failures:
                status, body = self._number_failures[number]
                return status, body, None
        return None

    def _record(self, record: Record, accepted: bool) -> None:
        with self._lock:
            self.requests.append({**record, "accepted": accepted})
            if accepted:
                self.sends.append(record)

    def _evolution_picture(self, instance: str, payload: dict[str, Any], headers: Any) -> tuple[int, Any]:
        """`POST /chat/fetchProfilePictureUrl/{instance}` `{"number"}` -> `{"wuid", "profilePictureUrl"}`
        (null when the user hides it), as Evolution v2's chat controller answers."""
        if self.api_keys is not None and headers.get("apikey") not in self.api_keys:
            return 401, evolution_error_body(401, "Unauthorized")
        number = str(payload.get("number") or "").split("@", 1)[0].lstrip("+")
        if not number:
            return 400, evolution_error_body(400, ["number is required"])
        with self._lock:
            self.picture_requests.append(number)
            known = number in self.profile_pictures
        url = f"{self.base_url}/pictures/{number}.jpg?oh=sim&oe={int(time.time()) + 3600:X}" if known else None
        return 200, {"wuid": f"{number}@s.whatsapp.net", "profilePictureUrl": url}

    def _evolution(
        self, kind: str, instance: str, payload: dict[str, Any], headers: Any, at: float
    ) -> tuple[int, Any, dict[str, str], Record | None]:
        number = str(payload.get("number") or "").lstrip("+")
        media = None
        if kind == "sendMedia":
            media = {k: payload.get(k) for k in ("mediatype", "mimetype", "fileName", "media")}
            text = str(payload.get("caption") or "")
        else:
            text = str(payload.get("text") or "")
        base = _request_record("evolution", number, text, media, instance=instance, at=at, headers=headers)
        base["delay"] = payload.get("delay")
        if self.api_keys is not None and headers.get("apikey") not in self.api_keys:
            self._record({**base, "message_id": None, "status": 401}, accepted=False)
            return 401, evolution_error_body(401, "Unauthorized"), {}, None
        if not number or (kind == "sendText" and not text) or (kind == "sendMedia" and not payload.get("media")):
            self._record({**base, "message_id": None, "status": 400}, accepted=False)
            return 400, evolution_error_body(400, ["number and text are required"]), {}, None
        failure = self._failure(number)
        if failure is not None:
            status, body, retry_after = failure
            self._record({**base, "message_id": None, "status": status}, accepted=False)
            extra = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            if body is None:
                message: Any = [{"exists": False, "jid": f"{number}@s.whatsapp.net", "number": number}]
                body = evolution_error_body(status, message if status == 400 else None)
            return status, body, extra, None
        message_id = f"3EB0{next(self._ids):012X}{secrets.token_hex(4).upper()}"
        record = {**base, "message_id": message_id, "status": 201}
        self._record(record, accepted=True)
        body = {
            "key": {"remoteJid": f"{number}@s.whatsapp.net", "fromMe": True, "id": message_id},
            "pushName": "",
            "status": "PENDING",
            "message": {"conversation": text} if media is None else {"mediaMessage": media},
            "messageType": "conversation" if media is None else f"{media.get('mediatype')}Message",
            "messageTimestamp": int(at),
            "instanceId": instance,
            "source": "unknown",
        }
        return 201, body, {}, record

    def _cloud(
        self, phone_number_id: str, payload: dict[str, Any], headers: Any, at: float
    ) -> tuple[int, Any, dict[str, str], Record | None]:
        number = str(payload.get("to") or "").lstrip("+")
        kind = str(payload.get("type") or "text")
        media = None
        template_error = None
        if kind == "text":
            text = str((payload.get("text") or {}).get("body") or "")
        elif kind == "template":
            text, media, template_error = self._check_template(payload)
        else:
            part = payload.get(kind) or {}
            text = str(part.get("caption") or "")
            media = {"type": kind, "link": part.get("link"), "filename": part.get("filename")}
        base = _request_record("cloud", number, text, media, phone_number_id=phone_number_id, at=at, headers=headers)
        base["template"] = payload.get("template") if kind == "template" else None
        if not self._token_ok(headers):
            self._record({**base, "message_id": None, "status": 401}, accepted=False)
            return 401, cloud_error_body(401), {}, None
        if payload.get("messaging_product") != "whatsapp" or not number:
            self._record({**base, "message_id": None, "status": 400}, accepted=False)
            return 400, cloud_error_body(400, "(#100) Invalid parameter", 100), {}, None
        if kind != "template" and self.service_window is not None and number not in self.service_window:
            template_error = (
                131047,
                "(#131047) Re-engagement message: more than 24 hours have passed since the recipient last replied",
            )
        if template_error is not None:
            code, message = template_error
            self._record({**base, "message_id": None, "status": 400, "error_code": code}, accepted=False)
            return 400, cloud_error_body(400, message, code), {}, None
        failure = self._failure(number)
        if failure is not None:
            status, body, retry_after = failure
            self._record({**base, "message_id": None, "status": status}, accepted=False)
            extra = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            return status, body if body is not None else cloud_error_body(status), extra, None
        message_id = f"wamid.SIM{next(self._ids):010d}{secrets.token_hex(6)}"
        record = {**base, "message_id": message_id, "status": 200}
        self._record(record, accepted=True)
        body = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": payload.get("to"), "wa_id": number}],
            "messages": [{"id": message_id}],
        }
        return 200, body, {}, record
