"""Image decoding and encoding: every format and mode a user will send, decoded by Pillow (pypng for 16-bit
colour PNGs); results written by Pillow (WebP, JPEG) or :mod:`model.pngwrite` (PNG).

``decode`` turns bytes into a :class:`DecodedImage`: colour as a (3, H, W) tensor for the engine (uint8, or
float32 in [0, 1] for 16-bit images), alpha kept aside, plus what is needed to write the result back the way
it came (grey or colour, 8 or 16 bits, the ICC profile). ``encode`` writes the upscaled colour, upscales the
alpha with bicubic and restores the mode.

Reading the header (``probe``), the refusals (:class:`ImageError` subclasses with a stable ``code``) and the
format tables live in :mod:`model.imageinfo`, which needs no torch (the gateway uses only that); they are
re-exported here. The gateway checks an upload's body with :func:`model.imagecheck.verify`, so what it
accepts, ``decode`` can decode.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps

from model.imageinfo import (
    CONTENT_TYPES,
    DEFAULT_MAX_PIXELS,
    EXTENSIONS,
    OUTPUT_FORMATS,
    PNG16_MODES,
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageInfo,
    NotAnImageError,
    TooManyPixelsError,
    UnsupportedImageError,
    probe,
    probe_open,
    read_source,
)
from model.imresize import imresize
from model.pngwrite import write_png

__all__ = [
    "ImageError",
    "NotAnImageError",
    "CorruptImageError",
    "TooManyPixelsError",
    "EmptyImageError",
    "UnsupportedImageError",
    "ImageInfo",
    "DecodedImage",
    "probe",
    "decode",
    "encode",
    "OUTPUT_FORMATS",
    "CONTENT_TYPES",
    "EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, what Pillow uses for RGB -> L


@dataclass
class DecodedImage:
    rgb: torch.Tensor  # (3, H, W): uint8 for 8-bit images, float32 in [0, 1] for 16-bit
    alpha: np.ndarray | None  # (H, W) uint8 or uint16, or None
    grey: bool  # source was greyscale: write the result back as greyscale
    bit_depth: int  # 8 or 16
    icc_profile: bytes | None
    info: ImageInfo

    @property
    def width(self) -> int:
        return self.rgb.shape[2]

    @property
    def height(self) -> int:
        return self.rgb.shape[1]


def decode(source: bytes | str | Path | BinaryIO, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode an image for the engine (first frame of animations, EXIF orientation applied)."""
    data = read_source(source)
    info, im = probe_open(data, max_pixels)  # the header's image is decoded on: the upload is opened once
    if info.mode in PNG16_MODES.values():
        return _decode_png16(data, info)
    try:
        im.load()
        icc = im.info.get("icc_profile")
        im = ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as e:
        raise CorruptImageError(f"the image data is truncated or corrupt: {e}") from None
    return _from_pil(im, info, icc)


def _from_pil(im: Image.Image, info: ImageInfo, icc: bytes | None) -> DecodedImage:
    mode = im.mode
    alpha: np.ndarray | None = None
    if mode == "P":
        palette_mode = im.palette.mode if im.palette is not None else None
        mode_to = "RGBA" if "transparency" in im.info or palette_mode == "RGBA" else "RGB"
        im, mode = im.convert(mode_to), mode_to
        icc = icc if mode_to in ("RGB", "RGBA") else None
    if mode == "PA":
        im, mode = im.convert("RGBA"), "RGBA"
    if mode == "CMYK":
        im = _cmyk_to_rgb(im, icc)
        icc, mode = None, "RGB"  # the CMYK profile does not describe RGB pixels; they are sRGB now
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float32)
        grey = torch.from_numpy(np.clip(arr / 65535.0, 0, 1))
        return DecodedImage(grey.expand(3, -1, -1).contiguous(), None, True, 16, icc, info)
    is_grey = mode in ("1", "L", "LA")
    if mode in ("LA", "RGBA"):
        alpha = np.asarray(im.getchannel("A")).copy()
    if mode not in ("RGB",):
        im = im.convert("RGB")
    # The (H, W, 3) -> (3, H, W) copy in numpy: one thread (torch would wake its intra-op threads for it, in
    # every decoding thread of a worker).
    rgb = torch.from_numpy(np.ascontiguousarray(np.asarray(im).transpose(2, 0, 1)))
    if alpha is not None and not (alpha < 255).any():
        alpha = None  # fully opaque: no need to carry it
        if mode == "RGBA":
            is_grey = False
    return DecodedImage(rgb, alpha, is_grey, 8, icc, info)


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            out = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
            if out is not None:
                return out
        except (ImageCms.PyCMSError, OSError):
            pass  # a broken profile: fall back to the naive conversion
    return im.convert("RGB")


def _decode_png16(data: bytes, info: ImageInfo) -> DecodedImage:
    import png  # pypng: Pillow cuts 16-bit colour PNGs to 8 bits

    try:
        reader = png.Reader(bytes=data)
        w, h, rows, meta = reader.asDirect()
        arr = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(h, w, meta["planes"])
    except (png.Error, ValueError, struct.error) as e:
        raise CorruptImageError(f"the 16-bit PNG is truncated or corrupt: {e}") from None
    colour = arr[..., : 1 if meta["greyscale"] else 3].astype(np.float32) / 65535.0
    rgb = torch.from_numpy(colour).permute(2, 0, 1).expand(3, -1, -1).contiguous()
    alpha = arr[..., -1].copy() if meta["alpha"] else None
    icc = None
    try:
        icc = Image.open(io.BytesIO(data)).info.get("icc_profile")
    except Exception:  # the header was read once already; an ICC problem must not fail the decode
        pass
    return DecodedImage(rgb, alpha, bool(meta["greyscale"]), 16, icc, info)


# -- encoding -----------------------------------------------------------------------------------------------


def _to_grey(rgb: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_LUMA, dtype=torch.float32)[:, None, None]
    return (rgb.float() * w).sum(0)


def _upscale_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic upscale of the alpha plane to (H, W), in the alpha's own bit depth."""
    h, w = size
    if alpha.dtype == np.uint8:
        return np.asarray(Image.fromarray(alpha, "L").resize((w, h), Image.Resampling.BICUBIC))
    a = torch.from_numpy(alpha.astype(np.float32) / 65535.0)
    return (imresize(a, size=(h, w)).clamp_(0, 1) * 65535).round_().numpy().astype(np.uint16)


def encode(
    src: DecodedImage, sr: torch.Tensor, fmt: str = "png", quality: int = 90, png_compress_level: int = 1
) -> bytes:
    """Write the upscaled colour ``sr`` ((3, H, W), uint8 or float in [0, 1]) the way ``src`` came in.

    ``fmt`` is png, webp or jpeg. PNG keeps 16 bits when the source had them; WebP and JPEG are 8-bit, and
    JPEG has no alpha, so transparent images are flattened onto white. PNGs are written by
    :func:`model.pngwrite.write_png` (5x faster than Pillow at level 1); ``png_compress_level`` trades size
    for speed there (0-3 ISA-L's levels, 4-9 zlib's).
    """
    fmt = fmt.lower()
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be between 1 and 100, got {quality}")
    h, w = sr.shape[1:]
    alpha = _upscale_alpha(src.alpha, (h, w)) if src.alpha is not None else None
    if fmt == "png":
        depth = np.uint16 if src.bit_depth == 16 else np.uint8
        pixels = _pixels(src, sr, depth)
        if alpha is not None:
            pixels = np.dstack([pixels, _depth(alpha, depth)])
        return write_png(pixels, level=png_compress_level, icc_profile=src.icc_profile)
    im = Image.fromarray(_pixels(src, sr, np.uint8), "L" if src.grey else "RGB")
    if alpha is not None:
        a8 = Image.fromarray(_depth(alpha, np.uint8), "L")
        if fmt == "jpeg":
            im = Image.composite(im, Image.new(im.mode, im.size, "white"), a8)
        else:
            im.putalpha(a8)
    buf = io.BytesIO()
    extra = {"icc_profile": src.icc_profile} if src.icc_profile else {}
    if fmt == "webp":
        im.save(buf, "WEBP", quality=quality, method=4, **extra)
    else:
        im.save(buf, "JPEG", quality=quality, **extra)
    return buf.getvalue()


def _pixels(src: DecodedImage, sr: torch.Tensor, dtype: type[np.unsignedinteger]) -> np.ndarray:
    """``sr`` as an (H, W) grey or (H, W, 3) colour array of ``dtype`` (uint8 or uint16)."""
    if sr.dtype == torch.uint8 and dtype == np.uint8 and not src.grey:
        return np.ascontiguousarray(sr.numpy().transpose(1, 2, 0))  # as needed already: no float round trip
    colour = sr.float() / 255.0 if sr.dtype == torch.uint8 else sr.float().clamp(0, 1)
    colour = _to_grey(colour) if src.grey else colour.permute(1, 2, 0)
    top = np.iinfo(dtype).max
    return np.ascontiguousarray((colour * top).round_().clamp_(0, top).numpy().astype(dtype))


def _depth(alpha: np.ndarray, dtype: type[np.unsignedinteger]) -> np.ndarray:
    """An alpha plane in ``dtype`` (uint8 or uint16)."""
    if alpha.dtype == dtype:
        return alpha
    return (alpha // 257).astype(np.uint8) if dtype == np.uint8 else alpha.astype(np.uint16) * 257
