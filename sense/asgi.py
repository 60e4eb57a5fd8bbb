"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sense.settings")

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from sense.routing import websocket_urlpatterns  # noqa: E402
from sense.worker import start_embedded_worker  # noqa: E402

start_embedded_worker()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The Origin check is the consumer's: it applies to session-authenticated sockets only.
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)
