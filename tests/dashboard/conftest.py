"""Campaign data made directly with the models, so page tests need no worker or provider."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from campaigns.models import Campaign, Connection, Contact, Delivery, DeliveryEvent
from sense.models import Tenant
from tests.conftest import PASSWORD


def login(username: str, language: str = "en") -> Client:
    """A logged-in client. Pages speak pt-BR by default (LANGUAGE_CODE); tests ask for English
    unless they check the translation (tests/dashboard/test_translation.py)."""
    client = Client(HTTP_ACCEPT_LANGUAGE=language)
    assert client.login(username=username, password=PASSWORD)
    return client


@pytest.fixture
def alice_client(alice: User) -> Client:
    return login("alice")


@pytest.fixture
def charlie_client(charlie: User) -> Client:
    return login("charlie")


def make_campaign(tenant: Tenant, name: str = "Black Friday", deliveries: int = 3, **fields: Any) -> Campaign:
    connection = Connection.objects.create(
        tenant=tenant,
        name=f"{tenant.slug} number",
        provider="evolution",
        base_url="http://127.0.0.1:9",
        credentials={"instance": "main", "api_key": "secret-key"},
    )
    campaign = Campaign.objects.create(tenant=tenant, name=name, connection=connection, message="Oi {{name}}", **fields)
    now = timezone.now()
    existing = Contact.objects.filter(tenant=tenant).count()  # several campaigns, distinct phones
    for n in range(deliveries):
        contact = Contact.objects.create(tenant=tenant, phone=f"+551199999{existing + n:04d}", name=f"Contact {n}")
        Delivery.objects.create(
            tenant=tenant, campaign=campaign, contact=contact, phone=contact.phone, text=f"Oi Contact {n}"
        )
    campaign.stat_total = campaign.stat_pending = deliveries
    campaign.save()
    first = Delivery.objects.filter(campaign=campaign).order_by("id").first()
    if first is not None:
        for status, minutes in (("sent", 3), ("delivered", 2), ("read", 1)):
            DeliveryEvent.objects.create(
                tenant=tenant,
                delivery=first,
                status=status,
                occurred_at=now - timedelta(minutes=minutes),
                event="messages.update",
            )
    return campaign


@pytest.fixture
def acme_campaign(acme: Tenant) -> Campaign:
    return make_campaign(acme)


@pytest.fixture
def globex_campaign(globex: Tenant) -> Campaign:
    return make_campaign(globex, name="Globex launch")
