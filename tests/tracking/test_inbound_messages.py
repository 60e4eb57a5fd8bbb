"""Inbound webhooks become InboundMessage rows: contacts, duplicates, reply attribution and
the `replied` counter, live frames, opt-out keywords and the provider's own opt-outs."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from campaigns import inbound, tracking
from campaigns.models import (
    Campaign,
    Connection,
    ConsentEvent,
    ConsentSettings,
    Contact,
    Delivery,
    InboundMessage,
    WebhookEvent,
)
from campaigns.services import campaign_recalc_stats
from tests.tracking.conftest import APP_SECRET, make_campaign, make_deliveries, post_evolution, process_all, stats
from tests.webhook_payloads import (
    cloud_inbound,
    cloud_message,
    cloud_notification,
    cloud_status,
    cloud_user_preferences,
    dumps,
    evolution_message_item,
    evolution_update,
    evolution_upsert,
    sign,
)

PHONE = "+5511999990000"


def post_cloud(connection: Connection, payload: Any) -> Any:
    body = dumps(payload)
    return Client().post(
        f"/api/webhooks/whatsapp/{connection.webhook_token}/",
        body,
        content_type="application/json",
        headers={"X-Hub-Signature-256": sign(APP_SECRET, body)},
    )


def text(body: str, **kwargs: Any) -> dict[str, Any]:
    return evolution_upsert(evolution_message_item({"conversation": body}, **kwargs))


def contact_delivery(campaign: Campaign, contact: Contact, *, sent_ago: timedelta = timedelta(hours=1)) -> Delivery:
    [delivery] = make_deliveries(campaign, 1)
    Delivery.objects.filter(pk=delivery.pk).update(
        contact=contact, phone=contact.phone, sent_at=timezone.now() - sent_ago
    )
    delivery.refresh_from_db()
    return delivery


@pytest.fixture
def maria(acme: Any) -> Contact:
    return Contact.objects.create(tenant=acme, phone=PHONE, name="Maria Silva")


@pytest.fixture
def frames(monkeypatch: Any) -> list[dict[str, Any]]:
    from sense import realtime

    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(realtime, "broadcast", lambda tenant_id, message: sent.append(message))
    return sent


@pytest.fixture
def media_jobs(monkeypatch: Any) -> list[int]:
    jobs: list[int] = []
    monkeypatch.setattr(inbound, "_enqueue_media", jobs.append)
    return jobs


class TestStoring:
    def test_a_text_from_a_known_contact(self, evolution_connection: Connection, maria: Contact) -> None:
        assert post_evolution(evolution_connection, text("Oi!", timestamp=1_764_000_000)).status_code == 200
        process_all()

        message = InboundMessage.objects.get()
        assert (message.contact_id, message.connection_id, message.tenant_id) == (
            maria.pk,
            evolution_connection.pk,
            maria.tenant_id,
        )
        assert (message.type, message.text, message.phone, message.profile_name) == ("text", "Oi!", PHONE, "Maria")
        assert int(message.received_at.timestamp()) == 1_764_000_000  # the provider's time
        assert message.campaign_id is None and message.delivery_id is None
        assert WebhookEvent.objects.get().status == "processed"
        assert message.webhook_event_id == WebhookEvent.objects.get().pk

    def test_an_unknown_sender_becomes_a_contact(self, evolution_connection: Connection) -> None:
        post_evolution(evolution_connection, text("Oi!", push_name="Joana Dias"))
        process_all()

        contact = Contact.objects.get()
        assert (contact.phone, contact.name, contact.source, contact.opted_out) == (
            PHONE,
            "Joana Dias",
            "inbound",
            False,
        )
        assert InboundMessage.objects.get().contact_id == contact.pk

    def test_the_same_message_twice_is_stored_once(self, evolution_connection: Connection) -> None:
        for _ in range(2):
            post_evolution(evolution_connection, text("Oi!", message_id="3EB0TWICE"))
        process_all()
        post_evolution(evolution_connection, text("Oi!", message_id="3EB0TWICE"))
        tracking.process_pending()

        assert InboundMessage.objects.count() == 1
        assert Contact.objects.count() == 1
        assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"processed"}

    def test_the_same_message_twice_in_one_batch_is_stored_once(self, evolution_connection: Connection) -> None:
        item = evolution_message_item({"conversation": "Oi!"}, message_id="3EB0TWICE")
        post_evolution(evolution_connection, evolution_upsert(item, item))
        post_evolution(evolution_connection, evolution_upsert(item))
        assert tracking.process_pending() == 2

        assert InboundMessage.objects.count() == 1

    def test_data_as_an_array_stores_each_message(self, evolution_connection: Connection) -> None:
        items = [
            evolution_message_item({"conversation": "um"}, message_id="B1"),
            evolution_message_item(
                {"conversation": "dois"}, message_id="B2", remote_jid="5511977770000@s.whatsapp.net"
            ),
        ]
        post_evolution(evolution_connection, evolution_upsert(*items))
        process_all()

        assert sorted(InboundMessage.objects.values_list("text", "phone")) == [
            ("dois", "+5511977770000"),
            ("um", PHONE),
        ]

    def test_an_lid_sender_is_matched_by_its_phone(self, evolution_connection: Connection, maria: Contact) -> None:
        item = evolution_message_item(
            {"conversation": "Oi"},
            remote_jid="123456789012345@lid",
            key_extra={"senderPn": "5511999990000@s.whatsapp.net"},
        )
        post_evolution(evolution_connection, evolution_upsert(item))
        process_all()

        message = InboundMessage.objects.get()
        assert (message.contact_id, message.wa_user_id) == (maria.pk, "123456789012345@lid")

    def test_group_messages_and_echoes_are_stored_as_ignored(self, evolution_connection: Connection) -> None:
        group = evolution_message_item({"conversation": "Oi grupo"}, remote_jid="120363025246125888@g.us")
        echo = evolution_message_item({"conversation": "Hello"}, from_me=True)
        assert post_evolution(evolution_connection, evolution_upsert(group)).json()["status"] == "ignored"
        assert post_evolution(evolution_connection, evolution_upsert(echo)).json()["status"] == "ignored"
        process_all()

        assert not InboundMessage.objects.exists() and not Contact.objects.exists()

    def test_a_cloud_username_user_is_kept_without_a_contact(self, cloud_connection: Connection) -> None:
        item = cloud_message({"text": {"body": "Oi"}}, sender="")
        item["from_user_id"] = "BR.1502576394655843"
        post_cloud(cloud_connection, cloud_inbound(item, wa_id="", user_id="BR.1502576394655843"))
        process_all()

        message = InboundMessage.objects.get()
        assert (message.phone, message.wa_user_id, message.contact_id) == ("", "BR.1502576394655843", None)
        assert not Contact.objects.exists()

    def test_a_frame_follows_each_message_after_commit(
        self,
        evolution_connection: Connection,
        maria: Contact,
        frames: list[dict[str, Any]],
        django_capture_on_commit_callbacks: Any,
    ) -> None:
        post_evolution(evolution_connection, text("Oi!"))
        with django_capture_on_commit_callbacks(execute=True):
            process_all()

        message = InboundMessage.objects.get()
        assert [f for f in frames if f["type"] == "inbound.message"] == [
            {"type": "inbound.message", "contact_id": maria.pk, "campaign_id": None, "id": message.pk}
        ]


class TestReplies:
    def test_a_reply_quoting_our_message_belongs_to_its_delivery(
        self, evolution_connection: Connection, campaign: Campaign, maria: Contact
    ) -> None:
        delivery = contact_delivery(campaign, maria, sent_ago=timedelta(days=10))  # quoted: no window
        part = {"extendedTextMessage": {"text": "Sim!", "contextInfo": {"stanzaId": delivery.provider_message_id}}}
        post_evolution(evolution_connection, evolution_upsert(evolution_message_item(part, timestamp=1_764_000_000)))
        process_all()

        message = InboundMessage.objects.get()
        assert (message.delivery_id, message.campaign_id) == (delivery.pk, campaign.pk)
        assert message.quoted_provider_message_id == delivery.provider_message_id
        delivery.refresh_from_db()
        assert int(delivery.replied_at.timestamp()) == 1_764_000_000  # type: ignore[union-attr]
        assert stats(campaign)["replied"] == 1

    def test_an_unquoted_message_belongs_to_the_latest_delivery_within_the_window(
        self, evolution_connection: Connection, maria: Contact
    ) -> None:
        older, newer = make_campaign(evolution_connection, "Older"), make_campaign(evolution_connection, "Newer")
        contact_delivery(older, maria, sent_ago=timedelta(hours=30))
        latest = contact_delivery(newer, maria, sent_ago=timedelta(hours=2))
        post_evolution(evolution_connection, text("Quanto custa?"))
        process_all()

        assert InboundMessage.objects.get().delivery_id == latest.pk
        assert (stats(older)["replied"], stats(newer)["replied"]) == (0, 1)

    def test_a_message_after_the_window_belongs_to_no_campaign(
        self, evolution_connection: Connection, campaign: Campaign, maria: Contact, settings: Any
    ) -> None:
        settings.REPLY_ATTRIBUTION_HOURS = 24
        contact_delivery(campaign, maria, sent_ago=timedelta(hours=25))
        post_evolution(evolution_connection, text("Oi"))
        process_all()

        assert InboundMessage.objects.get().campaign_id is None
        assert stats(campaign)["replied"] == 0

    def test_a_message_to_another_number_is_not_a_reply(
        self, acme: Any, evolution_connection: Connection, campaign: Campaign, maria: Contact
    ) -> None:
        from tests.tracking.conftest import make_connection

        other = make_connection(acme, Connection.Provider.EVOLUTION, instance="acme-other")
        contact_delivery(campaign, maria)
        post_evolution(other, evolution_upsert(evolution_message_item({"conversation": "Oi"}), instance="acme-other"))
        process_all()

        assert InboundMessage.objects.get().campaign_id is None

    def test_only_the_first_reply_counts(
        self, evolution_connection: Connection, campaign: Campaign, maria: Contact
    ) -> None:
        delivery = contact_delivery(campaign, maria)
        now = int(timezone.now().timestamp())
        post_evolution(evolution_connection, text("Sim", message_id="R2", timestamp=now - 60))
        post_evolution(evolution_connection, text("Quero", message_id="R1", timestamp=now - 120))
        tracking.process_pending()
        post_evolution(evolution_connection, text("Obrigado", message_id="R3", timestamp=now))
        tracking.process_pending()

        assert InboundMessage.objects.filter(delivery=delivery).count() == 3
        delivery.refresh_from_db()
        assert int(delivery.replied_at.timestamp()) == now - 120  # type: ignore[union-attr]
        assert stats(campaign)["replied"] == 1
        assert campaign_recalc_stats(campaign_ids=[campaign.pk], fix=False) == []

    def test_cloud_replies_with_context(
        self, cloud_connection: Connection, cloud_campaign: Campaign, maria: Contact
    ) -> None:
        delivery = contact_delivery(cloud_campaign, maria)
        reply = {"interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Sim"}}}
        post_cloud(cloud_connection, cloud_inbound(cloud_message(reply, context_id=delivery.provider_message_id or "")))
        process_all()

        message = InboundMessage.objects.get()
        assert (message.type, message.text, message.delivery_id) == ("interactive", "Sim", delivery.pk)
        assert stats(cloud_campaign)["replied"] == 1

    def test_the_stats_frame_carries_replied(
        self,
        evolution_connection: Connection,
        campaign: Campaign,
        maria: Contact,
        frames: list[dict[str, Any]],
        django_capture_on_commit_callbacks: Any,
        monkeypatch: Any,
    ) -> None:
        from campaigns import live

        marked: list[Any] = []
        monkeypatch.setattr(inbound, "broadcast_stats_on_commit", marked.append)
        contact_delivery(campaign, maria)
        post_evolution(evolution_connection, text("Oi"))
        with django_capture_on_commit_callbacks(execute=True):
            process_all()
        assert marked == [campaign.pk]
        live._publish_stats({campaign.pk})

        [stats_frame] = [f for f in frames if f["type"] == "campaign.stats"]
        assert stats_frame["stats"]["replied"] == 1
        [frame] = [f for f in frames if f["type"] == "inbound.message"]
        assert frame["campaign_id"] == str(campaign.pk)

    def test_counters_equal_a_recount_after_a_storm(
        self, evolution_connection: Connection, campaign: Campaign, acme: Any
    ) -> None:
        rng = random.Random(13)
        contacts = [Contact.objects.create(tenant=acme, phone=f"+55119888{n:05d}") for n in range(30)]
        deliveries = [contact_delivery(campaign, c) for c in contacts]
        bodies: list[dict[str, Any]] = []
        for n in range(150):
            delivery = rng.choice(deliveries)
            if rng.random() < 0.5:
                status = rng.choice(["SERVER_ACK", "DELIVERY_ACK", "READ", "ERROR", "PLAYED"])
                bodies.append(evolution_update(delivery.provider_message_id, status))
            else:
                quoted = {"stanzaId": delivery.provider_message_id} if rng.random() < 0.5 else None
                bodies.append(
                    evolution_upsert(
                        evolution_message_item(
                            {"conversation": rng.choice(["Oi", "Quanto?", "👍"])},
                            message_id=f"STORM{n % 120}",  # some sent twice
                            remote_jid=delivery.phone.lstrip("+") + "@s.whatsapp.net",
                            context=quoted,
                        )
                    )
                )
        for body in bodies:
            post_evolution(evolution_connection, body)
        while tracking.process_pending(limit=rng.randint(1, 25)):
            pass

        assert not WebhookEvent.objects.filter(status__in=["pending", "failed"]).exists()
        assert campaign_recalc_stats(campaign_ids=[campaign.pk], fix=False) == []
        replied = Delivery.objects.filter(campaign=campaign, replied_at__isnull=False).count()
        assert 0 < replied == stats(campaign)["replied"]
        sent_ids = {b["data"]["key"]["id"] for b in bodies if b["event"] == "messages.upsert"}
        assert InboundMessage.objects.count() == len(sent_ids)  # each message once


class TestKeywords:
    @pytest.mark.parametrize(
        ("body", "opted_out"),
        [
            ("SAIR", True),
            ("Sair", True),
            (" sair! ", True),
            ("PARAR", True),
            ("stop", True),
            ("Descadastrar.", True),
            ("quero sair daqui", False),
            ("não", False),
        ],
    )
    def test_opt_out_keywords(
        self, evolution_connection: Connection, maria: Contact, body: str, opted_out: bool
    ) -> None:
        post_evolution(evolution_connection, text(body))
        process_all()

        maria.refresh_from_db()
        assert maria.opted_out is opted_out
        if opted_out:
            event = ConsentEvent.objects.get()
            assert (event.opted_out, event.source, event.inbound_id) == (
                True,
                "keyword",
                InboundMessage.objects.get().pk,
            )
            assert maria.opt_out_source == "keyword"
        else:
            assert not ConsentEvent.objects.exists()

    def test_a_resubscribe_keyword_opts_back_in(self, evolution_connection: Connection, maria: Contact) -> None:
        now = int(timezone.now().timestamp())
        post_evolution(evolution_connection, text("SAIR", message_id="K1", timestamp=now - 5))
        post_evolution(evolution_connection, text("Voltar", message_id="K2", timestamp=now))
        tracking.process_pending()

        maria.refresh_from_db()
        assert maria.opted_out is False
        assert list(ConsentEvent.objects.order_by("at", "pk").values_list("opted_out", "source")) == [
            (True, "keyword"),
            (False, "keyword"),
        ]

    def test_an_opt_out_during_a_running_campaign_cancels_exactly_its_pending_deliveries(
        self, evolution_connection: Connection, campaign: Campaign, maria: Contact, acme: Any
    ) -> None:
        other = Contact.objects.create(tenant=acme, phone="+5511977770000")
        second = make_campaign(evolution_connection, "Second")
        pending = make_deliveries(campaign, 1, status=Delivery.Status.PENDING)[0]
        Delivery.objects.filter(pk=pending.pk).update(contact=maria, phone=maria.phone)
        later = make_deliveries(second, 2, status=Delivery.Status.PENDING)
        Delivery.objects.filter(pk=later[0].pk).update(contact=maria, phone=maria.phone)
        Delivery.objects.filter(pk=later[1].pk).update(contact=other, phone=other.phone)
        sent = contact_delivery(make_campaign(evolution_connection, "Earlier"), maria)

        post_evolution(evolution_connection, text("SAIR"))
        process_all()

        statuses = dict(Delivery.objects.values_list("pk", "status"))
        assert statuses == {pending.pk: "cancelled", later[0].pk: "cancelled", later[1].pk: "pending", sent.pk: "sent"}
        assert Delivery.objects.get(pk=pending.pk).error_code == "opted_out"
        assert (stats(campaign)["cancelled"], stats(campaign)["pending"]) == (1, 0)
        assert (stats(second)["cancelled"], stats(second)["pending"]) == (1, 1)
        assert Delivery.objects.get(pk=sent.pk).replied_at is not None  # the SAIR answered it
        assert campaign_recalc_stats(campaign_ids=[campaign.pk, second.pk, sent.campaign_id], fix=False) == []

    def test_the_confirmation_is_queued_once(
        self,
        evolution_connection: Connection,
        maria: Contact,
        acme: Any,
        django_capture_on_commit_callbacks: Any,
        monkeypatch: Any,
    ) -> None:
        ConsentSettings.objects.create(tenant=acme, opt_out_reply="Pronto, você não receberá mais mensagens.")
        queued: list[int] = []
        monkeypatch.setattr(inbound, "_enqueue_confirmation", queued.append)
        post_evolution(evolution_connection, text("SAIR", message_id="C1"))
        post_evolution(evolution_connection, text("sair", message_id="C2"))  # already out: no change, no text
        with django_capture_on_commit_callbacks(execute=True):
            process_all()

        event = ConsentEvent.objects.get()
        assert queued == [event.pk]
        assert event.confirmation == "queued"

    def test_no_confirmation_without_a_text(
        self,
        evolution_connection: Connection,
        maria: Contact,
        django_capture_on_commit_callbacks: Any,
        monkeypatch: Any,
    ) -> None:
        queued: list[int] = []
        monkeypatch.setattr(inbound, "_enqueue_confirmation", queued.append)
        post_evolution(evolution_connection, text("SAIR"))
        with django_capture_on_commit_callbacks(execute=True):
            process_all()

        assert queued == [] and ConsentEvent.objects.get().confirmation == ""


class TestProviderOptOuts:
    def test_user_preferences_stop_and_resume(self, cloud_connection: Connection, maria: Contact) -> None:
        post_cloud(cloud_connection, cloud_user_preferences(value="stop"))
        process_all()
        maria.refresh_from_db()
        assert (maria.opted_out, maria.opt_out_source) == (True, "provider")

        post_cloud(cloud_connection, cloud_user_preferences(value="resume"))
        process_all()
        maria.refresh_from_db()
        assert maria.opted_out is False
        assert list(ConsentEvent.objects.order_by("at", "pk").values_list("opted_out", "source")) == [
            (True, "provider"),
            (False, "provider"),
        ]

    def test_user_preferences_for_an_unknown_number_change_nothing(self, cloud_connection: Connection) -> None:
        post_cloud(cloud_connection, cloud_user_preferences(wa_id="5511955550000"))
        process_all()

        assert not Contact.objects.exists() and not ConsentEvent.objects.exists()
        assert WebhookEvent.objects.get().status == "processed"

    def test_a_send_failed_with_131050_opts_out(
        self,
        cloud_connection: Connection,
        cloud_campaign: Campaign,
        maria: Contact,
        django_capture_on_commit_callbacks: Any,
    ) -> None:
        delivery = contact_delivery(cloud_campaign, maria)
        item = cloud_status(delivery.provider_message_id, "failed", error=(131050, "User stopped marketing messages"))
        post_cloud(cloud_connection, cloud_notification([item]))
        with django_capture_on_commit_callbacks(execute=True):  # the opt-out follows the batch's commit
            process_all()

        maria.refresh_from_db()
        assert (maria.opted_out, maria.opt_out_source) == (True, "provider")
        assert ConsentEvent.objects.get().source == "provider"


def _batch_queries(connection_: Connection, campaign: Campaign, acme: Any, n: int, start: int) -> int:
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    contacts = [Contact.objects.create(tenant=acme, phone=f"+55119777{start + i:05d}") for i in range(n)]
    for i, contact in enumerate(contacts):
        delivery = contact_delivery(campaign, contact)
        quoted = {"stanzaId": delivery.provider_message_id} if i % 2 else None
        item = evolution_message_item(
            {"conversation": "Oi"},
            message_id=f"Q{start + i}",
            remote_jid=contact.phone.lstrip("+") + "@s.whatsapp.net",
            context=quoted,
        )
        post_evolution(connection_, evolution_upsert(item))
        stranger = evolution_message_item(
            {"conversation": "Quem é?"},
            message_id=f"S{start + i}",
            remote_jid=f"55119666{start + i:05d}@s.whatsapp.net",
        )
        post_evolution(connection_, evolution_upsert(stranger))  # a new contact each
    with CaptureQueriesContext(db) as queries:
        assert tracking.process_pending(limit=500) == 2 * n
    return len(queries.captured_queries)


def test_a_batch_of_inbound_messages_costs_the_same_queries_whatever_its_size(
    evolution_connection: Connection, campaign: Campaign, acme: Any
) -> None:
    small = _batch_queries(evolution_connection, campaign, acme, 3, 0)
    large = _batch_queries(evolution_connection, campaign, acme, 30, 100)

    assert large == small
    assert stats(campaign)["replied"] == 33
    assert campaign_recalc_stats(campaign_ids=[campaign.pk], fix=False) == []


def test_the_recount_counts_replies_from_replied_at(
    evolution_connection: Connection, campaign: Campaign, maria: Contact
) -> None:
    from django.core.management import call_command

    delivery = contact_delivery(campaign, maria)
    Delivery.objects.filter(pk=delivery.pk).update(replied_at=timezone.now())  # no counter change: a drift

    [drift] = campaign_recalc_stats(campaign_ids=[campaign.pk], fix=False)
    assert (drift.before["replied"], drift.after["replied"]) == (0, 1)
    call_command("recalc_campaign_stats", "--campaign", str(campaign.pk))
    assert stats(campaign)["replied"] == 1
