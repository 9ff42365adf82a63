"""A fast PNG writer for results: one filter for the whole image in numpy, then ISA-L's deflate.

Encoding a 512x512 SRResNet result with Pillow took 17 ms at level 1 (its per-row adaptive filtering alone is
~9 ms), as much CPU as ~8% of the engine's work per image on a 2-core machine. Here the PNG "average" filter is
applied to every row at once (it only reads unfiltered neighbours, so it vectorises; of the five filters it
gave the smallest files after ISA-L on SRResNet outputs), and ISA-L (``isal``) deflates 4x faster than zlib at
its fastest level: 3 ms in all, files 2-13% larger than Pillow's at level 1 (measured on scikit-image photos).
Levels 4-9 use zlib for smaller files at zlib's speed.

Writes 8- or 16-bit grey, grey+alpha, RGB and RGBA, with an optional ICC profile.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from isal import isal_zlib

__all__ = ["write_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (grey, grey+alpha, RGB, RGBA)
_AVERAGE = 3  # PNG filter type


def write_png(pixels: np.ndarray, *, level: int = 1, icc_profile: bytes | None = None) -> bytes:
    """PNG bytes of ``pixels``: (H, W) or (H, W, C) with C in 1..4, uint8 or uint16.

    ``level`` 0-3 are ISA-L's levels (0 fastest), 4-9 zlib's.
    """
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    h, w, c = pixels.shape
    if c not in _COLOUR_TYPES or pixels.dtype not in (np.uint8, np.uint16) or h < 1 or w < 1:
        raise ValueError(f"cannot write a PNG of shape {pixels.shape} and dtype {pixels.dtype}")
    if not 0 <= level <= 9:
        raise ValueError(f"PNG level must be 0-9, got {level}")
    depth = 8 * pixels.dtype.itemsize
    rows = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder(">")).view(np.uint8).reshape(h, -1)
    scanlines = np.empty((h, rows.shape[1] + 1), np.uint8)
    scanlines[:, 0] = _AVERAGE
    _average_filter(rows, c * depth // 8, out=scanlines[:, 1:])
    raw = scanlines.data
    idat = isal_zlib.compress(raw, level) if level <= 3 else zlib.compress(raw, level)
    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, _COLOUR_TYPES[c], 0, 0, 0))]
    if icc_profile:
        chunks.append(_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc_profile)))
    chunks += [_chunk(b"IDAT", idat), _chunk(b"IEND", b"")]
    return _SIGNATURE + b"".join(chunks)


def _average_filter(rows: np.ndarray, bpp: int, out: np.ndarray) -> None:
    """out = rows - floor((left + up) / 2) (mod 256), bytewise, ``bpp`` bytes per pixel; all in uint8."""
    left = np.zeros_like(rows)
    left[:, bpp:] = rows[:, :-bpp]
    up = np.zeros_like(rows)
    up[1:] = rows[:-1]
    # floor((a + b) / 2) without leaving uint8: (a >> 1) + (b >> 1) + (a & b & 1)
    mean = (left >> 1) + (up >> 1) + (left & up & 1)
    np.subtract(rows, mean, out=out)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))
