"""Demo media for `seed_demo`: a few generated photos and a document."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

from django.conf import settings
from PIL import Image, ImageDraw

from media import services
from media.models import Asset
from sense.models import Tenant

DEMO_IMAGES = [
    ("sunset.jpg", "JPEG", ((255, 120, 40), (60, 20, 90))),
    ("ocean.jpg", "JPEG", ((20, 120, 200), (230, 240, 255))),
    ("forest.png", "PNG", ((30, 90, 40), (200, 230, 120))),
]
DEMO_DOCUMENT = "price-list.csv"


def _picture(top: tuple[int, int, int], bottom: tuple[int, int, int], fmt: str) -> bytes:
    width, height = 1200, 800
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / height
        draw.line([(0, y), (width, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    for i in range(12):
        x = int(width * (0.5 + 0.4 * math.cos(i)))
        y = int(height * (0.5 + 0.3 * math.sin(i * 1.7)))
        r = 30 + 7 * i
        draw.ellipse([x - r, y - r, x + r, y + r], outline=(255, 255, 255), width=3)
    out = io.BytesIO()
    image.save(out, fmt, quality=85) if fmt == "JPEG" else image.save(out, fmt)
    return out.getvalue()


def seed(*, tenant: Tenant, user: Any, log: Callable[[str], None]) -> None:
    existing = set(Asset.objects.for_tenant(tenant).values_list("original_name", flat=True))  # type: ignore[attr-defined]
    # Embedded mode has no worker running during seed_demo: make thumbnails right here.
    inline = settings.TASKS_EMBEDDED
    made = 0
    for name, fmt, (top, bottom) in DEMO_IMAGES:
        if name in existing:
            continue
        data = _picture(top, bottom, fmt)
        asset = services.asset_create(
            tenant=tenant, user=user, upload=io.BytesIO(data), name=name, size=len(data), enqueue=not inline
        )
        if inline:
            services.thumbnail_regenerate(asset=asset)
        made += 1
    if DEMO_DOCUMENT not in existing:
        rows = ["product,price_brl", *(f"Item {i},{i * 9.9:.2f}" for i in range(1, 21))]
        data = ("\n".join(rows) + "\n").encode()
        services.asset_create(tenant=tenant, user=user, upload=io.BytesIO(data), name=DEMO_DOCUMENT, size=len(data))
        made += 1
    log(f"Media: {made} demo file(s) added" + (" (thumbnails made now)" if inline and made else ""))
