from __future__ import annotations

from collections.abc import Iterator

import pytest

from media import counters as metrics


@pytest.fixture(autouse=True)
def _fresh_media_metrics() -> Iterator[None]:
    metrics.discard()
    yield
    metrics.discard()
