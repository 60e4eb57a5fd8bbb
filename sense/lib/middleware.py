"""Middleware that runs on the event loop under ASGI and in the thread under WSGI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction


def follow_mode(middleware: Callable[..., Any], get_response: Any) -> bool:
    """Make MIDDLEWARE a coroutine function when the GET_RESPONSE it wraps is one (Django
    builds an async chain under ASGI); returns whether it is. Its `__call__` then returns
    `self.__acall__(request)` in async mode."""
    is_async = iscoroutinefunction(get_response)
    if is_async:
        markcoroutinefunction(middleware)
    return is_async
