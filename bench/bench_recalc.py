"""Recalculation: `recalc_campaign_stats --all` over 1,000,000 deliveries in 100 campaigns,
against the same aggregate as one raw SQL query, in the same process and run.

Own PostgreSQL database (sense_bench_recalc), rows inserted with generate_series. The
command runs in a `manage.py shell` subprocess so both timings share one warm connection.
"""

from __future__ import annotations

import json
import tempfile

from bench.common import Figure, bench_env, manage, recreate_database

DB_NAME = "sense_bench_recalc"
DELIVERIES = 1_000_000
CAMPAIGNS = 100

SEED = f"""
import uuid
from django.db import connection
from campaigns.models import Campaign, Connection
from sense.models import Tenant

tenant = Tenant.objects.create(slug="bench", name="Bench")
conn = Connection.objects.create(tenant=tenant, name="n", provider="evolution", base_url="http://127.0.0.1:9")
ids = [Campaign.objects.create(tenant=tenant, name=f"c{{n}}", connection=conn, message="hi", status="running").pk
       for n in range({CAMPAIGNS})]
with connection.cursor() as cur:
    cur.execute("CREATE TEMP TABLE bench_campaigns (n int, id uuid)")
    cur.executemany("INSERT INTO bench_campaigns VALUES (%s, %s)", list(enumerate(ids)))
    cur.execute('''
        INSERT INTO campaigns_delivery (tenant_id, campaign_id, phone, text, status, provider_message_id, attempts,
                                        error_code, error_message, created_at, updated_at)
        SELECT %s, c.id, '+55' || g, 'hi',
               (ARRAY['pending', 'sending', 'sent', 'delivered', 'read', 'failed', 'cancelled', 'unknown'])
                   [1 + (g::bigint * 7919) %% 8],
               'wamid.' || g, 0, '', '', now(), now()
        FROM generate_series(1, {DELIVERIES}) AS g JOIN bench_campaigns c ON c.n = g %% {CAMPAIGNS}
    ''', [tenant.pk])
    cur.execute("ANALYZE campaigns_delivery")
print("seeded")
"""

MEASURE = """
import json, time
from io import StringIO
from django.core.management import call_command
from django.db import connection
from campaigns.models import Campaign

ids = [str(i) for i in Campaign.objects.values_list("pk", flat=True)]
RAW = '''
    SELECT campaign_id, count(*),
           count(*) FILTER (WHERE status IN ('pending', 'sending')),
           count(*) FILTER (WHERE status IN ('sent', 'delivered', 'read')),
           count(*) FILTER (WHERE status IN ('delivered', 'read')),
           count(*) FILTER (WHERE status = 'read'),
           count(*) FILTER (WHERE status = 'failed'),
           count(*) FILTER (WHERE status = 'cancelled'),
           count(*) FILTER (WHERE status = 'unknown')
    FROM campaigns_delivery WHERE campaign_id = ANY(%s::uuid[]) GROUP BY campaign_id
'''

def raw():
    with connection.cursor() as cur:
        cur.execute(RAW, [ids])
        return cur.fetchall()

def command():
    out = StringIO()
    call_command("recalc_campaign_stats", "--all", "--json", stdout=out)
    return json.loads(out.getvalue())

first = command()  # the seeded counters are all zero: this run fixes them
rows = raw()
times = {"raw": [], "command": []}
for _ in range(3):
    for name, fn in (("raw", raw), ("command", command)):
        t = time.perf_counter(); result = fn(); times[name].append(time.perf_counter() - t)
check = command()
print("RESULT " + json.dumps({
    "raw": min(times["raw"]), "command": min(times["command"]), "fixed_first": len(first["differed"]),
    "drift_after": len(check["differed"]), "campaigns": len(rows), "deliveries": sum(r[1] for r in rows),
}))
"""


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="sense-bench-recalc-") as tmp:
        env = bench_env(DB_NAME, tmp, PERIODIC_ENABLED="false")
        recreate_database(DB_NAME)
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "shell", "-c", SEED, timeout=600)
        out = manage(env, "shell", "-c", MEASURE, timeout=600)
    data = json.loads(out.split("RESULT ", 1)[1])
    ratio = data["command"] / data["raw"]
    ok = data["drift_after"] == 0 and data["deliveries"] == DELIVERIES and data["campaigns"] == CAMPAIGNS
    return [
        Figure(
            name="recalc_campaign_stats --all, 1M deliveries / 100 campaigns",
            sense=round(data["command"] * 1000, 1),
            unit="ms",
            goal="ratio <= 1.5",
            met=ratio <= 1.5 and ok,
            reference=round(data["raw"] * 1000, 1),
            reference_label="raw SQL aggregate",
            ratio=round(ratio, 2),
            notes=(
                f"best of 3; {data['deliveries']:,} deliveries counted; the first run fixed "
                f"{data['fixed_first']} seeded campaigns, the check after found {data['drift_after']} drifted"
            ),
        )
    ]


if __name__ == "__main__":
    for figure in run():
        print(figure)
