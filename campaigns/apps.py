from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = _("Campaigns")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from campaigns import ops as campaign_ops
        from campaigns import retention
        from sense import ops

        ops.register(campaign_ops.figures)
        ops.register(retention.figures)
