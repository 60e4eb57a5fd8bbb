from django.apps import AppConfig


class SenseConfig(AppConfig):
    name = "sense"
    verbose_name = "Sense"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        _skip_noop_cache_close()


def _skip_noop_cache_close() -> None:
    """Django closes every cache after each request (`close_caches` on request_finished) for
    backends that hold a connection per request (memcached). Redis and local memory, the
    two Sense configures, pool or hold nothing: their `close` is BaseCache's no-op, and the
    lookup of each cache alias in its asgiref Local costs every request a few microseconds
    for nothing. Disconnected only when every configured cache's close is that no-op."""
    from django.conf import settings
    from django.core import signals
    from django.core.cache import close_caches
    from django.core.cache.backends.base import BaseCache
    from django.utils.module_loading import import_string

    backends = [import_string(str(cache["BACKEND"])) for cache in settings.CACHES.values()]
    if all(backend.close is BaseCache.close for backend in backends):
        signals.request_finished.disconnect(close_caches)
