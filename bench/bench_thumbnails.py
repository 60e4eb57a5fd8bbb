"""Thumbnails: Sense's pipeline vs easy-thumbnails' default pipeline on the same 20
generated 12-megapixel photographs, in the same run.

Each pipeline runs in its own process so that its peak memory (VmHWM over the baseline)
is its own. Figures: ms per image (ratio: easy-thumbnails / Sense, goal >= 5), peak memory,
and average output bytes (goal: smaller than easy-thumbnails', and under 20 KB).
"""

from __future__ import annotations

import io
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Figure, run_child  # noqa: E402

COUNT = 20
SIZE = (4000, 3000)  # 12 MP
BOX = 320


def photo(seed: int) -> bytes:
    """A deterministic photo-like JPEG: smooth random colour fields (upscaled noise), a
    gradient sky and fine grain, so it compresses like a photograph, not a flat colour."""
    from PIL import Image, ImageChops, ImageFilter

    rng = random.Random(seed)
    small = Image.frombytes("RGB", (64, 48), rng.randbytes(64 * 48 * 3)).filter(ImageFilter.GaussianBlur(1.5))
    base = small.resize(SIZE, Image.Resampling.BICUBIC)
    mid = Image.frombytes("RGB", (400, 300), rng.randbytes(400 * 300 * 3)).resize(SIZE, Image.Resampling.BILINEAR)
    base = Image.blend(base, mid, 0.25)
    sky = Image.linear_gradient("L").resize(SIZE).convert("RGB")
    base = Image.blend(base, sky, 0.3)
    grain = Image.frombytes("L", (256, 256), rng.randbytes(256 * 256)).convert("RGB")
    tiles = Image.new("RGB", SIZE)
    for x in range(0, SIZE[0], 256):
        for y in range(0, SIZE[1], 256):
            tiles.paste(grain, (x, y))
    base = ImageChops.add(base, tiles.point(lambda v: v // 20), scale=1.0, offset=-6)
    out = io.BytesIO()
    base.save(out, "JPEG", quality=90)
    return out.getvalue()


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def child(engine: str, folder: str) -> None:
    paths = sorted(Path(folder).glob("*.jpg"))
    blobs = [p.read_bytes() for p in paths]
    if engine == "sense":
        from sense.lib import images

        def make(data: bytes) -> bytes:
            out, _, _ = images.thumbnail(io.BytesIO(data), box=BOX, quality=80, max_pixels=50_000_000)
            return out
    else:
        import django
        from django.conf import settings

        settings.configure(INSTALLED_APPS=["easy_thumbnails"], USE_TZ=True)
        django.setup()
        from easy_thumbnails import engine as et

        def make(data: bytes) -> bytes:
            options = {"size": (BOX, BOX)}
            source = et.generate_source_image(io.BytesIO(data), options)
            thumb = et.process_image(source, options)
            return bytes(et.save_pil_image(thumb, filename="thumb.jpg").getvalue())

    make(blobs[0])  # warm up (plugin loading)
    Path("/proc/self/clear_refs").write_text("5")
    baseline = _status("VmRSS")
    sizes, times = [], []
    for data in blobs:
        started = time.perf_counter()
        sizes.append(len(make(data)))
        times.append((time.perf_counter() - started) * 1000)
    peak = _status("VmHWM") - baseline
    print(json.dumps({"ms": sum(times) / len(times), "bytes": sum(sizes) / len(sizes), "peak": peak}))


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory() as folder:
        for i in range(COUNT):
            (Path(folder) / f"photo-{i:02d}.jpg").write_bytes(photo(i))
        source_mb = sum(p.stat().st_size for p in Path(folder).glob("*.jpg")) / COUNT / 1e6
        sense = run_child("bench.bench_thumbnails", "child", "sense", folder, timeout=300)
        easy = run_child("bench.bench_thumbnails", "child", "easy", folder, timeout=300)
    speed = easy["ms"] / sense["ms"]
    note = f"{COUNT} generated {SIZE[0]}x{SIZE[1]} JPEGs, {source_mb:.1f} MB each on average; box {BOX}x{BOX}"
    return [
        Figure(
            name="thumbnail time",
            sense=round(sense["ms"], 1),
            unit="ms/image",
            goal="ratio (easy-thumbnails / Sense) >= 5",
            met=speed >= 5,
            reference=round(easy["ms"], 1),
            reference_label="easy-thumbnails",
            ratio=round(speed, 2),
            notes=note,
        ),
        Figure(
            name="thumbnail size",
            sense=round(sense["bytes"]),
            unit="bytes avg",
            goal="smaller than easy-thumbnails and < 20 KB",
            met=sense["bytes"] < easy["bytes"] and sense["bytes"] < 20_000,
            reference=round(easy["bytes"]),
            reference_label="easy-thumbnails (JPEG q85)",
            ratio=round(sense["bytes"] / easy["bytes"], 2),
            notes="Sense writes WebP q80; easy-thumbnails' default is JPEG",
        ),
        Figure(
            name="thumbnail peak memory",
            sense=round(sense["peak"] / 2**20, 1),
            unit="MB",
            goal="lower than easy-thumbnails",
            met=sense["peak"] < easy["peak"],
            reference=round(easy["peak"] / 2**20, 1),
            reference_label="easy-thumbnails",
            ratio=round(sense["peak"] / easy["peak"], 2) if easy["peak"] else None,
            notes="peak RSS growth of the process while making the 20 thumbnails",
        ),
    ]


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "child":
        child(sys.argv[2], sys.argv[3])
    else:
        for figure in run():
            print(figure)
