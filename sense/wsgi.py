"""WSGI entry point (HTTP only; Sense is normally served by uvicorn through sense.asgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sense.settings")

application = get_wsgi_application()
