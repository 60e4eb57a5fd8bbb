"""The media library's JSON API: list, detail and delete (uploads go to /api/chat/upload-media/)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from django.db.models import QuerySet
from ninja import Field, Query, Router, Schema, Status

from media import services
from media.models import Asset
from sense import tenancy
from sense.pagination import PAGE_SIZE, paginate

router = Router(tags=["media"])


class AssetOut(Schema):
    id: UUID
    original_name: str
    file_type: str
    mime_type: str
    size: int
    sha256: str
    width: int | None
    height: int | None
    status: str
    origin: str = Field(description="upload, or inbound: a file a contact sent")
    failure_reason: str
    thumbnail_size: int | None
    file_url: str
    thumbnail_url: str | None
    created_at: datetime

    @staticmethod
    def resolve_file_url(obj: Asset) -> str:
        return obj.file_url()

    @staticmethod
    def resolve_thumbnail_url(obj: Asset) -> str | None:
        return obj.thumbnail_url()


class AssetPage(Schema):
    count: int
    items: list[AssetOut]
    results: list[AssetOut] = Field(
        description="Deprecated: the same rows as `items`, under the list's former name.",
        json_schema_extra={"deprecated": True},
    )


MAX_PAGE_SIZE = 200
LIST_DESCRIPTION = f"""Pages of `page_size` files (1 to {MAX_PAGE_SIZE}, default {PAGE_SIZE}),
`page` counting from 1, answered as `{{count, items}}` like every list of the API.

For compatibility the list still accepts `limit` and `offset` (deprecated): when either is
given they choose the rows and `page`/`page_size` are ignored. The same rows also come as
`results` (deprecated); read `items`."""


class AssetFilters(Schema):
    file_type: Asset.FileType | None = None
    status: Asset.Status | None = None
    origin: Literal["upload", "inbound", "all"] = Field(
        "upload", description="upload (default), inbound (files contacts sent) or all"
    )
    page: int = 1
    page_size: int = PAGE_SIZE
    limit: int | None = Field(None, description="Deprecated: use page_size.", json_schema_extra={"deprecated": True})
    offset: int | None = Field(None, description="Deprecated: use page.", json_schema_extra={"deprecated": True})


@router.get("/", response=AssetPage, summary="The tenant's files, newest first", description=LIST_DESCRIPTION)
def list_assets(request: tenancy.TenantHttpRequest, filters: Query[AssetFilters]) -> dict[str, Any]:
    qs: QuerySet[Asset] = Asset.objects.for_tenant(request.tenant)  # type: ignore[attr-defined]
    if filters.file_type:
        qs = qs.filter(file_type=filters.file_type)
    if filters.status:
        qs = qs.filter(status=filters.status)
    if filters.origin != "all":
        qs = qs.filter(origin=filters.origin)
    if filters.limit is None and filters.offset is None:
        listing = paginate(qs, page=filters.page, page_size=filters.page_size, max_page_size=MAX_PAGE_SIZE)
    else:
        listing = _by_offset(qs, limit=filters.limit, offset=filters.offset)
    return {**listing, "results": listing["items"]}


def _by_offset(qs: QuerySet[Asset], *, limit: int | None, offset: int | None) -> dict[str, Any]:
    """The deprecated contract's rows: LIMIT rows (default PAGE_SIZE, clamped) from OFFSET."""
    limit = max(1, min(PAGE_SIZE if limit is None else limit, MAX_PAGE_SIZE))
    offset = max(0, offset or 0)
    return {"count": qs.count(), "items": list(qs[offset : offset + limit])}


@router.get("/{asset_id}/", response=AssetOut, summary="One file")
def get_asset(request: tenancy.TenantHttpRequest, asset_id: UUID) -> Asset:
    return tenancy.get_for_tenant(Asset, request.tenant, id=asset_id)


@router.delete("/{asset_id}/", response={204: None}, summary="Delete a file and its stored objects")
def delete_asset(request: tenancy.TenantHttpRequest, asset_id: UUID) -> Status[None]:
    """409 `asset_in_use` when a campaign uses the file."""
    asset = tenancy.get_for_tenant(Asset, request.tenant, id=asset_id)
    services.asset_delete(asset=asset, user=request.user)
    return Status(204, None)
