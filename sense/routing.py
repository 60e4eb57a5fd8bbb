from django.urls import path

from sense.realtime import TenantConsumer

websocket_urlpatterns = [
    path("ws/tenant/<uuid:tenant_id>/", TenantConsumer.as_asgi()),
]
