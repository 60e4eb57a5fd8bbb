"""`{{ delivery.error_code|error_info:provider }}`: what a provider's error code means (its
title, one line of guidance and Sense's action), or None for a code it does not explain."""

from __future__ import annotations

from django import template

from campaigns.providers import ErrorInfo
from campaigns.providers import error_info as lookup

register = template.Library()


@register.filter
def error_info(code: str, provider: str) -> ErrorInfo | None:
    return lookup(str(provider or ""), str(code or ""))
