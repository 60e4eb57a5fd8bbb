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
        ('127.0.0.1:1 - "POST /api/webhooks/evolution/xKEauNbX5x_ZzyHi0Y/ HTTP/1.1" 200', "xKEauNbX5x_ZzyHi0Y"),
        ('"POST /api/webhooks/whatsapp/Ab-12345678cd HTTP/1.1" 200', "Ab-12345678cd"),
    ],
)
def test_secrets_are_masked_in_log_lines(line: str, secret: str) -> None:
    assert secret not in redact(line)


def test_the_filter_rewrites_formatted_records() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "[S3] key %s", ("secret_key=topsecret",), None)
    RedactSecretsFilter().filter(record)
    assert "topsecret" not in record.getMessage()
    assert record.getMessage().startswith("[S3] key")


def test_the_servers_access_log_masks_webhook_tokens() -> None:
    """uvicorn logs each request's path with handlers of its own; sense.asgi puts the filter
    on its loggers, so a webhook URL's token never reaches the access log."""
    import sense.asgi  # noqa: F401  (adds the filter, as when uvicorn loads the app)

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    access, keep = logging.getLogger("uvicorn.access"), Keep()
    access.addHandler(keep)
    saved = access.level, access.disabled
    access.setLevel(logging.INFO)
    access.disabled = False
    try:
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "POST", "/api/webhooks/sandbox/Zz9_secret/", "1.1", 200)
    finally:
        access.removeHandler(keep)
        access.level, access.disabled = saved
    assert keep.lines == ['127.0.0.1:5 - "POST /api/webhooks/sandbox/***/ HTTP/1.1" 200']


def test_uvicorn_s_access_formatter_still_formats_a_masked_line() -> None:
    """Its formatter reads the record's arguments (client, method, path, version, status):
    they stay in place, masked, instead of being folded into the message."""
    from uvicorn.logging import AccessFormatter

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "POST", "/api/webhooks/evolution/Zz9_secret/", "1.1", 401),
        None,
    )
    RedactSecretsFilter().filter(record)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False).format(record)
    assert line == '127.0.0.1:5 - "POST /api/webhooks/evolution/***/ HTTP/1.1" 401 Unauthorized'
