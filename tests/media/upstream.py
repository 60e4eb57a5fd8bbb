"""A real HTTP server on 127.0.0.1 playing the remote side of the media proxy."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from tests.media import files

PNG = files.png((20, 20), mode="RGB")


class Upstream(ThreadingHTTPServer):
    daemon_threads = True
    hits: Counter[str]
    delay: float = 0.0
    last_headers: dict[str, str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Upstream

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "image/png", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        # Headers and body in one write: two small writes meet the client's delayed ACK (40 ms).
        self._headers_buffer.append(b"\r\n" + body)  # type: ignore[attr-defined]
        self.flush_headers()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        query = parse_qs(url.query)
        self.server.hits[url.path] += 1
        self.server.last_headers = dict(self.headers.items())
        if self.server.delay:
            time.sleep(self.server.delay)
        path = url.path
        if path == "/img.png":
            self._send(200, PNG)
        elif path == "/short.png":
            self._send(200, PNG, Cache_Control="public, max-age=60")
        elif path == "/nostore.png":
            self._send(200, PNG, Cache_Control="no-store")
        elif path == "/missing":
            self._send(404, b"not here", "text/plain")
        elif path == "/error":
            self._send(500, b"oops", "text/plain")
        elif path == "/svg":
            self._send(200, files.SVG, "image/svg+xml")
        elif path == "/html":
            self._send(200, files.HTML, "text/html")
        elif path == "/audio":
            self._send(200, files.MP3, "audio/mpeg")
        elif path == "/big":
            self._send(200, b"\x00" * 50_000)
        elif path == "/chunked-big":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(50):
                chunk = b"\x00" * 1000
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/slow":
            time.sleep(float(query.get("s", ["2"])[0]))
            self._send(200, PNG)
        elif path == "/redirect":
            self._send(302, b"", "text/plain", Location=query["to"][0])
        elif path.startswith("/chain/"):
            n = int(path.rsplit("/", 1)[1])
            target = f"/chain/{n - 1}" if n > 0 else "/img.png"
            self._send(302, b"", "text/plain", Location=target)
        else:
            self._send(404, b"", "text/plain")


@contextmanager
def upstream() -> Iterator[Upstream]:
    server = Upstream(("127.0.0.1", 0), Handler)
    server.hits = Counter()
    server.last_headers = {}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
