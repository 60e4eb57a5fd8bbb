"""Forms of the campaign pages. Choices are limited to the request's tenant."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from campaigns.models import Connection, clean_tags
from media.models import Asset
from sense.models import Tenant


def parse_tags(raw: str) -> list[str]:
    """Tags typed in a form, separated by commas (or `|`, as in CSV files), cleaned like
    every other way tags come in (`clean_tags`)."""
    return clean_tags(raw.replace("|", ",").split(","))


class CampaignForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=200)
    connection = forms.ModelChoiceField(label=_("Connection"), queryset=Connection.objects.none())
    message = forms.CharField(
        label=_("Message"),
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text=_("Placeholders: {{name}}, {{phone}} and {{attribute}} for any contact attribute."),
        max_length=4096,
    )
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

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        connections = Connection.objects.for_tenant(tenant).filter(is_active=True)
        self.fields["connection"].queryset = connections  # type: ignore[attr-defined]
        # Files contacts sent stay out of the picker: they are theirs, not the tenant's creatives.
        self.fields["asset"].queryset = Asset.objects.for_tenant(tenant).filter(  # type: ignore[attr-defined]
            status=Asset.Status.READY, origin=Asset.Origin.UPLOAD
        )

    def clean_tags(self) -> list[str]:
        return parse_tags(self.cleaned_data.get("tags") or "")


class ContactImportForm(forms.Form):
    file = forms.FileField(label=_("CSV file"), help_text=_("UTF-8 or Latin-1, comma or semicolon; a phone column."))
