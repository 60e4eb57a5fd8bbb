"""POST /api/chat/upload-media/: the contract for every type, and every refusal stores nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, override_settings

from media.models import Asset, DailyMetric
from tests.conftest import PASSWORD, ApiClient
from tests.helpers import free_port
from tests.media import files

CONTRACT_KEYS = {"success", "id", "file_url", "thumbnail_url", "file_type", "mime_type", "size"}


@pytest.mark.parametrize(
    ("name", "data", "file_type", "mime_type"),
    [
        ("photo.jpg", files.jpeg(), "image", "image/jpeg"),
        ("logo.png", files.png(), "image", "image/png"),
        ("banner.webp", files.webp(), "image", "image/webp"),
        ("song.mp3", files.MP3, "audio", "audio/mpeg"),
        ("raw.mp3", files.MP3_NO_TAG, "audio", "audio/mpeg"),
        ("voice.ogg", files.OGG, "audio", "audio/ogg"),
        ("voice.opus", files.OGG, "audio", "audio/ogg"),
        ("clip.aac", files.AAC, "audio", "audio/aac"),
        ("note.amr", files.AMR, "audio", "audio/amr"),
        ("track.m4a", files.M4A, "audio", "audio/mp4"),
        ("video.mp4", files.MP4, "video", "video/mp4"),
        ("video.3gp", files.THREEGP, "video", "video/3gpp"),
        ("menu.pdf", files.PDF, "document", "application/pdf"),
        ("leia-me.txt", files.TXT, "document", "text/plain"),
        ("contacts.csv", files.CSV, "document", "text/csv"),
        (
            "letter.docx",
            files.docx(),
            "document",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
    ],
)
def test_it_stores_each_allowed_type(
    api_alice: ApiClient, acme: Any, alice: Any, name: str, data: bytes, file_type: str, mime_type: str
) -> None:
    response = files.upload(api_alice, name, data)

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == CONTRACT_KEYS
    assert body["success"] is True
    assert (body["file_type"], body["mime_type"], body["size"]) == (file_type, mime_type, len(data))
    assert body["file_url"] == f"/api/media/{body['id']}/file/"
    if file_type == "image":
        assert body["thumbnail_url"] == f"/api/media/{body['id']}/thumbnail/"
    else:
        assert body["thumbnail_url"] is None
    asset = Asset.objects.get(id=body["id"])
    assert asset.tenant == acme and asset.uploaded_by == alice and asset.original_name == name
    assert asset.key == f"tenants/{acme.id}/media/{asset.id}/{name}"
    assert files.stored_keys(acme) == [asset.key]
    assert len(asset.sha256) == 64
    assert asset.status == ("processing" if file_type == "image" else "ready")


def test_it_records_image_dimensions_and_hash(api_alice: ApiClient, acme: Any) -> None:
    import hashlib

    data = files.jpeg((120, 80))
    body = files.upload(api_alice, "wide.jpg", data).json()

    asset = Asset.objects.get(id=body["id"])
    assert (asset.width, asset.height) == (120, 80)
    assert asset.sha256 == hashlib.sha256(data).hexdigest()


def test_it_keeps_unicode_names_safely(api_alice: ApiClient, acme: Any) -> None:
    body = files.upload(api_alice, "promoção de verão <1>.jpg", files.jpeg()).json()

    asset = Asset.objects.get(id=body["id"])
    assert asset.original_name == "promoção de verão <1>.jpg"
    assert asset.key == f"tenants/{acme.id}/media/{asset.id}/promoção_de_verão_1_.jpg"


REFUSALS = [
    ("empty.jpg", b"", 400, "empty"),
    ("truncated.jpg", files.jpeg((300, 300))[:400], 400, "unreadable"),
    ("bomb.png", files.png_bomb(), 413, "too_many_pixels"),
    ("drawing.svg", files.SVG, 415, "markup"),
    ("drawing.jpg", files.SVG, 415, "markup"),
    ("page.jpg", files.HTML, 415, "markup"),
    ("setup.exe", files.EXE, 415, "executable"),
    ("invoice.pdf", files.EXE, 415, "executable"),
    ("tool.jpg", files.ELF, 415, "executable"),
    ("photo.png", files.jpeg(), 415, "extension_mismatch"),
    ("photo", files.jpeg(), 415, "extension_mismatch"),
    ("notes.txt", b"\x00\x01\x02binary", 415, "unsupported_type"),
    ("archive.zip", b"PK\x03\x04" + b"\x00" * 100, 415, "unsupported_type"),
    ("anim.gif", b"GIF89a" + b"\x00" * 100, 415, "unsupported_type"),
    ("../../../etc/evil.jpg", files.jpeg(), 400, "invalid_name"),
    ("..\\..\\evil.jpg", files.jpeg(), 400, "invalid_name"),
    ("..", files.jpeg(), 400, "invalid_name"),
    ("..&#47;..&#47;evil.jpg", files.jpeg(), 400, "invalid_name"),  # Django unescapes entities
    ("&#46;&#46;", files.jpeg(), 400, "invalid_name"),
    ("..\x00", files.jpeg(), 400, "invalid_name"),  # Django drops non-printable characters
]


@pytest.mark.parametrize(("name", "data", "status", "code"), REFUSALS, ids=[r[0] + "-" + r[3] for r in REFUSALS])
def test_a_refused_upload_stores_nothing(
    api_alice: ApiClient, acme: Any, name: str, data: bytes, status: int, code: str
) -> None:
    response = files.upload(api_alice, name, data)

    assert response.status_code == status, response.content
    body = response.json()
    assert body["success"] is False and body["code"] == code and body["error"]
    assert Asset.objects.count() == 0
    assert files.stored_keys(acme) == []


def test_it_refuses_a_file_over_its_types_limit(api_alice: ApiClient, acme: Any) -> None:
    data = files.jpeg() + b"\x00" * (5 * 1024 * 1024)

    response = files.upload(api_alice, "huge.jpg", data)

    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert Asset.objects.count() == 0 and files.stored_keys(acme) == []


def test_the_limit_follows_the_settings(api_alice: ApiClient, acme: Any, settings: Any) -> None:
    settings.MEDIA_MAX_DOCUMENT_BYTES = 1000

    response = files.upload(api_alice, "long.pdf", files.PDF + b" " * 2000)

    assert response.status_code == 413
    assert Asset.objects.count() == 0 and files.stored_keys(acme) == []


def test_a_type_left_out_of_the_settings_is_refused(api_alice: ApiClient, acme: Any, settings: Any) -> None:
    settings.MEDIA_ALLOWED_TYPES = ["image/jpeg"]

    response = files.upload(api_alice, "menu.pdf", files.PDF)

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_type"


def test_it_refuses_anonymous_uploads(anon_api: ApiClient, acme: Any) -> None:
    response = files.upload(anon_api, "photo.jpg", files.jpeg())

    assert response.status_code == 401
    assert response.json() == {
        "success": False,
        "error": response.json()["error"],
        "code": "unauthenticated",
    }
    assert Asset.objects.count() == 0


def test_it_refuses_a_wrong_token(acme: Any, alice: Any) -> None:
    response = files.upload(ApiClient("sense_not-a-real-token"), "photo.jpg", files.jpeg())

    assert response.status_code == 401


def test_it_refuses_a_request_without_a_file(api_alice: ApiClient, acme: Any) -> None:
    body, content_type = files.multipart("photo.jpg", files.jpeg(), field="other")

    response = api_alice.generic(
        "POST", files.UPLOAD, body, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {api_alice.token}"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "no_file"


def test_a_session_upload_needs_the_csrf_token(alice: Any, acme: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="alice", password=PASSWORD)

    refused = files.upload(client, "photo.jpg", files.jpeg())
    client.get("/api/me/")  # sets nothing: fetch a token the way a page would
    from django.middleware.csrf import _get_new_csrf_string

    token = _get_new_csrf_string()
    client.cookies["csrftoken"] = token
    accepted = files.upload(client, "photo.jpg", files.jpeg(), HTTP_X_CSRFTOKEN=token)

    assert refused.status_code == 403 and refused.json()["code"] == "csrf"
    assert accepted.status_code == 201, accepted.content
    assert Asset.objects.count() == 1


def test_it_answers_503_and_stores_nothing_when_storage_is_down(api_alice: ApiClient, acme: Any) -> None:
    from django.conf import settings

    storages: dict[str, Any] = {**settings.STORAGES}
    options = {**storages["default"]["OPTIONS"], "endpoint_url": f"http://127.0.0.1:{free_port()}"}
    storages["default"] = {**storages["default"], "OPTIONS": options}
    with override_settings(STORAGES=storages):
        response = files.upload(api_alice, "photo.jpg", files.jpeg())

    assert response.status_code == 503
    assert response.json()["code"] == "storage_unavailable"
    assert Asset.objects.count() == 0
    assert files.stored_keys(acme) == []


def test_it_counts_attempts_successes_and_failures_per_tenant(api_alice: ApiClient, acme: Any) -> None:
    from media import counters as metrics

    files.upload(api_alice, "photo.jpg", files.jpeg())
    files.upload(api_alice, "page.jpg", files.HTML)
    files.upload(api_alice, "empty.jpg", b"")
    metrics.flush()

    summary = metrics.daily_summary(acme)["uploads"]
    assert summary["attempted"] == 3 and summary["succeeded"] == 1
    assert summary["failed_by_reason"] == {"markup": 1, "empty": 1}
    assert DailyMetric.objects.filter(tenant=acme, name="upload.attempted").get().count == 3
