"""Thumbnails: made by a real worker on RabbitMQ, on demand, idempotent, clean and upright."""

from __future__ import annotations

import io
from typing import Any
from unittest import mock

import pytest
from django.conf import settings
from django.core.management import call_command
from PIL import Image

from media import services
from media.models import Asset
from sense.lib.storage import s3_client
from tests.conftest import ApiClient
from tests.media import files
from tests.workers import join


def _exif_rotated_with_gps() -> Any:
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise
    exif[0x010F] = "CameraMaker"
    gps = exif.get_ifd(0x8825)
    gps.update({1: "S", 2: (23.0, 33.0, 1.0), 3: "W", 4: (46.0, 38.0, 2.0)})
    return exif


def _left_red_right_blue(size: tuple[int, int] = (1600, 800)) -> bytes:
    image = Image.new("RGB", size, (220, 20, 20))
    image.paste((20, 20, 220), (size[0] // 2, 0, size[0], size[1]))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=_exif_rotated_with_gps())
    return out.getvalue()


def _thumbnail_bytes(asset: Asset) -> bytes:
    return s3_client().get_object(Bucket=settings.S3_BUCKET, Key=asset.thumbnail_key)["Body"].read()


def test_the_worker_makes_a_clean_upright_webp_that_fits_the_box(
    dramatiq_worker: Any, acme: Any, alice_token: str
) -> None:
    body = files.upload(ApiClient(alice_token), "rotated.jpg", _left_red_right_blue()).json()
    join(dramatiq_worker)

    asset = Asset.objects.get(id=body["id"])
    assert asset.status == "ready", asset.failure_reason
    assert (asset.width, asset.height) == (800, 1600)  # as displayed
    data = _thumbnail_bytes(asset)
    assert asset.thumbnail_size == len(data)
    thumb = Image.open(io.BytesIO(data))
    assert thumb.format == "WEBP"
    assert thumb.size == (160, 320)  # upright (portrait) and inside 320x320
    assert not thumb.getexif()
    assert not {"exif", "xmp", "icc_profile"} & set(thumb.info)
    assert b"Exif" not in data and b"CameraMaker" not in data
    rgb = thumb.convert("RGB")
    top: Any = rgb.getpixel((80, 10))
    bottom: Any = rgb.getpixel((80, 310))
    assert top[0] > 150 and top[2] < 100  # the left (red) half is now on top
    assert bottom[2] > 150 and bottom[0] < 100
    assert asset.thumbnail_key == f"tenants/{acme.id}/media/{asset.id}/thumbnail/320.webp"
    assert sorted(files.stored_keys(acme)) == sorted([asset.key, asset.thumbnail_key])


def test_the_job_is_idempotent(transactional_db: Any, acme: Any, alice: Any) -> None:
    data = files.jpeg((400, 300))
    asset = services.asset_create(
        tenant=acme, user=alice, upload=io.BytesIO(data), name="a.jpg", size=len(data), enqueue=False
    )

    assert services.thumbnail_generate(asset_id=asset.id) == "done"
    assert services.thumbnail_generate(asset_id=asset.id) == "skipped"  # a retried job finds it done
    asset.refresh_from_db()
    assert asset.status == "ready" and asset.thumbnail_claimed_at is None


def test_a_claimed_asset_is_not_claimed_twice(db: Any, acme: Any, alice: Any) -> None:
    data = files.jpeg()
    asset = services.asset_create(
        tenant=acme, user=alice, upload=io.BytesIO(data), name="a.jpg", size=len(data), enqueue=False
    )

    assert services.thumbnail_claim(asset.id) is True
    assert services.thumbnail_claim(asset.id) is False
    assert services.thumbnail_generate(asset_id=asset.id) == "skipped"


def test_a_refused_image_marks_the_asset_failed_and_keeps_the_original(
    db: Any, acme: Any, alice: Any, api_alice: ApiClient, settings: Any
) -> None:
    data = files.jpeg((400, 300))
    asset = services.asset_create(
        tenant=acme, user=alice, upload=io.BytesIO(data), name="a.jpg", size=len(data), enqueue=False
    )
    settings.MEDIA_MAX_IMAGE_PIXELS = 1000  # the cap was lowered after the upload

    assert services.thumbnail_generate(asset_id=asset.id) == "failed"

    asset.refresh_from_db()
    assert asset.status == "failed" and "pixels" in asset.failure_reason
    assert api_alice.get_json(f"/api/media/{asset.id}/file/").status_code == 302
    thumb = api_alice.get_json(f"/api/media/{asset.id}/thumbnail/")
    assert thumb.status_code == 404 and thumb.json()["code"] == "thumbnail_failed"


def test_the_thumbnail_url_makes_it_on_demand(db: Any, acme: Any, alice: Any, api_alice: ApiClient) -> None:
    data = files.jpeg((900, 600))
    body = files.upload(api_alice, "late.jpg", data).json()  # no worker runs: the job waits in the queue

    response = api_alice.get_json(body["thumbnail_url"])

    assert response.status_code == 302
    asset = Asset.objects.get(id=body["id"])
    assert asset.status == "ready" and asset.thumbnail_key.endswith("/thumbnail/320.webp")
    assert Image.open(io.BytesIO(_thumbnail_bytes(asset))).size == (320, 213)
    # The job, arriving later, finds nothing to do.
    assert services.thumbnail_generate(asset_id=asset.id) == "skipped"


def test_a_status_change_is_broadcast_on_commit(
    db: Any, acme: Any, alice: Any, django_capture_on_commit_callbacks: Any
) -> None:
    data = files.jpeg()
    asset = services.asset_create(
        tenant=acme, user=alice, upload=io.BytesIO(data), name="a.jpg", size=len(data), enqueue=False
    )

    with mock.patch("media.services.broadcast") as sent, django_capture_on_commit_callbacks(execute=True):
        services.thumbnail_generate(asset_id=asset.id)

    sent.assert_called_once_with(
        acme.id,
        {"type": "media.updated", "id": str(asset.id), "status": "ready", "thumbnail_url": asset.thumbnail_url()},
    )


def test_regenerate_thumbnails_redoes_them(db: Any, acme: Any, globex: Any, alice: Any, charlie: Any) -> None:
    data = files.jpeg((500, 500))
    mine = services.asset_create(
        tenant=acme, user=alice, upload=io.BytesIO(data), name="a.jpg", size=len(data), enqueue=False
    )
    other = services.asset_create(
        tenant=globex, user=charlie, upload=io.BytesIO(data), name="b.jpg", size=len(data), enqueue=False
    )
    done = services.asset_create(
        tenant=acme, user=alice, upload=io.BytesIO(data), name="c.jpg", size=len(data), enqueue=False
    )
    services.thumbnail_generate(asset_id=done.id)
    out = io.StringIO()

    call_command("regenerate_thumbnails", "--tenant", "acme", "--missing-only", "--json", stdout=out)

    assert '"made": 1' in out.getvalue()
    mine.refresh_from_db()
    other.refresh_from_db()
    assert mine.status == "ready" and other.status == "processing"
    call_command("regenerate_thumbnails", stdout=io.StringIO())
    other.refresh_from_db()
    assert other.status == "ready"


def test_thumbnail_sizes_are_counted_per_tenant(db: Any, acme: Any, alice: Any) -> None:
    from media import counters as metrics

    for size in ((800, 600), (600, 800)):
        data = files.jpeg(size)
        asset = services.asset_create(
            tenant=acme, user=alice, upload=io.BytesIO(data), name="p.jpg", size=len(data), enqueue=False
        )
        services.thumbnail_generate(asset_id=asset.id)

    summary = metrics.daily_summary(acme)["thumbnails"]
    assert summary["count"] == 2
    assert 0 < summary["avg_bytes"] < 20_000
    assert summary["p95_bytes"] is not None


@pytest.mark.parametrize("mode", ["RGBA", "RGB"])
def test_png_and_transparency_survive(db: Any, acme: Any, alice: Any, mode: str) -> None:
    data = files.png((700, 350), mode=mode)
    asset = services.asset_create(
        tenant=acme, user=alice, upload=io.BytesIO(data), name="t.png", size=len(data), enqueue=False
    )

    services.thumbnail_generate(asset_id=asset.id)

    asset.refresh_from_db()
    thumb = Image.open(io.BytesIO(_thumbnail_bytes(asset)))
    assert thumb.size == (320, 160)
    assert thumb.mode == ("RGBA" if mode == "RGBA" else "RGB")


def test_the_embedded_demo_seed_makes_thumbnails_at_once(db: Any, acme: Any, alice: Any, settings: Any) -> None:
    from media import demo

    settings.TASKS_EMBEDDED = True
    notes: list[str] = []

    demo.seed(tenant=acme, user=alice, log=notes.append)
    demo.seed(tenant=acme, user=alice, log=notes.append)  # twice: nothing new

    assets = Asset.objects.for_tenant(acme)
    assert assets.count() == 4
    assert set(assets.filter(file_type="image").values_list("status", flat=True)) == {"ready"}
    assert assets.filter(file_type="document").count() == 1
    assert notes[1] == "Media: 0 demo file(s) added"
