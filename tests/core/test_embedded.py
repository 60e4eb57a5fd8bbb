"""`make run` mode end to end: SQLite, local files, local-memory cache, in-process tasks.

Runs the real server (uvicorn on sense.asgi) in a subprocess with none of the full-stack
variables set, the way a newcomer's machine would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT, clean_env, free_port, manage, port_open, wait_for


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], Path]]:
    var = tmp_path_factory.mktemp("embedded-var")
    env = clean_env(DEBUG="true", SENSE_VAR_DIR=str(var))
    migrate = manage("migrate", "--noinput", env=env)
    assert migrate.returncode == 0, migrate.stderr
    seed = manage("seed_demo", "--json", env=env)
    assert seed.returncode == 0, seed.stderr
    demo = json.loads(seed.stdout)
    port = free_port()
    log = (var / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "sense.asgi:application", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: port_open(port), timeout=30, what="embedded server")
        yield f"http://127.0.0.1:{port}", {**demo, "var": str(var)}, var
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


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
