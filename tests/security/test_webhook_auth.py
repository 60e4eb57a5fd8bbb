"""Webhook authentication: every failed check is refused, stores nothing, moves nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from django.test import Client
from django.utils import timezone

from campaigns import webhook_views
from campaigns.models import Connection, Delivery, WebhookEvent, WebhookRejection
from sense.models import Tenant
from tests.security.conftest import error_code
from tests.tracking.conftest import APP_SECRET, JWT_KEY, VERIFY_TOKEN, make_connection, make_deliveries, process_all
from tests.tracking.conftest import make_campaign as make_running_campaign
from tests.webhook_payloads import cloud_notification, cloud_status, dumps, evolution_jwt, evolution_update, sign

# The HS512 case signs with the connection's own (short) key on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def _bearer(token: str) -> Callable[[bytes], dict[str, str]]:
    return lambda body: {"Authorization": f"Bearer {token}"}


def _jwt(key: str = JWT_KEY, **claims: Any) -> Callable[[bytes], dict[str, str]]:
    return lambda body: {"Authorization": "Bearer " + evolution_jwt(key, **claims)}


def _raw_jwt(claims: dict[str, Any], key: str = JWT_KEY, algorithm: str = "HS256") -> Callable[..., dict[str, str]]:
    return lambda body: {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm=algorithm)}


def _signed(secret: str = APP_SECRET, over: bytes | None = None) -> Callable[[bytes], dict[str, str]]:
    return lambda body: {"X-Hub-Signature-256": sign(secret, body if over is None else over)}


def _signature(value: str) -> Callable[[bytes], dict[str, str]]:
    return lambda body: {"X-Hub-Signature-256": value}


def _future() -> int:
    return int(timezone.now().timestamp()) + 600


@dataclass(frozen=True)
class Hook:
    """A webhook call that must be refused with STATUS and CODE ("" for the plain-text
    handshake answer). TOKEN: "own", "unknown", "inactive" or "other-provider"; CREDENTIALS
    override the connection's; INSTANCE is the Evolution instance named in the body."""

    label: str
    provider: str
    status: int
    code: str
    headers: Callable[[bytes], dict[str, str]] = field(default=lambda body: {})
    method: str = "post"
    token: str = "own"
    credentials: dict[str, str] = field(default_factory=dict)
    instance: str = "acme-main"
    query: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.provider}: {self.label}"


EVOLUTION, CLOUD = Connection.Provider.EVOLUTION.value, Connection.Provider.CLOUD.value
GOOD_JWT = _jwt()
HANDSHAKE = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "424242"}

WEBHOOK_REFUSALS = [
    # Evolution API (the connection has a JWT key and the instance acme-main)
    Hook("an unknown token", EVOLUTION, 404, "not_found", GOOD_JWT, token="unknown"),
    Hook("a deactivated connection's token", EVOLUTION, 404, "not_found", GOOD_JWT, token="inactive"),
    Hook("a Cloud API connection's token", EVOLUTION, 404, "not_found", GOOD_JWT, token="other-provider"),
    Hook("no Authorization header", EVOLUTION, 401, "missing_jwt"),
    Hook("Basic instead of Bearer", EVOLUTION, 401, "missing_jwt", lambda body: {"Authorization": "Basic YTpi"}),
    Hook("an empty Bearer", EVOLUTION, 401, "missing_jwt", lambda body: {"Authorization": "Bearer "}),
    Hook("the connection's API key as Bearer", EVOLUTION, 403, "invalid_jwt", _bearer("evolution-api-key")),
    Hook("a token that is no JWT", EVOLUTION, 403, "invalid_jwt", _bearer("not.a.jwt")),
    Hook("a JWT signed with another key", EVOLUTION, 403, "invalid_jwt", _jwt("another-key-0123456789abcdef0123")),
    Hook("an expired JWT", EVOLUTION, 403, "expired_jwt", _jwt(expires_in=-3600)),
    Hook("a JWT for another app", EVOLUTION, 403, "invalid_jwt", _jwt(app="typebot")),
    Hook("a JWT for another action", EVOLUTION, 403, "invalid_jwt", _jwt(action="send")),
    Hook("a JWT without exp", EVOLUTION, 403, "invalid_jwt", _raw_jwt({"app": "evolution", "action": "webhook"})),
    Hook(
        "an unsigned JWT (alg none)",
        EVOLUTION,
        403,
        "invalid_jwt",
        lambda body: {
            "Authorization": "Bearer "
            + jwt.encode({"app": "evolution", "action": "webhook", "exp": _future()}, "", algorithm="none")
        },
    ),
    Hook(
        "a HS512 JWT",
        EVOLUTION,
        403,
        "invalid_jwt",
        lambda body: {
            "Authorization": "Bearer "
            + jwt.encode({"app": "evolution", "action": "webhook", "exp": _future()}, JWT_KEY, algorithm="HS512")
        },
    ),
    Hook("another instance's event", EVOLUTION, 403, "wrong_instance", GOOD_JWT, instance="globex-main"),
    # WhatsApp Cloud API (the connection has an app secret and a verify token)
    Hook("an unknown token", CLOUD, 404, "not_found", _signed(), token="unknown"),
    Hook("a deactivated connection's token", CLOUD, 404, "not_found", _signed(), token="inactive"),
    Hook("an Evolution connection's token", CLOUD, 404, "not_found", _signed(), token="other-provider"),
    Hook("no X-Hub-Signature-256", CLOUD, 401, "missing_signature"),
    Hook("a signature of zeros", CLOUD, 403, "bad_signature", _signature("sha256=" + "0" * 64)),
    Hook("an empty signature", CLOUD, 403, "bad_signature", _signature("sha256=")),
    Hook("a SHA-1 signature", CLOUD, 403, "bad_signature", _signature("sha1=" + "0" * 40)),
    Hook("a signature with another secret", CLOUD, 403, "bad_signature", _signed("another-secret")),
    Hook("a signature over another body", CLOUD, 403, "bad_signature", _signed(over=b'{"object": "x"}')),
    Hook("a signature over the empty body", CLOUD, 403, "bad_signature", _signed(over=b"")),
    Hook("a connection with no app secret", CLOUD, 403, "no_app_secret", _signed(""), credentials={"app_secret": ""}),
    Hook("handshake: wrong verify token", CLOUD, 403, "", method="get", query={**HANDSHAKE, "hub.verify_token": "no"}),
    Hook("handshake: not subscribe", CLOUD, 403, "", method="get", query={**HANDSHAKE, "hub.mode": "unsubscribe"}),
    Hook("handshake: no parameters", CLOUD, 403, "", method="get"),
    Hook(
        "handshake: a connection with no verify token",
        CLOUD,
        403,
        "",
        method="get",
        credentials={"verify_token": ""},
        query={**HANDSHAKE, "hub.verify_token": ""},
    ),
    Hook("handshake: an unknown token", CLOUD, 404, "not_found", method="get", token="unknown", query=HANDSHAKE),
]


@dataclass
class Hooks:
    evolution: Connection
    cloud: Connection
    deliveries: dict[str, Delivery]  # by provider


@pytest.fixture
def hooks(acme: Tenant) -> Iterator[Hooks]:
    webhook_views._connections.clear()
    evolution = make_connection(acme, EVOLUTION, jwt_key=JWT_KEY)
    cloud = make_connection(acme, CLOUD)
    deliveries = {
        EVOLUTION: make_deliveries(make_running_campaign(evolution), 1)[0],
        CLOUD: make_deliveries(make_running_campaign(cloud, name="Cloud campaign"), 1)[0],
    }
    yield Hooks(evolution, cloud, deliveries)
    webhook_views._connections.clear()


def webhook_call(hooks: Hooks, hook: Hook) -> Any:
    own = hooks.evolution if hook.provider == EVOLUTION else hooks.cloud
    if hook.credentials:
        own = make_connection(own.tenant, hook.provider, **{**own.credentials, **hook.credentials})
    if hook.token == "inactive":
        own = make_connection(own.tenant, hook.provider)
        Connection.objects.filter(pk=own.pk).update(is_active=False)
    token = {
        "own": own.webhook_token,
        "inactive": own.webhook_token,
        "unknown": "no-such-webhook-token",
        "other-provider": (hooks.cloud if hook.provider == EVOLUTION else hooks.evolution).webhook_token,
    }[hook.token]
    path = f"/api/webhooks/{'evolution' if hook.provider == EVOLUTION else 'whatsapp'}/{token}/"
    if hook.method == "get":
        return Client().get(path, hook.query)
    message_id = hooks.deliveries[hook.provider].provider_message_id
    if hook.provider == EVOLUTION:
        body = dumps(evolution_update(message_id, "READ", instance=hook.instance))
    else:
        body = dumps(cloud_notification([cloud_status(message_id, "read")]))
    return Client().post(path, body, content_type="application/json", headers=hook.headers(body))


@pytest.mark.parametrize("hook", WEBHOOK_REFUSALS, ids=str)
def test_a_webhook_that_fails_authentication_is_refused_and_stores_nothing(hook: Hook, hooks: Hooks) -> None:
    response = webhook_call(hooks, hook)
    process_all()

    assert response.status_code == hook.status, response.content[:300]
    if hook.code:
        assert error_code(response) == hook.code
    else:
        assert b"424242" not in response.content  # the handshake's challenge is not echoed
    assert not WebhookEvent.objects.exists()
    for delivery in hooks.deliveries.values():
        assert Delivery.objects.get(pk=delivery.pk).status == Delivery.Status.SENT
    rejections = list(WebhookRejection.objects.values_list("reason", flat=True))
    if hook.status == 404:
        assert rejections == []  # no connection to count it against
    else:
        assert rejections == [hook.code or "bad_verify_token"]


@pytest.mark.parametrize("provider", [EVOLUTION, CLOUD])
def test_a_webhook_that_passes_authentication_moves_the_delivery(provider: str, hooks: Hooks) -> None:
    """The control for the table above: the same call with the right credentials works."""
    good = GOOD_JWT if provider == EVOLUTION else _signed()
    response = webhook_call(hooks, Hook("valid", provider, 200, "", good))
    process_all()

    assert response.status_code == 200
    assert Delivery.objects.get(pk=hooks.deliveries[provider].pk).status == Delivery.Status.READ


def test_the_handshake_with_the_right_verify_token_echoes_the_challenge(hooks: Hooks) -> None:
    response = webhook_call(hooks, Hook("valid", CLOUD, 200, "", method="get", query=HANDSHAKE))

    assert (response.status_code, response.content) == (200, b"424242")
