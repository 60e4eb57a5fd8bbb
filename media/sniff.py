"""Deciding a file's type from its content (magic bytes), never from its name or the
client's Content-Type; the name's extension must then agree with what was found.

Returns one of the MIME types in settings.MEDIA_ALLOWED_TYPES or refuses. Markup (HTML,
SVG, XML) and executables are refused outright: served from our domain they would run
script, and nothing a campaign sends needs them.
"""

from __future__ import annotations

import codecs
import zipfile
from dataclasses import dataclass
from typing import IO

from sense.errors import ServiceError

IMAGE, VIDEO, AUDIO, DOCUMENT = "image", "video", "audio", "document"

# MIME type -> (kind, extensions a file of that type may carry)
TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "image/jpeg": (IMAGE, ("jpg", "jpeg", "jpe", "jfif")),
    "image/png": (IMAGE, ("png",)),
    "image/webp": (IMAGE, ("webp",)),
    "audio/aac": (AUDIO, ("aac",)),
    "audio/amr": (AUDIO, ("amr",)),
    "audio/mpeg": (AUDIO, ("mp3",)),
    "audio/mp4": (AUDIO, ("m4a",)),
    "audio/ogg": (AUDIO, ("ogg", "oga", "opus")),
    "video/mp4": (VIDEO, ("mp4", "m4v")),
    "video/3gpp": (VIDEO, ("3gp", "3gpp")),
    "application/pdf": (DOCUMENT, ("pdf",)),
    "text/plain": (DOCUMENT, ("txt",)),
    "text/csv": (DOCUMENT, ("csv",)),
    "application/msword": (DOCUMENT, ("doc",)),
    "application/vnd.ms-excel": (DOCUMENT, ("xls",)),
    "application/vnd.ms-powerpoint": (DOCUMENT, ("ppt",)),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": (DOCUMENT, ("docx",)),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": (DOCUMENT, ("xlsx",)),
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": (DOCUMENT, ("pptx",)),
}

_OLE_BY_EXT = {"doc": "application/msword", "xls": "application/vnd.ms-excel", "ppt": "application/vnd.ms-powerpoint"}
_OOXML_BY_DIR = {
    "word/": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xl/": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "ppt/": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
}
_EXECUTABLE_MAGIC = (
    b"MZ",  # Windows PE / DOS
    b"\x7fELF",
    b"\xfe\xed\xfa\xce",  # Mach-O
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",  # Mach-O universal / Java class
    b"#!",  # scripts
    b"\x00asm",  # WebAssembly
)
_MARKUP = (b"<!doctype", b"<html", b"<head", b"<body", b"<script", b"<svg", b"<?xml", b"<iframe", b"<!--")
HEAD_BYTES = 8192


class Refused(ServiceError):
    """Content we do not accept; `status` is 415."""


@dataclass(frozen=True)
class Sniffed:
    mime_type: str
    file_type: str


def extension(name: str) -> str:
    _, dot, ext = name.rpartition(".")
    return ext.lower() if dot else ""


def _mp4_brand(head: bytes) -> str | None:
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return head[8:12].decode("latin-1")
    return None


def _mpeg_audio(head: bytes) -> str | None:
    """ADTS AAC and MPEG audio share an 11-bit frame sync; the layer bits tell them apart."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    layer = (head[1] >> 1) & 0x3
    if layer == 0 and head[1] & 0xF0 == 0xF0:
        return "audio/aac"
    version = (head[1] >> 3) & 0x3
    bitrate = head[2] >> 4
    if layer != 0 and version != 1 and bitrate not in (0, 15) and (head[2] >> 2) & 0x3 != 3:
        return "audio/mpeg"
    return None


def _text(head: bytes, ext: str) -> str | None:
    if b"\x00" in head:
        return None
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return None
    if ext == "csv":
        return "text/csv"
    return "text/plain"


def _ooxml(fp: IO[bytes]) -> str | None:
    fp.seek(0)
    try:
        with zipfile.ZipFile(fp) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    if "[Content_Types].xml" not in names:
        return None
    for prefix, mime in _OOXML_BY_DIR.items():
        if any(n.startswith(prefix) for n in names):
            return mime
    return None


def detect(fp: IO[bytes], name: str) -> str:
    """The MIME type FP's content has, or raises Refused (415) for anything we do not know."""
    fp.seek(0)
    head = fp.read(HEAD_BYTES)
    fp.seek(0)
    ext = extension(name)
    lowered = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"#!AMR"):  # before the "#!" of scripts
        return "audio/amr"
    if head.startswith(_EXECUTABLE_MAGIC):
        raise Refused("Executable files are not allowed.", code="executable", status=415)
    if lowered.startswith(_MARKUP) or b"<svg" in lowered[:1024] or b"<html" in lowered[:1024]:
        raise Refused("HTML, SVG and XML files are not allowed.", code="markup", status=415)
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"ID3"):
        return "audio/mpeg"
    brand = _mp4_brand(head)
    if brand is not None:
        if brand.startswith("3gp") or brand.startswith("3g2"):
            return "video/3gpp"
        if brand in ("M4A ", "M4B ") or (ext == "m4a" and brand in ("isom", "mp41", "mp42", "iso2")):
            return "audio/mp4"
        return "video/mp4"
    mpeg = _mpeg_audio(head)
    if mpeg:
        return mpeg
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        # Legacy Office files are all OLE compound files; the extension picks which.
        if ext in _OLE_BY_EXT:
            return _OLE_BY_EXT[ext]
        raise Refused("This kind of file is not allowed.", code="unsupported_type", status=415)
    if head.startswith(b"PK\x03\x04"):
        mime = _ooxml(fp)
        fp.seek(0)
        if mime:
            return mime
        raise Refused("Archives are not allowed.", code="unsupported_type", status=415)
    if ext in ("txt", "csv"):
        mime = _text(head, ext)
        if mime:
            return mime
    raise Refused("This kind of file is not allowed.", code="unsupported_type", status=415)


def sniff(fp: IO[bytes], name: str, allowed: list[str]) -> Sniffed:
    """Decide FP's type; refuse (415) a type not in ALLOWED or an extension that disagrees."""
    mime = detect(fp, name)
    if mime not in allowed or mime not in TYPES:
        raise Refused(f"Files of type {mime} are not allowed.", code="unsupported_type", status=415)
    kind, extensions = TYPES[mime]
    ext = extension(name)
    if ext not in extensions:
        shown = f".{ext}" if ext else "no extension"
        raise Refused(
            f"The file's content is {mime} but its name has {shown}; expected "
            + ", ".join(f".{e}" for e in extensions)
            + ".",
            code="extension_mismatch",
            status=415,
        )
    return Sniffed(mime_type=mime, file_type=kind)


def kind_from_head(head: bytes) -> str | None:
    """A cheap early guess of the kind from the first chunk (for the upload size limit)."""
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG")) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return IMAGE
    if head.startswith((b"#!AMR", b"OggS", b"ID3")) or _mpeg_audio(head):
        return AUDIO
    brand = _mp4_brand(head)
    if brand is not None:
        return AUDIO if brand in ("M4A ", "M4B ") else VIDEO
    return None
