"""`postdeploy_check` against running deployments: the full stack and `make run`'s mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from media.models import Asset
from sense.models import Tenant
from tests.conftest import token_for
from tests.helpers import manage
from tests.live import Stack

pytestmark = pytest.mark.slow

CHECKS = [
    "health",
    "API token",
    "dashboard and static files",
    "WebSocket",
    "media proxy",
    "upload, file and thumbnail",
    "object in storage",
    "cache",
    "worker round trip",
    "clean up",
]


def run_check(base: str, token: str, env: dict[str, str] | None = None, *extra: str) -> tuple[int, dict]:
    result = manage("postdeploy_check", "--base-url", base, "--token", token, "--json", *extra, env=env, timeout=180)
    return result.returncode, json.loads(result.stdout or "{}")


def test_it_passes_against_the_full_stack_and_removes_what_it_made(
    live_stack: Stack, alice: User, acme: Tenant
) -> None:
    code, report = run_check(live_stack.base_url, token_for(alice, acme), live_stack.env)
    assert [c["name"] for c in report["checks"]] == CHECKS
    failed = [c for c in report["checks"] if not c["ok"]]
    assert failed == [] and code == 0, live_stack.logs()
    details = {c["name"]: c["detail"] for c in report["checks"]}
    assert details["media proxy"] == "MISS then HIT"
    assert details["cache"] == "redis"
    assert details["object in storage"].startswith("object found at 127.0.0.1:")  # the S3 endpoint
    assert not Asset.objects.exists()


def test_it_fails_with_exit_1_when_no_worker_answers(live_stack: Stack, alice: User, acme: Tenant) -> None:
    for process in live_stack.processes[1:]:
        process.stop()
    code, report = run_check(live_stack.base_url, token_for(alice, acme), live_stack.env, "--wait", "3")
    results = {c["name"]: c["ok"] for c in report["checks"]}
    assert code == 1
    assert results["worker round trip"] is False
    assert results["health"] is True


def test_it_refuses_a_bad_token(live_stack: Stack) -> None:
    code, report = run_check(live_stack.base_url, "sense_not-a-token", live_stack.env)
    assert code == 1
    assert [(c["name"], c["ok"]) for c in report["checks"]] == [("health", True), ("API token", False)]


def test_it_passes_against_make_run(embedded_server: tuple[str, dict[str, str], Path]) -> None:
    base, demo, var = embedded_server
    from tests.helpers import clean_env

    env = clean_env(DEBUG="true", SENSE_VAR_DIR=demo["var"])
    issued = manage("issuetoken", demo["username"], "--tenant", demo["tenant"], "--json", env=env)
    assert issued.returncode == 0, issued.stderr
    code, report = run_check(base, json.loads(issued.stdout)["token"], env)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert failed == [] and code == 0, (var / "web.log").read_text()[-3000:]
    assert {c["name"]: c["detail"] for c in report["checks"]}["object in storage"].startswith("local storage")
