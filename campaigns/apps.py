from typing import get_args

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = _("Campaigns")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from campaigns import ops as campaign_ops
        from campaigns import retention
        from campaigns.models import Delivery
        from campaigns.providers import registry
        from campaigns.providers.base import ErrorAction
        from sense import ops

        ops.register(campaign_ops.figures)
        ops.register(retention.figures)
        Delivery.ERROR_ACTIONS = {
            action: frozenset(code for cls in registry.values() for code in cls.codes_with_action(action))
            for action in get_args(ErrorAction)
        }
