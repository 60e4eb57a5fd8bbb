"""The media library's JSON API: list, detail and delete (uploads go to /api/chat/upload-media/)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.db.models import QuerySet
from ninja import Query, Router, Schema, Status

from media import services
from media.models import Asset
from sense import tenancy

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
    results: list[AssetOut]


class AssetFilters(Schema):
    file_type: Asset.FileType | None = None
    status: Asset.Status | None = None
    limit: int = 50
    offset: int = 0


@router.get("/", response=AssetPage, summary="The tenant's files, newest first")
def list_assets(request: tenancy.TenantHttpRequest, filters: Query[AssetFilters]) -> dict[str, Any]:
    qs: QuerySet[Asset] = Asset.objects.for_tenant(request.tenant)  # type: ignore[attr-defined]
    if filters.file_type:
        qs = qs.filter(file_type=filters.file_type)
    if filters.status:
        qs = qs.filter(status=filters.status)
    limit = max(1, min(filters.limit, 200))
    offset = max(0, filters.offset)
    return {"count": qs.count(), "results": list(qs[offset : offset + limit])}


@router.get("/{asset_id}/", response=AssetOut, summary="One file")
def get_asset(request: tenancy.TenantHttpRequest, asset_id: UUID) -> Asset:
    return tenancy.get_for_tenant(Asset, request.tenant, id=asset_id)


@router.delete("/{asset_id}/", response={204: None}, summary="Delete a file and its stored objects")
def delete_asset(request: tenancy.TenantHttpRequest, asset_id: UUID) -> Status[None]:
    """409 `asset_in_use` when a campaign uses the file."""
    asset = tenancy.get_for_tenant(Asset, request.tenant, id=asset_id)
    services.asset_delete(asset=asset, user=request.user)
    return Status(204, None)
