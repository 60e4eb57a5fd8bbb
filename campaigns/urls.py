"""Every route of the campaigns app: its pages (namespace `campaigns`) and the provider
webhooks (`webhook_urlpatterns`, un-namespaced, included under `api/` by sense/urls.py).
The JSON API's routers are in campaigns/api.py."""

from django.urls import path, re_path

from campaigns import avatar_views, views, webhook_views

app_name = "campaigns"

urlpatterns = [
    path("campaigns/", views.campaign_list, name="list"),
    path("campaigns/new/", views.campaign_create, name="create"),
    path("campaigns/preview/", views.campaign_preview, name="preview"),
    path("campaigns/audience/", views.audience_count, name="audience"),
    path("campaigns/template-fields/", views.campaign_template_fields, name="template_fields"),
    path("campaigns/<uuid:campaign_id>/", views.campaign_detail, name="detail"),
    path("campaigns/<uuid:campaign_id>/stats/", views.campaign_stats, name="stats"),
    path("campaigns/<uuid:campaign_id>/actions/", views.campaign_actions_fragment, name="actions"),
    path("campaigns/<uuid:campaign_id>/deliveries/", views.campaign_deliveries, name="deliveries"),
    path("campaigns/<uuid:campaign_id>/replies/", views.campaign_replies, name="replies"),
    path("campaigns/<uuid:campaign_id>/activity/", views.campaign_activity, name="activity"),
    path("campaigns/<uuid:campaign_id>/retry/", views.campaign_retry, name="retry"),
    path("campaigns/<uuid:campaign_id>/duplicate/", views.campaign_duplicate, name="duplicate"),
    path("campaigns/<uuid:campaign_id>/test/", views.campaign_test_send, name="test_send"),
    path("campaigns/<uuid:campaign_id>/<str:action>/", views.campaign_action, name="action"),
    path("deliveries/<int:delivery_id>/", views.delivery_modal, name="delivery"),
    path("connections/", views.connection_list, name="connections"),
    path("connections/<uuid:connection_id>/", views.connection_detail, name="connection"),
    path("templates/", views.template_list, name="templates"),
    path("templates/sync/<uuid:connection_id>/", views.template_sync, name="template_sync"),
    path("contacts/", views.contact_list, name="contacts"),
    path("contacts/import/", views.contact_import, name="contacts_import"),
    path("contacts/settings/consent/", views.consent_settings, name="consent_settings"),
    path("contacts/<int:contact_id>/", views.contact_detail, name="contact"),
    path("contacts/<int:contact_id>/messages/", views.contact_messages, name="contact_messages"),
    path(
        "contacts/<int:contact_id>/inbound/<int:message_id>/",
        views.contact_inbound_message,
        name="contact_inbound_message",
    ),
    path("contacts/<int:contact_id>/consent/", views.contact_consent, name="contact_consent"),
    path("contacts/<int:contact_id>/avatar/", avatar_views.contact_avatar, name="contact_avatar"),
    path("contacts/<int:contact_id>/erase/", views.contact_erase, name="contact_erase"),
    path("contacts/imports/<uuid:import_id>/", views.contact_import_detail, name="contact_import"),
    path("contacts/imports/<uuid:import_id>/errors/", views.contact_import_errors, name="contact_import_errors"),
]

# The token in the path is the connection's secret webhook token. The first route of each
# provider is the URL Sense gives out (`services.connection_webhook_path`, by
# `Provider.webhook_url_name`); the others take what gateways also send, without overlapping
# it: Evolution's by-event URLs (.../<token>/messages-update, doubled slashes included) and
# the URL typed without its trailing slash (a POST cannot be redirected to it).
webhook_urlpatterns = [
    path("webhooks/evolution/<str:token>/", webhook_views.evolution, name="webhook-evolution"),
    re_path(
        r"^webhooks/evolution/(?P<token>[\w-]+)/+(?P<event>[\w.-]+)/?$",
        webhook_views.evolution,
        name="webhook-evolution-event",
    ),
    re_path(r"^webhooks/evolution/(?P<token>[\w-]+)$", webhook_views.evolution, name="webhook-evolution-noslash"),
    path("webhooks/whatsapp/<str:token>/", webhook_views.whatsapp, name="webhook-whatsapp"),
    re_path(r"^webhooks/whatsapp/(?P<token>[\w-]+)$", webhook_views.whatsapp, name="webhook-whatsapp-noslash"),
    # Only Sense's own sandbox workers call this one, with the exact URL.
    path("webhooks/sandbox/<str:token>/", webhook_views.sandbox, name="webhook-sandbox"),
]
