"""manage.py recalc_campaign_stats: proves the counters never drift, and repairs them if they do."""

from __future__ import annotations

import json
import random
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns import services, tracking
from campaigns.models import Campaign, Connection, Delivery
from campaigns.providers import StatusUpdate
from tests.helpers import manage
from tests.live import stack_env
from tests.tracking.conftest import make_campaign, make_connection, make_deliveries, stats


def run(*args: str) -> str:
    out = StringIO()
    call_command("recalc_campaign_stats", *args, stdout=out)
    return out.getvalue()


def storm(campaign: Campaign, rng: random.Random, count: int = 40) -> None:
    rows = make_deliveries(campaign, count)
    for _ in range(count * 4):
        delivery = rng.choice(rows)
        status = rng.choice(["sent", "delivered", "read", "failed", "pending"])
        update = StatusUpdate(str(delivery.provider_message_id), status, None, "E" if status == "failed" else "")
        with transaction.atomic():
            tracking.apply_updates(campaign.tenant_id, campaign.connection_id, [update], received_at=timezone.now())


def test_after_a_random_storm_check_reports_no_drift(campaign: Campaign, evolution_connection: Connection) -> None:
    rng = random.Random(7)
    other = make_campaign(evolution_connection, "Second")
    storm(campaign, rng)
    storm(other, rng)
    make_deliveries(other, 5, status=Delivery.Status.PENDING)
    make_deliveries(other, 3, status=Delivery.Status.CANCELLED)

    output = run("--all", "--check")

    assert "2 campaign(s) checked, 0 differ." in output


def test_check_detects_corrupted_counters_and_exits_1_without_fixing(campaign: Campaign) -> None:
    make_deliveries(campaign, 10)
    Campaign.objects.filter(pk=campaign.pk).update(stat_sent=3, stat_read=2)

    with pytest.raises(CommandError) as raised:
        run("--campaign", str(campaign.pk), "--check")

    assert raised.value.returncode == 1
    assert stats(campaign)["sent"] == 3  # unchanged


def test_it_prints_before_and_after_and_fixes(campaign: Campaign) -> None:
    make_deliveries(campaign, 10)
    make_deliveries(campaign, 2, status=Delivery.Status.FAILED)
    Campaign.objects.filter(pk=campaign.pk).update(stat_sent=3, stat_read=2, stat_total=99)

    output = run("--tenant", "acme")

    assert f"{campaign.pk} 'Black Friday': total 99 -> 12, sent 3 -> 10, read 2 -> 0" in output
    assert "1 campaign(s) checked, 1 fixed." in output
    assert stats(campaign) == {
        "total": 12,
        "pending": 0,
        "sent": 10,
        "delivered": 0,
        "read": 0,
        "failed": 2,
        "cancelled": 0,
        "unknown": 0,
        "replied": 0,
    }
    assert "0 differ" in run("--all", "--check")


def test_json_output(campaign: Campaign) -> None:
    make_deliveries(campaign, 4, status=Delivery.Status.PENDING)
    Campaign.objects.filter(pk=campaign.pk).update(stat_pending=0)

    with pytest.raises(CommandError):
        run("--all", "--check", "--json")
    out = StringIO()
    call_command("recalc_campaign_stats", "--all", "--json", stdout=out)

    data = json.loads(out.getvalue())
    assert data["checked"] == 1 and data["fixed"] is True
    [drift] = data["differed"]
    assert drift["id"] == str(campaign.pk)
    assert (drift["before"]["pending"], drift["after"]["pending"]) == (0, 4)


def test_one_aggregate_query_per_batch(campaign: Campaign, evolution_connection: Connection) -> None:
    for n in range(5):
        make_deliveries(make_campaign(evolution_connection, f"C{n}"), 3)

    with CaptureQueriesContext(connection) as queries:
        services.campaign_recalc_stats(
            campaign_ids=Campaign.objects.values_list("pk", flat=True), fix=False, batch_size=3
        )

    aggregates = [q for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert len(aggregates) == 2  # 6 campaigns in batches of 3


def test_a_campaign_without_deliveries_counts_zero(campaign: Campaign) -> None:
    Campaign.objects.filter(pk=campaign.pk).update(stat_total=5, stat_pending=5)
    run("--campaign", str(campaign.pk))
    assert stats(campaign)["total"] == 0


def test_another_tenants_campaigns_are_left_alone(campaign: Campaign, globex: Any) -> None:
    theirs = make_campaign(make_connection(globex, Connection.Provider.EVOLUTION))
    Campaign.objects.filter(pk=theirs.pk).update(stat_total=7)

    assert "1 campaign(s) checked, 0 fixed." in run("--tenant", "acme")
    assert stats(theirs)["total"] == 7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Say which campaigns"),
        (("--tenant", "nope"), "No tenant"),
        (("--campaign", "not-a-uuid"), "UUIDs"),
        (("--campaign", "00000000-0000-0000-0000-000000000000"), "No such campaign"),
    ],
)
def test_bad_arguments_are_clear_errors(db: Any, args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_the_command_line_exits_1_on_drift(transactional_db: Any, acme: Any) -> None:
    campaign = make_campaign(make_connection(acme, Connection.Provider.EVOLUTION))
    make_deliveries(campaign, 2)
    Campaign.objects.filter(pk=campaign.pk).update(stat_sent=0)

    result = manage("recalc_campaign_stats", "--all", "--check", env=stack_env())

    assert result.returncode == 1, result.stderr
    assert "sent 0 -> 2" in result.stdout


def test_the_admin_action_recounts_selected_campaigns(campaign: Campaign, admin_client: Any) -> None:
    make_deliveries(campaign, 3)
    Campaign.objects.filter(pk=campaign.pk).update(stat_sent=0)

    response = admin_client.post(
        "/admin/campaigns/campaign/", {"action": "recalc_stats", "_selected_action": [str(campaign.pk)]}, follow=True
    )

    assert response.status_code == 200
    assert "sent 0 -&gt; 3" in response.content.decode()
    assert stats(campaign)["sent"] == 3
