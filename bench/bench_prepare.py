"""Starting a campaign of 1,000,000 contacts: the start request, then the audience snapshot
taken by a real `rundramatiq` worker (PostgreSQL, RabbitMQ), against a bare
`INSERT INTO campaigns_delivery ... SELECT ... FROM campaigns_contact` of the same rows (same
filter, same rendered text) run by psql in the same run.

- worker time: the campaign's `prepared_at - started_at` (the start commits, the actor runs,
  the last chunk commits), best of ROUNDS, against psql's best;
- worker memory: the growth of the worker process's peak resident memory (VmHWM) over the
  snapshot, from the idle worker's;
- the start request (POST /api/campaigns/{id}/start/ on uvicorn), at this audience size.

Every measurement starts from an empty deliveries table (TRUNCATE, then CHECKPOINT), so the
index work is the same for both. Own database (sense_bench_prepare), Redis db 13 and queue.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_dispatch import _rss_kb, _worker_pids  # noqa: E402
from bench.common import Figure, bench_env, manage, recreate_database, run_child  # noqa: E402
from bench.common import web as web_process  # noqa: E402
from bench.common import worker as worker_process  # noqa: E402

DB_NAME = "sense_bench_prepare"
CONTACTS = int(os.environ.get("BENCH_PREPARE_CONTACTS", "1000000"))
ROUNDS = 2
MESSAGE = "Oi {{name}}! Sua cidade: {{city}}."
REFERENCE = """
    INSERT INTO campaigns_delivery (tenant_id, campaign_id, contact_id, phone, text, status, attempts,
                                    error_code, error_message, created_at, updated_at)
    SELECT tenant_id, '{campaign}', id, phone,
           'Oi ' || name || '! Sua cidade: ' || COALESCE(attributes ->> 'city', '') || '.',
           'pending', 0, '', '', now(), now()
    FROM campaigns_contact
    WHERE tenant_id = '{tenant}' AND NOT opted_out AND tags @> '["vip"]'
"""
# Contacts outside the audience: not tagged, and opted out.
SEED = """
    INSERT INTO campaigns_contact (tenant_id, phone, name, attributes, tags, opted_out, created_at, updated_at)
    SELECT %(tenant)s, '+55119' || lpad(g::text, 8, '0'), 'Contact ' || g,
           jsonb_build_object('city', 'City ' || (g %% 500), 'plan', CASE WHEN g %% 3 = 0 THEN 'gold' END),
           CASE WHEN g %% 20 = 0 THEN '["other"]'::jsonb ELSE '["vip", "all"]'::jsonb END,
           g %% 97 = 0, now(), now()
    FROM generate_series(1, %(rows)s) AS g
"""


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="sense-bench-prepare-") as tmp:
        env = bench_env(
            DB_NAME,
            tmp,
            RABBITMQ_URL=os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
            CAMPAIGN_QUEUE="campaigns_bench_prepare",
            PERIODIC_ENABLED="false",
        )
        recreate_database(DB_NAME)
        manage(env, "migrate", "--noinput", "-v", "0")
        data = run_child("bench.bench_prepare", "--child", tmp, env=env, timeout=1800)
    ratio = data["sense_s"] / data["psql_s"]
    growth = data["peak_growth_mb"]
    exact = data["deliveries"] == data["audience"] and data["drift"] == 0 and data["wrong_texts"] == 0
    notes = (
        f"{data['audience']:,} deliveries from {data['contacts']:,} contacts (tag filter, opted-out left out), "
        f"chunks of {data['chunk']:,}; best of {ROUNDS} each, interleaved, from an empty table; runs: "
        f"Sense {', '.join(f'{t:.1f}' for t in data['sense_runs'])} s, "
        f"psql {', '.join(f'{t:.1f}' for t in data['psql_runs'])} s; "
        f"every text as rendered by SQL by hand, counters exact: {exact}"
    )
    return [
        Figure(
            name="campaign start, audience snapshot of 1M contacts (worker)",
            sense=round(data["sense_s"], 2),
            unit="s",
            goal="ratio <= 1.5",
            met=ratio <= 1.5 and exact,
            reference=round(data["psql_s"], 2),
            reference_label="bare INSERT ... SELECT in psql",
            ratio=round(ratio, 2),
            notes=notes,
        ),
        Figure(
            name="campaign start, worker peak memory growth over the snapshot",
            sense=round(growth, 1),
            unit="MB",
            goal="< 50 MB",
            met=growth < 50,
            reference=round(data["idle_mb"], 1),
            reference_label="idle worker (VmHWM)",
            ratio=round(growth / data["idle_mb"], 2),
            notes="the worker process's VmHWM after the snapshot minus before it (largest of the rounds)",
        ),
        Figure(
            name="campaign start request at 1M contacts",
            sense=round(data["start_ms"], 1),
            unit="ms",
            goal="< 1000 ms",
            met=data["start_ms"] < 1000,
            notes=f"POST /api/campaigns/{{id}}/start/ on uvicorn, slowest of {ROUNDS}; answers `preparing`",
        ),
    ]


# --- child process ----------------------------------------------------------------------------


def _psql(sql: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", DB_NAME, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def child(tmp: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sense.settings")
    import django

    django.setup()
    import httpx
    import redis
    from django.conf import settings
    from django.db import connection

    from campaigns import services, snapshot
    from campaigns.models import Campaign, Connection, Delivery
    from sense.models import ApiToken, Membership, Tenant
    from tests.workers import flush_queues

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    flush_queues()
    from django.contrib.auth.models import User

    tenant = Tenant.objects.create(slug="bench", name="Bench")
    user = User.objects.create_user("bench", password="bench-password")
    _, token = ApiToken.issue(membership=Membership.objects.create(user=user, tenant=tenant, role="admin"))
    with connection.cursor() as cursor:
        cursor.execute(SEED, {"tenant": tenant.pk, "rows": int(CONTACTS * 1.07)})
        cursor.execute("ANALYZE campaigns_contact")
    # Trim the seed to exactly CONTACTS sendable contacts.
    audience = snapshot.audience(Campaign(tenant=tenant, tags=["vip"]))
    extra = audience.count() - CONTACTS
    if extra > 0:
        last = list(audience.order_by("-pk").values_list("pk", flat=True)[:extra])
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM campaigns_contact WHERE id = ANY(%s)", [last])
            cursor.execute("VACUUM ANALYZE campaigns_contact")
    gateway = Connection.objects.create(tenant=tenant, name="n", provider="evolution", base_url="http://127.0.0.1:9")

    def fresh_table() -> None:
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE campaigns_delivery CASCADE")
            cursor.execute("CHECKPOINT")

    sense_runs, psql_runs, starts, growths = [], [], [], []
    idle_mb = 0.0
    queues = (settings.CAMPAIGN_QUEUE,)
    with (
        worker_process(os.environ.copy(), Path(tmp) / "worker.log", threads=2, queues=queues) as worker,
        web_process(os.environ.copy(), tmp, app="sense.asgi:application") as (port, _),
    ):
        time.sleep(6)  # boot, connect to RabbitMQ
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"})
        client.get("/api/campaigns/")  # warm the web process
        for _ in range(ROUNDS):
            fresh_table()
            reference = Campaign.objects.create(tenant=tenant, name="psql", connection=gateway, message=MESSAGE)
            psql_runs.append(_psql(REFERENCE.format(campaign=reference.pk, tenant=tenant.pk)))
            assert Delivery.objects.filter(campaign=reference).count() == CONTACTS

            fresh_table()
            Connection.objects.filter(pk=gateway.pk).update(is_active=True)
            campaign = Campaign.objects.create(
                tenant=tenant, name="sense", connection=gateway, message=MESSAGE, tags=["vip"]
            )
            pid = max(_worker_pids(worker.pid), key=lambda p: _rss_kb(p, "VmRSS"))
            before = _rss_kb(pid, "VmHWM")
            idle_mb = max(idle_mb, _rss_kb(pid, "VmRSS") / 1024)
            t = time.perf_counter()
            response = client.post(f"/api/campaigns/{campaign.pk}/start/")
            starts.append((time.perf_counter() - t) * 1000)
            assert response.status_code == 200 and response.json()["status"] == "preparing", response.text
            # Nothing to send to: the senders that follow the snapshot pause it at once.
            Connection.objects.filter(pk=gateway.pk).update(is_active=False)
            deadline = time.monotonic() + 900
            while Campaign.objects.get(pk=campaign.pk).prepared_at is None and time.monotonic() < deadline:
                time.sleep(0.2)
            campaign.refresh_from_db()
            assert campaign.prepared_at is not None and campaign.started_at is not None, "snapshot not done"
            growths.append((_rss_kb(pid, "VmHWM") - before) / 1024)
            sense_runs.append((campaign.prepared_at - campaign.started_at).total_seconds())

        # The last Sense snapshot: every contact once, counters exact, texts right.
        deliveries = Delivery.objects.filter(campaign=campaign).count()
        drift = len(services.campaign_recalc_stats(campaign_ids=[campaign.pk], fix=False))
        with connection.cursor() as cursor:
            cursor.execute(
                """SELECT count(*) FROM campaigns_delivery d JOIN campaigns_contact c ON c.id = d.contact_id
                   WHERE d.campaign_id = %s AND d.text <> 'Oi ' || c.name || '! Sua cidade: '
                                                          || COALESCE(c.attributes ->> 'city', '') || '.'""",
                [campaign.pk],
            )
            wrong = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM campaigns_contact")
            total_contacts = cursor.fetchone()[0]
    flush_queues()
    print(
        json.dumps(
            {
                "sense_s": min(sense_runs),
                "psql_s": min(psql_runs),
                "sense_runs": sense_runs,
                "psql_runs": psql_runs,
                "peak_growth_mb": max(growths),
                "idle_mb": idle_mb,
                "start_ms": max(starts),
                "deliveries": deliveries,
                "audience": CONTACTS,
                "contacts": total_contacts,
                "drift": drift,
                "wrong_texts": wrong,
                "chunk": settings.CAMPAIGN_PREPARE_CHUNK,
            }
        )
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
    else:
        for figure in run():
            print(figure)
