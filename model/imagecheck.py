"""The gateway's check of an upload's body, so an image the worker could not decode is refused at the door
(``corrupt_image``, 422) rather than accepted and failed later.

:func:`verify` runs after :func:`model.imageio.probe` (format, size and pixel limit from the header) and does,
per format, the least work that still fails where the worker's decode (:func:`model.imageio.decode`) fails:

- PNG: every chunk's CRC, the IDAT stream inflated (ISA-L) to at least the size the header implies, every row
  filter type valid, IEND present; no pixel is unfiltered or stored.
- JPEG: a reduced-size decode (libjpeg's draft mode, 1/8 scale): every entropy-coded segment is read, the
  full-size inverse DCT and colour conversion are skipped.
- WebP, GIF, BMP, TIFF: the first frame is decoded, as the worker does (these formats have no cheaper decode
  that finds the same errors); a GIF's blocks are also walked to its trailer, so a cut-off animation is refused.
  At most one such decode per CPU runs at once, so concurrent uploads cannot hold many decoded frames.

What each costs per MB of upload is printed by ``python -m model.bench_imagecheck``.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import warnings

import numpy as np
from isal import isal_zlib
from PIL import Image

from model.imageinfo import CorruptImageError, ImageInfo

__all__ = ["verify"]

_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_INFLATE_CHUNK = 1 << 20
_FULL_DECODES = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))


def verify(data: bytes, info: ImageInfo) -> None:
    """Raise :class:`CorruptImageError` when the worker's decode of ``data`` would fail; ``info`` is its probe."""
    fmt = info.format
    try:
        if fmt == "PNG":
            _verify_png(data)
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd EXIF; the decode is what counts
            if fmt == "JPEG":
                _decode(data, draft=True)
            else:
                if fmt == "GIF":
                    _walk_gif(data)
                with _FULL_DECODES:
                    _decode(data, draft=False)
    except CorruptImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, isal_zlib.error) as e:  # type: ignore[misc]
        raise CorruptImageError(f"the {fmt} is truncated or corrupt: {e}") from None


def _decode(data: bytes, draft: bool) -> None:
    """What :func:`model.imageio.decode` does with Pillow (first frame, EXIF read), at 1/8 size with ``draft``."""
    with Image.open(io.BytesIO(data)) as im:
        if draft:
            im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
        im.load()
        im.getexif()


# -- PNG --------------------------------------------------------------------------------------------------------


def _png_rows(width: int, height: int, bits: int, interlaced: bool) -> list[tuple[int, int]]:
    """(rows, bytes per row including the filter byte) of each pass of the image's filtered data."""
    if not interlaced:
        return [(height, 1 + (width * bits + 7) // 8)]
    rows = []
    for x0, y0, dx, dy in _ADAM7:
        w, h = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if w > 0 and h > 0:
            rows.append((h, 1 + (w * bits + 7) // 8))
    return rows


def _verify_png(data: bytes) -> None:
    view = memoryview(data)
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise CorruptImageError("the PNG has no IHDR header chunk")
    width, height, depth, ctype, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if ctype not in _PNG_CHANNELS:
        raise CorruptImageError(f"the PNG has an invalid colour type {ctype}")
    passes = _png_rows(width, height, depth * _PNG_CHANNELS[ctype], interlace == 1)
    needed = sum(r * n for r, n in passes)
    inflater = _Inflater(needed, passes[0][1] if len(passes) == 1 else 0)
    pos, ended = 8, False
    while pos < len(data) and not ended:
        if pos + 12 > len(data):
            raise CorruptImageError(f"the PNG is truncated: {len(data) - pos} stray bytes after its last chunk")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        name = kind.decode("latin-1")
        if end > len(data):
            raise CorruptImageError(f"the PNG is truncated: its {name} chunk needs {end - len(data)} more bytes")
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if isal_zlib.crc32(view[pos + 4 : end - 4]) != crc:
            raise CorruptImageError(f"the PNG is corrupt: the checksum of its {name} chunk at byte {pos} is wrong")
        if kind == b"IDAT":
            inflater.feed(view[pos + 8 : end - 4])
        ended = kind == b"IEND"
        pos = end
    if not ended:
        raise CorruptImageError("the PNG is truncated: it has no IEND chunk")
    if inflater.out < needed:
        raise CorruptImageError(f"the PNG's image data holds {inflater.out:,} of the {needed:,} bytes its size needs")


class _Inflater:
    """Inflates a PNG's IDAT stream a megabyte at a time, keeping nothing but counts: stops once ``needed``
    bytes came out (a decoder reads no further), checks each row's filter byte when the rows are uniform."""

    def __init__(self, needed: int, row_bytes: int):
        self.z = isal_zlib.decompressobj()
        self.needed, self.row_bytes, self.out = needed, row_bytes, 0

    def feed(self, chunk) -> None:
        buf = chunk
        while buf and self.out < self.needed and not self.z.eof:
            got = self.z.decompress(buf, _INFLATE_CHUNK)
            buf = self.z.unconsumed_tail
            if self.row_bytes and got:
                first = (-self.out) % self.row_bytes  # offset of the first filter byte in this piece
                image_part = np.frombuffer(got, np.uint8)[: self.needed - self.out]  # a decoder ignores the rest
                filters = image_part[first :: self.row_bytes]
                if filters.size and int(filters.max()) > 4:
                    row = (self.out + first) // self.row_bytes + int(np.argmax(filters > 4))
                    raise CorruptImageError(f"the PNG is corrupt: row {row} has an unknown filter type")
            self.out += len(got)


# -- GIF --------------------------------------------------------------------------------------------------------


def _walk_gif(data: bytes) -> None:
    """Every block of the GIF, frame after frame, is whole (a trailer byte missing at the very end is forgiven, as
    browsers do)."""
    n = len(data)
    pos = 13 + _colour_table(data[10]) if n >= 13 else n + 1
    while pos < n:
        kind = data[pos]
        if kind == 0x3B:  # trailer
            return
        if kind == 0x21:  # extension: label, then sub-blocks
            pos = _sub_blocks(data, pos + 2)
        elif kind == 0x2C:  # image: descriptor, local colour table, LZW code size, sub-blocks
            if pos + 10 > n:
                break
            pos = _sub_blocks(data, pos + 10 + _colour_table(data[pos + 9]) + 1)
        else:
            raise CorruptImageError(f"the GIF is corrupt: unknown block type 0x{kind:02x} at byte {pos}")
    if pos != n:
        raise CorruptImageError("the GIF is truncated: its last block is cut off")


def _colour_table(flags: int) -> int:
    return 3 * (2 ** ((flags & 7) + 1)) if flags & 0x80 else 0


def _sub_blocks(data: bytes, pos: int) -> int:
    """Position after the run of sub-blocks at ``pos`` (past the end of ``data`` when it is cut off)."""
    n = len(data)
    while pos < n:
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos
    return n + 1
