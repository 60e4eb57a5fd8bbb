"""`seed_demo` adds contacts, a connection and campaigns in several states, with no network:
the connection is the sandbox where it is on, so starting the demo draft shows the job."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from django.contrib.auth.models import User

from campaigns import demo
from campaigns.models import Campaign, Connection, Contact, Delivery
from sense.models import Tenant


@pytest.mark.parametrize("sandbox", [True, False], ids=["sandbox on", "sandbox off"])
def test_it_seeds_campaigns_in_several_states_with_exact_counters(
    db: Any, monkeypatch: Any, settings: Any, sandbox: bool
) -> None:
    import httpx

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the seed made a network call")

    monkeypatch.setattr(httpx.Client, "send", no_network)
    settings.SANDBOX_ENABLED = sandbox
    tenant = Tenant.objects.create(slug="demo", name="Demo")
    user = User.objects.create_user("admin")
    notes: list[str] = []
    demo.seed(tenant=tenant, user=user, log=notes.append)
    demo.seed(tenant=tenant, user=user, log=notes.append)  # twice: nothing added

    assert Contact.objects.filter(tenant=tenant).count() == 40
    assert Contact.objects.filter(tenant=tenant, opted_out=True).exists()
    connection = Connection.objects.get(tenant=tenant)
    assert connection.provider == ("sandbox" if sandbox else "evolution")
    assert set(Campaign.objects.filter(tenant=tenant).values_list("connection", flat=True)) == {connection.pk}
    statuses = set(Campaign.objects.filter(tenant=tenant).values_list("status", flat=True))
    assert statuses == {"draft", "scheduled", "paused", "finished", "cancelled"}
    for campaign in Campaign.objects.filter(tenant=tenant):
        counts: Counter[str] = Counter()
        rows = list(Delivery.objects.filter(campaign=campaign).values_list("status", flat=True))
        for status in rows:
            for name in Delivery.COUNTERS[status]:
                counts[name] += 1
        expected = {name: counts[name] for name in Campaign.STAT_NAMES if name != "total"}
        assert {k: v for k, v in campaign.stats.items() if k != "total"} == expected
        assert campaign.stat_total == len(rows)
        assert not Delivery.objects.filter(campaign=campaign, contact__opted_out=True).exists()
    if sandbox:
        assert len(notes) == 2
    else:  # the first run says why the demo cannot send as it is
        assert len(notes) == 3 and "SANDBOX_ENABLED" in notes[0]
