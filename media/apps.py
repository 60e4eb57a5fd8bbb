from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MediaConfig(AppConfig):
    name = "media"
    label = "media"
    verbose_name = _("Media")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from media import ops as media_ops
        from media.counters import MediaCollector
        from sense import ops
        from sense.lib import images, metrics

        # Decompression bombs raise everywhere in the process (uploads, jobs, commands).
        images.harden(settings.MEDIA_MAX_IMAGE_PIXELS)
        metrics.register(MediaCollector(), name="media")
        ops.register(media_ops.figures)
