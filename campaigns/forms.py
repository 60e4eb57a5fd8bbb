"""Forms of the campaign pages. Choices are limited to the request's tenant."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from campaigns.models import Campaign, Connection, MessageTemplate, clean_tags
from media.models import Asset
from sense.models import Tenant


def parse_tags(raw: str) -> list[str]:
    """Tags typed in a form, separated by commas (or `|`, as in CSV files), cleaned like
    every other way tags come in (`clean_tags`)."""
    return clean_tags(raw.replace("|", ",").split(","))


WEEKDAYS = [
    ("1", _("Mon")),
    ("2", _("Tue")),
    ("3", _("Wed")),
    ("4", _("Thu")),
    ("5", _("Fri")),
    ("6", _("Sat")),
    ("7", _("Sun")),
]


class CampaignForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=200)
    connection = forms.ModelChoiceField(label=_("Connection"), queryset=Connection.objects.none())
    message = forms.CharField(
        label=_("Message"),
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text=_("Placeholders: {{name}}, {{phone}} and {{attribute}} for any contact attribute."),
        max_length=4096,
        required=False,  # a template campaign has none (campaign_create says when one is missing)
    )
    # Cloud API connections: an approved message template, its parameters (posted as
    # "param:<key>" fields, see template_params) and its header's media.
    template = forms.ModelChoiceField(label=_("Template"), queryset=MessageTemplate.objects.none(), required=False)
    header_asset = forms.ModelChoiceField(label=_("Header media"), queryset=Asset.objects.none(), required=False)
    # Not "media": that name is Form.media (the form's own CSS and JS).
    asset = forms.ModelChoiceField(label=_("Media"), queryset=Asset.objects.none(), required=False)
    tags = forms.CharField(
        label=_("Audience tags"), required=False, help_text=_("Comma-separated; empty sends to every contact.")
    )
    scheduled_at = forms.DateTimeField(
        label=_("Schedule"),
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"],
        help_text=_("Leave empty to keep it as a draft and start it by hand."),
    )

    # Safe sending (campaigns.pacing); checked by campaigns.services.campaign_settings_clean.
    more_connections = forms.ModelMultipleChoiceField(
        label=_("More connections"),
        queryset=Connection.objects.none(),
        required=False,
        help_text=_("Numbers of the same provider to rotate across."),
    )
    rotation = forms.ChoiceField(
        label=_("Rotation"), choices=Campaign.Rotation.choices, initial="round_robin", required=False
    )
    interval_min_seconds = forms.IntegerField(
        required=False, label=_("Minimum interval (s)"), min_value=0, max_value=3600, initial=0
    )
    interval_max_seconds = forms.IntegerField(
        required=False,
        label=_("Maximum interval (s)"),
        min_value=0,
        max_value=3600,
        initial=0,
        help_text=_("Each number waits a random time in this range between two messages; 0 and 0: no interval."),
    )
    pause_every = forms.IntegerField(required=False, label=_("Break after every N messages"), min_value=0, initial=0)
    pause_seconds = forms.IntegerField(required=False, label=_("Break length (s)"), min_value=0, initial=0)
    typing_seconds = forms.IntegerField(
        required=False,
        label=_("Typing (s)"),
        min_value=0,
        max_value=60,
        initial=0,
        help_text=_("Evolution shows “typing…” first."),
    )
    window_days = forms.MultipleChoiceField(
        label=_("Send on"),
        choices=WEEKDAYS,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("None checked: any day and time."),
    )
    window_start = forms.TimeField(label=_("From"), required=False, widget=forms.TimeInput(attrs={"type": "time"}))
    window_end = forms.TimeField(label=_("Until"), required=False, widget=forms.TimeInput(attrs={"type": "time"}))
    skip_dates = forms.CharField(
        label=_("Skip dates"), required=False, help_text=_("Comma-separated, YYYY-MM-DD (holidays).")
    )
    variants = forms.CharField(
        label=_("Variants"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_("Up to 5 alternative texts, separated by a line with ---; used in turn with the message."),
    )

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        connections = Connection.objects.for_tenant(tenant).filter(is_active=True)
        self.fields["connection"].queryset = connections  # type: ignore[attr-defined]
        self.fields["more_connections"].queryset = connections  # type: ignore[attr-defined]
        # Files contacts sent stay out of the picker: they are theirs, not the tenant's creatives.
        self.fields["asset"].queryset = Asset.objects.for_tenant(tenant).filter(  # type: ignore[attr-defined]
            status=Asset.Status.READY, origin=Asset.Origin.UPLOAD
        )
        self.fields["header_asset"].queryset = self.fields["asset"].queryset  # type: ignore[attr-defined]
        self.fields["template"].queryset = MessageTemplate.objects.for_tenant(tenant).filter(  # type: ignore[attr-defined]
            status=MessageTemplate.Status.APPROVED
        )

    def template_params(self) -> dict[str, str]:
        """The parameter mappings posted as "param:<key>" fields."""
        return {k.removeprefix("param:"): v for k, v in self.data.items() if k.startswith("param:") and v.strip()}

    def clean_tags(self) -> list[str]:
        return parse_tags(self.cleaned_data.get("tags") or "")

    def clean_skip_dates(self) -> list[str]:
        return [d.strip() for d in (self.cleaned_data.get("skip_dates") or "").split(",") if d.strip()]

    def clean_variants(self) -> list[str]:
        raw = (self.cleaned_data.get("variants") or "").replace("\r\n", "\n")
        return [part.strip() for part in re.split(r"^\s*---\s*$", raw, flags=re.MULTILINE) if part.strip()]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        days, start, end = data.get("window_days"), data.get("window_start"), data.get("window_end")
        window = None
        if days or start or end:
            if not (start and end):
                self.add_error("window_end", _("Give both times of the send window."))
                return data
            window = {"days": [int(d) for d in days or range(1, 8)], "start": f"{start:%H:%M}", "end": f"{end:%H:%M}"}
        data["send_window"] = window
        return data

    def sending_settings(self) -> dict[str, Any]:
        """The cleaned settings as `campaign_create` takes them."""
        data = self.cleaned_data
        names = ["rotation", "interval_min_seconds", "interval_max_seconds", "pause_every", "pause_seconds"]
        names += ["typing_seconds", "send_window", "skip_dates", "variants"]
        values = {name: data.get(name) for name in names}
        values["rotation"] = values["rotation"] or Campaign.Rotation.ROUND_ROBIN
        for name in names[1:6]:
            values[name] = values[name] or 0
        return values

    # Which field shows a service refusal of each code.
    ERROR_FIELDS = {
        "invalid_rotation": "rotation",
        "invalid_interval": "interval_max_seconds",
        "invalid_pause": "pause_seconds",
        "invalid_typing": "typing_seconds",
        "invalid_send_window": "window_end",
        "invalid_skip_dates": "skip_dates",
        "invalid_variants": "variants",
        "mixed_providers": "more_connections",
        "invalid_connection": "connection",
    }


class ContactImportForm(forms.Form):
    file = forms.FileField(label=_("CSV file"), help_text=_("UTF-8 or Latin-1, comma or semicolon; a phone column."))


class ConsentActionForm(forms.Form):
    """An operator's consent change on the contact page. Opting back in needs a reason."""

    action = forms.ChoiceField(choices=[("opt_out", _("Opt out")), ("opt_in", _("Opt back in"))])
    reason = forms.CharField(
        label=_("Reason"),
        required=False,
        max_length=1000,
        widget=forms.TextInput(attrs={"placeholder": _("Why (required to opt back in)")}),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        data["reason"] = (data.get("reason") or "").strip()
        if data.get("action") == "opt_in" and not data["reason"]:
            self.add_error("reason", _("Say why this contact may receive messages again (a reason is required)."))
        return data


def _keywords(raw: str) -> list[str]:
    """Keywords typed one per line or separated by commas."""
    return clean_tags(raw.replace("\n", ",").split(","))


class ConsentSettingsForm(forms.Form):
    opt_out_keywords = forms.CharField(
        label=_("Opt-out keywords"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_(
            "One per line or comma-separated. A message that is exactly one of them (any case, accents "
            "or punctuation around it) opts its sender out."
        ),
    )
    opt_in_keywords = forms.CharField(
        label=_("Re-subscribe keywords"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("A message that is exactly one of them opts its sender back in."),
    )
    opt_out_reply = forms.CharField(
        label=_("Opt-out confirmation"),
        required=False,
        max_length=4096,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("Sent once to whoever opts out by keyword (empty: none is sent)."),
    )
    opt_in_reply = forms.CharField(
        label=_("Re-subscribe confirmation"),
        required=False,
        max_length=4096,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("Sent once to whoever re-subscribes by keyword (empty: none is sent)."),
    )

    @staticmethod
    def initial_for(current: Any) -> dict[str, Any]:
        return {
            "opt_out_keywords": "\n".join(current.opt_out_keywords),
            "opt_in_keywords": "\n".join(current.opt_in_keywords),
            "opt_out_reply": current.opt_out_reply,
            "opt_in_reply": current.opt_in_reply,
        }

    def clean_opt_out_keywords(self) -> list[str]:
        keywords = _keywords(self.cleaned_data.get("opt_out_keywords") or "")
        if not keywords:  # WhatsApp's Business Policy: people must always be able to opt out
            raise forms.ValidationError(_("Give at least one opt-out keyword."))
        return keywords

    def clean_opt_in_keywords(self) -> list[str]:
        return _keywords(self.cleaned_data.get("opt_in_keywords") or "")


class TestSendForm(forms.Form):
    """The campaign page's "Send test": one phone (checked by the service)."""

    phone = forms.CharField(
        label=_("Phone"),
        max_length=32,
        widget=forms.TextInput(attrs={"placeholder": "+5511999999999", "inputmode": "tel", "autocomplete": "tel"}),
    )


class ConnectionForm(forms.Form):
    """The connection page's settings an admin may change there (credentials, the base URL and
    the rate stay with the API and the admin). Checked again by `services.connection_update`."""

    name = forms.CharField(label=_("Name"), max_length=200)
    daily_limit = forms.IntegerField(
        label=_("Messages per day"),
        required=False,
        min_value=1,
        help_text=_("Every campaign together, per calendar day. Empty: no daily cap."),
    )
    is_active = forms.BooleanField(
        label=_("Active"), required=False, help_text=_("An inactive connection sends nothing and refuses webhooks.")
    )

    @staticmethod
    def initial_for(connection: Connection) -> dict[str, Any]:
        return {"name": connection.name, "daily_limit": connection.daily_limit, "is_active": connection.is_active}
