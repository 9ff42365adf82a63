"""What an image's header says, read without decoding pixels and without torch: the refusals
(:class:`ImageError` subclasses with a stable ``code``), :class:`ImageInfo` and :func:`probe`, and the format
tables. The gateway needs only this (it checks an upload, it never runs a network), so it stays torch-free;
:mod:`model.imageio` builds decoding and encoding on it and re-exports all of it.

The pixel limit is checked from the header before anything is decoded, so decompression bombs are never
expanded.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageFile, UnidentifiedImageError

__all__ = [
    "ImageError",
    "NotAnImageError",
    "CorruptImageError",
    "TooManyPixelsError",
    "EmptyImageError",
    "UnsupportedImageError",
    "ImageInfo",
    "probe",
    "probe_open",
    "read_source",
    "open_image",
    "png_header",
    "OUTPUT_FORMATS",
    "CONTENT_TYPES",
    "EXTENSIONS",
    "INPUT_FORMATS",
    "PNG16_MODES",
    "DEFAULT_MAX_PIXELS",
]

DEFAULT_MAX_PIXELS = 16_000_000
OUTPUT_FORMATS = ("png", "webp", "jpeg")
CONTENT_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
EXTENSIONS = {"png": ".png", "webp": ".webp", "jpeg": ".jpg"}
INPUT_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF", "MPO")
PNG16_MODES = {2: "RGB;16", 4: "LA;16", 6: "RGBA;16"}  # PNG colour type -> our name for the mode
_SIGNATURES = (
    ("PNG", b"\x89PNG\r\n\x1a\n"),
    ("JPEG", b"\xff\xd8\xff"),
    ("GIF", b"GIF87a"),
    ("GIF", b"GIF89a"),
    ("TIFF", b"II*\x00"),
    ("TIFF", b"MM\x00*"),
)
_BMP_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)  # the DIB header versions: what makes "BM" a BMP
# Modes the decoder cannot turn into colour for the engine (refused from the header, not in the worker).
_UNSUPPORTED_MODES = {
    "F": "floating-point (mode F) images are not supported; send 8- or 16-bit images",
    "La": "images with premultiplied grey alpha (mode La) are not supported",
}

# We enforce our own pixel limit before decoding; Pillow's global one would fire with a less helpful message.

Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """An image that cannot be processed. ``code`` is stable and machine-readable."""

    code = "invalid_image"


class NotAnImageError(ImageError):
    code = "not_an_image"


class CorruptImageError(ImageError):
    code = "corrupt_image"


class TooManyPixelsError(ImageError):
    code = "too_many_pixels"


class EmptyImageError(ImageError):
    code = "empty_image"


class UnsupportedImageError(ImageError):
    code = "unsupported_image"


@dataclass(frozen=True)
class ImageInfo:
    """What the header says, read without decoding pixels."""

    format: str
    width: int
    height: int
    mode: str
    bit_depth: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_source(source: bytes | str | Path | BinaryIO) -> bytes:
    """The bytes of an upload, a file or a stream."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, Path)):
        return Path(source).read_bytes()
    return source.read()


def png_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) from a PNG's IHDR, else None."""
    if len(data) >= 29 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return struct.unpack(">IIBB", data[16:26])
    return None


def _signature(data: bytes) -> str | None:
    """The supported format whose magic bytes ``data`` starts with, else None."""
    for fmt, magic in _SIGNATURES:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:2] == b"BM" and len(data) >= 18 and struct.unpack_from("<I", data, 14)[0] in _BMP_HEADER_SIZES:
        return "BMP"
    return None


def open_image(data: bytes) -> Image.Image:
    if not data:
        raise NotAnImageError("the upload is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        fmt = _signature(data)
        if fmt is not None:  # it says what it is, but Pillow cannot read its header: a damaged file
            raise CorruptImageError(f"the data starts like a {fmt} but its header is truncated or corrupt") from None
        raise NotAnImageError(
            f"the data is not an image in a supported format ({', '.join(f for f in INPUT_FORMATS if f != 'MPO')})"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise TooManyPixelsError(str(e)) from None
    except (OSError, SyntaxError, ValueError, struct.error) as e:
        raise CorruptImageError(f"the image header is corrupt: {e}") from None


def probe(source: bytes | str | Path | BinaryIO, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Read format, size and mode from the header; refuse empty or too large images. Decodes nothing."""
    return probe_open(read_source(source), max_pixels)[0]


def probe_open(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[ImageInfo, Image.Image]:
    """:func:`probe` of ``data``, and the opened (not yet loaded) image it read the header from: a decoder
    goes on from there instead of opening the upload a second time."""
    header = png_header(data)
    if header and (header[0] == 0 or header[1] == 0):  # Pillow would not even open it
        raise EmptyImageError(f"the image has no pixels ({header[0]}x{header[1]})")
    # 16-bit PNGs with colour or alpha: Pillow would cut them to 8 bits (plain 16-bit grey it reads as I;16).
    png16 = header if header and header[2] == 16 and header[3] in PNG16_MODES else None
    im = open_image(data)
    fmt = (im.format or "").upper()
    if fmt not in INPUT_FORMATS:
        raise UnsupportedImageError(
            f"{fmt or 'this'} images are not supported; send {', '.join(f for f in INPUT_FORMATS if f != 'MPO')}"
        )
    w, h = im.size
    if png16:
        w, h = png16[0], png16[1]
    depth = 16 if png16 or im.mode.startswith("I;16") or im.mode == "I" else 8
    info = ImageInfo(fmt if fmt != "MPO" else "JPEG", w, h, im.mode if not png16 else PNG16_MODES[png16[3]], depth)
    if w <= 0 or h <= 0:
        raise EmptyImageError(f"the image has no pixels ({w}x{h})")
    if max_pixels is not None and w * h > max_pixels:
        raise TooManyPixelsError(f"the image has {w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,}")
    if info.mode in _UNSUPPORTED_MODES:
        raise UnsupportedImageError(_UNSUPPORTED_MODES[info.mode])
    return info, im
