"""WhiteNoise as middleware that can run on the event loop under ASGI.

WhiteNoise's middleware is sync-only, so under uvicorn Django ran every request's
middleware chain in a thread, hopped back to the event loop for the async-capable middleware
below it, then into a thread again for the view: three hand-offs per request. This
subclass does the same work in either mode, so the whole chain stays on the event loop and a
request makes one hand-off, for its (sync) view.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from whitenoise.middleware import WhiteNoiseMiddleware

from sense.lib.middleware import follow_mode


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any = None, **kwargs: Any) -> None:
        super().__init__(get_response, **kwargs)
        self.is_async = follow_mode(self, get_response)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        if self.autorefresh:  # DEBUG: looks at the disk on every request
            static_file = await sync_to_async(self.find_file, thread_sensitive=False)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)  # an in-memory map, built at start
        if static_file is not None:
            # Opening the file touches the disk: off the event loop.
            response: HttpResponse = await sync_to_async(self.serve, thread_sensitive=False)(static_file, request)
            return response
        response = await self.get_response(request)
        return response
