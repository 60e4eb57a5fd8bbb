"""The client address that login throttling counts is the one the Procfile's uvicorn takes
from the router's X-Forwarded-For: a client cannot pick its own by sending the header."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User

from tests.conftest import PASSWORD
from tests.helpers import ROOT, free_port, port_open, wait_for
from tests.live import stack_env

ROUTER_SEES = "203.0.113.7"  # the address the PaaS router appends


def procfile_web_server() -> str:
    """The Procfile's uvicorn command, as the platform runs it (after collectstatic)."""
    line = next(x for x in (ROOT / "Procfile").read_text().splitlines() if x.startswith("web:"))
    return line.split("&&", 1)[1].strip()


def test_the_procfile_never_trusts_every_forwarding_hop() -> None:
    # With '*' uvicorn takes the left-most X-Forwarded-For entry, which the client writes.
    assert "'*'" not in procfile_web_server() and '"*"' not in procfile_web_server()
    assert re.search(r"--forwarded-allow-ips \"\$\{FORWARDED_ALLOW_IPS:-[^}]+\}\"", procfile_web_server())


@pytest.fixture
def procfile_web(transactional_db: Any, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    command = procfile_web_server().replace("--host 0.0.0.0", "--host 127.0.0.1")
    env = stack_env(ALLOWED_HOSTS="127.0.0.1", COOKIE_SECURE="false", PORT=str(port))
    env.pop("FORWARDED_ALLOW_IPS", None)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    log = tmp_path / "web.log"
    proc = subprocess.Popen(
        ["sh", "-c", f"exec {command}"], cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    try:
        wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def login(base: str, password: str, forwarded_for: str) -> httpx.Response:
    with httpx.Client(base_url=base, headers={"X-Forwarded-For": forwarded_for, "Accept-Language": "en"}) as client:
        client.get("/login/")
        return client.post(
            "/login/",
            data={"username": "alice", "password": password, "csrfmiddlewaretoken": client.cookies["csrftoken"]},
        )


def test_a_spoofed_forwarded_for_does_not_escape_the_lockout(procfile_web: str, alice: User) -> None:
    codes = [login(procfile_web, "wrong", f"10.9.9.{n}, 198.18.0.{n}, {ROUTER_SEES}").status_code for n in range(5)]
    assert codes == [200, 200, 200, 200, 429]
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {ROUTER_SEES}
    # Right password, a fresh made-up first hop: still the router's address, still locked.
    locked = login(procfile_web, PASSWORD, f"192.0.2.1, {ROUTER_SEES}")
    assert locked.status_code == 429
    assert "try again in 15 minutes" in locked.text
    # Someone else behind another address logs in as usual.
    assert login(procfile_web, PASSWORD, "198.51.100.9").status_code == 302
