"""The post-deploy checklist as a command: run it against a live deployment right after a
release (see the README's runbook). Prints one line per check with ✓ or ✗ and its time;
exits 1 if any failed; removes what it created."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.core.management.base import CommandParser

from sense.health import PROBE_PNG
from sense.lib.http import build_client
from sense.management.base import JsonCommand


@dataclass
class Check:
    name: str
    ok: bool
    ms: float
    detail: str = ""


@dataclass
class Run:
    """One run of the checklist: the client for the deployment, what the checks found so far
    (the caller's identity, the uploaded asset) and their results."""

    base: str
    token: str
    timeout: float
    wait: float  # seconds to wait for the thumbnail and the worker
    proxy_url: str = ""  # an image the media proxy should fetch ("": the deployment's probe image)
    client: httpx.Client = field(init=False)
    checks: list[Check] = field(default_factory=list)
    me: dict[str, Any] = field(default_factory=dict)  # /api/me/, once the token is accepted
    created_asset: str | None = None
    file_response: httpx.Response | None = None  # the uploaded file, fetched back through file_url

    def __post_init__(self) -> None:
        self.client = build_client(
            base_url=self.base,
            timeout=httpx.Timeout(self.timeout),
            headers={"Authorization": f"Bearer {self.token}"},
        )

    def check(self, name: str, func: Callable[[Run], str]) -> bool:
        started = time.perf_counter()
        try:
            detail = func(self) or ""
            ok = True
        except Exception as exc:
            detail, ok = f"{exc.__class__.__name__}: {exc}"[:300], False
        self.checks.append(Check(name, ok, round((time.perf_counter() - started) * 1000, 1), detail))
        return ok


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# One function per check: each takes the run, raises when the check fails and returns a detail.


def check_health(run: Run) -> str:
    r = run.client.get("/api/health/")
    expect(r.status_code == 200 and r.json() == {"status": "ok"}, f"HTTP {r.status_code}: {r.text[:100]}")
    return ""


def check_token(run: Run) -> str:
    r = run.client.get("/api/me/")
    expect(r.status_code == 200, f"HTTP {r.status_code}: the token was refused")
    run.me.update(r.json())
    return f"{run.me['username']} @ {run.me['tenant']['slug']}"


def check_dashboard(run: Run) -> str:
    r = run.client.get("/login/", headers={"Authorization": ""})
    expect(r.status_code == 200, f"login page HTTP {r.status_code}")
    assets = set(re.findall(r'(?:href|src)="(/static/[^"]+)"', r.text))
    expect(bool(assets), "the page links no static files")
    missing = [a for a in sorted(assets) if run.client.get(a).status_code != 200]
    expect(not missing, f"missing static files: {', '.join(missing)}")
    return f"{len(assets)} static files"


def check_websocket(run: Run) -> str:
    from websockets.sync.client import connect
    from websockets.typing import Origin

    parts = urlsplit(run.base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    url = f"{scheme}://{parts.netloc}/ws/tenant/{run.me['tenant']['id']}/?token={run.token}"
    with connect(url, open_timeout=run.timeout, origin=Origin(run.base)) as ws:
        ws.send(json.dumps({"type": "ping"}))
        answer = json.loads(ws.recv(timeout=run.timeout))
    expect(answer == {"type": "pong"}, f"unexpected frame {answer}")
    return ""


def check_proxy(run: Run) -> str:
    target = run.proxy_url or f"{run.base}/api/health/probe.png"
    target += ("&" if "?" in target else "?") + f"postdeploy={secrets.token_hex(6)}"
    first = run.client.get("/api/chat/media-proxy/", params={"url": target})
    second = run.client.get("/api/chat/media-proxy/", params={"url": target})
    for r in (first, second):
        expect(r.status_code == 200, f"HTTP {r.status_code}: {r.text[:120]}")
        expect(r.headers.get("content-type", "").startswith("image/"), "not an image")
    caches = (first.headers.get("X-Cache"), second.headers.get("X-Cache"))
    expect(caches == ("MISS", "HIT"), f"X-Cache was {caches[0]} then {caches[1]}")
    return "MISS then HIT"


def check_upload(run: Run) -> str:
    body = PROBE_PNG.read_bytes()
    r = run.client.post("/api/chat/upload-media/", files={"file": ("postdeploy-check.png", body, "image/png")})
    expect(r.status_code == 201, f"HTTP {r.status_code}: {r.text[:160]}")
    data = r.json()
    expect(data.get("success") is True and data.get("file_type") == "image", f"unexpected answer {data}")
    run.created_asset = data["id"]
    fetched = run.file_response = run.client.get(data["file_url"], follow_redirects=True)
    expect(fetched.status_code == 200 and fetched.content == body, f"file_url gave HTTP {fetched.status_code}")
    deadline = time.monotonic() + run.wait
    while True:
        thumb = run.client.get(data["thumbnail_url"], follow_redirects=True)
        if thumb.status_code == 200 and thumb.headers.get("content-type", "").startswith("image/"):
            break
        expect(time.monotonic() < deadline, f"thumbnail_url gave HTTP {thumb.status_code}")
        time.sleep(0.5)
    return f"{len(body)} bytes, thumbnail {len(thumb.content)} bytes"


def check_stored(run: Run) -> str:
    # The upload check fetched the file back (following redirects) and compared its
    # bytes: a redirect there was to the object's presigned URL, which answered.
    fetched = run.file_response
    if fetched is None:
        raise AssertionError("nothing was uploaded")
    if not fetched.history:
        return "local storage (streamed by the app)"
    expect(f"/media/{run.created_asset}/" in str(fetched.url), "the signed URL does not name the asset")
    return f"object found at {fetched.url.netloc.decode()}"


def check_cache(run: Run) -> str:
    r = run.client.get("/api/health/ready/")
    check = r.json().get("checks", {}).get("cache", {})
    expect(bool(check.get("ok")), f"cache check failed: {check.get('error')}")
    return str(check.get("backend") or "")


def check_worker(run: Run) -> str:
    r = run.client.post("/api/ops/worker-ping/")
    expect(r.status_code == 202, f"HTTP {r.status_code}: {r.text[:120]}")
    token = r.json()["token"]
    deadline = time.monotonic() + run.wait
    while not run.client.get(f"/api/ops/worker-ping/{token}/").json().get("done"):
        expect(time.monotonic() < deadline, "no worker answered the ping")
        time.sleep(0.2)
    return ""


def clean_up(run: Run) -> None:
    """Delete the asset the upload check made, and record that as a check of its own."""
    if run.created_asset:
        r = run.client.delete(f"/api/media/{run.created_asset}/")
        run.checks.append(
            Check(
                "clean up",
                r.status_code in (200, 204),
                0.0,
                "" if r.status_code in (200, 204) else f"HTTP {r.status_code}",
            )
        )


def run_checks(run: Run) -> None:
    """Every check in order; those that need the token run only once it is accepted."""
    run.check("health", check_health)
    if run.check("API token", check_token):
        run.check("dashboard and static files", check_dashboard)
        run.check("WebSocket", check_websocket)
        run.check("media proxy", check_proxy)
        if run.check("upload, file and thumbnail", check_upload):
            run.check("object in storage", check_stored)
        run.check("cache", check_cache)
        run.check("worker round trip", check_worker)
    clean_up(run)


class Command(JsonCommand):
    help = "Run the post-deploy checklist against a running deployment (exit 1 if any check fails)."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--base-url", required=True, help="e.g. https://sense.example.com")
        parser.add_argument("--token", required=True, help="an API token of the tenant to check with")
        parser.add_argument("--timeout", type=float, default=15.0, help="seconds per request (default 15)")
        parser.add_argument(
            "--wait", type=float, default=60.0, help="seconds to wait for the thumbnail and the worker (default 60)"
        )
        parser.add_argument(
            "--proxy-url",
            default="",
            help="an image the media proxy should fetch (default: the deployment's own probe image)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        run = Run(
            base=options["base_url"].rstrip("/"),
            token=options["token"],
            timeout=options["timeout"],
            wait=options["wait"],
            proxy_url=options["proxy_url"],
        )
        try:
            run_checks(run)
        finally:
            run.client.close()

        ok = all(c.ok for c in run.checks)
        lines = [
            f"{'✓' if c.ok else '✗'} {c.name} ({c.ms:.0f} ms){' — ' + c.detail if c.detail else ''}" for c in run.checks
        ]
        self.emit(options, {"ok": ok, "checks": [c.__dict__ for c in run.checks]}, "\n".join(lines))
        if not ok:
            raise SystemExit(1)
