from django.urls import path

from campaigns import erasure_views, pages

app_name = "campaigns"

urlpatterns = [
    path("campaigns/", pages.campaign_list, name="list"),
    path("campaigns/new/", pages.campaign_create, name="create"),
    path("campaigns/preview/", pages.campaign_preview, name="preview"),
    path("campaigns/audience/", pages.audience_count, name="audience"),
    path("campaigns/<uuid:campaign_id>/", pages.campaign_detail, name="detail"),
    path("campaigns/<uuid:campaign_id>/stats/", pages.campaign_stats, name="stats"),
    path("campaigns/<uuid:campaign_id>/actions/", pages.campaign_actions_fragment, name="actions"),
    path("campaigns/<uuid:campaign_id>/deliveries/", pages.campaign_deliveries, name="deliveries"),
    path("campaigns/<uuid:campaign_id>/<str:action>/", pages.campaign_action, name="action"),
    path("deliveries/<int:delivery_id>/", pages.delivery_modal, name="delivery"),
    path("contacts/", pages.contact_list, name="contacts"),
    path("contacts/import/", pages.contact_import, name="contacts_import"),
    path("contacts/<int:contact_id>/erase/", erasure_views.contact_erase, name="contact_erase"),
]
