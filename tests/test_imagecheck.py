"""The door check (``model.imagecheck.verify``): truncated and corrupt uploads of every format are refused, valid
files of every mode are accepted, and whatever it accepts the worker's decode can decode."""

from __future__ import annotations

import io
import random
import struct
import warnings

import numpy as np
import png
import pytest
from PIL import Image

from model.imagecheck import verify
from model.imageio import CorruptImageError, ImageError, UnsupportedImageError, decode, probe
from tests.conftest import photo

RGB = photo("chelsea")[40:136, 60:188]  # a 96x128 crop of a real photograph
RGBA = np.dstack([RGB, np.linspace(0, 255, RGB.shape[1], dtype=np.uint8)[None, :].repeat(RGB.shape[0], 0)])


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _frames(fmt: str, **kw) -> bytes:
    im = Image.fromarray(RGB)
    return _save(im, fmt, save_all=True, append_images=[im.rotate(90), im.rotate(180)], **kw)


def _pypng(rows: np.ndarray, bitdepth: int | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    h, w = rows.shape[:2]
    planes = 1 if rows.ndim == 2 else rows.shape[2]
    bitdepth = bitdepth or rows.dtype.itemsize * 8
    png.Writer(w, h, greyscale=planes < 3, alpha=planes in (2, 4), bitdepth=bitdepth, **kw).write(
        buf, rows.reshape(h, -1)
    )
    return buf.getvalue()


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(Image.fromarray(RGB), "JPEG", exif=exif.tobytes())


def valid_files() -> dict[str, bytes]:
    im = Image.fromarray(RGB)
    grey16 = (RGB[..., 0].astype(np.uint16) * 257) ^ 0x5A
    return {
        "png-1": _save(im.convert("1"), "PNG"),
        "png-L": _save(im.convert("L"), "PNG"),
        "png-LA": _save(Image.fromarray(RGBA).convert("LA"), "PNG"),
        "png-P": _save(im.convert("P"), "PNG"),
        "png-P-transparency": _save(im.convert("P"), "PNG", transparency=3),
        "png-RGB": _save(im, "PNG"),
        "png-RGBA": _save(Image.fromarray(RGBA), "PNG"),
        "png-I;16": _pypng(grey16),
        "png-RGB;16": _pypng(RGB.astype(np.uint16) * 257),
        "png-RGBA;16-interlaced": _pypng(RGBA.astype(np.uint16) * 257, interlace=True),
        "png-RGB-interlaced": _pypng(RGB, interlace=True),
        "png-4bit-grey": _pypng((RGB[..., 0] >> 4).astype(np.uint8), bitdepth=4),
        "png-animated": _frames("PNG"),
        "jpeg-L": _save(im.convert("L"), "JPEG"),
        "jpeg-RGB": _save(im, "JPEG", quality=95),
        "jpeg-RGB-444": _save(im, "JPEG", subsampling=0),
        "jpeg-CMYK": _save(im.convert("CMYK"), "JPEG"),
        "jpeg-progressive": _save(im, "JPEG", progressive=True),
        "jpeg-restart-markers": _save(im, "JPEG", restart_marker_blocks=4),
        "jpeg-exif-rotated": _exif_rotated(),
        "webp-lossy": _save(im, "WEBP", quality=80),
        "webp-lossless-RGBA": _save(Image.fromarray(RGBA), "WEBP", lossless=True),
        "webp-animated": _frames("WEBP"),
        "bmp-1": _save(im.convert("1"), "BMP"),
        "bmp-L": _save(im.convert("L"), "BMP"),
        "bmp-P": _save(im.convert("P"), "BMP"),
        "bmp-RGB": _save(im, "BMP"),
        "bmp-RGBA": _save(Image.fromarray(RGBA), "BMP"),
        "tiff-1": _save(im.convert("1"), "TIFF"),
        "tiff-L": _save(im.convert("L"), "TIFF"),
        "tiff-LA": _save(Image.fromarray(RGBA).convert("LA"), "TIFF"),
        "tiff-P": _save(im.convert("P"), "TIFF"),
        "tiff-RGB": _save(im, "TIFF"),
        "tiff-RGBA": _save(Image.fromarray(RGBA), "TIFF"),
        "tiff-CMYK": _save(im.convert("CMYK"), "TIFF"),
        "tiff-I;16": _save(Image.fromarray(grey16), "TIFF"),
        "tiff-lzw": _save(im, "TIFF", compression="tiff_lzw"),
        "tiff-deflate": _save(im, "TIFF", compression="tiff_adobe_deflate"),
        "tiff-packbits": _save(im, "TIFF", compression="packbits"),
        "tiff-jpeg": _save(im, "TIFF", compression="jpeg"),
        "tiff-multipage": _frames("TIFF"),
        "gif": _save(im, "GIF"),
        "gif-transparency": _save(im.convert("P"), "GIF", transparency=0),
        "gif-animated": _frames("GIF", duration=100, loop=0),
    }


VALID = valid_files()
# One of each format for the corruption tests.
SAMPLES = {k: VALID[k] for k in ("png-RGB", "jpeg-RGB", "webp-lossy", "webp-lossless-RGBA", "bmp-RGB", "gif")}
SAMPLES.update({k: VALID[k] for k in ("tiff-RGB", "tiff-lzw", "tiff-deflate", "gif-animated", "jpeg-progressive")})


def door(data: bytes) -> None:
    verify(data, probe(data))


@pytest.mark.parametrize("name", VALID)
def test_valid_files_of_every_mode_are_accepted_and_decode(name):
    door(VALID[name])
    img = decode(VALID[name])
    assert sorted((img.width, img.height)) == sorted(RGB.shape[:2])  # (the EXIF-rotated one is turned)


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.99])
def test_truncated_files_are_refused_as_corrupt(name, keep):
    data = SAMPLES[name]
    cut = data[: int(len(data) * keep)]
    with pytest.raises(CorruptImageError):
        door(cut)


def corruptions(data: bytes, n: int, seed: int):
    """``n`` copies of ``data`` with bytes in the middle (past the first 64) zeroed, randomised or bit-flipped."""
    rng = random.Random(seed)
    for i in range(n):
        b = bytearray(data)
        p, k = rng.randrange(64, len(data) - 16), rng.randrange(1, 16)
        if i % 3 == 0:
            b[p : p + k] = bytes(k)
        elif i % 3 == 1:
            b[p : p + k] = rng.randbytes(k)
        else:
            b[p] ^= 1 << rng.randrange(8)
        yield bytes(b)


@pytest.mark.parametrize("name", SAMPLES)
def test_whatever_the_door_accepts_the_worker_decodes(name):
    """Corrupt bytes in the middle: refused at the door, or harmless (the worker's decode succeeds); never
    accepted and then failing."""
    refused = 0
    for bad in corruptions(SAMPLES[name], 60, seed=len(name)):
        try:
            door(bad)
        except ImageError:
            refused += 1
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decode(bad)  # raises if the door let through what the worker cannot decode
    if not name.startswith(("bmp", "tiff-RGB")):  # raw pixels: any byte values are an image
        assert refused > 0, "no corruption was refused: the door checks nothing"


def test_png_checks_without_decoding_pixels():
    good = VALID["png-RGB"]
    idat = good.index(b"IDAT")
    bad = bytearray(good)
    bad[idat + 40] ^= 0xFF  # CRC no longer matches
    with pytest.raises(CorruptImageError, match="checksum of its IDAT chunk"):
        door(bytes(bad))
    with pytest.raises(CorruptImageError, match="no IEND"):
        door(good[:-12])


def _png_with_rows(raw: bytes, width: int, height: int) -> bytes:
    """An RGB PNG whose IDAT holds ``raw`` (filter bytes and rows) with correct CRCs: crafted, not damaged."""
    import zlib

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_png_with_right_checksums_but_wrong_image_data_is_refused():
    w, h = 8, 4
    rows = b"".join(b"\x00" + bytes(3 * w) for _ in range(h))
    door(_png_with_rows(rows, w, h))
    with pytest.raises(CorruptImageError, match="holds 81 of the 100"):
        door(_png_with_rows(rows[:81], w, h))
    with pytest.raises(CorruptImageError, match="row 2 has an unknown filter type"):
        door(_png_with_rows(rows[:50] + b"\x07" + rows[51:], w, h))
    for bad in (_png_with_rows(rows[:81], w, h), _png_with_rows(rows[:50] + b"\x07" + rows[51:], w, h)):
        with pytest.raises(CorruptImageError):
            decode(bad)  # the worker would have failed on both


def test_a_known_signature_with_a_broken_header_is_corrupt_not_unknown():
    good = VALID["png-RGB"]
    with pytest.raises(CorruptImageError, match="starts like a PNG"):
        probe(good[:16] + b"\xff" * 13 + good[29:])
    lzw = VALID["tiff-lzw"]  # Pillow writes the IFD last: a cut TIFF has no readable header
    with pytest.raises(CorruptImageError, match="starts like a TIFF"):
        probe(lzw[: len(lzw) // 2])


def test_float_tiff_is_refused_from_the_header():
    data = _save(Image.fromarray(RGB[..., 0].astype(np.float32) / 255), "TIFF")
    with pytest.raises(UnsupportedImageError, match="mode F"):
        probe(data)


def test_gif_missing_only_its_trailer_is_forgiven():
    anim = VALID["gif-animated"]
    assert anim.endswith(b";")
    door(anim[:-1])
    decode(anim[:-1])
