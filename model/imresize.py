"""MATLAB-compatible ``imresize`` (bicubic with antialiasing), the resize convention of the SR literature.

Every low-resolution image in this project (evaluation, training, the ``bicubic`` model) is made here,
so published numbers are comparable with ours. The resize is separable and linear, so it is expressed as
two dense matrices: ``out = Wh @ img @ Ww.T``. The matrices are built in float64 exactly like MATLAB's
``contributions`` (kernel stretched by 1/scale when shrinking, symmetric boundary handling) and cached.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

__all__ = ["imresize", "resize_matrix"]


def _cubic(x: np.ndarray) -> np.ndarray:
    # Keys' cubic with a = -0.5, as MATLAB.
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


def _triangle(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return (1 - ax) * (ax <= 1)


_KERNELS = {"cubic": (_cubic, 4.0), "linear": (_triangle, 2.0)}


@functools.lru_cache(maxsize=256)
def _matrix_np(in_len: int, out_len: int, scale: float, kernel: str, antialias: bool) -> np.ndarray:
    fn, width = _KERNELS[kernel]
    if scale < 1 and antialias:
        weight_fn = lambda x: scale * fn(scale * x)  # noqa: E731 - a stretched kernel
        width = width / scale
    else:
        weight_fn = fn
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coordinates (1-based)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based input indices
    w = weight_fn(u[:, None] - idx)
    w = w / w.sum(axis=1, keepdims=True)
    # Symmetric (mirror) boundary, as MATLAB's imresize.
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx0 = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(mat, (np.repeat(np.arange(out_len), taps), idx0.ravel()), w.ravel())
    mat.setflags(write=False)
    return mat


@functools.lru_cache(maxsize=512)
def _matrix(
    in_len: int, out_len: int, scale: float, kernel: str, antialias: bool, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    # Cached per device so training and tiled inference do not re-upload the same matrix every call.
    return torch.tensor(_matrix_np(in_len, out_len, scale, kernel, antialias), dtype=dtype, device=device)


def resize_matrix(
    in_len: int,
    out_len: int,
    scale: float,
    *,
    kernel: str = "cubic",
    antialias: bool = True,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The (out_len, in_len) matrix that resizes one axis."""
    return _matrix(in_len, out_len, float(scale), kernel, antialias, dtype, torch.device(device))


def imresize(
    img: torch.Tensor,
    scale: float | None = None,
    *,
    size: tuple[int, int] | None = None,
    kernel: str = "cubic",
    antialias: bool = True,
) -> torch.Tensor:
    """Resize ``img`` of shape (..., H, W) like MATLAB ``imresize(img, scale)``.

    Args:
        img: float tensor (any leading dimensions); integer images must be converted by the caller.
        scale: resize factor (e.g. 0.25 or 4). The output size is ``ceil(H * scale)``, as MATLAB.
        size: explicit (H, W) output size instead of ``scale``; the factor is then out/in per axis.
        kernel: ``"cubic"`` (default) or ``"linear"``.
        antialias: stretch the kernel when shrinking (MATLAB's default).
    """
    if not img.is_floating_point():
        raise TypeError(f"imresize needs a floating-point tensor, got {img.dtype}")
    if kernel not in _KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {sorted(_KERNELS)}")
    h, w = img.shape[-2:]
    if size is None:
        if scale is None:
            raise ValueError("give scale or size")
        size = (math.ceil(h * scale), math.ceil(w * scale))
        sh = sw = float(scale)
    else:
        sh, sw = size[0] / h, size[1] / w
    # Compute in at least float32; bf16/fp16 matrices would lose the kernel's precision.
    work = img.dtype if img.dtype in (torch.float32, torch.float64) else torch.float32
    mh = resize_matrix(h, size[0], sh, kernel=kernel, antialias=antialias, dtype=work, device=img.device)
    mw = resize_matrix(w, size[1], sw, kernel=kernel, antialias=antialias, dtype=work, device=img.device)
    if not torch.is_autocast_enabled(img.device.type):  # (entering autocast(enabled=False) costs ~5 µs a call)
        return torch.matmul(mh, torch.matmul(img.to(work), mw.T)).to(img.dtype)
    with torch.autocast(img.device.type, enabled=False):  # autocast would run these matmuls in bf16/fp16
        out = torch.matmul(mh, torch.matmul(img.to(work), mw.T))
    return out.to(img.dtype)
