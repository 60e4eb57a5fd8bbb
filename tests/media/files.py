"""Small real files of every allowed type, and multipart bodies for the upload endpoint."""

from __future__ import annotations

import io
import struct
import uuid
import zipfile
import zlib
from typing import Any

from django.conf import settings
from PIL import Image

from sense.lib.storage import s3_client

UPLOAD = "/api/chat/upload-media/"


def jpeg(size: tuple[int, int] = (64, 48), *, exif: Any = None, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    image = Image.new("RGB", size, colour)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, **({"exif": exif} if exif is not None else {}))
    return out.getvalue()


def png(size: tuple[int, int] = (40, 30), mode: str = "RGBA") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (10, 200, 10, 128) if mode == "RGBA" else (10, 200, 10)).save(out, "PNG")
    return out.getvalue()


def webp(size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 10, 200)).save(out, "WEBP")
    return out.getvalue()


def png_bomb(width: int = 10_000, height: int = 10_000) -> bytes:
    """A tiny PNG whose header claims WIDTH x HEIGHT pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


MP3 = b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + b"\x00" * 400
MP3_NO_TAG = b"\xff\xfb\x90\x64" + b"\x00" * 400
OGG = b"OggS\x00\x02" + b"\x00" * 20 + b"OpusHead\x01\x02" + b"\x00" * 100
AAC = b"\xff\xf1\x50\x80\x02\x1f\xfc" + b"\x00" * 200
AMR = b"#!AMR\n" + b"\x3c" + b"\x00" * 200
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00\x00\x00\x08mdat" + b"\x00" * 200
M4A = b"\x00\x00\x00\x18ftypM4A \x00\x00\x00\x00M4A isom" + b"\x00\x00\x00\x08mdat" + b"\x00" * 200
THREEGP = b"\x00\x00\x00\x14ftyp3gp4\x00\x00\x00\x003gp4" + b"\x00\x00\x00\x08mdat" + b"\x00" * 200
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
TXT = "Olá, campanha de março!\n".encode()
CSV = b"name,phone\nAna,+5511999990000\n"
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 200
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 200


def docx() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
    return out.getvalue()


def multipart(filename: str, data: bytes, *, field: str = "file") -> tuple[bytes, str]:
    """A multipart body with exactly FILENAME (the test client would strip folders)."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def upload(client: Any, filename: str, data: bytes, **extra: Any) -> Any:
    body, content_type = multipart(filename, data)
    if getattr(client, "token", None):
        extra.setdefault("HTTP_AUTHORIZATION", f"Bearer {client.token}")
    return client.generic("POST", UPLOAD, body, content_type=content_type, **extra)


def stored_keys(tenant: Any) -> list[str]:
    """Every object under the tenant's prefix in the bucket."""
    page = s3_client().list_objects_v2(Bucket=settings.S3_BUCKET, Prefix=f"tenants/{tenant.id}/")
    return sorted(obj["Key"] for obj in page.get("Contents", []))
