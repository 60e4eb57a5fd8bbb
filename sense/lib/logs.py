"""Logging helpers. Log lines carry a grep-able tag: [S3], [MEDIA PROXY], [RABBITMQ],
[IMG], [WEBHOOK], [CAMPAIGN]."""

from __future__ import annotations

import logging
import re

# Values that must never reach a log line even if a caller formats them in by mistake.
_SECRET_PATTERNS = [
    re.compile(r"(?i)(authorization:\s*bearer\s+)[^\s'\"]+"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._\-]{8,}"),
    re.compile(
        r"(?i)((?:api[_-]?key|apikey|access[_-]?token|app[_-]?secret|secret[_-]?key|password|token)[\"']?\s*[:=]\s*[\"']?)[^\s,'\"&}]+"
    ),
    re.compile(r"(amqps?://[^:/\s]+:)[^@\s]+(@)"),
    re.compile(r"(rediss?://[^:/\s]*:)[^@\s]+(@)"),
    re.compile(r"(postgres(?:ql)?://[^:/\s]+:)[^@\s]+(@)"),
    re.compile(r"(X-Amz-Signature=)[0-9a-f]+"),
    re.compile(r"\bsense_[A-Za-z0-9_\-]{20,}"),
    # A connection's webhook token is the secret part of its webhook URL (access logs).
    re.compile(r"(/webhooks/[a-z]+/)[\w-]{8,}"),
]


def redact(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        if pattern.groups >= 2:
            text = pattern.sub(r"\1***\2", text)
        elif pattern.groups == 1:
            text = pattern.sub(r"\1***", text)
        else:
            text = pattern.sub("***", text)
    return text


def redact_server_logs() -> None:
    """Mask secrets in the lines the ASGI server logs itself (uvicorn configures its own
    handlers, outside Django's LOGGING): its access log shows each request's path, and a
    webhook's path holds its connection's token."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecretsFilter) for f in logger.filters):
            logger.addFilter(RedactSecretsFilter())


class RedactSecretsFilter(logging.Filter):
    """Rewrite each record's message with secrets masked (tokens, keys, URL passwords)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not kill logging
            return True
        cleaned = redact(message)
        if cleaned == message:
            return True
        if isinstance(record.args, tuple):
            # Masked argument by argument where that is enough: formatters that read the
            # arguments themselves (uvicorn's access log) still find them in place.
            args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
            try:
                if record.msg % args == cleaned:
                    record.args = args
                    return True
            except Exception:
                pass
        record.msg, record.args = cleaned, None
        return True
