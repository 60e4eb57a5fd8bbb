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
from sense.management.base import JsonCommand


@dataclass
class Check:
    name: str
    ok: bool
    ms: float
    detail: str = ""


@dataclass
class Run:
    base: str
    token: str
    timeout: float
    client: httpx.Client = field(init=False)
    checks: list[Check] = field(default_factory=list)
    created_asset: str | None = None
    file_response: httpx.Response | None = None  # the uploaded file, fetched back through file_url

    def __post_init__(self) -> None:
        self.client = httpx.Client(
            base_url=self.base,
            timeout=self.timeout,
            follow_redirects=False,
            headers={"Authorization": f"Bearer {self.token}"},
            trust_env=False,
        )

    def check(self, name: str, func: Callable[[], str]) -> bool:
        started = time.perf_counter()
        try:
            detail = func() or ""
            ok = True
        except Exception as exc:
            detail, ok = f"{exc.__class__.__name__}: {exc}"[:300], False
        self.checks.append(Check(name, ok, round((time.perf_counter() - started) * 1000, 1), detail))
        return ok


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


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
        base = options["base_url"].rstrip("/")
        run = Run(base=base, token=options["token"], timeout=options["timeout"])
        wait = options["wait"]
        me: dict[str, Any] = {}

        def health() -> str:
            r = run.client.get("/api/health/")
            expect(r.status_code == 200 and r.json() == {"status": "ok"}, f"HTTP {r.status_code}: {r.text[:100]}")
            return ""

        def auth() -> str:
            r = run.client.get("/api/me/")
            expect(r.status_code == 200, f"HTTP {r.status_code}: the token was refused")
            me.update(r.json())
            return f"{me['username']} @ {me['tenant']['slug']}"

        def dashboard() -> str:
            r = run.client.get("/login/", headers={"Authorization": ""})
            expect(r.status_code == 200, f"login page HTTP {r.status_code}")
            assets = set(re.findall(r'(?:href|src)="(/static/[^"]+)"', r.text))
            expect(bool(assets), "the page links no static files")
            missing = [a for a in sorted(assets) if run.client.get(a).status_code != 200]
            expect(not missing, f"missing static files: {', '.join(missing)}")
            return f"{len(assets)} static files"

        def websocket() -> str:
            from websockets.sync.client import connect

            parts = urlsplit(base)
            scheme = "wss" if parts.scheme == "https" else "ws"
            url = f"{scheme}://{parts.netloc}/ws/tenant/{me['tenant']['id']}/?token={run.token}"
            with connect(url, open_timeout=run.timeout, origin=base) as ws:
                ws.send(json.dumps({"type": "ping"}))
                answer = json.loads(ws.recv(timeout=run.timeout))
            expect(answer == {"type": "pong"}, f"unexpected frame {answer}")
            return ""

        def proxy() -> str:
            target = options["proxy_url"] or f"{base}/api/health/probe.png"
            target += ("&" if "?" in target else "?") + f"postdeploy={secrets.token_hex(6)}"
            first = run.client.get("/api/chat/media-proxy/", params={"url": target})
            second = run.client.get("/api/chat/media-proxy/", params={"url": target})
            for r in (first, second):
                expect(r.status_code == 200, f"HTTP {r.status_code}: {r.text[:120]}")
                expect(r.headers.get("content-type", "").startswith("image/"), "not an image")
            caches = (first.headers.get("X-Cache"), second.headers.get("X-Cache"))
            expect(caches == ("MISS", "HIT"), f"X-Cache was {caches[0]} then {caches[1]}")
            return "MISS then HIT"

        def upload() -> str:
            body = PROBE_PNG.read_bytes()
            r = run.client.post("/api/chat/upload-media/", files={"file": ("postdeploy-check.png", body, "image/png")})
            expect(r.status_code == 201, f"HTTP {r.status_code}: {r.text[:160]}")
            data = r.json()
            expect(data.get("success") is True and data.get("file_type") == "image", f"unexpected answer {data}")
            run.created_asset = data["id"]
            fetched = run.file_response = run.client.get(data["file_url"], follow_redirects=True)
            expect(fetched.status_code == 200 and fetched.content == body, f"file_url gave HTTP {fetched.status_code}")
            deadline = time.monotonic() + wait
            while True:
                thumb = run.client.get(data["thumbnail_url"], follow_redirects=True)
                if thumb.status_code == 200 and thumb.headers.get("content-type", "").startswith("image/"):
                    break
                expect(time.monotonic() < deadline, f"thumbnail_url gave HTTP {thumb.status_code}")
                time.sleep(0.5)
            return f"{len(body)} bytes, thumbnail {len(thumb.content)} bytes"

        def stored() -> str:
            # The upload check fetched the file back (following redirects) and compared its
            # bytes: a redirect there was to the object's presigned URL, which answered.
            fetched = run.file_response
            if fetched is None:
                raise AssertionError("nothing was uploaded")
            if not fetched.history:
                return "local storage (streamed by the app)"
            expect(f"/media/{run.created_asset}/" in str(fetched.url), "the signed URL does not name the asset")
            return f"object found at {fetched.url.netloc.decode()}"

        def cache_check() -> str:
            r = run.client.get("/api/health/ready/")
            check = r.json().get("checks", {}).get("cache", {})
            expect(bool(check.get("ok")), f"cache check failed: {check.get('error')}")
            return str(check.get("backend") or "")

        def worker() -> str:
            r = run.client.post("/api/ops/worker-ping/")
            expect(r.status_code == 202, f"HTTP {r.status_code}: {r.text[:120]}")
            token = r.json()["token"]
            deadline = time.monotonic() + wait
            while not run.client.get(f"/api/ops/worker-ping/{token}/").json().get("done"):
                expect(time.monotonic() < deadline, "no worker answered the ping")
                time.sleep(0.2)
            return ""

        run.check("health", health)
        if run.check("API token", auth):
            run.check("dashboard and static files", dashboard)
            run.check("WebSocket", websocket)
            run.check("media proxy", proxy)
            if run.check("upload, file and thumbnail", upload):
                run.check("object in storage", stored)
            run.check("cache", cache_check)
            run.check("worker round trip", worker)
        self.cleanup(run)

        ok = all(c.ok for c in run.checks)
        lines = [
            f"{'✓' if c.ok else '✗'} {c.name} ({c.ms:.0f} ms){' — ' + c.detail if c.detail else ''}" for c in run.checks
        ]
        self.emit(options, {"ok": ok, "checks": [c.__dict__ for c in run.checks]}, "\n".join(lines))
        if not ok:
            raise SystemExit(1)

    def cleanup(self, run: Run) -> None:
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
