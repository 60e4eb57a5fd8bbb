"""Unknown API tokens are counted per client address and answered 429 past
API_TOKEN_FAILURE_LIMIT a minute; valid tokens and other addresses are not affected."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, override_settings

from sense import throttle

SCANNER = "203.0.113.66"
BOGUS = "sense_" + "x" * 40


def call(path: str, token: str, address: str = SCANNER) -> Any:
    return Client(REMOTE_ADDR=address).get(path, HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.fixture(autouse=True)
def _same_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    # A test that straddles a minute boundary would start a fresh window half-way.
    monkeypatch.setattr(throttle, "_token_key", lambda address: f"token-failures:{address or '-'}:test")


@pytest.mark.django_db
@override_settings(API_TOKEN_FAILURE_LIMIT=3)
def test_unknown_tokens_get_401_then_429_past_the_limit(alice: Any) -> None:
    codes = [call("/api/me/", BOGUS).status_code for _ in range(3)]
    assert codes == [401, 401, 401]
    response = call("/api/me/", BOGUS)
    assert response.status_code == 429
    body = response.json()
    assert body["code"] == "too_many_token_failures"
    assert "unknown API token" in body["error"]


@pytest.mark.django_db
@override_settings(API_TOKEN_FAILURE_LIMIT=3)
def test_a_malformed_token_counts_too(alice: Any) -> None:
    for _ in range(3):
        assert call("/api/contacts/", "garbage").status_code == 401
    assert call("/api/contacts/", "garbage").status_code == 429


@pytest.mark.django_db
@override_settings(API_TOKEN_FAILURE_LIMIT=3)
def test_a_valid_token_from_the_same_address_keeps_working(alice_token: str) -> None:
    for _ in range(5):
        call("/api/me/", BOGUS)
    assert call("/api/me/", BOGUS).status_code == 429
    response = call("/api/me/", alice_token)
    assert response.status_code == 200
    assert response.json()["username"] == "alice"


@pytest.mark.django_db
@override_settings(API_TOKEN_FAILURE_LIMIT=3)
def test_another_address_is_not_affected(alice: Any) -> None:
    for _ in range(5):
        call("/api/me/", BOGUS)
    assert call("/api/me/", BOGUS, address="198.51.100.1").status_code == 401


@pytest.mark.django_db
@override_settings(API_TOKEN_FAILURE_LIMIT=3)
def test_the_count_starts_again_in_the_next_minute(alice: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(4):
        call("/api/me/", BOGUS)
    assert call("/api/me/", BOGUS).status_code == 429
    monkeypatch.setattr(throttle, "_token_key", lambda address: f"token-failures:{address}:next-minute")
    assert call("/api/me/", BOGUS).status_code == 401


@pytest.mark.django_db
@override_settings(API_TOKEN_FAILURE_LIMIT=2)
@pytest.mark.parametrize("path", ["/api/media/00000000-0000-0000-0000-000000000000/file/", "/api/chat/media-proxy/"])
def test_plain_endpoints_answer_429_as_json_too(alice: Any, path: str) -> None:
    assert [call(path, BOGUS).status_code for _ in range(2)] == [401, 401]
    response = call(path, BOGUS)
    assert response.status_code == 429
    assert response.json()["code"] == "too_many_token_failures"


@pytest.mark.django_db
@override_settings(API_TOKEN_FAILURE_LIMIT=2)
def test_the_upload_answers_429_too(alice: Any) -> None:
    client = Client(REMOTE_ADDR=SCANNER)
    for expected in (401, 401, 429):
        response = client.post("/api/chat/upload-media/", {}, HTTP_AUTHORIZATION=f"Bearer {BOGUS}")
        assert response.status_code == expected


@pytest.mark.django_db
@override_settings(API_TOKEN_FAILURE_LIMIT=1)
def test_a_session_is_not_counted(alice: Any) -> None:
    client = Client(REMOTE_ADDR=SCANNER)
    client.force_login(alice)
    for _ in range(3):
        assert client.get("/api/me/").status_code == 200


def test_the_count_fails_open_when_the_cache_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("redis is down")

    monkeypatch.setattr(throttle.cache, "add", down)
    assert throttle.token_failed(SCANNER) == 0
