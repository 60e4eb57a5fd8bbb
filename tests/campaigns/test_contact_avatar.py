"""Profile pictures: Evolution's fetchProfilePictureUrl asked lazily, at most once per
PROFILE_PICTURE_TTL, and the picture served only by Sense (/contacts/<id>/avatar/) through
the media proxy's cache; initials when there is none. Against the provider simulator."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from campaigns import services, tasks
from campaigns.models import Campaign, Connection, Contact
from campaigns.providers import CloudApiProvider, EvolutionProvider, ProviderError
from media import proxy
from sense.models import Tenant
from tests.campaigns.conversation import delivery, inbound
from tests.conftest import ApiClient
from tests.dashboard.conftest import login
from tests.media.files import jpeg
from tests.simulator import ProviderSimulator

PICTURE = jpeg((96, 96))


@pytest.fixture(autouse=True)
def _trust_the_simulator(settings: Any) -> Iterator[None]:
    # The simulator plays WhatsApp's CDN on 127.0.0.1, which the proxy refuses unless trusted.
    settings.MEDIA_PROXY_TRUSTED_HOSTS = ["127.0.0.1"]
    yield
    proxy.reset_client()


def _ana(acme: Tenant, sim: ProviderSimulator, *, picture: bool = True) -> Contact:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001", name="Ana Souza")
    if picture:
        sim.profile_pictures["5511999990001"] = PICTURE
    return ana


def test_evolution_answers_the_picture_url_or_none(sim: ProviderSimulator, evolution: Connection) -> None:
    provider = EvolutionProvider.from_connection(evolution)
    sim.profile_pictures["5511999990001"] = PICTURE

    url = provider.profile_picture_url("+5511999990001")

    assert url is not None and url.startswith(f"{sim.base_url}/pictures/5511999990001.jpg")
    assert provider.profile_picture_url("+5511999990002") is None
    assert sim.picture_requests == ["5511999990001", "5511999990002"]


def test_evolution_errors_are_provider_errors(sim: ProviderSimulator, evolution: Connection) -> None:
    sim.api_keys = {"another-key"}
    with pytest.raises(ProviderError) as error:
        EvolutionProvider.from_connection(evolution).profile_picture_url("+5511999990001")
    assert error.value.status_code == 401


def test_the_cloud_api_has_no_profile_pictures(sim: ProviderSimulator, cloud: Connection) -> None:
    assert CloudApiProvider.supports_profile_pictures is False
    assert CloudApiProvider.from_connection(cloud).profile_picture_url("+5511999990001") is None


def test_the_avatar_comes_through_the_proxy_then_from_its_cache(
    api_alice: ApiClient, acme: Tenant, sim: ProviderSimulator, evolution: Connection
) -> None:
    ana = _ana(acme, sim)

    first = api_alice.get_json(f"/contacts/{ana.pk}/avatar/")
    second = api_alice.get_json(f"/contacts/{ana.pk}/avatar/")

    assert (first.status_code, first["Content-Type"], first["X-Cache"]) == (200, "image/jpeg", "MISS")
    assert (second.status_code, second["X-Cache"]) == (200, "HIT")
    assert first.content == second.content == PICTURE
    assert sim.picture_requests == ["5511999990001"]  # asked once: PROFILE_PICTURE_TTL
    assert sim.picture_downloads == ["5511999990001"]  # downloaded once: the proxy's cache
    assert "Location" not in first and sim.base_url not in str(dict(first.items()))
    ana.refresh_from_db()
    assert ana.avatar_source_url.startswith(sim.base_url) and ana.avatar_checked_at is not None
    contact = api_alice.get_json(f"/api/contacts/{ana.pk}/").json()
    assert contact["avatar_url"] == f"/contacts/{ana.pk}/avatar/" and sim.base_url not in str(contact)


def test_the_gateway_is_asked_again_after_the_ttl(
    api_alice: ApiClient, acme: Tenant, sim: ProviderSimulator, evolution: Connection, settings: Any
) -> None:
    settings.PROFILE_PICTURE_TTL = 3600
    ana = _ana(acme, sim)
    api_alice.get_json(f"/contacts/{ana.pk}/avatar/")
    Contact.objects.filter(pk=ana.pk).update(avatar_checked_at=timezone.now() - timedelta(seconds=3601))

    api_alice.get_json(f"/contacts/{ana.pk}/avatar/")

    assert sim.picture_requests == ["5511999990001", "5511999990001"]


def test_a_hidden_picture_shows_the_initials_and_is_not_asked_again(
    api_alice: ApiClient, acme: Tenant, sim: ProviderSimulator, evolution: Connection
) -> None:
    ana = _ana(acme, sim, picture=False)

    first = api_alice.get_json(f"/contacts/{ana.pk}/avatar/")
    api_alice.get_json(f"/contacts/{ana.pk}/avatar/")

    assert first.status_code == 200 and first["X-Avatar"] == "initials"
    assert first["Content-Type"] == "image/svg+xml" and b">AS</text>" in first.content
    assert sim.picture_requests == ["5511999990001"]
    assert api_alice.get_json(f"/api/contacts/{ana.pk}/").json()["avatar_url"] is None


def test_an_expired_cdn_url_is_forgotten_and_asked_again(
    api_alice: ApiClient, acme: Tenant, sim: ProviderSimulator, evolution: Connection
) -> None:
    ana = _ana(acme, sim)
    Contact.objects.filter(pk=ana.pk).update(
        avatar_source_url=f"{sim.base_url}/pictures/5511000000000.jpg", avatar_checked_at=timezone.now()
    )

    gone = api_alice.get_json(f"/contacts/{ana.pk}/avatar/")
    fresh = api_alice.get_json(f"/contacts/{ana.pk}/avatar/")

    assert gone["X-Avatar"] == "initials"
    assert fresh.status_code == 200 and fresh.content == PICTURE
    assert sim.picture_requests == ["5511999990001"]


def test_the_connection_the_contact_wrote_to_is_asked(acme: Tenant, sim: ProviderSimulator) -> None:
    first, second = (
        Connection.objects.create(
            tenant=acme,
            name=name,
            provider="evolution",
            base_url=sim.base_url,
            credentials={"instance": name, "api_key": "k"},
        )
        for name in ("first", "second")
    )
    ana = _ana(acme, sim)
    inbound(ana, second, "oi")

    assert services.contact_avatar_connection(ana) == second
    assert services.contact_avatar_refresh(contact=ana).startswith(sim.base_url)
    assert services.contact_avatar_refresh(contact=ana).startswith(sim.base_url)  # known: not asked again
    assert sim.picture_requests == ["5511999990001"]
    Connection.objects.filter(pk=second.pk).update(is_active=False)
    assert services.contact_avatar_connection(ana) == first


def test_without_a_capable_connection_nothing_is_asked(
    api_alice: ApiClient, acme: Tenant, sim: ProviderSimulator, cloud: Connection
) -> None:
    ana = _ana(acme, sim)

    response = api_alice.get_json(f"/contacts/{ana.pk}/avatar/")

    assert response["X-Avatar"] == "initials" and sim.picture_requests == []


def test_the_avatar_needs_credentials_and_the_tenant(
    api_charlie: ApiClient, acme: Tenant, sim: ProviderSimulator, evolution: Connection
) -> None:
    ana = _ana(acme, sim)

    assert ApiClient().get_json(f"/contacts/{ana.pk}/avatar/").status_code == 401
    refused = api_charlie.get_json(f"/contacts/{ana.pk}/avatar/")
    assert refused.status_code == 404 and refused.json()["code"] == "not_found"
    assert sim.picture_requests == []


def test_the_contacts_list_asks_for_the_pictures_in_a_worker(
    alice: Any,
    acme: Tenant,
    sim: ProviderSimulator,
    evolution: Connection,
    monkeypatch: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    ana = _ana(acme, sim)
    known = Contact.objects.create(tenant=acme, phone="+5511999990002", name="Bia", avatar_checked_at=timezone.now())
    sent: list[list[int]] = []
    monkeypatch.setattr(tasks.refresh_contact_avatars, "send", sent.append)
    client = login("alice")

    with django_capture_on_commit_callbacks(execute=True):
        before = client.get("/contacts/").content.decode()

    assert sent == [[ana.pk]]  # Bia was asked a moment ago
    assert f'src="/contacts/{ana.pk}/avatar/"' not in before and ">AS<" in before  # not known yet: initials
    tasks.refresh_contact_avatars.fn(sent[0])  # what the worker runs
    assert sim.picture_requests == ["5511999990001"]
    with django_capture_on_commit_callbacks(execute=True):
        after = client.get("/contacts/").content.decode()
    assert f'src="/contacts/{ana.pk}/avatar/"' in after and f"/contacts/{known.pk}/avatar/" not in after
    assert sim.base_url not in after
    assert sent == [[ana.pk]]  # nothing due any more


def test_a_rotated_delivery_names_the_connection_it_went_out_on(acme: Tenant, sim: ProviderSimulator) -> None:
    main, rotated = (
        Connection.objects.create(
            tenant=acme, name=name, provider="evolution", base_url=sim.base_url, credentials={"instance": name}
        )
        for name in ("main", "rotated")
    )
    ana = _ana(acme, sim)
    campaign = Campaign.objects.create(tenant=acme, name="Rotating", connection=main, message="Oi")
    delivery(campaign, ana, connection=rotated)

    assert services.contact_avatar_connection(ana) == rotated
