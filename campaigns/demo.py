"""Demo data for `seed_demo`: contacts, one connection and campaigns in several states.

The connection is a sandbox one (campaigns/providers/sandbox.py), so starting the demo draft
shows messages go from sent to delivered to read within a minute, with nothing installed;
where the sandbox is switched off (SANDBOX_ENABLED) it is an Evolution connection to fill in.
No network call happens here: nothing is started. The paused and finished campaigns get
deliveries written directly with their outcomes, and counters computed from them.
Running it again changes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from campaigns import services
from campaigns.models import Campaign, Connection, Contact, Delivery
from sense.models import Tenant

FIRST = ["Ana", "Bruno", "Carla", "Diego", "Elisa", "Fábio", "Gabriela", "Heitor", "Isabela", "João"]
LAST = ["Silva", "Souza", "Oliveira", "Santos", "Pereira", "Lima"]
CITIES = ["São Paulo", "Rio de Janeiro", "Belo Horizonte", "Curitiba", "Recife"]
MESSAGE = "Olá {{name}}! Temos novidades para você em {{city}}."
SANDBOX_NAME = "Demo sandbox"
# Messages per minute of the demo connection: the draft's 37 messages go out in about 20 s,
# slowly enough to watch "sent" climb, while delivered and read follow a few seconds behind.
SANDBOX_RATE = 120


def _phone(i: int) -> str:
    return f"+55119{87650000 + i:08d}"


@transaction.atomic
def seed(*, tenant: Tenant, user: Any, log: Callable[[str], None]) -> None:
    contacts = []
    for i in range(40):
        name = f"{FIRST[i % len(FIRST)]} {LAST[i % len(LAST)]}"
        tags = ["clientes"] + (["vip"] if i % 5 == 0 else [])
        contact, _ = Contact.objects.get_or_create(
            tenant=tenant,
            phone=_phone(i),
            defaults={
                "name": name,
                "tags": tags,
                "attributes": {"city": CITIES[i % len(CITIES)]},
                "opted_out": i % 13 == 12,
            },
        )
        contacts.append(contact)

    connection = _connection(tenant, log)

    now = timezone.now()
    specs = [
        ("Boas-vindas (rascunho)", Campaign.Status.DRAFT, None),
        ("Promoção de sexta (agendada)", Campaign.Status.SCHEDULED, now + timedelta(days=2)),
        ("Pesquisa de satisfação (pausada)", Campaign.Status.PAUSED, None),
        ("Lançamento VIP (concluída)", Campaign.Status.FINISHED, None),
        ("Aviso antigo (cancelada)", Campaign.Status.CANCELLED, None),
    ]
    created = 0
    for name, status, scheduled_at in specs:
        if Campaign.objects.filter(tenant=tenant, name=name).exists():
            continue
        campaign = Campaign.objects.create(
            tenant=tenant,
            name=name,
            connection=connection,
            message=MESSAGE,
            tags=["vip"] if "VIP" in name else [],
            scheduled_at=scheduled_at,
            status=status,
            created_by=user,
        )
        if status in (Campaign.Status.PAUSED, Campaign.Status.FINISHED, Campaign.Status.CANCELLED):
            _deliveries(campaign, contacts, status)
        created += 1
    log(f"Campaigns: {len(contacts)} contacts, connection {connection.name!r}, {created} campaign(s) added.")


def _connection(tenant: Tenant, log: Callable[[str], None]) -> Connection:
    """The demo campaigns' connection: the sandbox where it is on, else an Evolution one."""
    if settings.SANDBOX_ENABLED:
        connection = Connection.objects.filter(tenant=tenant, name=SANDBOX_NAME).first()
        return connection or services.connection_create(
            tenant=tenant,
            name=SANDBOX_NAME,
            provider=Connection.Provider.SANDBOX,
            credentials={},
            rate_per_minute=SANDBOX_RATE,
        )
    connection = Connection.objects.filter(tenant=tenant, name="Demo Evolution").first()
    if connection is None:
        log(
            "SANDBOX_ENABLED is off: the demo campaigns use an Evolution connection to "
            "http://127.0.0.1:8080; set its URL and credentials in the admin before starting one."
        )
        connection = services.connection_create(
            tenant=tenant,
            name="Demo Evolution",
            provider=Connection.Provider.EVOLUTION,
            base_url="http://127.0.0.1:8080",
            credentials={"instance": "demo", "api_key": "change-me"},
            rate_per_minute=60,
        )
    return connection


def _deliveries(campaign: Campaign, contacts: list[Contact], status: str) -> None:
    """Deliveries with plausible outcomes for a campaign that has (partly) run."""
    now = timezone.now()
    audience = [c for c in contacts if not c.opted_out and (not campaign.tags or set(c.tags) & set(campaign.tags))]
    if status == Campaign.Status.FINISHED:
        cycle = [Delivery.Status.READ, Delivery.Status.DELIVERED, Delivery.Status.DELIVERED, Delivery.Status.FAILED]
    elif status == Campaign.Status.PAUSED:
        cycle = [Delivery.Status.READ, Delivery.Status.SENT, Delivery.Status.PENDING, Delivery.Status.PENDING]
    else:
        cycle = [Delivery.Status.SENT, Delivery.Status.CANCELLED, Delivery.Status.CANCELLED]
    rows = []
    for i, contact in enumerate(audience):
        outcome = cycle[i % len(cycle)]
        sent = outcome in (Delivery.Status.SENT, Delivery.Status.DELIVERED, Delivery.Status.READ)
        rows.append(
            Delivery(
                tenant_id=campaign.tenant_id,
                campaign=campaign,
                contact=contact,
                phone=contact.phone,
                text=services.render_message(campaign.message, contact),
                status=outcome,
                attempts=1 if outcome != Delivery.Status.PENDING and outcome != Delivery.Status.CANCELLED else 0,
                provider_message_id=f"DEMO{campaign.pk.hex[:8]}{i:04d}" if sent else None,
                sent_at=now - timedelta(hours=2) if sent else None,
                delivered_at=now - timedelta(hours=1)
                if outcome in (Delivery.Status.DELIVERED, Delivery.Status.READ)
                else None,
                read_at=now - timedelta(minutes=30) if outcome == Delivery.Status.READ else None,
                failed_at=now - timedelta(hours=2) if outcome == Delivery.Status.FAILED else None,
                error_code="131026" if outcome == Delivery.Status.FAILED else "",
                error_message="(#131026) Message undeliverable" if outcome == Delivery.Status.FAILED else "",
            )
        )
    Delivery.objects.bulk_create(rows)
    counts: Counter[str] = Counter()
    for row in rows:
        for name in Delivery.COUNTERS[row.status]:
            counts[name] += 1
    Campaign.objects.filter(pk=campaign.pk).update(
        stat_total=len(rows),
        started_at=now - timedelta(hours=3),
        finished_at=now - timedelta(hours=1) if status != Campaign.Status.PAUSED else None,
        pause_reason="Paused by the operator." if status == Campaign.Status.PAUSED else "",
        **{f"stat_{name}": counts[name] for name in Campaign.STAT_NAMES if name != "total"},
    )
