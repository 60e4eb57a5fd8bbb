from django.apps import AppConfig


class SenseConfig(AppConfig):
    name = "sense"
    verbose_name = "Sense"
    default_auto_field = "django.db.models.BigAutoField"
