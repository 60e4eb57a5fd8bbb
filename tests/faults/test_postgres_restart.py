"""PostgreSQL restarted under traffic: requests fail cleanly with 503, then the same app
process recovers by itself."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.faults.pg import postgres_cluster
from tests.helpers import clean_env, manage, wait_for
from tests.live import start_web

pytestmark = pytest.mark.slow


def test_a_database_restart_gives_503s_then_recovers_without_restarting_the_app(tmp_path: Path) -> None:
    with postgres_cluster() as pg:
        env = clean_env(
            DEBUG="false",
            SECRET_KEY="fault-test",
            ALLOWED_HOSTS="127.0.0.1",
            COOKIE_SECURE="false",
            DATABASE_URL=pg.url,
            DATABASE_POOL_TIMEOUT="2",
            SENSE_VAR_DIR=str(tmp_path / "var"),
        )
        for args in (
            ["migrate", "--noinput"],
            ["collectstatic", "--noinput"],
            ["createtenant", "acme"],
            ["addmember", "alice", "--tenant", "acme", "--password", "pw-alice-123"],
        ):
            result = manage(*args, env=env)
            assert result.returncode == 0, result.stderr
        token = json.loads(manage("issuetoken", "alice", "--tenant", "acme", "--json", env=env).stdout)["token"]

        base, web = start_web(env, tmp_path)
        try:
            api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=15)
            browser = httpx.Client(base_url=base, timeout=15)
            browser.get("/login/")
            browser.post(
                "/login/",
                data={
                    "username": "alice",
                    "password": "pw-alice-123",
                    "csrfmiddlewaretoken": browser.cookies["csrftoken"],
                },
            )
            assert api.get("/api/me/").status_code == 200
            assert browser.get("/campaigns/").status_code == 200

            statuses: Counter[int] = Counter()
            stop = threading.Event()

            def traffic() -> None:
                with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=15) as c:
                    while not stop.is_set():
                        statuses[c.get("/api/me/").status_code] += 1
                        time.sleep(0.02)

            worker = threading.Thread(target=traffic)
            worker.start()
            time.sleep(0.5)
            pg.stop()
            down_api = api.get("/api/me/")
            down_page = browser.get("/campaigns/")
            pg.start()
            wait_for(lambda: api.get("/api/me/").status_code == 200, timeout=30, what="recovery")
            time.sleep(0.5)
            stop.set()
            worker.join()

            assert down_api.status_code == 503
            assert down_api.json() == {
                "error": "The database is unavailable; try again shortly.",
                "code": "unavailable",
            }
            assert down_page.status_code == 503
            assert browser.get("/campaigns/").status_code == 200  # same process, same session
            assert set(statuses) <= {200, 503}, statuses  # never a 500
            assert statuses[200] > 0
        finally:
            web.stop()
