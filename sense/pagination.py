"""The one pagination contract of the JSON API: `page` (from 1) and `page_size` in, `{"count",
"items"}` out. Out-of-range values are clamped rather than refused, so a client that asks for
page 0 or a page size of a million still gets a page."""

from __future__ import annotations

from typing import Any, TypeVar

from django.db.models import Model, QuerySet

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

M = TypeVar("M", bound=Model)


def paginate(
    qs: QuerySet[M], *, page: int = 1, page_size: int = PAGE_SIZE, max_page_size: int = MAX_PAGE_SIZE
) -> dict[str, Any]:
    """`{"count": rows in QS, "items": the rows of page PAGE}`, pages of PAGE_SIZE rows
    (clamped to 1..MAX_PAGE_SIZE); a page past the end has no items."""
    page = max(page, 1)
    page_size = min(max(page_size, 1), max_page_size)
    start = (page - 1) * page_size
    return {"count": qs.count(), "items": list(qs[start : start + page_size])}
