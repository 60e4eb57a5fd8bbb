from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from media import services
from media.models import Asset, DailyMetric
from media.objects import StorageUnavailable


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = [
        "original_name",
        "file_type",
        "mime_type",
        "size",
        "status",
        "thumbnail_size",
        "tenant",
        "created_at",
    ]
    list_filter = ["status", "file_type", "tenant"]
    search_fields = ["original_name", "key", "sha256"]
    list_select_related = ["tenant"]
    raw_id_fields = ["uploaded_by"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Asset._meta.fields]
    actions = ["regenerate_thumbnails"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # uploads go through the upload API and the media library

    @admin.action(description=_("Regenerate thumbnails"))
    def regenerate_thumbnails(self, request: HttpRequest, queryset: QuerySet[Asset]) -> None:
        done = failed = unavailable = 0
        for asset in queryset.filter(file_type=Asset.FileType.IMAGE):
            try:
                ok = services.thumbnail_regenerate(asset=asset)
            except StorageUnavailable:  # as regenerate_thumbnails does: say so, not a 500
                unavailable += 1
                continue
            done, failed = (done + 1, failed) if ok else (done, failed + 1)
        message = _("%(done)d thumbnail(s) made, %(failed)d failed.") % {"done": done, "failed": failed}
        if unavailable:
            message += " " + _("%(count)d skipped: storage unavailable, try again.") % {"count": unavailable}
        self.message_user(request, message, messages.WARNING if failed or unavailable else messages.SUCCESS)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # a bulk delete would leave the stored objects behind
        return actions

    def has_delete_permission(self, request: HttpRequest, obj: Asset | None = None) -> bool:
        # An asset a campaign uses cannot be deleted (the media library says why).
        return super().has_delete_permission(request, obj) and not (obj is not None and obj.campaigns.exists())

    def delete_model(self, request: HttpRequest, obj: Asset) -> None:
        services.asset_delete(asset=obj, user=request.user)  # deletes the stored objects too


@admin.register(DailyMetric)
class DailyMetricAdmin(admin.ModelAdmin):
    list_display = ["day", "tenant", "name", "bucket", "count", "total"]
    list_filter = ["name", "tenant"]
    list_select_related = ["tenant"]
    date_hierarchy = "day"
    readonly_fields = [f.name for f in DailyMetric._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
