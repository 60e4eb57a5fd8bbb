"""pytest plugin (loaded with -p before Django is set up) that points Sense at the full stack.

PostgreSQL, Redis and RabbitMQ are the machine's services (override with the usual
variables); S3 is moto's server mode on a free port, started here, so every storage call
goes over HTTP as it would to MinIO. SENSE_TEST_EMBEDDED=1 skips all of it.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


moto_server = None


def _private_vhost() -> str | None:
    """A RabbitMQ vhost of this test run, so parallel runs never consume each other's messages."""
    import shutil
    import subprocess

    if not shutil.which("rabbitmqctl"):
        return None
    vhost = f"sense-test-{os.getpid()}"
    try:
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True, timeout=30)
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (subprocess.SubprocessError, OSError):
        return None
    return vhost


created_vhost: str | None = None
claimed_redis_db: int | None = None
REDIS_DBS = [n for n in range(1, 16) if n != 13]  # 0: the app's default; 13: the benchmarks'


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim_redis_db() -> int:
    """A Redis database no other live test run uses (a run's cache.clear() would empty
    another's rate limits and proxy locks mid-test): claimed with SET NX on a key in db 0
    holding our pid; a claim whose pid is gone is taken over."""
    global claimed_redis_db
    fallback = REDIS_DBS[os.getpid() % len(REDIS_DBS)]
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=6379, db=0, socket_timeout=2, socket_connect_timeout=2)
        for db in REDIS_DBS:
            key = f"sense-test:redis-db:{db}"
            if not client.set(key, os.getpid(), nx=True, ex=6 * 3600):
                holder = client.get(key)
                if holder is not None and _pid_alive(int(holder)):
                    continue
                client.set(key, os.getpid(), ex=6 * 3600)
            claimed_redis_db = db
            return db
    except Exception:
        pass
    return fallback


def _release_redis_db() -> None:
    if claimed_redis_db is None:
        return
    import contextlib

    import redis

    with contextlib.suppress(Exception):
        client = redis.Redis(host="127.0.0.1", port=6379, db=0, socket_timeout=2, socket_connect_timeout=2)
        key = f"sense-test:redis-db:{claimed_redis_db}"
        if client.get(key) == str(os.getpid()).encode():
            client.delete(key)


if not os.environ.get("SENSE_TEST_EMBEDDED"):
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto_server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto_server.start()
    defaults = {
        "DEBUG": "false",
        "SECRET_KEY": "test-secret-key-not-for-production",
        "ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/sense",
        "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:5672/%2F",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "S3_BUCKET": "sense-test",
        "S3_ACCESS_KEY": "testing",
        "S3_SECRET_KEY": "testing",
        "S3_REGION": "us-east-1",
        # A private var/ (static files, media) per run: parallel runs must not share it.
        "SENSE_VAR_DIR": tempfile.mkdtemp(prefix="sense-test-var-"),
    }
    if "RABBITMQ_URL" not in os.environ:
        created_vhost = _private_vhost()
        if created_vhost:
            defaults["RABBITMQ_URL"] = f"amqp://guest:guest@127.0.0.1:5672/{created_vhost}"
    # Parallel runs (several developers, or CI beside a session) get their own test database
    # and Redis database.
    defaults["DATABASE_TEST_NAME"] = f"test_sense_{os.getpid()}"
    if "REDIS_URL" not in os.environ:
        defaults["REDIS_URL"] = f"redis://127.0.0.1:6379/{_claim_redis_db()}"
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    # Keep tests from talking to real AWS by accident.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")


def pytest_sessionstart(session: object) -> None:
    import logging

    import django

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    from django.conf import settings

    django.setup()
    from django.core.management import call_command

    # Production settings serve hashed static files from a manifest; build it once.
    call_command("collectstatic", interactive=False, verbosity=0)
    if settings.S3_BUCKET:
        from sense.lib.storage import ensure_bucket

        ensure_bucket()


def pytest_sessionfinish(session: object, exitstatus: int) -> None:
    if moto_server is not None:
        moto_server.stop()
    _drop_leftover_test_database()
    _release_redis_db()
    var = os.environ.get("SENSE_VAR_DIR", "")
    if os.path.basename(var).startswith("sense-test-var-"):
        shutil.rmtree(var, ignore_errors=True)
    if created_vhost:
        import subprocess

        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", created_vhost], capture_output=True, timeout=30)


def _drop_leftover_test_database() -> None:
    """pytest-django cannot drop the test database while a killed worker's connection is still
    closing; drop it here (FORCE ends such sessions) so runs leave nothing behind."""
    name = os.environ.get("DATABASE_TEST_NAME", "")
    url = os.environ.get("DATABASE_URL", "")
    if not name.startswith("test_sense_") or not url.startswith("postgres"):
        return
    import contextlib

    import psycopg

    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with contextlib.suppress(psycopg.Error), psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
