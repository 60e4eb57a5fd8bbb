"""Campaign dispatch: a 10,000-delivery campaign sent to the provider simulator by real
`rundramatiq` workers on RabbitMQ, PostgreSQL and Redis.

- unlimited: messages per second (first to last send, as the simulator saw them) against
  a plain httpx loop with the same concurrency and no database (the reference), and the
  peak resident memory of a worker process (VmHWM) against an idle worker's;
- 600 per minute: the achieved rate and the largest count in any 60-second window, over a
  90-second run (a full 10,000 at 600/min would take 17 minutes), against the limit.

Runs in a child process with its own environment (database `sense_bench_dispatch`, Redis
db 13, its own RabbitMQ queue) so it neither sees nor disturbs other benches.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Figure, in_threads, recreate_database, run_child  # noqa: E402
from bench.common import worker as worker_process  # noqa: E402

DELIVERIES = 10_000
LIMITED_SECONDS = float(os.environ.get("BENCH_DISPATCH_LIMITED_SECONDS", "90"))
RATE = 600
WORKER_PROCESSES = 2
WORKER_THREADS = 8
SENDERS = int(os.environ.get("BENCH_DISPATCH_SENDERS", "16"))
ENV = {
    "DEBUG": "false",
    "SECRET_KEY": "bench-secret-key-not-for-production",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/sense_bench_dispatch",
    "REDIS_URL": "redis://127.0.0.1:6379/13",
    "RABBITMQ_URL": os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
    "CAMPAIGN_QUEUE": "campaigns_bench",
    "CAMPAIGN_SENDERS": str(SENDERS),
    "PERIODIC_ENABLED": "false",
    "LOG_LEVEL": "WARNING",
    "SENSE_VAR_DIR": str(ROOT / "var" / "bench"),
}
STRIP = ("S3_BUCKET", "S3_ENDPOINT_URL", "DJANGO_SETTINGS_MODULE", "MEDIA_ROOT")


def run() -> list[Figure]:
    env = {k: v for k, v in os.environ.items() if k not in STRIP}
    env.update(ENV)
    data = run_child("bench.bench_dispatch", "--child", env=env, timeout=400)
    window_note = (
        f"600/min limit over a {LIMITED_SECONDS:.0f} s run ({data['limited_sent']} sends), "
        f"{WORKER_PROCESSES} worker processes x {WORKER_THREADS} threads, {SENDERS} senders"
    )
    return [
        Figure(
            name="dispatch, no rate limit",
            sense=data["unlimited_rate"],
            unit="msgs/s",
            goal=">= 300 msgs/s",
            met=data["unlimited_rate"] >= 300,
            reference=data["reference_rate"],
            reference_label="httpx loop, no DB",
            ratio=data["unlimited_rate"] / data["reference_rate"],
            notes=f"{DELIVERIES} deliveries, each sent once: {data['unlimited_once']}; "
            f"{WORKER_PROCESSES} worker processes x {WORKER_THREADS} threads, {SENDERS} senders",
        ),
        Figure(
            name="dispatch, peak worker memory",
            sense=data["peak_rss_mb"],
            unit="MiB",
            goal="<= 3x idle",
            met=data["peak_rss_mb"] <= 3 * data["idle_rss_mb"],
            reference=data["idle_rss_mb"],
            reference_label="idle worker",
            ratio=data["peak_rss_mb"] / data["idle_rss_mb"],
            notes="VmHWM of the largest worker process during the unlimited run",
        ),
        Figure(
            name="dispatch at 600/min, achieved rate",
            sense=data["limited_rate"],
            unit="msgs/min",
            goal="within 5% of 600",
            met=abs(data["limited_rate"] - RATE) <= 0.05 * RATE,
            reference=RATE,
            reference_label="limit",
            ratio=data["limited_rate"] / RATE,
            notes=window_note + "; rate = sends in the first full 60 s window",
        ),
        Figure(
            name="dispatch at 600/min, max in any 60 s",
            sense=data["limited_max_window"],
            unit="msgs",
            goal="<= 600",
            met=data["limited_max_window"] <= RATE,
            reference=RATE,
            reference_label="limit",
            ratio=data["limited_max_window"] / RATE,
            notes=window_note + "; timestamps as the simulator received them",
        ),
    ]


# --- child process ----------------------------------------------------------------------------


def _rss_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                pids.append(int(entry))
    return pids


def _worker_pids(pgid: int) -> list[int]:
    """The forked worker processes (the dramatiq parent only supervises)."""
    return [pid for pid in _group_pids(pgid) if pid != pgid] or [pgid]


def _reference_rate(base_url: str, n: int = 4000) -> float:
    import httpx

    counter = iter(range(n))
    lock = threading.Lock()

    def loop() -> None:
        client = httpx.Client()
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            client.post(f"{base_url}/message/sendText/ref", json={"number": f"55119{i:08d}", "text": "hi"})

    started = time.perf_counter()
    in_threads(loop, SENDERS)
    return n / (time.perf_counter() - started)


def child() -> None:
    recreate_database("sense_bench_dispatch")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sense.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import redis

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()

    from campaigns import services
    from campaigns.models import Campaign, Connection, Contact
    from sense.models import Tenant
    from tests.simulator import ProviderSimulator
    from tests.workers import flush_queues

    flush_queues()
    sim = ProviderSimulator().start()
    reference = _reference_rate(sim.base_url)
    sim.reset()

    tenant = Tenant.objects.create(slug="bench", name="Bench")
    Contact.objects.bulk_create(
        [Contact(tenant=tenant, phone=f"+55119{30000000 + i:08d}", name=f"P{i}") for i in range(DELIVERIES)],
        batch_size=2000,
    )

    def connection(rate: int) -> Connection:
        return Connection.objects.create(
            tenant=tenant,
            name=f"bench {rate}",
            provider="evolution",
            base_url=sim.base_url,
            credentials={"instance": "bench", "api_key": "k"},
            rate_per_minute=rate,
        )

    queues = (os.environ["CAMPAIGN_QUEUE"],)
    try:
        with worker_process(
            os.environ.copy(), None, processes=WORKER_PROCESSES, threads=WORKER_THREADS, queues=queues
        ) as worker:
            time.sleep(6)  # boot, connect to RabbitMQ
            idle = max(_rss_kb(pid, "VmRSS") for pid in _worker_pids(worker.pid))

            campaign = Campaign.objects.create(tenant=tenant, name="unlimited", connection=connection(0), message="Hi")
            services.campaign_start(campaign=campaign)
            deadline = time.monotonic() + 120
            while Campaign.objects.get(pk=campaign.pk).status != "finished" and time.monotonic() < deadline:
                time.sleep(0.5)
            times = sim.send_times()
            peak = max(_rss_kb(pid, "VmHWM") for pid in _worker_pids(worker.pid))
            unlimited_rate = len(times) / (times[-1] - times[0]) if len(times) > 1 else 0.0
            once = len(times) == DELIVERIES and max(sim.count_by_number().values()) == 1

            sim.reset()
            limited = Campaign.objects.create(tenant=tenant, name="limited", connection=connection(RATE), message="Hi")
            services.campaign_start(campaign=limited)
            time.sleep(LIMITED_SECONDS)
            services.campaign_cancel(campaign=Campaign.objects.get(pk=limited.pk))
            time.sleep(1)
            limited_times = sim.send_times()
            first = limited_times[0] if limited_times else 0.0
            in_first_minute = sum(1 for t in limited_times if t < first + 60)
            result = {
                "reference_rate": reference,
                "unlimited_rate": unlimited_rate,
                "unlimited_once": once,
                "idle_rss_mb": idle / 1024,
                "peak_rss_mb": peak / 1024,
                "limited_sent": len(limited_times),
                "limited_rate": float(in_first_minute),
                "limited_max_window": ProviderSimulator.max_in_window(limited_times, 60.0),
            }
    finally:
        sim.stop()
        flush_queues()
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child()
    else:
        for figure in run():
            print(figure)
