"""URL map. The API's routers come from each app; pages live under their app's urls."""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from campaigns.api import (
    campaigns_router,
    connections_router,
    contacts_router,
    deliveries_router,
    inbound_router,
    templates_router,
)
from campaigns.urls import webhook_urlpatterns
from media.api import router as media_router
from media.urls import api_urlpatterns as media_api_urlpatterns
from sense import health, ops, ops_api
from sense import views as sense_views
from sense.api import api
from sense.lib.metrics import metrics_view

api.add_router("", health.router)
api.add_router("/ops/", ops_api.router)
api.add_router("/media/", media_router)
api.add_router("/deliveries/", deliveries_router)
api.add_router("/contacts/", contacts_router)
api.add_router("/connections/", connections_router)
api.add_router("/campaigns/", campaigns_router)
api.add_router("/templates/", templates_router)
api.add_router("/inbound/", inbound_router)

handler404 = "sense.views.not_found"
handler500 = "sense.views.server_error"

urlpatterns = [
    # Machine traffic first, under one prefix: URLs are tried in order, and webhooks (the
    # busiest route) and API calls should not be matched against every page pattern first.
    path(
        "api/",
        include(
            [
                *webhook_urlpatterns,  # provider webhooks (campaigns/urls.py)
                *media_api_urlpatterns,  # upload, media proxy, file and thumbnail URLs
                path("health/probe.png", health.probe_image, name="probe_image"),
                path("", api.urls),
            ]
        ),
    ),
    path("", sense_views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(template_name="account/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "password/",
        auth_views.PasswordChangeView.as_view(template_name="account/password_change.html"),
        name="password_change",
    ),
    path(
        "password/done/",
        auth_views.PasswordChangeDoneView.as_view(template_name="account/password_change_done.html"),
        name="password_change_done",
    ),
    path("tenant/switch/", sense_views.switch_tenant, name="switch_tenant"),
    path("ops/", ops.ops_page, name="ops"),
    path("", include("campaigns.urls")),
    path("", include("media.urls")),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("i18n/", include("django.conf.urls.i18n")),
]

if settings.DEBUG and not settings.S3_BUCKET:
    from django.conf.urls.static import static

    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
