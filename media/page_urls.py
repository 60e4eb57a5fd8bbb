from django.urls import path

from media import pages

app_name = "media"

urlpatterns = [
    path("media/", pages.library, name="library"),
    path("media/<uuid:asset_id>/card/", pages.card, name="card"),
    path("media/<uuid:asset_id>/preview/", pages.preview, name="preview"),
    path("media/<uuid:asset_id>/delete/", pages.delete, name="delete"),
]
