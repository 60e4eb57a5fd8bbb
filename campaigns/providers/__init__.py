"""WhatsApp gateways: one module per provider behind one small interface (`base.Provider`).

Nothing outside this package names a provider's credential or payload field: services,
the admin, the API, the webhook views and `addconnection` read them off the class that
`provider_class(name)` returns, and the sender calls `provider_for(connection).send(...)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from campaigns.providers.base import (
    Credential,
    ErrorInfo,
    Media,
    OutgoingMessage,
    ParsedWebhook,
    PayloadError,
    Provider,
    ProviderError,
    Rejected,
    RemoteTemplate,
    SendResult,
    StatusUpdate,
    TemplateButton,
    TemplateMessage,
    TemplateParameter,
    TemplateUpdate,
    parse_retry_after,
)
from campaigns.providers.cloud import CloudApiProvider
from campaigns.providers.evolution import EvolutionProvider
from campaigns.providers.sandbox import SandboxProvider

if TYPE_CHECKING:
    from campaigns.models import Connection

__all__ = [
    "CloudApiProvider",
    "Credential",
    "ErrorInfo",
    "EvolutionProvider",
    "Media",
    "OutgoingMessage",
    "ParsedWebhook",
    "PayloadError",
    "Provider",
    "ProviderError",
    "Rejected",
    "error_info",
    "RemoteTemplate",
    "SandboxProvider",
    "SendResult",
    "StatusUpdate",
    "TemplateButton",
    "TemplateMessage",
    "TemplateParameter",
    "TemplateUpdate",
    "parse_retry_after",
    "provider_class",
    "provider_for",
    "registry",
]

# Provider name (Connection.provider) -> class.
registry: dict[str, type[Provider]] = {cls.name: cls for cls in (EvolutionProvider, CloudApiProvider, SandboxProvider)}


def provider_class(name: str) -> type[Provider]:
    """The class of provider NAME. Raises KeyError for an unknown one."""
    return registry[name]


def error_info(provider: str, code: str) -> ErrorInfo | None:
    """What error CODE of PROVIDER (a Connection.provider name) means; None when unexplained."""
    cls = registry.get(provider)
    return cls.error_info(code) if cls is not None and code else None


def provider_for(connection: Connection) -> Provider:
    """The client for CONNECTION's provider, with its credentials."""
    cls = registry.get(connection.provider)
    if cls is None:
        raise ValueError(f"unknown provider {connection.provider!r}")
    return cls.from_connection(connection)
