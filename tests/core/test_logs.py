from __future__ import annotations

import logging

import pytest

from sense.lib.logs import RedactSecretsFilter, redact


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("calling with Authorization: Bearer abcdef123456789", "abcdef123456789"),
        ("apikey=ZXC123secret&x=1", "ZXC123secret"),
        ('{"access_token": "EAAB-very-secret"}', "EAAB-very-secret"),
        ("broker amqp://guest:pa55word@rabbit:5672/", "pa55word"),
        ("db postgres://sense:dbpass@db:5432/sense", "dbpass"),
        ("cache redis://default:redispass@redis:6379", "redispass"),
        ("url https://s3/x?X-Amz-Signature=abcdef0123", "abcdef0123"),
        ("token sense_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA leaked", "sense_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ],
)
def test_secrets_are_masked_in_log_lines(line: str, secret: str) -> None:
    assert secret not in redact(line)


def test_the_filter_rewrites_formatted_records() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "[S3] key %s", ("secret_key=topsecret",), None)
    RedactSecretsFilter().filter(record)
    assert "topsecret" not in record.getMessage()
    assert record.getMessage().startswith("[S3] key")
