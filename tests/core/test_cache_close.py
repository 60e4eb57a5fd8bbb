"""Django's per-request `close_caches` is skipped only when every cache's close does nothing."""

from __future__ import annotations

from django.core import signals
from django.core.cache import close_caches
from django.test import override_settings

from sense.apps import _skip_noop_cache_close


def _connected() -> bool:
    return any(receiver() is close_caches for _, receiver, *_ in signals.request_finished.receivers)


def test_the_configured_caches_close_nothing_so_requests_skip_close_caches() -> None:
    assert not _connected()


def test_a_cache_that_closes_connections_keeps_close_caches() -> None:
    memcached = {"BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache", "LOCATION": "127.0.0.1:9"}
    signals.request_finished.connect(close_caches)
    try:
        with override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache"}}):
            _skip_noop_cache_close()
            assert not _connected()
        signals.request_finished.connect(close_caches)
        with override_settings(CACHES={"default": memcached}):
            _skip_noop_cache_close()
            assert _connected()
    finally:
        signals.request_finished.disconnect(close_caches)
