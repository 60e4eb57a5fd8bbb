"""Media proxy: HIT requests/s and p50 against a no-op authenticated view (/api/me/) on the
same uvicorn server in the same run (goal ratio >= 0.7), and the MISS overhead over fetching
the same local upstream directly (goal < 10 ms at p50).

Runs in a child process with its own full-stack environment (see bench_upload.stack_env).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Figure, in_threads, run_child, web  # noqa: E402

SECONDS = 6.0
THREADS = 4
MISSES = 150


def _load(url: str, headers: dict[str, str]) -> tuple[float, float]:
    """(requests per second, p50 ms) for THREADS keep-alive clients hammering URL for SECONDS."""
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + SECONDS

    def worker() -> None:
        mine = []
        with httpx.Client(headers=headers, timeout=30) as client:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                response = client.get(url)
                mine.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text
        with lock:
            latencies.extend(mine)

    began = time.perf_counter()
    in_threads(worker, THREADS)
    return len(latencies) / (time.perf_counter() - began), statistics.median(latencies)


def child() -> None:
    import os

    import httpx

    os.environ["MEDIA_PROXY_TRUSTED_HOSTS"] = "127.0.0.1"
    from bench.bench_upload import bench_token, prepare_stack
    from tests.media.upstream import upstream

    moto, env = prepare_stack()
    env["MEDIA_PROXY_TRUSTED_HOSTS"] = "127.0.0.1"
    token = bench_token()
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with (
            upstream() as remote,
            tempfile.TemporaryDirectory() as tmp,
            web(env, tmp, app="sense.asgi:application") as (port, _),
        ):
            base = f"http://127.0.0.1:{port}"
            image = f"{remote.base}/img.png?bench={time.time()}"
            proxied = f"{base}/api/chat/media-proxy/?url={quote(image, safe='')}"
            with httpx.Client(headers=headers) as client:
                assert client.get(proxied).headers["X-Cache"] == "MISS"
                assert client.get(proxied).headers["X-Cache"] == "HIT"
                client.get(f"{base}/api/me/").raise_for_status()
            hit_rps, hit_p50 = _load(proxied, headers)
            noop_rps, noop_p50 = _load(f"{base}/api/me/", headers)

            direct, through = [], []
            with httpx.Client(headers=headers, timeout=30) as client:
                for i in range(MISSES):
                    url = f"{remote.base}/img.png?miss={time.time()}-{i}"
                    started = time.perf_counter()
                    client.get(url).raise_for_status()
                    direct.append((time.perf_counter() - started) * 1000)
                    started = time.perf_counter()
                    response = client.get(f"{base}/api/chat/media-proxy/?url={quote(url, safe='')}")
                    through.append((time.perf_counter() - started) * 1000)
                    assert response.headers["X-Cache"] == "MISS"
    finally:
        moto.stop()
    print(
        json.dumps(
            {
                "hit_rps": hit_rps,
                "hit_p50": hit_p50,
                "noop_rps": noop_rps,
                "noop_p50": noop_p50,
                "direct_p50": statistics.median(direct),
                "miss_p50": statistics.median(through),
            }
        )
    )


def run() -> list[Figure]:
    r: dict[str, Any] = run_child("bench.bench_proxy", "child")
    ratio = r["hit_rps"] / r["noop_rps"]
    overhead = r["miss_p50"] - r["direct_p50"]
    return [
        Figure(
            name="proxy HIT throughput",
            sense=round(r["hit_rps"], 1),
            unit="req/s",
            goal="ratio >= 0.7",
            met=ratio >= 0.7,
            reference=round(r["noop_rps"], 1),
            reference_label="no-op authenticated view (/api/me/)",
            ratio=round(ratio, 2),
            notes=f"one uvicorn worker, {THREADS} keep-alive clients for {SECONDS:.0f} s each",
        ),
        Figure(
            name="proxy HIT p50",
            sense=round(r["hit_p50"], 2),
            unit="ms",
            goal="ratio <= 1.43 (same as throughput >= 0.7)",
            met=r["hit_p50"] <= r["noop_p50"] / 0.7,
            reference=round(r["noop_p50"], 2),
            reference_label="no-op authenticated view",
            ratio=round(r["hit_p50"] / r["noop_p50"], 2),
        ),
        Figure(
            name="proxy MISS overhead at p50",
            sense=round(overhead, 2),
            unit="ms",
            goal="< 10 ms",
            met=overhead < 10,
            reference=round(r["direct_p50"], 2),
            reference_label="direct fetch of the same local upstream",
            notes=f"{MISSES} distinct URLs; proxy MISS p50 {r['miss_p50']:.2f} ms",
        ),
    ]


if __name__ == "__main__":
    if sys.argv[1:] == ["child"]:
        child()
    else:
        for figure in run():
            print(figure)
