"""The real web process (uvicorn, ASGI) in a subprocess, its memory, and streamed uploads.
Shared by the large-upload test and bench/bench_upload.py."""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.live import start_web


@contextmanager
def uvicorn(env: dict[str, str], *, workers: int = 1) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Serve sense.asgi on a free port; yields (base URL, process)."""
    with tempfile.TemporaryDirectory(prefix="sense-uvicorn-") as tmp:
        base_url, web = start_web(env, Path(tmp), "--no-access-log", "--lifespan", "off", "--workers", str(workers))
        try:
            yield base_url, web.proc
        finally:
            web.stop()


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak(pid: int) -> int:
    """Reset the process's peak RSS (Linux clear_refs 5); returns its current RSS in bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status(pid, "VmRSS")


def peak_rss(pid: int) -> int:
    return _status(pid, "VmHWM")


def multipart_stream(
    filename: str, head: bytes, size: int, chunk: int = 1024 * 1024
) -> tuple[Iterator[bytes], int, str]:
    """A multipart body of SIZE bytes of file content (HEAD then zeros), produced lazily.
    Returns (chunks, content length, content type)."""
    boundary = uuid.uuid4().hex
    start = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + head
    end = f"\r\n--{boundary}--\r\n".encode()
    zeros = b"\x00" * chunk

    def body() -> Iterator[bytes]:
        yield start
        left = size - len(head)
        while left > 0:
            piece = zeros[: min(chunk, left)]
            left -= len(piece)
            yield piece
        yield end

    return body(), len(start) + size - len(head) + len(end), f"multipart/form-data; boundary={boundary}"
