from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, override_settings

from tests.helpers import free_port, redis_server


def test_liveness_answers_ok_without_touching_anything(client: Client) -> None:
    # No db fixture: any database access here would raise.
    response = client.get("/api/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readiness_reports_every_dependency_of_the_full_stack(client: Client) -> None:
    response = client.get("/api/health/ready/")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "cache", "storage", "broker"}
    assert {name: c["backend"] for name, c in body["checks"].items()} == {
        "database": "postgresql",
        "cache": "redis",
        "storage": "s3",
        "broker": "rabbitmq",
    }
    assert all(c["ok"] and c["ms"] >= 0 for c in body["checks"].values())


@pytest.mark.django_db
def test_readiness_answers_503_when_redis_stops(client: Client) -> None:
    with redis_server() as (url, proc):
        caches = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": url,
                "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
            }
        }
        with override_settings(CACHES=caches):
            assert client.get("/api/health/ready/").status_code == 200
            proc.kill()
            proc.wait()
            response = client.get("/api/health/ready/")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "error"
    assert body["checks"]["cache"]["ok"] is False
    assert "Connection" in body["checks"]["cache"]["error"]
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_readiness_answers_503_when_the_broker_is_unreachable(client: Client) -> None:
    with override_settings(RABBITMQ_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"):
        response = client.get("/api/health/ready/")
    body = response.json()
    assert response.status_code == 503
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["storage"]["ok"] is True


@pytest.mark.django_db
def test_readiness_answers_503_when_storage_is_unreachable(client: Client, settings: Any) -> None:
    storages = {**settings.STORAGES}
    options = {**storages["default"]["OPTIONS"], "endpoint_url": f"http://127.0.0.1:{free_port()}"}
    from sense.lib.storage import client_config

    options["client_config"] = client_config(connect_timeout=0.5)
    storages["default"] = {**storages["default"], "OPTIONS": options}
    settings.STORAGES = storages
    response = client.get("/api/health/ready/")
    body = response.json()
    assert response.status_code == 503
    assert body["checks"]["storage"]["ok"] is False
    assert "Connect" in body["checks"]["storage"]["error"]


@pytest.mark.django_db
def test_readiness_never_shows_credentials_in_errors(client: Client) -> None:
    with override_settings(RABBITMQ_URL=f"amqp://guest:hunter2secret@127.0.0.1:{free_port()}/%2F"):
        response = client.get("/api/health/ready/")
    assert "hunter2secret" not in response.content.decode()
