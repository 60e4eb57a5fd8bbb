"""Reading an upload: the multipart body is streamed to a temporary file, and reading
stops as soon as the file passes the size limit of its kind (guessed from its first
chunk; the full check happens once the whole file is known)."""

from __future__ import annotations

import hashlib
import html
from typing import Any

from django.core.files.uploadedfile import TemporaryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest
from django.http.multipartparser import MultiPartParser

from media import sniff

FIELD = "file"


class LimitedUploadHandler(FileUploadHandler):
    """Writes the `file` field to a temporary file (never to memory) and stops at the limit.

    `limits` maps a kind ("image", "audio", ...) to its byte limit; until the kind is known
    from the first chunk the largest limit applies. Other file fields are dropped."""

    # Bigger chunks than Django's 64 KB: the multipart parser is pure Python, and a 100 MB
    # upload in 1 MB pieces spends far less time in it.
    chunk_size = 1024 * 1024

    def __init__(self, request: HttpRequest, limits: dict[str, int]) -> None:
        super().__init__(request)
        self.digest = hashlib.sha256()
        self.limits = limits
        self.limit = max(limits.values())
        self.received = 0
        self.over_limit = False
        self.active = False
        self.done = False
        self.temp: TemporaryUploadedFile | None = None

    def new_file(self, field_name: str, file_name: str, *args: Any, **kwargs: Any) -> None:
        super().new_file(field_name, file_name, *args, **kwargs)
        self.active = field_name == FIELD and not self.done
        if self.active:
            self.temp = TemporaryUploadedFile(file_name, "application/octet-stream", 0, None)
            self.file = self.temp  # MultiPartParser._close_files() closes handler.file on errors

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if not self.active or self.temp is None:
            return None
        if self.received == 0:
            kind = sniff.kind_from_head(raw_data)
            if kind is not None:
                self.limit = self.limits[kind]
        self.received += len(raw_data)
        if self.received > self.limit:
            self.over_limit = True
            # connection_reset: do not read the rest of the body just to throw it away.
            raise StopUpload(connection_reset=True)
        self.temp.write(raw_data)
        self.digest.update(raw_data)  # hashed while streaming: no second pass over the file
        return None

    def file_complete(self, file_size: int) -> TemporaryUploadedFile | None:
        if not self.active or self.temp is None:
            return None
        self.active = False
        self.done = True
        self.temp.seek(0)
        self.temp.size = file_size
        return self.temp

    def discard(self) -> None:
        if self.temp is not None:
            self.temp.close()


class UploadParser(MultiPartParser):
    """Django's parser, remembering whether a file name tried to climb out of its folder
    (Django silently keeps only the last path component; we refuse such uploads)."""

    traversal = False

    def sanitize_file_name(self, file_name: str) -> str | None:
        # Judge the name Django goes on to keep: it unescapes HTML entities and drops
        # non-printable characters first, so "..&#47;x.jpg" is "../x.jpg" and "..\x00" is "..".
        seen = html.unescape(file_name)
        printable = "".join(ch for ch in seen if ch.isprintable())
        if "/" in seen or "\\" in seen or printable.strip() in ("", ".", ".."):
            self.traversal = True
        return super().sanitize_file_name(file_name)  # type: ignore[no-any-return]


def parse(request: HttpRequest, handler: LimitedUploadHandler) -> UploadParser:
    """Parse REQUEST's multipart body with HANDLER; sets request.POST and request.FILES."""
    request.upload_handlers = [handler]
    parser = UploadParser(request.META, request, [handler], request.encoding)
    request._post, request._files = parser.parse()  # type: ignore[attr-defined]
    return parser
