import io
import zlib

import numpy as np
import png
import pytest
from PIL import Image

from model.pngwrite import write_png
from tests.conftest import photo

PHOTO = photo("astronaut")[:96, :80]


def _read(data: bytes) -> tuple[np.ndarray, dict]:
    """Decode with pypng, a reader independent of the writer, to every channel and bit depth as written."""
    w, h, rows, meta = png.Reader(bytes=data).asDirect()
    dtype = np.uint16 if meta["bitdepth"] == 16 else np.uint8
    return np.vstack([np.asarray(r, dtype=dtype) for r in rows]).reshape(h, w, meta["planes"]), meta


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("level", [0, 1, 3, 4, 9])
def test_lossless_in_every_mode_depth_and_level(channels, dtype, level):
    rng = np.random.default_rng(channels)
    noise = rng.integers(0, np.iinfo(dtype).max + 1, (37, 23, channels), dtype=dtype)
    pixels = noise if channels != 3 else PHOTO[:37, :23].astype(dtype) * (257 if dtype == np.uint16 else 1)
    out, meta = _read(write_png(pixels, level=level))
    assert meta["bitdepth"] == 8 * np.dtype(dtype).itemsize
    assert meta["greyscale"] == (channels <= 2) and meta["alpha"] == (channels in (2, 4))
    assert out.dtype == dtype and np.array_equal(out, pixels)


def test_pillow_reads_it_with_its_icc_profile():
    data = write_png(PHOTO, icc_profile=b"not really a profile")
    im = Image.open(io.BytesIO(data))
    assert im.mode == "RGB" and np.array_equal(np.asarray(im), PHOTO)
    assert im.info["icc_profile"] == b"not really a profile"
    Image.open(io.BytesIO(data)).verify()  # the chunk CRCs
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(write_png(PHOTO[..., 0])))), PHOTO[..., 0])  # (H, W)


def test_one_pixel_and_one_row():
    for shape in [(1, 1, 3), (1, 50, 3), (50, 1, 3)]:
        pixels = PHOTO[: shape[0], : shape[1]]
        assert np.array_equal(_read(write_png(pixels))[0], pixels)


def test_filtered_photo_compresses_like_pillow():
    """The whole-image filter must not give away what filtering is for: within 25% of Pillow's size at level 1
    on a real photograph, and far below the raw pixels."""
    big = np.asarray(Image.fromarray(PHOTO).resize((320, 384), Image.Resampling.BICUBIC))
    ours = len(write_png(big, level=1))
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "PNG", compress_level=1, compress_type=zlib.Z_RLE)
    assert ours < 1.25 * len(buf.getvalue()) and ours < 0.6 * big.nbytes


def test_refuses_what_png_cannot_hold():
    with pytest.raises(ValueError, match="cannot write"):
        write_png(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="cannot write"):
        write_png(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="cannot write"):
        write_png(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="level"):
        write_png(PHOTO, level=10)
