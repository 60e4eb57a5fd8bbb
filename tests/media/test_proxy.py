"""GET /api/chat/media-proxy/?url=: caching, single flight and every refusal, against a real
local upstream (trusted through MEDIA_PROXY_TRUSTED_HOSTS)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from django.core.cache import cache
from django.test import Client

from media import counters as metrics
from media import proxy
from tests.conftest import ApiClient
from tests.helpers import at_once, free_port, redis_server
from tests.media.upstream import PNG, Upstream, upstream

PROXY = "/api/chat/media-proxy/?url="


@pytest.fixture
def remote(settings: Any) -> Iterator[Upstream]:
    settings.MEDIA_PROXY_TRUSTED_HOSTS = ["127.0.0.1"]
    with upstream() as server:
        yield server
    proxy.reset_client()


def get(api: ApiClient, url: str, **extra: Any) -> Any:
    return api.get_json(PROXY + quote(url, safe=""), **extra)


def test_it_serves_a_miss_then_a_hit(api_alice: ApiClient, acme: Any, remote: Upstream) -> None:
    first = get(api_alice, f"{remote.base}/img.png")
    second = get(api_alice, f"{remote.base}/img.png")

    assert (first.status_code, first["X-Cache"], first.content) == (200, "MISS", PNG)
    assert (second.status_code, second["X-Cache"], second.content) == (200, "HIT", PNG)
    assert remote.hits["/img.png"] == 1
    for response in (first, second):
        assert response["Content-Type"] == "image/png"
        assert response["Cache-Control"].startswith("private")
        assert response["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'none'" in response["Content-Security-Policy"]


def test_it_forwards_no_credentials(api_alice: ApiClient, acme: Any, remote: Upstream) -> None:
    response = get(api_alice, f"{remote.base}/img.png", HTTP_COOKIE="sessionid=secret")

    assert response.status_code == 200 and remote.hits["/img.png"] == 1  # the upstream was asked
    sent = {k.lower() for k in remote.last_headers}
    assert "authorization" not in sent and "cookie" not in sent


def test_a_smaller_upstream_max_age_shortens_the_cache(api_alice: ApiClient, acme: Any, remote: Upstream) -> None:
    url = f"{remote.base}/short.png"
    response = get(api_alice, url)

    assert response["Cache-Control"] == "private, max-age=60"
    client = proxy.proxy_cache()._cache.get_client()  # type: ignore[attr-defined]
    ttl = client.ttl(cache.make_and_validate_key(proxy.cache_key(url)))
    assert 0 < ttl <= 60


def test_no_store_is_not_cached(api_alice: ApiClient, acme: Any, remote: Upstream) -> None:
    get(api_alice, f"{remote.base}/nostore.png")
    again = get(api_alice, f"{remote.base}/nostore.png")

    assert again["X-Cache"] == "MISS" and remote.hits["/nostore.png"] == 2


def test_upstream_404s_are_cached_for_five_minutes(api_alice: ApiClient, acme: Any, remote: Upstream) -> None:
    url = f"{remote.base}/missing"
    first = get(api_alice, url)
    second = get(api_alice, url)

    assert (first.status_code, first["X-Cache"]) == (404, "MISS")
    assert (second.status_code, second["X-Cache"]) == (404, "HIT")
    assert second.json()["code"] == "upstream_not_found"
    assert remote.hits["/missing"] == 1
    ttl = proxy.proxy_cache()._cache.get_client().ttl(cache.make_and_validate_key(proxy.cache_key(url)))  # type: ignore[attr-defined]
    assert 280 < ttl <= 300


def test_concurrent_misses_fetch_the_upstream_once(
    transactional_db: Any, acme: Any, alice_token: str, remote: Upstream
) -> None:
    remote.delay = 0.5
    url = f"{remote.base}/img.png"

    def one() -> tuple[int, str]:
        response = get(ApiClient(alice_token), url)
        return response.status_code, response["X-Cache"]

    results = at_once(one, threads=6)

    assert remote.hits["/img.png"] == 1
    assert sorted(results) == sorted([(200, "MISS")] + [(200, "HIT")] * 5)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/svg", 415, "bad_type"),
        ("/html", 415, "bad_type"),
        ("/error", 502, "upstream_error"),
        ("/big", 413, "too_large"),
        ("/chunked-big", 413, "too_large"),
        ("/chain/3", 502, "too_many_redirects"),
    ],
)
def test_it_refuses_bad_upstream_answers(
    api_alice: ApiClient, acme: Any, remote: Upstream, settings: Any, path: str, status: int, code: str
) -> None:
    settings.MEDIA_PROXY_MAX_BYTES = 10_000

    response = get(api_alice, remote.base + path)

    assert response.status_code == status, response.content
    assert response.json()["code"] == code and response.json()["error"]


def test_it_follows_up_to_three_redirects(api_alice: ApiClient, acme: Any, remote: Upstream) -> None:
    response = get(api_alice, f"{remote.base}/chain/2")  # three redirects

    assert response.status_code == 200 and response.content == PNG


def test_audio_is_allowed(api_alice: ApiClient, acme: Any, remote: Upstream) -> None:
    assert get(api_alice, f"{remote.base}/audio")["Content-Type"] == "audio/mpeg"


def test_a_slow_upstream_times_out(api_alice: ApiClient, acme: Any, remote: Upstream, settings: Any) -> None:
    settings.MEDIA_PROXY_TIMEOUT = 0.3

    response = get(api_alice, f"{remote.base}/slow?s=1.5")

    assert response.status_code == 504
    assert response.json()["code"] == "upstream_timeout"


def test_an_unreachable_trusted_host_is_a_502(api_alice: ApiClient, acme: Any, remote: Upstream) -> None:
    response = get(api_alice, f"http://127.0.0.1:{free_port()}/img.png")

    assert response.status_code == 502


@pytest.mark.parametrize(
    ("url", "status", "code"),
    [
        ("http://localhost/img.png", 403, "forbidden_address"),  # resolves to 127.0.0.1
        ("http://127.0.0.1/img.png", 403, "forbidden_address"),
        ("http://10.1.2.3/a.png", 403, "forbidden_address"),
        ("http://169.254.169.254/latest/meta-data/", 403, "forbidden_address"),
        ("http://100.64.0.1/a.png", 403, "forbidden_address"),
        ("http://0.0.0.0/a.png", 403, "forbidden_address"),
        ("http://224.0.0.1/a.png", 403, "forbidden_address"),
        ("http://[::1]/a.png", 403, "forbidden_address"),
        ("http://[::ffff:127.0.0.1]/a.png", 403, "forbidden_address"),
        ("http://[fe80::1]/a.png", 403, "forbidden_address"),
        ("http://example.com:8080/a.png", 403, "forbidden_port"),
        ("http://user:secret@example.com/a.png", 400, "bad_url"),
        ("ftp://example.com/a.png", 400, "bad_url"),
        ("file:///etc/passwd", 400, "bad_url"),
        ("/relative/a.png", 400, "bad_url"),
    ],
)
def test_it_refuses_unsafe_destinations(api_alice: ApiClient, acme: Any, url: str, status: int, code: str) -> None:
    response = get(api_alice, url)

    assert response.status_code == status, response.content
    assert response.json()["code"] == code


def test_an_untrusted_host_name_on_the_loopback_is_refused(
    api_alice: ApiClient, acme: Any, remote: Upstream, settings: Any
) -> None:
    port = remote.server_address[1]
    settings.MEDIA_PROXY_TRUSTED_HOSTS = [f"localhost:{port + 1}"]

    refused = get(api_alice, f"http://localhost:{port}/img.png")
    settings.MEDIA_PROXY_TRUSTED_HOSTS = [f"localhost:{port}"]
    trusted = get(api_alice, f"http://localhost:{port}/img.png")

    assert refused.status_code == 403
    assert trusted.status_code == 200
    assert remote.hits["/img.png"] == 1


def test_a_redirect_to_a_private_address_is_refused(api_alice: ApiClient, acme: Any, remote: Upstream) -> None:
    for target in ("http://10.0.0.1/a.png", "http://localhost/a.png", "http://169.254.169.254/"):
        response = get(api_alice, f"{remote.base}/redirect?to={quote(target, safe='')}")
        assert response.status_code == 403, target
        assert response.json()["code"] == "forbidden_address"


def test_the_check_covers_every_resolved_address(monkeypatch: Any, settings: Any) -> None:
    import ipaddress

    settings.MEDIA_PROXY_TRUSTED_HOSTS = []
    monkeypatch.setattr(
        proxy, "resolve", lambda host, port: [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.5")]
    )

    with pytest.raises(proxy.Blocked):
        proxy.GuardedBackend().connect_tcp("rebind.example", 80)


def test_anonymous_requests_are_refused(anon_api: ApiClient, remote: Upstream) -> None:
    response = get(anon_api, f"{remote.base}/img.png")

    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"
    assert remote.hits["/img.png"] == 0


def test_a_session_may_use_the_proxy(alice: Any, acme: Any, remote: Upstream) -> None:
    from tests.conftest import PASSWORD

    client = Client()
    client.login(username="alice", password=PASSWORD)

    assert client.get(PROXY + quote(f"{remote.base}/img.png")).status_code == 200


def test_with_redis_down_it_still_serves(
    api_alice: ApiClient, acme: Any, remote: Upstream, settings: Any, caplog: Any
) -> None:
    with redis_server() as (url, process):
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": url,
                "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
            }
        }
        assert get(api_alice, f"{remote.base}/img.png")["X-Cache"] == "MISS"
        assert get(api_alice, f"{remote.base}/img.png")["X-Cache"] == "HIT"
        process.kill()
        process.wait()
        with caplog.at_level(logging.WARNING, logger="sense.media.proxy"):
            response = get(api_alice, f"{remote.base}/img.png")

    assert (response.status_code, response["X-Cache"], response.content) == (200, "MISS", PNG)
    assert remote.hits["/img.png"] == 2
    assert any("[MEDIA PROXY]" in r.getMessage() for r in caplog.records)


def test_hits_misses_and_latency_are_counted(api_alice: ApiClient, acme: Any, remote: Upstream) -> None:
    for _ in range(4):
        get(api_alice, f"{remote.base}/img.png")

    summary = metrics.daily_summary(acme)["proxy"]
    assert (summary["hits"], summary["misses"], summary["hit_rate"]) == (3, 1, 0.75)
    assert summary["hit_p50_ms"] is not None and summary["miss_p95_ms"] is not None
