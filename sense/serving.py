"""Plain HTTP for the ASGI entry point: Django's sync handler on a fixed pool of threads.

Django's ASGI handler runs each request's sync code in a thread of its own, created for that
request (asgiref's thread-sensitive context): on a small machine creating those threads and
the futex calls around them cost more than the request itself (a no-op view answered about
200 requests/s under uvicorn, against 1,900 under a WSGI server). `ThreadPoolHttp` keeps
uvicorn (one public port for pages, API, webhooks and `/ws/`) but hands each HTTP request to
one of a fixed set of long-lived threads, exactly as a threaded WSGI server would: one hop
in, one back, no thread created per request.

Requests whose path starts with one of `direct_prefixes` (provider webhooks) skip Django's
handler and its middleware altogether (`DirectHandler`): sessions, locale, CSRF, users,
tenants, messages and the rest of the page stack do nothing for a provider, which
authenticates with the token in the path and a signature. Their view is called straight,
with what the stack did that still matters kept: the host checked against ALLOWED_HOSTS,
errors answered as Django answers them, the request counted and timed for /metrics, and
database connections handed back when the response closes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.core import signals
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest, get_script_name
from django.http import HttpResponseBase
from django.urls import ResolverMatch, resolve, set_script_prefix

from sense.lib.metrics import RequestMetricsMiddleware

log = logging.getLogger("sense.serving")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class _Handler(WSGIHandler):
    """Django's WSGI handler, answering an environ with a response object."""

    def respond(self, environ: dict[str, Any]) -> HttpResponseBase:
        """The response to ENVIRON (what WSGIHandler.__call__ does, minus start_response)."""
        set_script_prefix(get_script_name(environ))
        signals.request_started.send(sender=WSGIHandler, environ=environ)
        request = WSGIRequest(environ)
        response = self.get_response(request)
        response._handler_class = WSGIHandler  # type: ignore[attr-defined]
        return response


@functools.lru_cache(maxsize=1024)
def _resolve(urlconf: str, path: str) -> ResolverMatch:
    """A webhook path's match, kept: a provider posts to the same URL all day, and resolving
    it was 6 % of a webhook's time. Paths that match nothing raise and are not kept."""
    return resolve(path, urlconf)


class DirectHandler:
    """The view of the request's URL, called without Django's handler or any middleware (for
    webhooks: each request's CPU is what limits a storm). What the handler and the stack did
    that still matters here is done here: ALLOWED_HOSTS (DisallowedHost answers 400),
    exceptions turned into Django's own error responses (logged, got_request_exception sent),
    the request counted and timed by route (sense.lib.metrics), and request_finished sent when
    the response closes, which hands the database connections back."""

    def respond(self, environ: dict[str, Any]) -> HttpResponseBase:
        started = time.perf_counter()
        request = WSGIRequest(environ)
        try:
            request.get_host()
            match = request.resolver_match = _resolve(settings.ROOT_URLCONF, request.path_info)
            response = match.func(request, *match.args, **match.kwargs)
        except Exception as exc:
            response = response_for_exception(request, exc)
        response._resource_closers.append(request.close)  # type: ignore[attr-defined]
        response._handler_class = WSGIHandler  # type: ignore[attr-defined]
        RequestMetricsMiddleware.observe(request, response, started)
        return response


def _headers(response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    headers = [(k.encode("latin1"), v.encode("latin1")) for k, v in response.items()]
    headers += [(b"set-cookie", c.output(header="").strip().encode("latin1")) for c in response.cookies.values()]
    return headers


def _complete(handler: _Handler | DirectHandler, environ: dict[str, Any]) -> tuple[HttpResponseBase, bytes | None]:
    """In a pool thread: the response and, unless it streams, its body, the response closed
    (request_finished: database connections go back)."""
    response = handler.respond(environ)
    if response.streaming:
        return response, None
    try:
        body = response.content  # type: ignore[attr-defined]
    finally:
        response.close()
    return response, body


_DONE = object()


def _next_chunk(chunks: Iterator[bytes]) -> object:
    return next(chunks, _DONE)


class ThreadPoolHttp:
    """An ASGI app for `http` scopes that runs Django's sync handler on THREADS threads."""

    def __init__(self, *, threads: int, direct_prefixes: tuple[str, ...] = ()) -> None:
        self.threads = threads
        self.handler = _Handler()
        self.direct_prefixes = direct_prefixes
        self.direct_handler = DirectHandler()
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sense-http")

    def handler_for(self, path: str) -> _Handler | DirectHandler:
        return self.direct_handler if path.startswith(self.direct_prefixes) else self.handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"ThreadPoolHttp serves http scopes, not {scope['type']!r}")
        with tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b") as body:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the client went away before sending its body
                body.write(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            body.seek(0)
            environ = build_environ(scope, body)
            handler = self.handler_for(scope["path"])
            loop = asyncio.get_running_loop()
            response, content = await loop.run_in_executor(self.executor, _complete, handler, environ)
            headers = _headers(response)
            if content is not None and not response.has_header("Content-Length"):
                # What CommonMiddleware adds, for the routes without it: no chunked encoding.
                headers.append((b"content-length", str(len(content)).encode("latin1")))
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            if content is not None:
                await send({"type": "http.response.body", "body": content})
                return
            await self._stream(response, send, loop)

    async def _stream(self, response: Any, send: Send, loop: asyncio.AbstractEventLoop) -> None:
        """A streaming response's chunks: an async iterator on the loop, a sync one chunk by
        chunk in the pool (it may query the database); closed in the pool either way."""
        try:
            if response.is_async:
                async for chunk in response.streaming_content:
                    await send({"type": "http.response.body", "body": bytes(chunk), "more_body": True})
            else:
                chunks = iter(response)
                while True:
                    chunk = await loop.run_in_executor(self.executor, _next_chunk, chunks)
                    if chunk is _DONE:
                        break
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body"})
        finally:
            await loop.run_in_executor(self.executor, response.close)


def build_environ(scope: Scope, body: Any) -> dict[str, Any]:
    """The WSGI environ of an ASGI http SCOPE with BODY as wsgi.input (asgiref's WsgiToAsgi)."""
    script_name = scope.get("root_path", "").encode("utf8").decode("latin1")
    path_info = scope["path"].encode("utf8").decode("latin1")
    if path_info.startswith(script_name):
        path_info = path_info[len(script_name) :]
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "QUERY_STRING": scope.get("query_string", b"").decode("ascii"),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    server = scope.get("server")
    if server is not None:
        environ["SERVER_NAME"] = server[0]
        environ["SERVER_PORT"] = str(server[1] if server[1] is not None else 0)
    else:
        environ["SERVER_NAME"], environ["SERVER_PORT"] = "localhost", "80"
    if scope.get("client") is not None:
        environ["REMOTE_ADDR"] = scope["client"][0]
        environ["REMOTE_PORT"] = str(scope["client"][1])
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin1")
        if name == "content-length":
            key = "CONTENT_LENGTH"
        elif name == "content-type":
            key = "CONTENT_TYPE"
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
        value = raw_value.decode("latin1")
        # Repeated headers join with a comma (RFC 9110), cookies with "; " (as ASGIHandler).
        if key in environ:
            value = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + value
        environ[key] = value
    return environ
