"""Serving plain HTTP: wrk (concurrency 32) against the Procfile's web command (uvicorn with
WEB_CONCURRENCY processes) and one `rundramatiq` worker on PostgreSQL, Redis and RabbitMQ.

Side by side in one run, under the same server:
- a bare ASGI responder (`/bench/bare/`, answered before Django: the server's ceiling);
- Sense's no-op view `/api/health/` through the whole middleware stack;
- Evolution status webhooks (a distinct delivery's DELIVERY_ACK per request, then READ);
- open loop: webhooks at a constant rate of half the measured webhook capacity, each
  request timed from when it was due (so a stall counts against every request behind it);
- then the durability check: every stored event processed, the campaign's counters equal
  a recount of its deliveries.

BENCH_HTTP_HANDLER=django serves HTTP with Django's own ASGI handler instead (the code
before issue 16: a thread created per request) for a before/after comparison.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.bench_webhooks import _env, _event, _vhost, seed
from bench.common import (
    ROOT,
    Figure,
    cpu_per,
    cpu_seconds,
    manage,
    percentile,
    recreate_database,
    stop,
    wait_port,
    worker,
)
from tests.helpers import free_port

DB_NAME = "sense_bench_http"
DELIVERIES = int(os.environ.get("BENCH_HTTP_DELIVERIES", "30000"))
SECONDS = float(os.environ.get("BENCH_HTTP_SECONDS", "8"))
CONCURRENCY = 32
OPEN_LOOP_SECONDS = 6.0
SEED = seed(DELIVERIES, 'print("SEED " + conn.webhook_token + " " + str(campaign.pk))')


def asgi_app() -> Any:
    """uvicorn factory: Sense's ASGI application behind a bare responder for /bench/bare/."""
    if os.environ.get("BENCH_HTTP_HANDLER") == "django":
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sense.settings")
        from channels.routing import ProtocolTypeRouter
        from django.core.asgi import get_asgi_application

        django_app = get_asgi_application()
        from sense.asgi import application as sense_app

        app: Any = ProtocolTypeRouter({"http": django_app, "websocket": sense_app.application_mapping["websocket"]})
    else:
        from sense.asgi import application as app

    async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/bench/bare/":
            while (await receive()).get("more_body"):
                pass
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await app(scope, receive, send)

    return bare


def procfile_web() -> str:
    """The Procfile's web server command (after collectstatic)."""
    line = next(x for x in (ROOT / "Procfile").read_text().splitlines() if x.startswith("web:"))
    return line.split("&&", 1)[1].strip()


@contextmanager
def web(env: dict[str, str], tmp: str) -> Iterator[int]:
    """The Procfile's web command on a free port, serving the asgi_app factory above."""
    port = free_port()
    command = procfile_web().replace("--host 0.0.0.0", "--host 127.0.0.1")
    command = command.replace("sense.asgi:application", "--factory bench.bench_http:asgi_app")
    command += " --no-access-log --log-level warning"
    env = {**env, "PORT": str(port), "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"}
    with open(Path(tmp) / "web.log", "wb") as log:
        proc = subprocess.Popen(
            ["sh", "-c", f"exec {command}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_port(port, proc)
            time.sleep(1.0)  # every worker process listening
            yield port
        finally:
            stop(proc)


WEBHOOK_LUA = r"""
counter = 0
template = [[%s]]
request = function()
  local n = counter %% %d
  local status = "DELIVERY_ACK"
  if counter >= %d then status = "READ" end
  counter = counter + 1
  local body = string.gsub(string.gsub(template, "IDIDID", string.format("%%010d", n)), "STSTST", status)
  return wrk.format("POST", "%s", {["Content-Type"] = "application/json"}, body)
end
"""


def wrk(url: str, seconds: float, script: str | None = None, tmp: str = "/tmp") -> dict[str, float]:
    """wrk at CONCURRENCY on URL for SECONDS; {"rps", "p50", "p99" (ms), "errors"}."""
    command = ["wrk", "-t1", f"-c{CONCURRENCY}", f"-d{int(seconds)}s", "--latency", "--timeout", "10s"]
    if script:
        path = Path(tmp) / "wrk.lua"
        path.write_text(script)
        command += ["-s", str(path)]
    out = subprocess.run([*command, url], capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            return float("nan")
        return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]

    errors = 0
    for pattern in (r"Non-2xx or 3xx responses:\s+(\d+)", r"Socket errors:.*?timeout (\d+)"):
        match = re.search(pattern, out)
        errors += int(match.group(1)) if match else 0
    return {"rps": rps, "p50": latency("50"), "p99": latency("99"), "errors": errors}


async def open_loop(
    port: int,
    path: str,
    rate: float,
    seconds: float,
    first: int,
    *,
    status: str = "READ",
    answered: list[float] | None = None,
) -> tuple[list[float], int]:
    """POST webhooks to PATH at RATE per second for SECONDS over 64 keep-alive connections
    (raw asyncio streams: the client must cost far less than the server), each timed from when
    it was due; returns (latencies in s, non-200 count). Deliveries FIRST, FIRST + 1, ... get
    STATUS; ANSWERED, if given, gets the time.monotonic() of every 200."""
    connections = 64
    latencies: list[float] = []
    errors = 0
    queues: list[asyncio.Queue[tuple[float, bytes] | None]] = [asyncio.Queue() for _ in range(connections)]

    async def connection(queue: asyncio.Queue[tuple[float, bytes] | None]) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (item := await queue.get()) is not None:
            due, body = item
            head = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            line_one = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - due)
            if not line_one.startswith(b"HTTP/1.1 200"):
                errors += 1
            elif answered is not None:
                answered.append(time.monotonic())
        writer.close()

    workers = [asyncio.create_task(connection(q)) for q in queues]
    await asyncio.sleep(0.5)  # every connection open before the clock starts
    started = time.perf_counter()
    for n in range(int(rate * seconds)):
        due = started + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queues[n % connections].put_nowait((due, _event(f"3EB0BENCH{(first + n) % DELIVERIES:010d}", status)))
    for queue in queues:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return latencies, errors


def check(campaign_id: str) -> tuple[bool, str]:
    """Wait for the worker to process every stored event; (counters equal a recount, details)."""
    import psycopg

    with psycopg.connect(f"postgres://postgres@127.0.0.1:5432/{DB_NAME}", autocommit=True) as conn:
        # Requests wrk still had in flight when it stopped are answered (and their events
        # stored) after it returns: wait until nothing is pending and no event has been
        # stored for a second.
        deadline = time.monotonic() + 120
        last, still_since = None, time.monotonic()
        while time.monotonic() < deadline:
            total, pending = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE status = 'pending') FROM campaigns_webhookevent"
            ).fetchone()  # type: ignore[misc]
            if total != last:
                last, still_since = total, time.monotonic()
            elif pending == 0 and time.monotonic() - still_since >= 1.0:
                break
            time.sleep(0.05)
        stats = conn.execute(
            "SELECT stat_delivered, stat_read FROM campaigns_campaign WHERE id = %s", [campaign_id]
        ).fetchone()
        truth = conn.execute(
            "SELECT count(*) FILTER (WHERE status IN ('delivered', 'read')), count(*) FILTER (WHERE status = 'read') "
            "FROM campaigns_delivery WHERE campaign_id = %s",
            [campaign_id],
        ).fetchone()
        events: dict[str, int] = dict(
            conn.execute("SELECT status, count(*) FROM campaigns_webhookevent GROUP BY status").fetchall()
        )
    ok = stats == truth and events.get("pending", 0) == 0
    return ok, f"counters {stats}, recount {truth}, stored events {events}"


def measure(env: dict[str, str], tmp: str, token: str, campaign_id: str, *, before: bool = False) -> dict[str, Any]:
    """The figures on the current code, or with BEFORE on Django's own ASGI handler (the
    reference: no bare responder, no open loop)."""
    if before:
        env = {**env, "BENCH_HTTP_HANDLER": "django"}
    with worker(env, Path(tmp) / "worker.log"), web(env, tmp) as port:
        base = f"http://127.0.0.1:{port}"
        hook = f"/api/webhooks/evolution/{token}/"
        template = _event("3EB0BENCHIDIDID", "STSTST").decode()
        lua = WEBHOOK_LUA % (template, DELIVERIES, DELIVERIES, hook)
        wrk(f"{base}/api/health/", 2)  # warm-up: connections, pools, the broker channel
        bare = wrk(f"{base}/bench/bare/", SECONDS) if not before else None
        noop = wrk(f"{base}/api/health/", SECONDS)
        used = cpu_seconds()
        hooks = wrk(f"{base}{hook}", SECONDS, lua, tmp)
        hooks_cpu = cpu_per(used, cpu_seconds(), hooks["rps"] * SECONDS)
        result: dict[str, Any] = {"bare": bare, "noop": noop, "hooks": hooks, "hooks_cpu": hooks_cpu}
        if not before:
            sent = int(hooks["rps"] * SECONDS)
            time.sleep(2)  # let the worker catch up before the latency run
            rate = hooks["rps"] / 2
            latencies, open_errors = asyncio.run(open_loop(port, hook, rate, OPEN_LOOP_SECONDS, sent))
            result.update(
                open_rate=rate,
                open_p99=percentile(latencies, 99) * 1000,
                open_p50=percentile(latencies, 50) * 1000,
                open_errors=open_errors,
            )
        result["durable"], result["details"] = check(campaign_id)
    return result


def run() -> list[Figure]:
    tmp = tempfile.mkdtemp(prefix="sense-bench-http-")
    env = _env(DB_NAME, tmp, _vhost())
    env["PYTHONPATH"] = str(ROOT)
    recreate_database(DB_NAME)
    manage(env, "migrate", "--noinput", "-v", "0")
    token, campaign_id = manage(env, "shell", "-c", SEED).split("SEED ", 1)[1].split()
    before = measure(env, tmp, token, campaign_id, before=True)
    result = measure(env, tmp, token, campaign_id)
    bare, noop, hooks = result["bare"], result["noop"], result["hooks"]
    lost = not (result["durable"] and before["durable"]) or hooks["errors"] or result["open_errors"]
    if not lost:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"   logs kept in {tmp}", flush=True)
    processes = env.get("WEB_CONCURRENCY", "1")
    setup = f"Procfile web ({processes} uvicorn process(es)) + 1 rundramatiq worker, wrk -c{CONCURRENCY}"
    ratio = hooks["rps"] / noop["rps"]
    speedup = noop["rps"] / before["noop"]["rps"]
    return [
        Figure(
            name="bare ASGI responder (server ceiling)",
            sense=round(bare["rps"]),
            unit="req/s",
            goal="-",
            met=True,
            notes=setup,
        ),
        Figure(
            name="no-op view /api/health/",
            sense=round(noop["rps"]),
            unit="req/s",
            goal="ratio >= 5",
            met=speedup >= 5,
            reference=round(before["noop"]["rps"]),
            reference_label="Django's ASGI handler (before), same server",
            ratio=round(speedup, 2),
            notes=f"p50 {noop['p50']:.1f} ms, p99 {noop['p99']:.1f} ms; "
            f"{noop['rps'] / bare['rps']:.3f} of the bare ASGI responder",
        ),
        Figure(
            name="webhook ingest (wrk)",
            sense=round(hooks["rps"]),
            unit="events/s",
            goal=">= 1,000 and ratio >= 0.6",
            met=hooks["rps"] >= 1000 and ratio >= 0.6 and not lost,
            reference=round(noop["rps"]),
            reference_label="no-op view, same server",
            ratio=round(ratio, 2),
            notes=f"Evolution status webhooks; p50 {hooks['p50']:.1f} ms, p99 {hooks['p99']:.1f} ms; "
            f"non-2xx/timeouts {hooks['errors']:.0f}; "
            f"CPU per event by process (wrk not counted): {result['hooks_cpu']}; "
            f"before (Django's ASGI handler) {before['hooks']['rps']:.0f}/s",
        ),
        Figure(
            name="webhook p99, open loop at half capacity",
            sense=round(result["open_p99"], 1),
            unit="ms",
            goal="< 50 ms",
            met=result["open_p99"] < 50 and not lost,
            notes=f"{result['open_rate']:.0f}/s for {OPEN_LOOP_SECONDS:.0f} s, timed from when each was due; "
            f"p50 {result['open_p50']:.1f} ms; non-200 {result['open_errors']}",
        ),
        Figure(
            name="events lost (counters = recount)",
            sense=0 if not lost else 1,
            unit="",
            goal="0",
            met=not lost,
            notes=f"after: {result['details']}; before: {before['details']}",
        ),
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    for figure in run():
        print(figure)
