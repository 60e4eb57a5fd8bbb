from __future__ import annotations

import contextlib
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from campaigns import services
from campaigns.models import (
    Campaign,
    Connection,
    ConsentEvent,
    ConsentSettings,
    Contact,
    ContactErasure,
    ContactImport,
    Delivery,
    DeliveryEvent,
    InboundMessage,
    MessageTemplate,
    WebhookEvent,
    WebhookRejection,
    normalize_phone,
)
from campaigns.providers import registry
from sense.errors import ServiceError

# Every credential any provider declares (`Provider.credentials`), by name.
CREDENTIALS = {c.name: c for cls in registry.values() for c in cls.credentials}


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = ["phone", "name", "tenant", "tags", "opted_out", "updated_at"]
    list_filter = ["opted_out", "tenant"]
    search_fields = ["phone", "name"]
    list_select_related = ["tenant"]
    # Consent changes only through the actions (contact_consent_change records each one).
    readonly_fields = ["opted_out", "opted_out_at", "opt_out_source", "created_at", "updated_at"]
    actions = ["opt_out", "opt_in"]

    def save_model(self, request: HttpRequest, obj: Contact, form: Any, change: bool) -> None:
        with contextlib.suppress(ValueError):  # keep what was typed; the unique constraint still holds
            obj.phone = normalize_phone(obj.phone)
        super().save_model(request, obj, form, change)

    # Deleting a contact here is an erasure (LGPD), as through the API and the contacts page.
    def delete_model(self, request: HttpRequest, obj: Contact) -> None:
        services.contact_erase(contact=obj, user=request.user, via=ContactErasure.Via.ADMIN)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Contact]) -> None:
        for contact in queryset.select_related("tenant"):
            services.contact_erase(contact=contact, user=request.user, via=ContactErasure.Via.ADMIN)

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        # A deletion entry would keep str(contact), its name and phone: the ContactErasure
        # row is the record instead.
        return []

    @admin.action(description=_("Opt out (never send to them)"))
    def opt_out(self, request: HttpRequest, queryset: QuerySet[Contact]) -> None:
        changed = sum(
            services.contact_opt_out(contact=c, source=ConsentEvent.Source.OPERATOR, user=request.user)
            for c in queryset.select_related("tenant")
        )
        self.message_user(request, _("%(n)d contact(s) opted out.") % {"n": changed})

    @admin.action(description=_("Opt back in"))
    def opt_in(self, request: HttpRequest, queryset: QuerySet[Contact]) -> None:
        reason = f"Opted back in from the Django admin by {request.user.get_username()}"
        changed = sum(
            services.contact_opt_in(contact=c, source=ConsentEvent.Source.OPERATOR, user=request.user, reason=reason)
            for c in queryset.select_related("tenant")
        )
        self.message_user(request, _("%(n)d contact(s) opted in.") % {"n": changed})


def _secret(name: str) -> forms.CharField:
    return forms.CharField(
        label=CREDENTIALS[name].label,
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )


class _CredentialFields(forms.forms.DeclarativeFieldsMetaclass):
    """Declares one write-only `cred_<name>` field per provider credential, so the admin
    lists them like any declared field."""

    def __new__(mcs, name: str, bases: tuple[type, ...], attrs: dict[str, Any]) -> Any:
        attrs.update({f"cred_{cred}": _secret(cred) for cred in CREDENTIALS})
        return super().__new__(mcs, name, bases, attrs)


class _ConnectionFormMetaclass(_CredentialFields, forms.models.ModelFormMetaclass):
    pass


class ConnectionForm(forms.ModelForm, metaclass=_ConnectionFormMetaclass):
    """Credentials are write-only: each is a password field that never shows the stored
    value; leaving it blank keeps it."""

    class Meta:
        model = Connection
        fields = ["tenant", "name", "provider", "base_url", "rate_per_minute", "daily_limit", "is_active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stored = self.instance.credentials if self.instance and self.instance.pk else {}
        for name in CREDENTIALS:
            if stored.get(name):
                self.fields[f"cred_{name}"].help_text = _("stored; leave blank to keep")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        provider = data.get("provider")
        creds = {**(self.instance.credentials if self.instance.pk else {})}
        for name in CREDENTIALS:
            value = (data.get(f"cred_{name}") or "").strip()
            if value:
                creds[name] = value
        if provider in registry:
            # Stored credentials of another provider (the provider was changed) are dropped.
            allowed = registry[provider].allowed_credentials()
            creds = {k: v for k, v in creds.items() if k in allowed}
            try:
                if self.instance._state.adding or provider != self.instance.provider:
                    services.connection_provider_check(provider=provider)  # an existing one stays editable
                creds = services.connection_credentials_check(provider=provider, credentials=creds)
            except ServiceError as exc:
                raise forms.ValidationError(exc.message) from None
        self.instance.credentials = creds
        return data


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    form = ConnectionForm
    list_display = [
        "name",
        "tenant",
        "provider",
        "base_url",
        "rate_per_minute",
        "daily_limit",
        "state",
        "state_since",
        "is_active",
        "created_at",
    ]
    list_filter = ["provider", "is_active", "state", "tenant"]
    search_fields = ["name", "base_url"]
    list_select_related = ["tenant"]
    readonly_fields = ["id", "webhook_url", "state", "state_reason", "state_since", "created_at"]
    actions = ["sync_templates"]

    @admin.display(description=_("webhook path"))
    def webhook_url(self, obj: Connection) -> str:
        return services.connection_webhook_path(obj) if obj.pk else "-"

    @admin.action(description=_("Sync message templates from Meta"))
    def sync_templates(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        for connection in queryset:
            try:
                result = services.templates_sync(connection=connection)
            except ServiceError as exc:
                self.message_user(request, f"{connection.name}: {exc.message}", level=messages.ERROR)
                continue
            self.message_user(
                request,
                _("%(name)s: %(synced)d templates listed, %(created)d new, %(updated)d changed, %(deleted)d deleted.")
                % {"name": connection.name, **result.as_dict()},
            )


@admin.register(MessageTemplate)
class MessageTemplateAdmin(admin.ModelAdmin):
    """What Meta says of each template: read-only, changed by syncs and status webhooks."""

    list_display = ["name", "language", "connection", "tenant", "status", "category", "quality_score", "synced_at"]
    list_filter = ["status", "category", "tenant"]
    search_fields = ["name", "meta_id"]
    list_select_related = ["connection", "tenant"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class CampaignForm(forms.ModelForm):
    """The safe-sending settings checked as the API and the composer check them."""

    class Meta:
        model = Campaign
        fields = [
            "tenant",
            "name",
            "connection",
            "extra_connections",
            "message",
            "media",
            "template",
            "template_params",
            "header_media",
            "tags",
            "scheduled_at",
            *services.SENDING_SETTINGS,
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        changes = {name: data[name] for name in services.SENDING_SETTINGS if name in data}
        try:
            data.update(services.campaign_settings_clean(changes=changes))
        except ServiceError as exc:
            raise forms.ValidationError(exc.message) from None
        primary, extra = data.get("connection"), list(data.get("extra_connections") or [])
        if primary is not None:
            others = [c for c in extra if c.tenant_id != primary.tenant_id or c.provider != primary.provider]
            if others or (data.get("tenant") and primary.tenant_id != data["tenant"].pk):
                raise forms.ValidationError(_("Every connection must be of the campaign's tenant and of one provider."))
        return data


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignForm
    list_display = [
        "name",
        "tenant",
        "status",
        "stat_total",
        "stat_pending",
        "stat_sent",
        "stat_delivered",
        "stat_read",
        "stat_failed",
        "stat_cancelled",
        "stat_unknown",
        "scheduled_at",
        "started_at",
    ]
    list_filter = ["status", "tenant"]
    search_fields = ["name"]
    list_select_related = ["tenant"]
    raw_id_fields = ["connection", "extra_connections", "media", "template", "header_media", "created_by"]
    actions = ["start", "pause", "resume", "cancel", "recalc_stats", "retry_failed"]
    readonly_fields = [
        "status",
        "pause_reason",
        "consecutive_errors",
        "started_at",
        "prepared_at",
        "audience_count",
        "finished_at",
        "created_by",
        "created_at",
        "waiting_reason",
        "next_send_at",
        *[f"stat_{n}" for n in Campaign.STAT_NAMES],
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Campaign | None = None) -> list[str]:
        fields = list(self.readonly_fields)
        if obj is not None and not obj.is_editable:  # only drafts can be edited
            fields += ["tenant", "name", "connection", "extra_connections", "message", "media", "tags", "scheduled_at"]
            fields += ["template", "template_params", "header_media"]
            fields += list(services.SENDING_SETTINGS)
        return fields

    def _run(self, request: HttpRequest, queryset: QuerySet[Campaign], service: Any, verb: str) -> None:
        done = 0
        for campaign in queryset.select_related("connection", "tenant"):
            try:
                service(campaign=campaign, user=request.user)
                done += 1
            except ServiceError as exc:
                self.message_user(request, f"{campaign.name}: {exc.message}", level=messages.ERROR)
        if done:
            self.message_user(request, _("%(n)d campaign(s) %(verb)s.") % {"n": done, "verb": verb})

    @admin.action(description=_("Start selected campaigns"))
    def start(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._run(request, queryset, services.campaign_start, "started")

    @admin.action(description=_("Pause selected campaigns"))
    def pause(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._run(request, queryset, services.campaign_pause, "paused")

    @admin.action(description=_("Resume selected campaigns"))
    def resume(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._run(request, queryset, services.campaign_resume, "resumed")

    @admin.action(description=_("Cancel selected campaigns"))
    def cancel(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._run(request, queryset, services.campaign_cancel, "cancelled")

    @admin.action(description=_("Recount stats from deliveries"))
    def recalc_stats(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        drifts = services.campaign_recalc_stats(campaign_ids=list(queryset.values_list("pk", flat=True)))
        for drift in drifts:
            changed = ", ".join(
                f"{n} {drift.before[n]} -> {drift.after[n]}" for n in drift.before if drift.before[n] != drift.after[n]
            )
            self.message_user(request, f"{drift.name}: {changed}", messages.WARNING)
        if not drifts:
            self.message_user(request, _("The stored counters matched the deliveries."))

    @admin.action(description=_("Retry failed deliveries"))
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        total = 0
        for campaign in queryset:
            try:
                total += services.deliveries_retry_failed(campaign=campaign, user=request.user)
            except ServiceError as exc:
                self.message_user(request, f"{campaign.name}: {exc.message}", messages.ERROR)
        self.message_user(request, _("%(n)d failed deliveries queued again.") % {"n": total})


class DeliveryEventInline(admin.TabularInline):
    model = DeliveryEvent
    extra = 0
    can_delete = False
    fields = readonly_fields = ("status", "occurred_at", "received_at", "event", "error_code", "error_message")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = ["received_at", "provider", "event_type", "status", "attempts", "connection", "tenant"]
    list_filter = ["status", "provider", "event_type", "tenant"]
    search_fields = ["event_type", "body"]
    list_select_related = ["connection", "tenant"]
    raw_id_fields = ["connection"]
    date_hierarchy = "received_at"
    readonly_fields = [f.name for f in WebhookEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(WebhookRejection)
class WebhookRejectionAdmin(admin.ModelAdmin):
    list_display = ["day", "reason", "count", "connection", "tenant"]
    list_filter = ["reason", "tenant"]
    list_select_related = ["connection", "tenant"]
    readonly_fields = [f.name for f in WebhookRejection._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["phone", "campaign", "status", "provider_message_id", "attempts", "sent_at", "error_code"]
    list_filter = ["status", "tenant", "campaign"]
    search_fields = ["phone", "provider_message_id"]
    list_select_related = ["campaign"]
    raw_id_fields = ["campaign", "contact"]
    readonly_fields = [f.name for f in Delivery._meta.fields]
    inlines = [DeliveryEventInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Statuses change only through Delivery.move (counters stay exact).
        return False


@admin.register(ContactErasure)
class ContactErasureAdmin(admin.ModelAdmin):
    """The audit trail of erasures: read-only, kept with the tenant."""

    list_display = [
        "erased_at",
        "tenant",
        "erased_by_name",
        "via",
        "deliveries_anonymized",
        "deliveries_cancelled",
        "webhook_events_deleted",
    ]
    list_filter = ["via", "tenant"]
    list_select_related = ["tenant"]
    date_hierarchy = "erased_at"
    readonly_fields = [f.name for f in ContactErasure._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ContactImport)
class ContactImportAdmin(admin.ModelAdmin):
    """Background CSV imports, read-only: they change only through their worker's claim."""

    list_display = ["created_at", "original_name", "tenant", "status", "processed", "total", "error_count"]
    list_filter = ["status", "tenant"]
    search_fields = ["original_name"]
    list_select_related = ["tenant"]
    exclude = ["errors"]
    readonly_fields = [f.name for f in ContactImport._meta.fields if f.name != "errors"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ConsentSettings)
class ConsentSettingsAdmin(admin.ModelAdmin):
    """A tenant's opt-out and re-subscribe keywords and confirmation texts."""

    list_display = ["tenant", "opt_out_keywords", "opt_in_keywords", "updated_at"]
    list_filter = ["tenant"]
    list_select_related = ["tenant"]
    readonly_fields = ["updated_at"]


@admin.register(ConsentEvent)
class ConsentEventAdmin(admin.ModelAdmin):
    """The consent record (LGPD): read-only, changes only through contact_consent_change."""

    list_display = ["at", "contact", "opted_out", "source", "user", "reason", "tenant"]
    list_filter = ["opted_out", "source", "tenant"]
    search_fields = ["contact__phone", "reason"]
    list_select_related = ["contact", "user", "tenant"]
    date_hierarchy = "at"
    readonly_fields = [f.name for f in ConsentEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(InboundMessage)
class InboundMessageAdmin(admin.ModelAdmin):
    """Messages contacts sent, as the ingest workers stored them: read-only."""

    list_display = ["received_at", "phone", "profile_name", "type", "short_text", "campaign", "connection", "tenant"]
    list_filter = ["type", "media_status", "tenant"]
    search_fields = ["phone", "wa_user_id", "text", "provider_message_id"]
    list_select_related = ["campaign", "connection", "tenant"]
    raw_id_fields = ["contact", "delivery", "campaign", "webhook_event", "media"]
    date_hierarchy = "received_at"
    readonly_fields = [f.name for f in InboundMessage._meta.fields]

    @admin.display(description=_("text"))
    def short_text(self, obj: InboundMessage) -> str:
        return obj.text[:80]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
