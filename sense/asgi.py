"""ASGI entry point: HTTP through Django on a fixed pool of threads, WebSockets through Channels.

One public port serves pages, the API, webhooks and `/ws/` (a PaaS gives one port). Plain
HTTP runs Django's sync handler on WEB_THREADS long-lived threads (sense.serving): Django's
own ASGI handler would create a thread for every request. Webhook routes skip the
middleware: their view is called straight (sense.serving.DirectHandler).
"""

import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sense.settings")

import django  # noqa: E402

django.setup(set_prefix=False)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import get_resolver  # noqa: E402

from sense.lib.heap import freeze_startup_heap  # noqa: E402
from sense.lib.logs import redact_server_logs  # noqa: E402
from sense.routing import websocket_urlpatterns  # noqa: E402
from sense.serving import ThreadPoolHttp  # noqa: E402
from sense.worker import start_embedded_worker  # noqa: E402

redact_server_logs()  # the access log shows paths, and a webhook's path holds its token
sys.setswitchinterval(settings.WEB_SWITCH_INTERVAL)  # the web process's threads (settings)
http_app = ThreadPoolHttp(threads=settings.WEB_THREADS, direct_prefixes=("/api/webhooks/",))

start_embedded_worker()

application = ProtocolTypeRouter(
    {
        "http": http_app,
        # The Origin check is the consumer's: it applies to session-authenticated sockets only.
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)
# Everything loaded (the URLconf, and with it every view, would load at the first request):
# later full GC passes skip it (sense.lib.heap).
get_resolver().url_patterns  # noqa: B018
freeze_startup_heap()
