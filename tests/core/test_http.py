"""`sense.lib.http.build_client`: Sense's defaults plus the headers a caller adds."""

from __future__ import annotations

import httpx

from sense.lib.http import USER_AGENT, build_client


def test_a_client_sends_its_headers_besides_the_user_agent() -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204)

    client = build_client(
        transport=httpx.MockTransport(answer), base_url="http://sense.example", headers={"Authorization": "Bearer t"}
    )
    client.get("/api/me/")

    assert str(sent[0].url) == "http://sense.example/api/me/"
    assert sent[0].headers["User-Agent"] == USER_AGENT
    assert sent[0].headers["Authorization"] == "Bearer t"


def test_a_client_without_headers_sends_only_the_user_agent_of_its_own() -> None:
    client = build_client()

    assert client.headers["User-Agent"] == USER_AGENT
    assert "Authorization" not in client.headers
