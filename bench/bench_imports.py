"""Contact import in the background: a 1,000,000-row CSV imported by a real `rundramatiq`
worker (file in storage, one transaction per chunk), against psql's `\\copy` of the same file
into a bare table in the same database and run (goal: at most 5 times slower), and the
worker's peak memory growth over its idle size (goal < 100 MB).

Each row's phone is validated and normalized with `phonenumbers` in Python, which `\\copy`
does not do; the notes give that step alone (normalize_phone over 100,000 of the file's
phones) as the floor the import cannot go below in one Python process.

Runs in a child process with its own environment (database `sense_bench_imports`, Redis db
13, local file storage, RabbitMQ's default vhost) so it neither sees nor disturbs other benches.
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

from bench.common import Figure, recreate_database, run_child  # noqa: E402
from bench.common import worker as worker_process  # noqa: E402

DB_NAME = "sense_bench_imports"
ROWS = int(os.environ.get("BENCH_IMPORT_ROWS", "1000000"))
PHONE_SAMPLE = 100_000
ENV = {
    "DEBUG": "false",
    "SECRET_KEY": "bench-secret-key-not-for-production",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    "REDIS_URL": "redis://127.0.0.1:6379/13",
    "RABBITMQ_URL": os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
    "PERIODIC_ENABLED": "false",
    "LOG_LEVEL": "WARNING",
}
STRIP = ("S3_", "DJANGO_SETTINGS_MODULE", "MEDIA_ROOT", "SENSE_VAR_DIR", "CONTACT_IMPORT_")


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="sense-bench-imports-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(STRIP)}
        env.update(ENV, SENSE_VAR_DIR=tmp)
        data = run_child("bench.bench_imports", "--child", tmp, env=env, timeout=3600)
    ratio = data["copy_rate"] / data["import_rate"]
    exact = data["processed"] == data["created"] == data["contacts"] == ROWS
    growth = data["peak_rss_mb"] - data["idle_rss_mb"]
    return [
        Figure(
            name=f"contact import, {ROWS:,} rows in the background",
            sense=round(data["import_rate"]),
            unit="rows/s",
            goal="ratio <= 5",
            met=ratio <= 5 and exact,
            reference=round(data["copy_rate"]),
            reference_label="psql \\copy into a bare table",
            ratio=round(ratio, 1),
            notes=(
                f"{data['import_seconds']:.1f} s from the worker's claim to finished ({data['file_mb']:.0f} MB file, "
                f"chunks of {data['chunk_rows']:,} rows); \\copy {data['copy_seconds']:.2f} s (best of 2); "
                f"normalize_phone alone: {data['phone_rate']:,.0f} rows/s, i.e. "
                f"{data['phone_rate'] / data['copy_rate']:.3f}x \\copy; the import runs at "
                f"{data['import_rate'] / data['phone_rate']:.0%} of that floor; "
                f"{data['contacts']:,} contacts created, each once: {exact}"
            ),
        ),
        Figure(
            name="contact import, worker peak memory growth",
            sense=round(growth, 1),
            unit="MiB",
            goal="< 100 MiB",
            met=growth < 100,
            reference=round(data["idle_rss_mb"], 1),
            reference_label="idle worker",
            ratio=round(data["peak_rss_mb"] / data["idle_rss_mb"], 2),
            notes="VmHWM of the worker process during the import minus its VmRSS when idle",
        ),
    ]


# --- child process ----------------------------------------------------------------------------


def _kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _worker_pid(pgid: int) -> int:
    """The forked worker process (the dramatiq parent only supervises)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != pgid:
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                return int(entry)
    return pgid


def _write_csv(path: Path) -> None:
    with path.open("w") as out:
        out.write("phone,name,tags,city\n")
        for i in range(ROWS):
            out.write(f"+55119{10000000 + i:08d},Person {i},vip|s{i % 7},City {i % 100}\n")


def _copy_seconds(path: Path) -> float:
    """psql's \\copy of PATH into a bare table (no index, no constraint), best of 2."""
    url = os.environ["DATABASE_URL"]
    subprocess.run(
        ["psql", url, "-qc", "CREATE TABLE bench_copy (phone text, name text, tags text, city text)"], check=True
    )
    best = float("inf")
    for _ in range(2):
        subprocess.run(["psql", url, "-qc", "TRUNCATE bench_copy"], check=True)
        started = time.perf_counter()
        subprocess.run(
            ["psql", url, "-qc", f"\\copy bench_copy FROM '{path}' WITH (FORMAT csv, HEADER true)"], check=True
        )
        best = min(best, time.perf_counter() - started)
    subprocess.run(["psql", url, "-qc", "DROP TABLE bench_copy"], check=True)
    return best


def _phone_rate(path: Path) -> float:
    from campaigns.models import normalize_phone

    with path.open() as f:
        next(f)
        phones = [next(f).split(",", 1)[0] for _ in range(min(PHONE_SAMPLE, ROWS))]
    started = time.perf_counter()
    for raw in phones:
        normalize_phone(raw)
    return len(phones) / (time.perf_counter() - started)


def child(tmp: str) -> None:
    recreate_database(DB_NAME)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sense.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.files import File
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from campaigns import csv_import, services
    from campaigns.models import Contact, ContactImport
    from sense.models import Tenant
    from tests.workers import flush_queues

    path = Path(tmp) / "contacts.csv"
    _write_csv(path)
    copy_seconds = _copy_seconds(path)
    phone_rate = _phone_rate(path)
    tenant = Tenant.objects.create(slug="bench", name="Bench")
    flush_queues()
    try:
        with worker_process(os.environ.copy(), Path(tmp) / "worker.log", processes=1, threads=2) as worker:
            time.sleep(8)  # boot, connect to RabbitMQ
            pid = _worker_pid(worker.pid)
            idle = _kb(pid, "VmRSS")
            with path.open("rb") as f:
                upload = File(f, name="contacts.csv")
                job = services.contact_import_start(
                    tenant=tenant, user=None, file=upload, name="contacts.csv", rows=csv_import.count_lines(upload) - 1
                )
            deadline = time.monotonic() + 3000
            while time.monotonic() < deadline:
                job.refresh_from_db()
                if job.is_done:
                    break
                time.sleep(0.5)
            peak = _kb(pid, "VmHWM")
    finally:
        flush_queues()
    job = ContactImport.objects.get(pk=job.pk)
    assert job.status == "finished", (job.status, job.failure, (Path(tmp) / "worker.log").read_text()[-3000:])
    assert job.started_at and job.finished_at
    seconds = (job.finished_at - job.started_at).total_seconds()
    result = {
        "copy_seconds": copy_seconds,
        "copy_rate": ROWS / copy_seconds,
        "import_seconds": seconds,
        "import_rate": job.processed / seconds,
        "phone_rate": phone_rate,
        "processed": job.processed,
        "created": job.created,
        "contacts": Contact.objects.filter(tenant=tenant).count(),
        "idle_rss_mb": idle / 1024,
        "peak_rss_mb": peak / 1024,
        "file_mb": path.stat().st_size / 1e6,
        "chunk_rows": settings.CONTACT_IMPORT_CHUNK_ROWS,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
    else:
        for figure in run():
            print(figure)
