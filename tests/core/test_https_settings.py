"""HTTPS settings: `check --deploy` is clean with the documented variables, the redirect and
HSTS apply to browsers, and webhooks and health checks keep answering behind the router."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings

from campaigns.models import Connection, WebhookEvent
from sense.models import Tenant
from tests.helpers import clean_env, manage
from tests.tracking.conftest import make_connection, post_evolution
from tests.webhook_payloads import evolution_update

FORWARDED_HTTPS = {"X-Forwarded-Proto": "https"}


def production_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    return clean_env(
        SENSE_VAR_DIR=str(tmp_path),
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="sense.example.com",
        CSRF_TRUSTED_ORIGINS="https://sense.example.com",
        **variables,
    )


def test_check_deploy_reports_no_issue_with_the_documented_variables(tmp_path: Path) -> None:
    env = production_env(tmp_path, SECURE_SSL_REDIRECT="true", SECURE_HSTS_SECONDS="31536000")
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (1 silenced)." in result.stdout


def test_check_deploy_warns_without_them(tmp_path: Path) -> None:
    result = manage("check", "--deploy", env=production_env(tmp_path))
    assert "security.W004" in result.stderr  # no HSTS
    assert "security.W008" in result.stderr  # no SSL redirect


def test_turning_subdomains_off_is_a_decision_check_deploy_accepts(tmp_path: Path) -> None:
    env = production_env(
        tmp_path, SECURE_SSL_REDIRECT="true", SECURE_HSTS_SECONDS="3600", SECURE_HSTS_INCLUDE_SUBDOMAINS="false"
    )
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [("SECURE_SSL_REDIRECT", "sometimes"), ("SECURE_HSTS_SECONDS", "a year"), ("SECURE_HSTS_SECONDS", "-1")],
)
def test_a_bad_https_value_stops_start_up_naming_the_variable(tmp_path: Path, variable: str, value: str) -> None:
    result = manage("check", env=clean_env(DEBUG="true", SENSE_VAR_DIR=str(tmp_path), **{variable: value}))
    assert result.returncode != 0
    assert f"{variable}:" in result.stderr


@pytest.fixture
def https_only() -> Any:
    with override_settings(SECURE_SSL_REDIRECT=True, SECURE_HSTS_SECONDS=31536000):
        yield


@pytest.mark.django_db
def test_plain_http_pages_are_redirected_to_https(https_only: Any) -> None:
    response = Client().get("/login/")
    assert response.status_code == 301
    assert response["Location"] == "https://testserver/login/"


@pytest.mark.django_db
def test_forwarded_https_is_served_with_hsts(https_only: Any) -> None:
    response = Client().get("/login/", headers=FORWARDED_HTTPS)
    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


@pytest.mark.django_db
def test_the_platform_health_probe_over_plain_http_still_answers(https_only: Any) -> None:
    response = Client().get("/api/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_webhooks_forwarded_over_https_are_stored(https_only: Any, acme: Tenant) -> None:
    connection = make_connection(acme, Connection.Provider.EVOLUTION)
    response = post_evolution(connection, evolution_update("wamid.1", "DELIVERY_ACK"), **FORWARDED_HTTPS)
    assert response.status_code == 200
    assert WebhookEvent.objects.filter(connection=connection).count() == 1
