"""The sandbox provider: sends answer at once, the planned webhooks follow the configured mix,
are signed as Meta signs them and go through the real webhook view; SANDBOX_ENABLED off
refuses every way in; a sandbox webhook touches only its own tenant's deliveries."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from campaigns import sending, services, tracking, webhook_views
from campaigns.admin import ConnectionForm
from campaigns.models import Campaign, Connection, Delivery, DeliveryEvent, InboundMessage, PendingStatus, WebhookEvent
from campaigns.providers import CloudApiProvider, OutgoingMessage, ProviderError, provider_for, sandbox
from campaigns.providers.sandbox import ERRORS, Outcomes, SandboxProvider, derived_app_secret
from sense.errors import Conflict, ServiceError
from sense.lib import http
from sense.models import Tenant
from tests.conftest import ApiClient
from tests.tracking.conftest import make_campaign, make_deliveries, process_all
from tests.webhook_payloads import sign

FAST = "delivered_after=0-0,read_after=0-0"


@pytest.fixture(autouse=True)
def _sandbox_on(settings: Any) -> Iterator[None]:
    settings.SANDBOX_ENABLED = True
    http.reset_shared_client()
    webhook_views._connections.clear()
    yield
    webhook_views._connections.clear()
    http.reset_shared_client()


def sandbox_connection(tenant: Tenant, base_url: str = "http://127.0.0.1:9", **credentials: str) -> Connection:
    return Connection.objects.create(
        tenant=tenant,
        name=f"{tenant.slug} sandbox",
        provider=Connection.Provider.SANDBOX,
        base_url=base_url,
        credentials=credentials,
        rate_per_minute=0,
    )


class Chain:
    """Stands in for the broker: every webhook `schedule` would have a worker post later is
    posted at once, in order, so a message's whole plan runs inside the test."""

    def __init__(self) -> None:
        self.scheduled: list[tuple[str, str, str, float, list[dict[str, Any]]]] = []

    def __call__(self, connection_id: str, message_id: str, number: str, sent_at: float, steps: list[Any]) -> None:
        self.scheduled.append((connection_id, message_id, number, sent_at, steps))
        if steps:
            sandbox.post_next(
                connection_id=connection_id, message_id=message_id, number=number, sent_at=sent_at, steps=steps
            )


@pytest.fixture
def chain(monkeypatch: Any) -> Chain:
    runner = Chain()
    monkeypatch.setattr(sandbox, "schedule", runner)
    return runner


def send_through(connection: Connection, deliveries: list[Delivery], captured: Any) -> None:
    """What the sender does for each claimed (sending) delivery: send, then record the id."""
    provider = provider_for(connection)
    for delivery in deliveries:
        with captured(execute=True):
            result = provider.send(OutgoingMessage(phone=delivery.phone, text="Olá"))
        assert Delivery.move(
            delivery.pk, from_status="sending", to_status="sent", provider_message_id=result.message_id
        )


# --- The outcome mix ---------------------------------------------------------------------------


def statuses_of(plan: list[Any]) -> list[str]:
    return [step.event for step in plan]


def test_the_default_mix_is_meta_like() -> None:
    rng = random.Random(15)
    plans = [Outcomes().plan(rng) for _ in range(20_000)]
    final = Counter(next(e for e in reversed(statuses_of(p)) if e != "reply") for p in plans)
    reached = Counter(e for p in plans for e in statuses_of(p))

    assert all(statuses_of(p)[0] == "sent" for p in plans)
    assert abs(reached["failed"] / 20_000 - 0.03) < 0.005
    assert abs(reached["delivered"] / 20_000 - 0.95) < 0.007
    assert abs(reached["read"] / reached["delivered"] - 0.60) < 0.015
    assert abs(reached["reply"] / 20_000 - 0.05) < 0.006
    assert final["sent"] == 20_000 - reached["failed"] - reached["delivered"]  # ~2 % never delivered
    for plan in plans:
        assert [s.after for s in plan] == sorted(s.after for s in plan)
        by_event = {s.event: s.after for s in plan}
        if "delivered" in by_event:
            assert 1 <= by_event["delivered"] <= 5
        if "read" in by_event:
            assert 5 <= by_event["read"] - by_event["delivered"] <= 60
    codes = Counter(s.code for p in plans for s in p if s.event == "failed")
    assert set(codes) == set(ERRORS) and codes.most_common(1)[0][0] == 131026


def test_failed_100_fails_every_message_with_a_meta_error_code() -> None:
    rng = random.Random(1)
    plans = [Outcomes.parse("failed=100").plan(rng) for _ in range(500)]

    assert {tuple(statuses_of(p)) for p in plans} == {("sent", "failed")}
    assert {s.code for p in plans for s in p if s.event == "failed"} <= set(ERRORS)


def test_read_0_delivers_without_reads_or_replies() -> None:
    rng = random.Random(2)
    plans = [Outcomes.parse("delivered=100,failed=0,read=0").plan(rng) for _ in range(500)]

    assert {tuple(statuses_of(p)) for p in plans} == {("sent", "delivered")}


def test_delays_follow_the_configured_ranges() -> None:
    rng = random.Random(3)
    outcomes = Outcomes.parse("delivered=100,failed=0,read=100,reply=0,delivered_after=2-3,read_after=10")
    for plan in (outcomes.plan(rng) for _ in range(200)):
        sent, delivered, read = plan
        assert 0 <= sent.after <= 1 and 2 <= delivered.after <= 3 and read.after - delivered.after == 10


@pytest.mark.parametrize(
    "spec",
    [
        "delivered=120",
        "failed=10,delivered=95",
        "read=-1",
        "colour=blue",
        "read",
        "read=often",
        "read_after=5-1",
        "delivered_after=1-5000",
        "read=10,read=20",
    ],
)
def test_a_bad_mix_is_refused_when_the_connection_is_made(acme: Tenant, spec: str) -> None:
    with pytest.raises(ServiceError) as err:
        services.connection_create(tenant=acme, name="s", provider="sandbox", credentials={"outcomes": spec})

    assert err.value.code == "invalid_credentials" and "outcomes" in err.value.message
    assert not Connection.objects.exists()


def test_a_bad_mix_is_refused_when_the_connection_is_changed(acme: Tenant) -> None:
    connection = sandbox_connection(acme, outcomes="failed=5")
    with pytest.raises(ServiceError):
        services.connection_update(connection=connection, credentials={"outcomes": "failed=150"})

    connection.refresh_from_db()
    assert connection.credentials == {"outcomes": "failed=5"}


# --- Sending ------------------------------------------------------------------------------------


def test_send_answers_at_once_with_a_meta_shaped_id_and_schedules_its_webhooks(
    acme: Tenant, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    import httpx

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the sandbox sent something over the network")

    monkeypatch.setattr(httpx.Client, "send", no_network)
    scheduled: list[tuple[Any, ...]] = []
    monkeypatch.setattr(sandbox, "schedule", lambda *args: scheduled.append(args))
    connection = sandbox_connection(acme)
    provider = provider_for(connection)

    with django_capture_on_commit_callbacks(execute=True):
        first = provider.send(OutgoingMessage(phone="+5511999990000", text="Olá"))
        second = provider.send(OutgoingMessage(phone="+5511999990001", text="Olá"))

    assert first.message_id.startswith("wamid.") and first.message_id != second.message_id
    assert first.status_code == 200
    assert [(s[0], s[1], s[2]) for s in scheduled] == [
        (str(connection.pk), first.message_id, "5511999990000"),
        (str(connection.pk), second.message_id, "5511999990001"),
    ]
    assert all(s[4][0]["event"] == "sent" for s in scheduled)
    json.dumps(scheduled)  # plain values only: they travel in broker messages


def test_a_rolled_back_send_schedules_no_webhooks(
    acme: Tenant, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    scheduled: list[Any] = []
    monkeypatch.setattr(sandbox, "schedule", lambda *args: scheduled.append(args))
    provider = provider_for(sandbox_connection(acme))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        provider.send(OutgoingMessage(phone="+5511999990000", text="Olá"))

    assert len(callbacks) == 1 and scheduled == []


# --- The webhooks, over HTTP ------------------------------------------------------------------------


class Captured(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append((self.path, dict(self.headers), body))  # type: ignore[attr-defined]
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Any]:
    """A local HTTP server that records what is posted to it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Captured)
    server.posts = []  # type: ignore[attr-defined]
    server.status = 200  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_each_webhook_is_signed_like_metas_and_reads_as_a_cloud_api_notification(
    acme: Tenant, receiver: Any, chain: Chain, django_capture_on_commit_callbacks: Any
) -> None:
    base_url = f"http://127.0.0.1:{receiver.server_address[1]}"
    connection = sandbox_connection(acme, base_url, app_secret="known-secret", outcomes=f"failed=100,{FAST}")
    delivery = make_deliveries(make_campaign(connection), 1, status=Delivery.Status.SENDING)[0]

    send_through(connection, [delivery], django_capture_on_commit_callbacks)

    message_id = Delivery.objects.get(pk=delivery.pk).provider_message_id
    assert [p[0] for p in receiver.posts] == [f"/api/webhooks/sandbox/{connection.webhook_token}/"] * 2
    updates = []
    for _, headers, body in receiver.posts:
        assert headers["X-Hub-Signature-256"] == sign("known-secret", body)
        assert headers["Content-Type"] == "application/json"
        updates += CloudApiProvider.parse_webhook(body).statuses  # Meta's own parser reads it
    assert [(u.message_id, u.status) for u in updates] == [(message_id, "sent"), (message_id, "failed")]
    failed = updates[1]
    title, details, _ = ERRORS[int(failed.error_code)]
    assert failed.error_message == f"{title}: {details}"
    error = json.loads(receiver.posts[1][2])["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"][0]
    assert set(error) == {"code", "title", "message", "error_data", "href"}


def test_the_real_webhook_view_takes_them_and_the_worker_path_applies_them(
    transactional_db: Any, live_server: Any, acme: Tenant, chain: Chain, django_capture_on_commit_callbacks: Any
) -> None:
    connection = sandbox_connection(acme, live_server.url, outcomes=f"delivered=100,read=100,reply=100,{FAST}")
    deliveries = make_deliveries(make_campaign(connection), 3, status=Delivery.Status.SENDING)

    send_through(connection, deliveries, django_capture_on_commit_callbacks)
    tracking.process_all_pending()  # what the woken worker does

    events = WebhookEvent.objects.filter(connection=connection)
    assert Counter(events.values_list("status", flat=True)) == {"processed": 12}
    # The replies are inbound messages answering (quoting) their deliveries.
    replies = InboundMessage.objects.filter(connection=connection)
    assert sorted(replies.values_list("delivery_id", flat=True)) == sorted(d.pk for d in deliveries)
    for delivery in Delivery.objects.filter(pk__in=[d.pk for d in deliveries]):
        assert delivery.status == Delivery.Status.READ
        assert delivery.replied_at is not None
        history = DeliveryEvent.objects.filter(delivery=delivery).values_list("status", flat=True)
        assert list(history) == ["sent", "delivered", "read"]


def test_an_apps_own_secret_or_the_derived_one_is_what_signs(acme: Tenant, globex: Tenant) -> None:
    given = provider_for(sandbox_connection(acme, app_secret="given"))
    derived = [provider_for(sandbox_connection(t)) for t in (acme, globex)]

    assert isinstance(given, SandboxProvider) and given.app_secret == "given"
    assert derived[0].app_secret != derived[1].app_secret  # type: ignore[attr-defined]
    assert derived[0].app_secret == derived_app_secret(derived[0].connection_id)  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", [403, 404])
def test_a_refused_webhook_ends_the_plan(acme: Tenant, receiver: Any, chain: Chain, status: int) -> None:
    receiver.status = status
    connection = sandbox_connection(acme, f"http://127.0.0.1:{receiver.server_address[1]}")
    steps = [{"after": 0, "event": "sent"}, {"after": 0, "event": "delivered"}]

    sandbox.post_next(connection_id=str(connection.pk), message_id="wamid.x", number="5511", sent_at=0, steps=steps)

    assert len(receiver.posts) == 1 and chain.scheduled == []


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_webhook_sense_could_not_take_is_retried(acme: Tenant, receiver: Any, chain: Chain, status: int) -> None:
    receiver.status = status
    connection = sandbox_connection(acme, f"http://127.0.0.1:{receiver.server_address[1]}")
    steps = [{"after": 0, "event": "sent"}, {"after": 0, "event": "delivered"}]

    with pytest.raises(sandbox.SandboxPostError):  # the actor's retry policy takes it from there
        sandbox.post_next(connection_id=str(connection.pk), message_id="wamid.x", number="5511", sent_at=0, steps=steps)

    assert chain.scheduled == []


def test_a_webhook_nobody_answers_is_retried(acme: Tenant, chain: Chain) -> None:
    connection = sandbox_connection(acme, "http://127.0.0.1:9")

    with pytest.raises(sandbox.SandboxPostError):
        sandbox.post_next(
            connection_id=str(connection.pk), message_id="wamid.x", number="5511", sent_at=0,
            steps=[{"after": 0, "event": "sent"}],
        )  # fmt: skip


def test_nothing_is_posted_for_an_inactive_connection(acme: Tenant, receiver: Any, chain: Chain) -> None:
    connection = sandbox_connection(acme, f"http://127.0.0.1:{receiver.server_address[1]}")
    Connection.objects.filter(pk=connection.pk).update(is_active=False)

    sandbox.post_next(
        connection_id=str(connection.pk), message_id="wamid.x", number="5511", sent_at=0,
        steps=[{"after": 0, "event": "sent"}],
    )  # fmt: skip

    assert receiver.posts == []


# --- Tenant isolation ---------------------------------------------------------------------------------


def test_a_sandbox_webhook_moves_only_its_own_tenants_deliveries(acme: Tenant, globex: Tenant) -> None:
    acme_delivery = make_deliveries(make_campaign(sandbox_connection(acme)), 1)[0]
    globex_connection = sandbox_connection(globex)
    provider = provider_for(globex_connection)
    assert isinstance(provider, SandboxProvider)
    body = json.dumps(
        sandbox.status_body(
            provider.phone_number_id, str(acme_delivery.provider_message_id), "5511", sandbox.Step(1, "read"), 1
        )
    ).encode()

    response = Client().post(
        f"/api/webhooks/sandbox/{globex_connection.webhook_token}/",
        body,
        content_type="application/json",
        headers={"X-Hub-Signature-256": sign(provider.app_secret, body)},
    )
    process_all()

    assert response.status_code == 200
    assert Delivery.objects.get(pk=acme_delivery.pk).status == Delivery.Status.SENT
    assert not DeliveryEvent.objects.exists()
    assert list(PendingStatus.objects.values_list("tenant_id", flat=True)) == [globex.pk]  # parked as globex's


def test_another_connections_signature_is_refused(acme: Tenant, globex: Tenant) -> None:
    delivery = make_deliveries(make_campaign(sandbox_connection(acme)), 1)[0]
    globex_provider = provider_for(sandbox_connection(globex))
    assert isinstance(globex_provider, SandboxProvider)
    body = json.dumps(
        sandbox.status_body("1", str(delivery.provider_message_id), "5511", sandbox.Step(1, "read"), 1)
    ).encode()

    response = Client().post(
        f"/api/webhooks/sandbox/{delivery.campaign.connection.webhook_token}/",
        body,
        content_type="application/json",
        headers={"X-Hub-Signature-256": sign(globex_provider.app_secret, body)},
    )

    assert (response.status_code, response.json()["code"]) == (403, "bad_signature")
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize("path", ["whatsapp", "evolution"])
def test_a_sandbox_token_is_unknown_to_the_other_providers_routes(acme: Tenant, path: str) -> None:
    connection = sandbox_connection(acme)

    response = Client().post(
        f"/api/webhooks/{path}/{connection.webhook_token}/", b"{}", content_type="application/json"
    )

    assert response.status_code == 404


# --- SANDBOX_ENABLED ---------------------------------------------------------------------------


def test_a_sandbox_connection_needs_nothing_but_a_name(acme: Tenant, settings: Any) -> None:
    settings.SANDBOX_WEBHOOK_BASE_URL = "http://sense.internal:8000"

    connection = services.connection_create(tenant=acme, name="Test mode", provider="sandbox", credentials={})

    assert connection.base_url == "http://sense.internal:8000"
    assert services.connection_webhook_path(connection) == f"/api/webhooks/sandbox/{connection.webhook_token}/"


@pytest.fixture
def sandbox_off(settings: Any) -> None:
    settings.SANDBOX_ENABLED = False


def test_off_the_service_refuses_a_new_sandbox_connection(acme: Tenant, sandbox_off: None) -> None:
    with pytest.raises(ServiceError) as err:
        services.connection_create(tenant=acme, name="s", provider="sandbox", credentials={})

    assert err.value.code == "provider_disabled" and "SANDBOX_ENABLED" in err.value.message
    assert not Connection.objects.exists()


def test_off_the_api_refuses_a_new_sandbox_connection(api_alice: ApiClient, sandbox_off: None) -> None:
    response = api_alice.post_json("/api/connections/", {"name": "s", "provider": "sandbox", "credentials": {}})

    assert response.status_code == 400
    assert response.json()["code"] == "provider_disabled" and "SANDBOX_ENABLED" in response.json()["error"]
    assert not Connection.objects.exists()


def test_off_the_admin_form_refuses_a_new_sandbox_connection(acme: Tenant, sandbox_off: None) -> None:
    data = {"tenant": acme.pk, "name": "s", "provider": "sandbox", "base_url": "http://127.0.0.1:8000"}
    form = ConnectionForm(data={**data, "rate_per_minute": 60, "is_active": "on"})

    assert not form.is_valid()
    assert "SANDBOX_ENABLED" in str(form.non_field_errors())


def test_off_an_existing_sandbox_connection_can_still_be_switched_off_in_the_admin(acme: Tenant, settings: Any) -> None:
    connection = sandbox_connection(acme)
    settings.SANDBOX_ENABLED = False
    data = {"tenant": acme.pk, "name": "s", "provider": "sandbox", "base_url": connection.base_url}
    form = ConnectionForm(data={**data, "rate_per_minute": 60}, instance=connection)

    assert form.is_valid(), form.errors
    form.save()
    assert not Connection.objects.get(pk=connection.pk).is_active


def test_off_addconnection_refuses_a_sandbox_connection(acme: Tenant, sandbox_off: None) -> None:
    with pytest.raises(CommandError, match="SANDBOX_ENABLED"):
        call_command("addconnection", "--tenant", "acme", "--provider", "sandbox")

    assert not Connection.objects.exists()


def test_off_a_campaign_on_a_sandbox_connection_does_not_start(acme: Tenant, settings: Any) -> None:
    campaign = Campaign.objects.create(tenant=acme, name="c", connection=sandbox_connection(acme), message="Olá")
    settings.SANDBOX_ENABLED = False

    with pytest.raises(Conflict) as err:
        services.campaign_start(campaign=campaign)

    assert err.value.code == "provider_disabled"
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.DRAFT


def test_off_a_running_sandbox_campaign_pauses_without_sending(acme: Tenant, settings: Any, monkeypatch: Any) -> None:
    campaign = make_campaign(sandbox_connection(acme))
    make_deliveries(campaign, 3, status=Delivery.Status.PENDING)
    monkeypatch.setattr(SandboxProvider, "send", lambda *a: pytest.fail("sent through a switched-off sandbox"))
    settings.SANDBOX_ENABLED = False

    sending.dispatch(campaign.pk)

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PAUSED and "SANDBOX_ENABLED" in campaign.pause_reason
    assert set(Delivery.objects.values_list("status", flat=True)) == {"pending"}


def test_off_the_provider_itself_refuses_to_send(acme: Tenant, settings: Any) -> None:
    provider = provider_for(sandbox_connection(acme))
    settings.SANDBOX_ENABLED = False

    with pytest.raises(ProviderError) as err:
        provider.send(OutgoingMessage(phone="+5511999990000", text="Olá"))

    assert (err.value.kind, err.value.code) == ("permanent", "sandbox_disabled")


def test_off_webhooks_are_neither_posted_nor_taken(acme: Tenant, settings: Any, chain: Chain) -> None:
    connection = sandbox_connection(acme, "http://127.0.0.1:9")  # nothing listens: a post would raise
    provider = provider_for(connection)
    assert isinstance(provider, SandboxProvider)
    settings.SANDBOX_ENABLED = False
    body = json.dumps(sandbox.status_body("1", "wamid.x", "5511", sandbox.Step(1, "read"), 1)).encode()

    sandbox.post_next(
        connection_id=str(connection.pk),
        message_id="wamid.x",
        number="5511",
        sent_at=0,
        steps=[{"after": 0, "event": "sent"}],
    )
    response = Client().post(
        f"/api/webhooks/sandbox/{connection.webhook_token}/",
        body,
        content_type="application/json",
        headers={"X-Hub-Signature-256": sign(provider.app_secret, body)},
    )

    assert (response.status_code, response.json()["code"]) == (403, "sandbox_disabled")
    assert not WebhookEvent.objects.exists() and chain.scheduled == []
