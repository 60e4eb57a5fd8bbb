"""Stable file and thumbnail URLs, the asset API, and deleting."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
from django.test import Client, override_settings

from media import services
from media.models import Asset
from tests.conftest import PASSWORD, ApiClient
from tests.media import files


def _upload(api: ApiClient, name: str = "photo.jpg", data: bytes | None = None) -> dict[str, Any]:
    response = files.upload(api, name, data or files.jpeg())
    assert response.status_code == 201, response.content
    return dict(response.json())


def test_the_file_url_redirects_to_a_short_lived_presigned_url(api_alice: ApiClient, acme: Any) -> None:
    data = files.jpeg((33, 22))
    body = _upload(api_alice, data=data)

    response = api_alice.get_json(body["file_url"])

    assert response.status_code == 302
    target = response["Location"]
    query = parse_qs(urlparse(target).query)
    assert query["X-Amz-Expires"] == ["600"]
    assert "X-Amz-Signature" in query
    assert response["Cache-Control"] == "private, no-cache"
    fetched = httpx.get(target)
    assert fetched.status_code == 200 and fetched.content == data
    assert fetched.headers["content-type"] == "image/jpeg"


def test_presigned_urls_are_signed_for_the_public_endpoint(api_alice: ApiClient, acme: Any, settings: Any) -> None:
    body = _upload(api_alice)
    settings.S3_PUBLIC_ENDPOINT_URL = "https://media.example.com"
    settings.MEDIA_URL_EXPIRY = 120

    response = api_alice.get_json(body["file_url"])

    assert response["Location"].startswith("https://media.example.com/")
    assert parse_qs(urlparse(response["Location"]).query)["X-Amz-Expires"] == ["120"]


def test_a_session_can_open_files(alice: Any, acme: Any, api_alice: ApiClient) -> None:
    body = _upload(api_alice)
    client = Client()
    client.login(username="alice", password=PASSWORD)

    assert client.get(body["file_url"]).status_code == 302
    assert Client().get(body["file_url"]).status_code == 401


def test_another_tenants_media_is_not_found(api_alice: ApiClient, api_charlie: ApiClient, acme: Any) -> None:
    body = _upload(api_alice)

    for url in (body["file_url"], body["thumbnail_url"], f"/api/media/{body['id']}/"):
        response = api_charlie.get_json(url)
        assert response.status_code == 404, url
        assert response.json()["code"] == "not_found"
    assert api_charlie.delete_json(f"/api/media/{body['id']}/").status_code == 404
    assert Asset.objects.filter(id=body["id"]).exists()


def test_the_api_lists_and_shows_the_tenants_assets(api_alice: ApiClient, api_charlie: ApiClient, acme: Any) -> None:
    image = _upload(api_alice)
    doc = _upload(api_alice, "menu.pdf", files.PDF)
    _upload(api_charlie)

    listing = api_alice.get_json("/api/media/").json()
    documents = api_alice.get_json("/api/media/?file_type=document").json()
    detail = api_alice.get_json(f"/api/media/{image['id']}/").json()

    assert listing["count"] == 2
    assert {a["id"] for a in listing["results"]} == {image["id"], doc["id"]}
    assert [a["id"] for a in documents["results"]] == [doc["id"]]
    assert detail["file_url"] == image["file_url"] and detail["thumbnail_url"] == image["thumbnail_url"]
    assert detail["status"] == "processing" and detail["mime_type"] == "image/jpeg"


def test_the_list_pages_like_every_list_and_still_takes_limit_and_offset(api_alice: ApiClient, acme: Any) -> None:
    uploaded = {_upload(api_alice, f"menu-{i}.pdf", files.PDF)["id"] for i in range(3)}

    first = api_alice.get_json("/api/media/?page=1&page_size=2").json()
    second = api_alice.get_json("/api/media/?page=2&page_size=2").json()
    legacy = api_alice.get_json("/api/media/?limit=1&offset=2").json()

    assert first["count"] == second["count"] == legacy["count"] == 3
    assert len(first["items"]) == 2 and len(second["items"]) == 1
    assert {a["id"] for a in first["items"] + second["items"]} == uploaded
    assert [a["id"] for a in legacy["items"]] == [a["id"] for a in second["items"]]
    assert first["results"] == first["items"] and legacy["results"] == legacy["items"]  # the deprecated alias


def test_deleting_removes_the_row_and_its_objects(
    api_alice: ApiClient, acme: Any, django_capture_on_commit_callbacks: Any
) -> None:
    body = _upload(api_alice)
    assert api_alice.get_json(body["thumbnail_url"]).status_code == 302  # makes the thumbnail too
    assert len(files.stored_keys(acme)) == 2

    with django_capture_on_commit_callbacks(execute=True):
        response = api_alice.delete_json(f"/api/media/{body['id']}/")

    assert response.status_code == 204
    assert not Asset.objects.filter(id=body["id"]).exists()
    assert files.stored_keys(acme) == []


def test_an_asset_used_by_a_campaign_cannot_be_deleted(api_alice: ApiClient, acme: Any, alice: Any) -> None:
    from campaigns.models import Campaign, Connection

    body = _upload(api_alice)
    connection = Connection.objects.create(tenant=acme, name="c", provider="evolution", base_url="http://evo.example")
    Campaign.objects.create(tenant=acme, name="Promo", connection=connection, message="hi", media_id=body["id"])

    response = api_alice.delete_json(f"/api/media/{body['id']}/")

    assert response.status_code == 409
    assert response.json()["code"] == "asset_in_use"
    assert "campaign" in response.json()["error"]
    assert Asset.objects.filter(id=body["id"]).exists()
    assert len(files.stored_keys(acme)) == 1


def test_documents_are_not_thumbnailed(api_alice: ApiClient, acme: Any) -> None:
    body = _upload(api_alice, "menu.pdf", files.PDF)

    response = api_alice.get_json(f"/api/media/{body['id']}/thumbnail/")

    assert response.status_code == 404
    assert response.json()["code"] == "no_thumbnail"


def test_with_local_storage_the_urls_stream_the_file(
    db: Any, acme: Any, alice: Any, api_alice: ApiClient, tmp_path: Any
) -> None:
    storages = {
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path), "base_url": "/media-files/"},
        },
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    data = files.jpeg((640, 480))
    with override_settings(STORAGES=storages):
        asset = services.asset_create(
            tenant=acme, user=alice, upload=io.BytesIO(data), name="local.jpg", size=len(data), enqueue=False
        )
        original = api_alice.get_json(asset.file_url())
        thumb = api_alice.get_json(asset.thumbnail_url() or "")
        assert b"".join(original.streaming_content) == data
        assert thumb.status_code == 200 and thumb["Content-Type"] == "image/webp"
        assert (tmp_path / asset.key).exists() and (tmp_path / asset.thumbnail_key).exists()
        services.asset_delete(asset=asset)
    assert original.status_code == 200 and original["Content-Type"] == "image/jpeg"
    assert original["X-Content-Type-Options"] == "nosniff"
