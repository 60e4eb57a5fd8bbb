"""Media URLs outside the ninja API (included under /api/ before it)."""

from django.urls import path

from media import views

urlpatterns = [
    path("chat/upload-media/", views.upload_media, name="media-upload"),
    path("chat/media-proxy/", views.media_proxy, name="media-proxy"),
    path("media/<uuid:asset_id>/file/", views.asset_file, name="media-file"),
    path("media/<uuid:asset_id>/thumbnail/", views.asset_thumbnail, name="media-thumbnail"),
]
