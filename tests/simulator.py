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
- `api_keys` / `access_tokens`: when set, requests with other credentials answer 401;
- `webhook_hook` (alias `on_send`): a callable run in a background thread with the send
  record after the response is written; `post_webhook(...)`, `evolution_status(...)` and
  `cloud_status(...)` build and send providers' status webhooks back to Sense.

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
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

EVOLUTION_SEND = re.compile(r"^/message/(sendText|sendMedia)/([^/?]+)$")
CLOUD_SEND = re.compile(r"^(?:/v\d+(?:\.\d+)?)?/([^/?]+)/messages$")

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
        if self.path.rstrip("/") in ("", "/health"):
            self._reply(200, {"status": 200, "message": "Provider simulator"})
        else:
            self._reply(404, {"error": "not found"})

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
        self._failures: collections.deque[tuple[int, Any, float | None]] = collections.deque()
        self._number_failures: dict[str, tuple[int, Any]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
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

    def fail_number(self, number: str, status: int, body: Any = None) -> None:
        """Answer every send to NUMBER (digits, with or without +) with STATUS."""
        with self._lock:
            self._number_failures[number.lstrip("+")] = (status, body)

    def reset(self) -> None:
        with self._lock:
            self.sends.clear()
            self.requests.clear()
            self.webhooks.clear()
            self._failures.clear()
            self._number_failures.clear()

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
        record: Record, status: str, *, timestamp: int | None = None, errors: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """A Cloud API status webhook for RECORD; STATUS is sent, delivered, read or failed."""
        item: dict[str, Any] = {
            "id": record["message_id"],
            "status": status,
            "timestamp": str(timestamp or int(time.time())),
            "recipient_id": record["number"],
        }
        if errors:
            item["errors"] = errors
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

    # -- protocol --------------------------------------------------------------------------

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
        if kind == "text":
            text = str((payload.get("text") or {}).get("body") or "")
        else:
            part = payload.get(kind) or {}
            text = str(part.get("caption") or "")
            media = {"type": kind, "link": part.get("link"), "filename": part.get("filename")}
        base = _request_record("cloud", number, text, media, phone_number_id=phone_number_id, at=at, headers=headers)
        auth = headers.get("Authorization") or ""
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        if self.access_tokens is not None and token not in self.access_tokens:
            self._record({**base, "message_id": None, "status": 401}, accepted=False)
            return 401, cloud_error_body(401), {}, None
        if payload.get("messaging_product") != "whatsapp" or not number:
            self._record({**base, "message_id": None, "status": 400}, accepted=False)
            return 400, cloud_error_body(400, "(#100) Invalid parameter", 100), {}, None
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
