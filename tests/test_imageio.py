import io
import struct
import zlib

import numpy as np
import png
import pytest
import torch
from PIL import Image, ImageCms

from model.imageio import CorruptImageError, EmptyImageError, NotAnImageError, TooManyPixelsError, decode, encode, probe
from tests.conftest import photo

PHOTO = photo("astronaut")[::8, ::8]  # 64x64 real photograph


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _upscale_nearest(rgb: torch.Tensor, s: int = 2) -> torch.Tensor:
    return rgb.repeat_interleave(s, 1).repeat_interleave(s, 2)


def _png_with_header(width: int, height: int) -> bytes:
    """A PNG whose header claims any size, with a tiny (wrong) body: what a decompression bomb looks like."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def test_decode_opens_the_upload_once(monkeypatch):
    """The header read by the probe is decoded on: the upload is not opened a second time."""
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **kw: opened.append(1) or real_open(*a, **kw))
    d = decode(_save(Image.fromarray(PHOTO), "PNG"))
    assert len(opened) == 1 and np.array_equal(d.rgb.permute(1, 2, 0).numpy(), PHOTO)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_formats_decode_to_rgb_uint8(fmt):
    im = Image.fromarray(PHOTO)
    d = decode(_save(im if fmt != "GIF" else im.convert("P"), fmt))
    assert d.rgb.shape == (3, 64, 64) and d.rgb.dtype == torch.uint8
    assert d.info.format == fmt and d.bit_depth == 8
    if fmt in ("PNG", "BMP", "TIFF"):
        assert torch.equal(d.rgb.permute(1, 2, 0), torch.from_numpy(PHOTO))


def test_gif_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:])
    d = decode(data)
    assert d.rgb[:, 0, 0].tolist() == [255, 0, 0]


def test_grey_stays_grey():
    grey = Image.fromarray(PHOTO[..., 0], "L")
    d = decode(_save(grey, "PNG"))
    assert d.grey and torch.equal(d.rgb[0], d.rgb[2])
    out = Image.open(io.BytesIO(encode(d, _upscale_nearest(d.rgb))))
    assert out.mode == "L" and out.size == (128, 128)
    assert np.array_equal(np.asarray(out)[::2, ::2], PHOTO[..., 0])


def test_one_bit_image():
    d = decode(_save(Image.fromarray(PHOTO[..., 0] > 128).convert("1"), "PNG"))
    assert d.grey and set(d.rgb.unique().tolist()) <= {0, 255}


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_upscaled_separately(mode):
    rgba = np.dstack([PHOTO, np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))])
    im = Image.fromarray(rgba, "RGBA").convert(mode)
    d = decode(_save(im, "PNG"))
    assert d.alpha is not None and d.alpha.shape == (64, 64)
    out = Image.open(io.BytesIO(encode(d, _upscale_nearest(d.rgb), "png")))
    assert out.mode == mode and out.size == (128, 128)
    alpha = np.asarray(out.getchannel("A")).astype(int)
    # a horizontal ramp stays a ramp after bicubic upscaling
    assert alpha[10, 0] < 10 and alpha[10, -1] > 245 and np.all(np.diff(alpha[10]) >= -1)
    webp = Image.open(io.BytesIO(encode(d, _upscale_nearest(d.rgb), "webp")))
    assert webp.mode in ("RGBA", "LA")
    jpeg = Image.open(io.BytesIO(encode(d, _upscale_nearest(d.rgb), "jpeg")))
    assert jpeg.mode in ("RGB", "L")  # flattened onto white
    assert np.asarray(jpeg.convert("L"))[10, 1] > 240


def test_opaque_alpha_is_dropped():
    im = Image.fromarray(PHOTO).convert("RGBA")
    assert decode(_save(im, "PNG")).alpha is None


def test_palette_with_and_without_transparency():
    p = Image.fromarray(PHOTO).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    assert decode(_save(p, "PNG")).alpha is None
    p.info["transparency"] = 0
    d = decode(_save(p, "PNG", transparency=0))
    assert d.alpha is not None and (d.alpha == 0).any()


def test_cmyk_jpeg():
    d = decode(_save(Image.fromarray(PHOTO).convert("CMYK"), "JPEG", quality=95))
    assert d.rgb.shape == (3, 64, 64) and d.icc_profile is None
    assert (d.rgb.float() - torch.from_numpy(PHOTO).permute(2, 0, 1).float()).abs().mean() < 12


def test_icc_profile_is_kept():
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    d = decode(_save(Image.fromarray(PHOTO), "PNG", icc_profile=icc))
    assert d.icc_profile == icc
    for fmt in ("png", "webp", "jpeg"):
        assert Image.open(io.BytesIO(encode(d, _upscale_nearest(d.rgb), fmt))).info.get("icc_profile") == icc


def test_exif_orientation_is_applied():
    im = Image.fromarray(PHOTO[:, :32])  # 64 high, 32 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    d = decode(_save(im, "JPEG", exif=exif.tobytes()))
    assert d.rgb.shape == (3, 32, 64)


def test_sixteen_bit_grey_round_trip():
    arr = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    d = decode(_save(Image.fromarray(arr), "PNG"))  # uint16 -> I;16
    assert d.bit_depth == 16 and d.grey and d.rgb.dtype == torch.float32
    assert torch.allclose(d.rgb[0] * 65535, torch.from_numpy(arr.astype(np.float32)), atol=0.5)
    out = Image.open(io.BytesIO(encode(d, _upscale_nearest(d.rgb))))
    assert out.mode.startswith("I") and out.size == (128, 128)
    assert np.array_equal(np.asarray(out).astype(np.uint16)[::2, ::2], arr)


@pytest.mark.parametrize("alpha", [False, True])
def test_sixteen_bit_colour_png_keeps_sixteen_bits(alpha):
    rng = np.random.default_rng(0)
    planes = 4 if alpha else 3
    arr = rng.integers(0, 65536, (16, 16, planes), dtype=np.uint16)
    buf = io.BytesIO()
    png.Writer(16, 16, greyscale=False, alpha=alpha, bitdepth=16).write(buf, arr.reshape(16, -1))
    d = decode(buf.getvalue())
    assert d.bit_depth == 16 and d.info.mode == ("RGBA;16" if alpha else "RGB;16")
    assert torch.allclose(d.rgb.permute(1, 2, 0) * 65535, torch.from_numpy(arr[..., :3].astype(np.float32)), atol=0.5)
    w, h, rows, meta = png.Reader(bytes=encode(d, _upscale_nearest(d.rgb))).asDirect()
    out = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(h, w, meta["planes"])
    assert meta["bitdepth"] == 16 and (w, h) == (32, 32) and meta["alpha"] == alpha
    assert np.array_equal(out[::2, ::2, :3], arr[..., :3])  # not cut to 8 bits


def test_output_formats_and_quality():
    d = decode(_save(Image.fromarray(PHOTO), "PNG"))
    sr = _upscale_nearest(d.rgb)
    small = encode(d, sr, "jpeg", quality=20)
    large = encode(d, sr, "jpeg", quality=95)
    assert len(small) < len(large)
    assert Image.open(io.BytesIO(encode(d, sr, "webp"))).format == "WEBP"
    with pytest.raises(ValueError, match="unknown output format"):
        encode(d, sr, "gif")
    with pytest.raises(ValueError, match="quality"):
        encode(d, sr, "jpeg", quality=0)


def test_float_output_is_accepted():
    d = decode(_save(Image.fromarray(PHOTO), "PNG"))
    out = Image.open(io.BytesIO(encode(d, d.rgb.float() / 255)))
    assert np.array_equal(np.asarray(out), PHOTO)


# -- refusals ---------------------------------------------------------------------------------------------


def test_not_an_image():
    with pytest.raises(NotAnImageError, match="not an image"):
        decode(b"%PDF-1.4 definitely not a picture")
    with pytest.raises(NotAnImageError, match="empty"):
        decode(b"")


def test_truncated_image():
    data = _save(Image.fromarray(photo("astronaut")), "PNG")
    with pytest.raises(CorruptImageError):
        decode(data[: len(data) // 2])
    jpeg = _save(Image.fromarray(photo("astronaut")), "JPEG")
    with pytest.raises(CorruptImageError):
        decode(jpeg[: len(jpeg) // 3])


def test_decompression_bomb_is_refused_from_the_header():
    bomb = _png_with_header(100_000, 100_000)  # 10 gigapixels claimed in 80 bytes
    with pytest.raises(TooManyPixelsError, match="100000x100000"):
        probe(bomb, max_pixels=16_000_000)
    with pytest.raises(TooManyPixelsError):
        decode(bomb, max_pixels=16_000_000)


def test_pixel_limit_is_configurable():
    data = _save(Image.fromarray(PHOTO), "PNG")
    assert probe(data, max_pixels=64 * 64).pixels == 4096
    with pytest.raises(TooManyPixelsError, match="limit is 4,095"):
        probe(data, max_pixels=4095)


def test_zero_sized_image():
    with pytest.raises((EmptyImageError, CorruptImageError)):
        decode(_png_with_header(0, 10))
