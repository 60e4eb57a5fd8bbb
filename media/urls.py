"""All of media's routes: the pages (namespace `media`, included at the site root) and
`api_urlpatterns`, the endpoints outside ninja (included under /api/ before it, names
un-namespaced as the upload contract documents them)."""

from django.urls import path

from media import file_views, views

app_name = "media"

urlpatterns = [
    path("media/", views.library, name="library"),
    path("media/<uuid:asset_id>/card/", views.card, name="card"),
    path("media/<uuid:asset_id>/preview/", views.preview, name="preview"),
    path("media/<uuid:asset_id>/delete/", views.delete, name="delete"),
]

api_urlpatterns = [
    path("chat/upload-media/", file_views.upload_media, name="media-upload"),
    path("chat/media-proxy/", file_views.media_proxy, name="media-proxy"),
    path("media/<uuid:asset_id>/file/", file_views.asset_file, name="media-file"),
    path("media/<uuid:asset_id>/thumbnail/", file_views.asset_thumbnail, name="media-thumbnail"),
]
