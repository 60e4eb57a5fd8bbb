"""Start-up refuses bad configuration with a message naming the variable."""

from __future__ import annotations

import pytest

from tests.helpers import clean_env, manage


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEBUG", "maybe"),
        ("DATABASE_URL", "mysql//nope"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("RABBITMQ_URL", "localhost:5672"),
        ("S3_ENDPOINT_URL", "minio:9000"),
        ("MEDIA_URL_EXPIRY", "ten minutes"),
        ("TIME_ZONE", "Mars/Olympus"),
        ("CSRF_TRUSTED_ORIGINS", "example.com"),
        ("LOG_LEVEL", "LOUD"),
        ("WEB_SWITCH_INTERVAL", "0"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(tmp_path: object, variable: str, value: str) -> None:
    env = clean_env(**{"DEBUG": "true", "SENSE_VAR_DIR": str(tmp_path), variable: value})
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"{variable}:" in result.stderr


def test_debug_off_without_a_secret_key_refuses_to_start(tmp_path: object) -> None:
    result = manage("check", env=clean_env(SENSE_VAR_DIR=str(tmp_path)))
    assert result.returncode != 0
    assert "SECRET_KEY: must be set" in result.stderr


def test_rabbitmq_private_url_is_read_too(tmp_path: object) -> None:
    env = clean_env(DEBUG="true", SENSE_VAR_DIR=str(tmp_path), RABBITMQ_PRIVATE_URL="amqp://u:p@rabbit:5672/")
    result = manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.conf import settings; print(settings.TASKS_EMBEDDED, settings.DRAMATIQ_BROKER['BROKER'])",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "sense.lib.broker.RabbitmqBroker"]


def test_embedded_defaults_need_no_variables(tmp_path: object) -> None:
    env = clean_env(DEBUG="true", SENSE_VAR_DIR=str(tmp_path))
    result = manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'],"
        " s.CACHES['default']['BACKEND'], s.STORAGES['default']['BACKEND'], s.TASKS_EMBEDDED,"
        " s.TIME_ZONE)",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "django.core.cache.backends.locmem.LocMemCache",
        "django.core.files.storage.FileSystemStorage",
        "True",
        "America/Sao_Paulo",
    ]


def test_the_web_process_sets_the_gil_switch_interval_and_other_processes_keep_pythons(tmp_path: object) -> None:
    env = clean_env(DEBUG="true", SENSE_VAR_DIR=str(tmp_path), WEB_SWITCH_INTERVAL="0.03")
    code = "import sys; before = sys.getswitchinterval(); import sense.asgi; print(before, sys.getswitchinterval())"
    result = manage("shell", "--no-imports", "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["0.005", "0.03"]
