"""Safe image decoding and small WebP thumbnails (Pillow).

Only JPEG, PNG and WebP are ever opened (Pillow would otherwise try every plugin it has,
the usual way into its less-tested decoders). The pixel count is checked from the header
before any pixel is decoded, and Pillow's DecompressionBombWarning is an error in this
process (sense.lib.images.harden(), called at start-up).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from PIL import Image, ImageCms, ImageFile

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
# libwebp effort 0-6: 2 encodes a 320px thumbnail in ~3 ms against ~7 ms for the default 4,
# for output a few percent larger (far under the 20 KB target).
WEBP_METHOD = 2
FORMAT_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}

_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


class ImageRefused(Exception):
    """The bytes are not an image we accept. `code` is stable for machines."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "JPEG", "PNG" or "WEBP"
    mime_type: str
    width: int  # as displayed, after the EXIF orientation
    height: int


def harden(max_pixels: int) -> None:
    """Process-wide: Pillow's bomb check at MAX_PIXELS raises instead of warning, and a
    truncated file is an error, never a silently grey image."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    warnings.simplefilter("error", Image.DecompressionBombWarning)


class _Borrowed:
    """FP lent to Pillow, which closes streams it has finished with (PNG does): the caller
    still needs the file afterwards (hashing, uploading)."""

    def __init__(self, fp: IO[bytes]) -> None:
        self._fp = fp

    def read(self, size: int = -1) -> bytes:
        return self._fp.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fp.seek(offset, whence)

    def tell(self) -> int:
        return self._fp.tell()

    def close(self) -> None:
        pass


def _open(fp: IO[bytes], max_pixels: int) -> Image.Image:
    try:
        image = Image.open(_Borrowed(fp), formats=ALLOWED_FORMATS)  # type: ignore[arg-type]
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRefused(
            f"The image has too many pixels (the limit is {max_pixels:,}).", code="too_many_pixels"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRefused("The file is not a readable JPEG, PNG or WebP image.", code="unreadable") from exc
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageRefused(
            f"The image has too many pixels ({width}x{height}; the limit is {max_pixels:,}).",
            code="too_many_pixels",
        )
    return image


@contextlib.contextmanager
def _decoding() -> Iterator[None]:
    """Pillow decodes lazily, after open(): load(), convert(), thumbnail() and even a PNG's
    getexif() (its EXIF chunk may follow the pixel data) read the rest of the file."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRefused("The image has too many pixels.", code="too_many_pixels") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRefused("The image is truncated or corrupt.", code="unreadable") from exc


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    orientation = image.getexif().get(0x0112, 1)
    width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def inspect(fp: IO[bytes], *, max_pixels: int) -> ImageInfo:
    """Open FP and decode every pixel of its first frame (catches truncated and corrupt files);
    returns its format and displayed size, or raises ImageRefused."""
    image = _open(fp, max_pixels)
    try:
        fmt = str(image.format)
        with _decoding():
            image.load()
            size = _oriented_size(image)
    finally:
        image.close()
    return ImageInfo(format=fmt, mime_type=FORMAT_MIME[fmt], width=size[0], height=size[1])


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """RGB or RGBA in sRGB. An embedded ICC profile is applied (then dropped); a broken one is ignored."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    target = "RGBA" if has_alpha else "RGB"
    if icc and image.mode in ("RGB", "RGBA", "CMYK", "L"):
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            mode = image.mode if image.mode in ("RGB", "RGBA") else "RGB"
            converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode=mode)
            if converted is not None:
                image = converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    if image.mode != target:
        image = image.convert(target)
    return image


def thumbnail(fp: IO[bytes], *, box: int, quality: int, max_pixels: int) -> tuple[bytes, int, int]:
    """A WebP thumbnail of FP's first frame that fits BOX x BOX, upright, in sRGB, without
    any metadata. Returns (bytes, width, height); raises ImageRefused."""
    image = _open(fp, max_pixels)
    try:
        with _decoding():
            orientation = image.getexif().get(0x0112, 1)
            icc = image.info.get("icc_profile")
            if image.mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            # thumbnail() asks a JPEG to decode at 1/2, 1/4 or 1/8 scale (draft mode, no
            # smaller than the box) then resamples with Lanczos: most of
            # the cost of a 12 MP photo is the full-size decode this skips.
            image.thumbnail((box, box), Image.Resampling.LANCZOS, reducing_gap=1.0)
        image = _to_srgb(image, icc if isinstance(icc, bytes) else None)
        if orientation != 1:
            # exif_transpose reads the orientation from the image's own EXIF; on the small
            # copy it is cheap, and the box is square so the fit is unchanged.
            method = {
                2: Image.Transpose.FLIP_LEFT_RIGHT,
                3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE,
                6: Image.Transpose.ROTATE_270,
                7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90,
            }.get(orientation)
            if method is not None:
                image = image.transpose(method)
        # A fresh image carries no info dict: no EXIF, GPS, XMP or ICC can leak into the output.
        clean = Image.new(image.mode, image.size)
        clean.paste(image)
        out = io.BytesIO()
        clean.save(out, "WEBP", quality=quality, method=WEBP_METHOD)
        return out.getvalue(), clean.width, clean.height
    finally:
        image.close()
