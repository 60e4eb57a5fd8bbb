"""`make run` mode end to end: SQLite, local files, local-memory cache, in-process tasks.

Runs the real server (uvicorn on sense.asgi) in a subprocess with none of the full-stack
variables set, the way a newcomer's machine would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx


def test_embedded_mode_serves_health_and_readiness(embedded_server: tuple[str, dict[str, str], Path]) -> None:
    base, _, _ = embedded_server
    assert httpx.get(f"{base}/api/health/").json() == {"status": "ok"}
    ready = httpx.get(f"{base}/api/health/ready/")
    assert ready.status_code == 200, ready.text
    assert {k: v["backend"] for k, v in ready.json()["checks"].items()} == {
        "database": "sqlite",
        "cache": "local-memory",
        "storage": "local",
        "broker": "embedded",
    }


def test_embedded_mode_serves_the_admin_login_and_its_static_files(
    embedded_server: tuple[str, dict[str, str], Path],
) -> None:
    base, demo, _ = embedded_server
    with httpx.Client(base_url=base) as client:
        login = client.get("/admin/login/")
        assert login.status_code == 200
        assert "csrfmiddlewaretoken" in login.text
        assert client.get("/static/admin/css/base.css").status_code == 200
        token = client.cookies["csrftoken"]
        response = client.post(
            "/admin/login/?next=/admin/",
            data={"username": demo["username"], "password": demo["password"], "csrfmiddlewaretoken": token},
            headers={"Referer": f"{base}/admin/login/"},
        )
        assert response.status_code == 302
        assert client.get("/admin/").status_code == 200


def test_embedded_mode_keeps_its_data_under_var(embedded_server: tuple[str, dict[str, str], Path]) -> None:
    _, _, var = embedded_server
    assert (var / "sense.sqlite3").exists()
    journal = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sqlite3; print(sqlite3.connect({str(var / 'sense.sqlite3')!r})"
            ".execute('PRAGMA journal_mode').fetchone()[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert journal.stdout.strip() == "wal"
