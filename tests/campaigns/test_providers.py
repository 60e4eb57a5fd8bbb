"""Provider clients against the simulator over HTTP: requests and failure classification."""

from __future__ import annotations

from typing import Any

import pytest

from campaigns.providers import (
    CloudApiProvider,
    EvolutionProvider,
    Media,
    OutgoingMessage,
    ProviderError,
    parse_retry_after,
)
from sense.lib import http
from tests.helpers import free_port
from tests.simulator import ProviderSimulator

IMAGE = Media(url="https://files.example/x.png?sig=1", file_type="image", mime_type="image/png", file_name="x.png")


@pytest.fixture(autouse=True)
def _fresh_client() -> Any:
    http.reset_shared_client()
    yield
    http.reset_shared_client()


def evolution(sim: ProviderSimulator) -> EvolutionProvider:
    return EvolutionProvider(base_url=sim.base_url, instance="inst", api_key="k")


def cloud(sim: ProviderSimulator) -> CloudApiProvider:
    return CloudApiProvider(base_url=f"{sim.base_url}/v21.0", phone_number_id="99", access_token="t")


def test_evolution_sends_text_and_media(sim: ProviderSimulator) -> None:
    result = evolution(sim).send(OutgoingMessage(phone="+5511999990000", text="hi"))
    media = evolution(sim).send(OutgoingMessage(phone="+5511999990001", text="look", media=IMAGE))
    assert result.message_id == sim.sends[0]["message_id"] and result.status_code == 201
    assert sim.sends[0]["number"] == "5511999990000" and sim.sends[0]["headers"]["apikey"] == "k"
    assert media.message_id == sim.sends[1]["message_id"]
    assert sim.sends[1]["text"] == "look"
    assert sim.sends[1]["media"] == {
        "mediatype": "image",
        "mimetype": "image/png",
        "fileName": "x.png",
        "media": IMAGE.url,
    }


def test_cloud_sends_text_and_media(sim: ProviderSimulator) -> None:
    result = cloud(sim).send(OutgoingMessage(phone="+5511999990000", text="hi"))
    cloud(sim).send(OutgoingMessage(phone="+5511999990001", text="look", media=IMAGE))
    assert result.message_id.startswith("wamid.")
    assert sim.sends[0]["phone_number_id"] == "99" and sim.sends[0]["text"] == "hi"
    assert sim.sends[1]["media"]["link"] == IMAGE.url and sim.sends[1]["text"] == "look"


@pytest.mark.parametrize("make", [evolution, cloud])
def test_429_is_transient_and_carries_retry_after(make: Any, sim: ProviderSimulator) -> None:
    sim.fail_next(429, retry_after=7)
    with pytest.raises(ProviderError) as err:
        make(sim).send(OutgoingMessage(phone="+5511999990000", text="hi"))
    assert err.value.kind == "transient" and err.value.retry_after == 7 and err.value.status_code == 429


@pytest.mark.parametrize("make", [evolution, cloud])
def test_500_is_transient(make: Any, sim: ProviderSimulator) -> None:
    sim.fail_next(500)
    with pytest.raises(ProviderError) as err:
        make(sim).send(OutgoingMessage(phone="+5511999990000", text="hi"))
    assert err.value.kind == "transient" and err.value.retry_after is None


def test_a_400_from_cloud_is_permanent_with_the_providers_code_and_message(sim: ProviderSimulator) -> None:
    sim.fail_next(400, body={"error": {"message": "(#131030) Recipient not in allowed list", "code": 131030}})
    with pytest.raises(ProviderError) as err:
        cloud(sim).send(OutgoingMessage(phone="+5511999990000", text="hi"))
    assert err.value.kind == "permanent"
    assert (err.value.code, err.value.message) == ("131030", "(#131030) Recipient not in allowed list")


def test_a_cloud_throttling_code_is_transient_even_with_a_400(sim: ProviderSimulator) -> None:
    sim.fail_next(400, body={"error": {"message": "(#131056) Pair rate limit hit", "code": 131056}})
    with pytest.raises(ProviderError) as err:
        cloud(sim).send(OutgoingMessage(phone="+5511999990000", text="hi"))
    assert err.value.kind == "transient"


def test_a_400_from_evolution_is_permanent_and_explains_an_unknown_number(sim: ProviderSimulator) -> None:
    sim.fail_next(400)
    with pytest.raises(ProviderError) as err:
        evolution(sim).send(OutgoingMessage(phone="+5511999990000", text="hi"))
    assert err.value.kind == "permanent" and err.value.code == "not_on_whatsapp"
    assert err.value.message == "number is not on WhatsApp (5511999990000)"


def test_bad_credentials_are_permanent(sim: ProviderSimulator) -> None:
    sim.api_keys = {"right"}
    with pytest.raises(ProviderError) as err:
        evolution(sim).send(OutgoingMessage(phone="+5511999990000", text="hi"))
    assert err.value.kind == "permanent" and err.value.status_code == 401
    assert not sim.sends


def test_no_connection_is_transient() -> None:
    provider = EvolutionProvider(base_url=f"http://127.0.0.1:{free_port()}", instance="i", api_key="k")
    with pytest.raises(ProviderError) as err:
        provider.send(OutgoingMessage(phone="+5511999990000", text="hi"))
    assert err.value.kind == "transient" and err.value.code == "connect"


def test_no_answer_in_time_is_ambiguous_never_retried(settings: Any, sim: ProviderSimulator) -> None:
    settings.HTTP_TIMEOUT = 0.2
    sim.latency = 1.0
    with pytest.raises(ProviderError) as err:
        evolution(sim).send(OutgoingMessage(phone="+5511999990000", text="hi"))
    assert err.value.kind == "ambiguous" and err.value.code == "timeout"
    assert len(sim.sends) == 1  # the provider did get it: re-sending would duplicate


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_evolution_connection_update_is_read_as_a_connection_state() -> None:
    from campaigns.providers.evolution import parse_envelope

    parsed = parse_envelope(
        {
            "event": "CONNECTION_UPDATE",
            "instance": "acme-1",
            "data": {"instance": "acme-1", "wuid": "5511@s.whatsapp.net", "state": "close", "statusReason": 401},
            "date_time": "2026-12-01T10:00:00.000Z",
        }
    )
    assert parsed.event_type == "connection.update" and parsed.statuses == []
    state = parsed.connection_state
    assert state is not None and (state.state, state.reason) == ("close", "401")
    assert state.occurred_at is not None and state.occurred_at.isoformat().startswith("2026-12-01T10:00:00")
    unknown = parse_envelope({"event": "connection.update", "data": {"state": "sleeping"}})
    assert unknown.connection_state is None


def test_evolution_typing_is_sent_as_its_delay_in_milliseconds(sim: Any, evolution: Any) -> None:
    from campaigns.providers import OutgoingMessage, provider_for

    provider_for(evolution).send(OutgoingMessage(phone="+5511910000001", text="hi", typing_seconds=4))
    assert sim.sends[-1]["delay"] == 4000
