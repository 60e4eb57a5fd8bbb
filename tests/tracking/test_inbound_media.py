"""Inbound attachments go to the tenant's media library (`fetch_inbound_media`), the
keyword confirmation goes back through the receiving connection, and erasure removes both."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from campaigns import inbound, services
from campaigns.models import Connection, ConsentEvent, ConsentSettings, Contact, InboundMessage
from media.models import Asset
from tests.simulator import ProviderSimulator
from tests.tracking.conftest import post_evolution, process_all
from tests.tracking.test_inbound_messages import post_cloud
from tests.webhook_payloads import (
    OGG_OPUS,
    PNG_1PX,
    cloud_inbound,
    cloud_message,
    evolution_audio,
    evolution_image,
    evolution_message_item,
    evolution_upsert,
)


@pytest.fixture
def sim() -> Iterator[ProviderSimulator]:
    with ProviderSimulator() as simulator:
        yield simulator


@pytest.fixture
def trusted(settings: Any) -> None:
    """The simulator listens on loopback, which the media proxy refuses unless trusted."""
    settings.MEDIA_PROXY_TRUSTED_HOSTS = ["127.0.0.1"]


@pytest.fixture(autouse=True)
def media_jobs(monkeypatch: Any) -> list[int]:
    jobs: list[int] = []
    monkeypatch.setattr(inbound, "_enqueue_media", jobs.append)
    return jobs


def receive(connection: Connection, payload: dict[str, Any], django_capture_on_commit_callbacks: Any) -> InboundMessage:
    post = post_cloud if connection.provider == Connection.Provider.CLOUD else post_evolution
    assert post(connection, payload).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        process_all()
    return InboundMessage.objects.get()


def test_an_evolution_image_with_base64_is_stored_as_an_inbound_asset(
    evolution_connection: Connection, media_jobs: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    message = receive(
        evolution_connection,
        evolution_upsert(evolution_message_item(evolution_image(base64=PNG_1PX), message_id="3EB0IMG")),
        django_capture_on_commit_callbacks,
    )
    assert (message.media_status, media_jobs) == ("pending", [message.pk])
    assert "base64" not in str(message.media_info)

    with django_capture_on_commit_callbacks(execute=True):
        assert inbound.inbound_media_fetch(inbound_id=message.pk) == "stored"

    message.refresh_from_db()
    asset = message.media
    assert message.media_status == "stored" and asset is not None
    assert (asset.tenant_id, asset.origin, asset.file_type, asset.mime_type) == (
        message.tenant_id,
        "inbound",
        "image",
        "image/png",  # decided by the content, whatever the provider said
    )
    assert asset.original_name.endswith(".png") and asset.status == Asset.Status.PROCESSING  # thumbnail job sent
    assert message.text == "Olha isso"
    assert inbound.inbound_media_fetch(inbound_id=message.pk) == "skipped"  # claimed once


def test_an_evolution_image_with_a_media_url(
    evolution_connection: Connection, sim: ProviderSimulator, trusted: None, django_capture_on_commit_callbacks: Any
) -> None:
    media_id = sim.add_media(PNG_1PX, "image/png")
    part = evolution_image(media_url=sim.media_url(media_id))
    message = receive(
        evolution_connection, evolution_upsert(evolution_message_item(part)), django_capture_on_commit_callbacks
    )

    assert inbound.inbound_media_fetch(inbound_id=message.pk) == "stored"
    message.refresh_from_db()
    assert message.media is not None and message.media.size == len(PNG_1PX)
    assert sim.media_requests[-1]["authorization"] == ""  # Evolution's API key never goes to its S3


def test_a_media_url_on_a_private_address_is_refused(
    evolution_connection: Connection, sim: ProviderSimulator, django_capture_on_commit_callbacks: Any
) -> None:
    media_id = sim.add_media(PNG_1PX, "image/png")
    part = evolution_image(media_url=sim.media_url(media_id))
    message = receive(
        evolution_connection, evolution_upsert(evolution_message_item(part)), django_capture_on_commit_callbacks
    )

    assert inbound.inbound_media_fetch(inbound_id=message.pk) == "unavailable"
    message.refresh_from_db()
    assert (message.media_status, message.media_id, message.text) == ("unavailable", None, "Olha isso")
    assert sim.media_requests == []


def test_a_voice_note(evolution_connection: Connection, django_capture_on_commit_callbacks: Any) -> None:
    part = evolution_audio(base64=OGG_OPUS)
    message = receive(
        evolution_connection, evolution_upsert(evolution_message_item(part)), django_capture_on_commit_callbacks
    )

    assert inbound.inbound_media_fetch(inbound_id=message.pk) == "stored"
    message.refresh_from_db()
    assert message.media is not None
    assert (message.type, message.media.file_type, message.media.mime_type) == ("audio", "audio", "audio/ogg")
    assert message.media_info["voice"] is True


def test_a_cloud_image_is_fetched_by_its_media_id_with_the_token(
    cloud_connection: Connection, sim: ProviderSimulator, trusted: None, django_capture_on_commit_callbacks: Any
) -> None:
    Connection.objects.filter(pk=cloud_connection.pk).update(base_url=sim.base_url + "/v21.0")
    media_id = sim.add_media(PNG_1PX, "image/png", token="cloud-token")
    part = {"image": {"id": media_id, "mime_type": "image/png", "sha256": "x"}}
    message = receive(cloud_connection, cloud_inbound(cloud_message(part)), django_capture_on_commit_callbacks)

    assert inbound.inbound_media_fetch(inbound_id=message.pk) == "stored"
    message.refresh_from_db()
    assert message.media is not None and message.media.origin == "inbound"
    assert [r["path"] for r in sim.media_requests] == [f"/v21.0/{media_id}", f"/media-files/{media_id}"]
    assert {r["authorization"] for r in sim.media_requests} == {"Bearer cloud-token"}


def test_a_cloud_media_id_the_provider_does_not_know_leaves_the_text(
    cloud_connection: Connection, sim: ProviderSimulator, trusted: None, django_capture_on_commit_callbacks: Any
) -> None:
    Connection.objects.filter(pk=cloud_connection.pk).update(base_url=sim.base_url)
    part = {"image": {"id": "4040404040", "mime_type": "image/jpeg", "caption": "minha foto"}}
    message = receive(cloud_connection, cloud_inbound(cloud_message(part)), django_capture_on_commit_callbacks)

    assert inbound.inbound_media_fetch(inbound_id=message.pk) == "unavailable"
    message.refresh_from_db()
    assert (message.media_status, message.text) == ("unavailable", "minha foto")
    assert not Asset.objects.exists()


def test_the_sweeper_sends_lost_jobs_again_and_gives_up_in_the_end(
    evolution_connection: Connection, media_jobs: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    message = receive(
        evolution_connection,
        evolution_upsert(evolution_message_item(evolution_image(base64=PNG_1PX))),
        django_capture_on_commit_callbacks,
    )
    media_jobs.clear()
    assert inbound.inbound_media_sweep() == 0  # too fresh
    assert inbound.inbound_media_sweep(now=timezone.now() + timedelta(minutes=3)) == 1
    assert media_jobs == [message.pk]
    inbound.inbound_media_sweep(now=timezone.now() + timedelta(hours=2))
    message.refresh_from_db()
    assert message.media_status == "unavailable"


def test_the_keyword_confirmation_goes_back_once_through_the_receiving_connection(
    cloud_connection: Connection,
    sim: ProviderSimulator,
    acme: Any,
    monkeypatch: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    Connection.objects.filter(pk=cloud_connection.pk).update(base_url=sim.base_url)
    ConsentSettings.objects.create(tenant=acme, opt_out_reply="Pronto: você não receberá mais mensagens.")
    monkeypatch.setattr(inbound, "_enqueue_confirmation", lambda event_id: None)
    receive(
        cloud_connection, cloud_inbound(cloud_message({"text": {"body": "SAIR"}})), django_capture_on_commit_callbacks
    )
    event = ConsentEvent.objects.get()

    assert inbound.consent_confirmation_send(consent_event_id=event.pk).status == "sent"
    assert inbound.consent_confirmation_send(consent_event_id=event.pk).status == "skipped"

    [sent] = sim.sends
    assert (sent["number"], sent["text"]) == ("5511999990000", "Pronto: você não receberá mais mensagens.")
    event.refresh_from_db()
    assert event.confirmation == "sent"


def test_a_confirmation_waits_for_the_connections_rate_budget(
    cloud_connection: Connection,
    sim: ProviderSimulator,
    acme: Any,
    monkeypatch: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from campaigns import ratelimit

    Connection.objects.filter(pk=cloud_connection.pk).update(base_url=sim.base_url, rate_per_minute=1)
    ConsentSettings.objects.create(tenant=acme, opt_out_reply="Ok.")
    monkeypatch.setattr(inbound, "_enqueue_confirmation", lambda event_id: None)
    ratelimit.limiter().acquire(str(cloud_connection.pk), limit=1, window=ratelimit.window_seconds(), n=1)
    receive(
        cloud_connection, cloud_inbound(cloud_message({"text": {"body": "SAIR"}})), django_capture_on_commit_callbacks
    )

    outcome = inbound.consent_confirmation_send(consent_event_id=ConsentEvent.objects.get().pk)

    assert outcome.status == "retry" and outcome.retry_in is not None and outcome.retry_in > 0
    assert sim.sends == [] and ConsentEvent.objects.get().confirmation == "queued"


def test_erasing_a_contact_deletes_its_inbound_messages_and_their_media(
    evolution_connection: Connection, alice: Any, django_capture_on_commit_callbacks: Any
) -> None:
    message = receive(
        evolution_connection,
        evolution_upsert(evolution_message_item(evolution_image(base64=PNG_1PX))),
        django_capture_on_commit_callbacks,
    )
    inbound.inbound_media_fetch(inbound_id=message.pk)
    contact = Contact.objects.get()

    with django_capture_on_commit_callbacks(execute=True):
        services.contact_erase(contact=contact, user=alice)

    assert not InboundMessage.objects.exists()
    assert not Asset.objects.exists()


def test_received_files_stay_out_of_the_library_and_the_picker_unless_asked_for(
    evolution_connection: Connection, alice: Any, api_alice: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from django.test import Client

    from campaigns.forms import CampaignForm

    message = receive(
        evolution_connection,
        evolution_upsert(evolution_message_item(evolution_image(base64=PNG_1PX))),
        django_capture_on_commit_callbacks,
    )
    inbound.inbound_media_fetch(inbound_id=message.pk)
    asset = Asset.objects.get()
    Asset.objects.filter(pk=asset.pk).update(status=Asset.Status.READY)

    assert api_alice.get_json("/api/media/").json()["count"] == 0
    received = api_alice.get_json("/api/media/?origin=inbound").json()
    assert [(i["id"], i["origin"]) for i in received["items"]] == [(str(asset.pk), "inbound")]
    assert api_alice.get_json("/api/media/?origin=all").json()["count"] == 1
    client = Client()
    client.force_login(alice)
    assert asset.original_name not in client.get("/media/").content.decode()
    assert asset.original_name in client.get("/media/?origin=inbound").content.decode()
    form = CampaignForm(tenant=asset.tenant)
    assert not form.fields["asset"].queryset.filter(pk=asset.pk).exists()  # type: ignore[attr-defined]
