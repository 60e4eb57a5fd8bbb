"""POST /api/chat/upload-media/ fed arbitrary bytes under arbitrary names.

Whatever is sent: no 5xx; a 201 stores exactly the bytes sent (same size and SHA-256) in
one new object of the tenant, with the content type its content was sniffed as; a refusal
is a 4xx `{"success": false, "error", "code"}` that leaves no new row and no new object. A
name with folders (after Django's HTML unescaping) or that is only dots is refused as
invalid_name, whatever the content; a real image under its own extension is stored.
"""

from __future__ import annotations

import hashlib
import html
import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from PIL import Image

from media.models import Asset
from sense.lib.storage import s3_client
from sense.models import Tenant
from tests.conftest import ApiClient
from tests.media import files
from tests.media.conftest import _fresh_media_metrics  # noqa: F401 - autouse: no metrics flushed at exit

FUZZ = settings(
    max_examples=int(os.environ.get("SENSE_FUZZ_EXAMPLES", "120")),  # raise it for a deeper run
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
CONTRACT_KEYS = {"success", "id", "file_url", "thumbnail_url", "file_type", "mime_type", "size"}
REFUSAL_CODES = {
    "empty",
    "unreadable",
    "too_many_pixels",
    "markup",
    "executable",
    "extension_mismatch",
    "unsupported_type",
    "invalid_name",
    "no_file",
    "too_large",
}
# The published contract: each type and the extensions a file of that type may carry.
EXTENSIONS = {
    "image/jpeg": {"jpg", "jpeg", "jpe", "jfif"},
    "image/png": {"png"},
    "image/webp": {"webp"},
    "audio/aac": {"aac"},
    "audio/amr": {"amr"},
    "audio/mpeg": {"mp3"},
    "audio/mp4": {"m4a"},
    "audio/ogg": {"ogg", "oga", "opus"},
    "video/mp4": {"mp4", "m4v"},
    "video/3gpp": {"3gp", "3gpp"},
    "application/pdf": {"pdf"},
    "text/plain": {"txt"},
    "text/csv": {"csv"},
    "application/msword": {"doc"},
    "application/vnd.ms-excel": {"xls"},
    "application/vnd.ms-powerpoint": {"ppt"},
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": {"docx"},
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {"xlsx"},
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": {"pptx"},
}
PILLOW_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# Django reads a part's headers from its first 1024 bytes; a longer Content-Disposition
# (a very long name) makes the part unreadable, a case where only the general rules apply.
PART_HEADER_LIMIT = 1000


@pytest.fixture
def bucket(acme: Tenant) -> Iterator[None]:
    yield
    for key in bucket_keys(acme):  # the test transaction rolls the rows back; the objects too
        s3_client().delete_object(Bucket=django_settings.S3_BUCKET, Key=key)


def bucket_keys(tenant: Tenant) -> set[str]:
    keys: set[str] = set()
    for page in (
        s3_client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket=django_settings.S3_BUCKET, Prefix=f"tenants/{tenant.id}/")
    ):
        keys.update(obj["Key"] for obj in page.get("Contents", []))
    return keys


@dataclass
class Part:
    """The multipart body for one file, and whether Django can read its part headers."""

    body: bytes
    content_type: str
    headers_fit: bool


def multipart(name: str, data: bytes, *, quoted: bool) -> Part:
    """NAME sent as `filename="..."` (as browsers do) or RFC 2231 `filename*=UTF-8''...`
    (any text, CR, LF and quotes included)."""
    if quoted:
        param = 'filename="' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:
        param = "filename*=UTF-8''" + quote(name, safe="")
    boundary = uuid.uuid4().hex
    headers = (
        f'Content-Disposition: form-data; name="file"; {param}\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    body = f"--{boundary}\r\n".encode() + headers + data + f"\r\n--{boundary}--\r\n".encode()
    return Part(body, f"multipart/form-data; boundary={boundary}", len(headers) <= PART_HEADER_LIMIT)


def name_as_received(name: str) -> str:
    """What Django makes of a file name before handing it on: HTML entities unescaped,
    non-printable characters dropped (https://docs.djangoproject.com/en/5.2/ref/files/uploads/)."""
    return "".join(ch for ch in html.unescape(name) if ch.isprintable())


def refused_as_a_path(name: str) -> bool:
    """The upload contract: no folders in the name, and not only dots."""
    seen = html.unescape(name)
    return "/" in seen or "\\" in seen or name_as_received(name).strip() in ("", ".", "..")


def extension(name: str) -> str:
    _, dot, ext = name.rpartition(".")
    return ext.lower() if dot else ""


# --- Strategies ---------------------------------------------------------------------------


def _image(fmt: str, size: tuple[int, int], mode: str) -> bytes:
    out = io.BytesIO()
    colour: dict[str, float | tuple[float, ...]] = {"RGB": (200, 30, 30), "RGBA": (200, 30, 30, 128), "L": 200, "P": 3}
    image = Image.new(mode, size, colour[mode])
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image.save(out, fmt)
    return out.getvalue()


@dataclass
class Upload:
    name: str
    data: bytes
    pristine_image: str | None = None  # the MIME type of an untouched image made by Pillow
    plain_text: bool = False  # UTF-8 text that starts like no other format

    def __repr__(self) -> str:
        return f"Upload({self.name!r}, {self.data[:80]!r}... {len(self.data)} bytes)"


FORMATS = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "WEBP": ("webp", "image/webp"),
    "GIF": ("gif", None),
}
image_extensions = st.sampled_from(["jpg", "jpeg", "JPG", "png", "webp", "gif", "jfif"])
other_extensions = st.sampled_from(["txt", "csv", "pdf", "mp3", "mp4", "docx", "svg", "html", "exe", ""])


@st.composite
def names(draw: st.DrawFn, ext: str | None = None) -> str:
    """Plain names, and names with folders, dots, NUL, entities, RTL overrides, huge lengths."""
    stem = draw(
        st.one_of(
            st.text(min_size=1, max_size=20),
            st.sampled_from(["photo", "promoção de verão", "фото", "صورة", "写真", "a b", "CON", " x "]),
        )
    )
    suffix = ext if ext is not None else draw(st.one_of(image_extensions, other_extensions))
    name = f"{stem}.{suffix}" if suffix else stem
    twist = draw(
        st.sampled_from(
            ["none"] * 8 + ["folder", "backslash", "dotdot", "entity", "nul", "rtl", "long", "dots", "text"]
        )
    )
    if twist == "folder":
        return draw(st.sampled_from(["../", "../../etc/", "a/", "/", "./", "/tmp/"])) + name
    if twist == "backslash":
        return draw(st.sampled_from(["..\\", "C:\\Users\\x\\", "\\"])) + name
    if twist == "dotdot":
        return draw(st.sampled_from(["..", ".", " .. ", "..\x00", "\x00", "&#46;&#46;", "..\u200b", ""]))
    if twist == "entity":
        return draw(st.sampled_from(["..&#47;", "&#x2F;", "a&#92;", "&amp;", "&lt;b&gt;", "&quot;"])) + name
    if twist == "nul":
        at = draw(st.integers(0, len(name)))
        return name[:at] + "\x00" + name[at:]
    if twist == "rtl":
        return "\u202e" + name[::-1]
    if twist == "long":
        return draw(st.sampled_from(["x", "é", "写"])) * draw(st.sampled_from([200, 300])) + "." + suffix
    if twist == "dots":
        return "..." + name
    if twist == "text":
        return draw(st.text(max_size=40))
    return name


@st.composite
def images(draw: st.DrawFn) -> Upload:
    """Tiny real images, pristine or truncated, padded, or with bytes overwritten."""
    fmt = draw(st.sampled_from(list(FORMATS)))
    mode = draw(st.sampled_from(["RGB", "RGBA", "L", "P"]))
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    data = _image(fmt, size, mode)
    ext, mime = FORMATS[fmt]
    damage = draw(st.sampled_from(["none", "none", "none", "truncate", "lead", "trail", "overwrite"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "lead":
        data = draw(st.binary(min_size=1, max_size=16)) + data
    elif damage == "trail":
        data = data + draw(st.binary(min_size=1, max_size=64))
    elif damage == "overwrite":
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    own_name = draw(st.booleans())
    name = draw(names(ext=ext if own_name else None))
    pristine = mime if damage == "none" and own_name else None
    return Upload(name, data, pristine_image=pristine)


@st.composite
def texts(draw: st.DrawFn) -> Upload:
    # No "<", "#", capitals or "f": nothing that could start as markup, a script or a media file.
    text = draw(st.text(alphabet="abcdeghijklmnopqrstuvwxyz0123456789 ,;.\nçãéõ", min_size=1, max_size=300))
    ext = draw(st.sampled_from(["txt", "csv"]))
    return Upload(draw(names(ext=ext)), text.encode(), plain_text=True)


@st.composite
def anything(draw: st.DrawFn) -> Upload:
    return Upload(draw(st.one_of(names(), st.text(max_size=300))), draw(st.binary(max_size=3000)))


# --- The properties -----------------------------------------------------------------------


def assert_stored_exactly(body: dict[str, Any], upload: Upload, tenant: Tenant, new_keys: set[str]) -> Asset:
    assert set(body) == CONTRACT_KEYS and body["success"] is True, body
    asset = Asset.objects.get(id=body["id"])
    assert asset.tenant_id == tenant.id
    assert (asset.size, body["size"]) == (len(upload.data), len(upload.data))
    assert asset.sha256 == hashlib.sha256(upload.data).hexdigest()
    assert new_keys == {asset.key}, "a stored upload is exactly one new object"
    folder, last = asset.key.rsplit("/", 1)
    assert folder == f"tenants/{tenant.id}/media/{asset.id}" and last and not last.startswith(".")
    stored = s3_client().get_object(Bucket=django_settings.S3_BUCKET, Key=asset.key)
    assert stored["Body"].read() == upload.data
    assert stored["ContentType"] == asset.mime_type == body["mime_type"]
    assert asset.mime_type in EXTENSIONS and body["file_type"] == asset.file_type
    received = name_as_received(upload.name)
    assert extension(asset.original_name) in EXTENSIONS[asset.mime_type]
    if len(received) <= 255:  # Django shortens longer names (keeping the extension)
        assert asset.original_name == received
    if asset.mime_type.startswith("image/"):
        with Image.open(io.BytesIO(upload.data)) as image:
            assert PILLOW_MIME.get(str(image.format)) == asset.mime_type
            image.load()  # a stored image decodes in full
    return asset


def check_upload(api: ApiClient, tenant: Tenant, upload: Upload, *, quoted: bool) -> tuple[int, dict[str, Any]]:
    note(f"{upload!r}, quoted={quoted}")  # this Hypothesis prints no argument values
    part = multipart(upload.name, upload.data, quoted=quoted)
    rows_before, keys_before = Asset.objects.count(), bucket_keys(tenant)

    response = api.generic(
        "POST",
        files.UPLOAD,
        part.body,
        content_type=part.content_type,
        HTTP_AUTHORIZATION=f"Bearer {api.token}",
        HTTP_ACCEPT_LANGUAGE="en",
    )

    assert response.status_code < 500, response.content[:500]
    body = response.json()
    new_keys = bucket_keys(tenant) - keys_before
    if response.status_code == 201:
        assert_stored_exactly(body, upload, tenant, new_keys)
        assert Asset.objects.count() == rows_before + 1
    else:
        assert 400 <= response.status_code < 500
        assert body["success"] is False and body["error"] and body["code"] in REFUSAL_CODES, body
        assert Asset.objects.count() == rows_before, "a refused upload left a row"
        assert new_keys == set(), "a refused upload left an object"
    event(f"{response.status_code} {body.get('code', body.get('mime_type'))}")

    if part.headers_fit:
        ext = extension(name_as_received(upload.name))
        if upload.name == "":
            assert body.get("code") == "no_file"  # an empty filename is how forms send "no file"
        elif refused_as_a_path(upload.name):
            assert (response.status_code, body["code"]) == (400, "invalid_name")
        elif upload.pristine_image and ext in EXTENSIONS[upload.pristine_image]:
            assert response.status_code == 201, body
            assert body["mime_type"] == upload.pristine_image
        elif upload.plain_text and ext in ("txt", "csv"):
            assert response.status_code == 201, body
            assert body["mime_type"] == {"txt": "text/plain", "csv": "text/csv"}[ext]
    return response.status_code, body


@FUZZ
@given(upload=anything(), quoted=st.booleans())
def test_any_bytes_under_any_name_are_stored_exactly_or_refused_without_a_trace(
    upload: Upload, quoted: bool, api_alice: ApiClient, acme: Tenant, bucket: None
) -> None:
    if quoted and any(ch in upload.name for ch in '\r\n"'):
        quoted = False  # a browser cannot put these in a quoted filename either
    check_upload(api_alice, acme, upload, quoted=quoted)


@FUZZ
@given(upload=st.one_of(images(), texts()), quoted=st.booleans())
def test_real_images_and_text_are_stored_unless_damaged_or_misnamed(
    upload: Upload, quoted: bool, api_alice: ApiClient, acme: Tenant, bucket: None
) -> None:
    if quoted and any(ch in upload.name for ch in '\r\n"'):
        quoted = False
    check_upload(api_alice, acme, upload, quoted=quoted)
