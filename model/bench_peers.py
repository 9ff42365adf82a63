"""``srgan bench peers``: our ESPCN through the engine against the same network run by OpenCV's dnn module.

OpenCV's ``dnn_superres`` ESPCN models are TensorFlow ``.pb`` files that cannot be downloaded offline, and they
are a different network (Y channel only). So the comparison runs *our* ESPCN weights in both: exported to ONNX
with ``torch.onnx`` and read with ``cv2.dnn.readNetFromONNX``, preprocessed and postprocessed the way
``dnn_superres`` does it (``blobFromImage`` scaling by 1/255, forward, a saturating conversion to uint8 of the
output times 255). Both sides start from what their decoders give (OpenCV: an HWC uint8 array; the engine: a
(3, H, W) uint8 tensor, as :func:`model.imageio.decode` returns) and end with HWC uint8 pixels for an encoder.
Both use the same number of threads; rounds are interleaved and the median is reported. OpenCV runs one image
at a time (as ``dnn_superres.upsample`` does); the engine takes all images in one call (as the worker does).

Needs the ``peers`` extra (``opencv-contrib-python-headless``, and ``onnx`` for torch's exporter).
"""

from __future__ import annotations

import importlib
import io
import statistics
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import numpy as np
import torch
from PIL import Image

from model.engine import Upscaler
from model.zoo import load_model

__all__ = ["run_peers", "opencv_net", "sample_images"]


def sample_images(side: int, n: int) -> list[np.ndarray]:
    """``n`` HWC uint8 crops of ``side``² from the photographs shipped with the quality gate."""
    gate = resources.files("model").joinpath("gate")
    files = sorted((p for p in gate.iterdir() if p.name.endswith(".png")), key=lambda p: p.name)
    out = []
    for i in range(n):
        with resources.as_file(files[i % len(files)]) as path:
            im = np.asarray(Image.open(path).convert("RGB"))
        if min(im.shape[:2]) < side:
            im = np.asarray(Image.fromarray(im).resize((side, side), Image.Resampling.BICUBIC))
        top, left = (im.shape[0] - side) // 2, (im.shape[1] - side) // 2
        out.append(im[top : top + side, left : left + side].copy())
    return out


def opencv_net(net: torch.nn.Module):  # -> cv2.dnn.Net
    """``net`` (eval mode, fp32) as an OpenCV dnn network, through an in-memory ONNX export."""
    import cv2

    buf = io.BytesIO()
    axes = {"x": {2: "h", 3: "w"}, "y": {2: "oh", 3: "ow"}}
    with torch.no_grad():
        export: Any = torch.onnx.export  # its annotation says paths only; a file-like object works
        export(
            net, (torch.rand(1, 3, 32, 32),), buf, dynamo=False, input_names=["x"], output_names=["y"],
            dynamic_axes=axes, opset_version=13,
        )  # fmt: skip
    return cv2.dnn.readNetFromONNX(np.frombuffer(buf.getvalue(), np.uint8))


def _opencv_upsample(cv_net) -> Callable[[np.ndarray], np.ndarray]:
    cv2: Any = importlib.import_module("cv2")  # its stubs do not know a 4-scalar multiplier

    def run(img: np.ndarray) -> np.ndarray:
        cv_net.setInput(cv2.dnn.blobFromImage(img, 1.0 / 255.0))
        out = cv2.dnn.imagesFromBlob(cv_net.forward())[0]
        return cv2.multiply(out, (255.0, 255.0, 255.0, 0.0), dtype=cv2.CV_8U)  # saturating, rounded

    return run


def run_peers(
    side: int = 256,
    images: int = 8,
    rounds: int = 7,
    threads: int | None = None,
    scale: int = 4,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Output MP/s (median of interleaved rounds) of each variant; the OpenCV row is the reference."""
    import cv2

    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    model = load_model("espcn", scale)
    net = model.module.eval().float()
    hwc = sample_images(side, images)
    chw = [torch.from_numpy(a).permute(2, 0, 1).contiguous() for a in hwc]
    cv_run = _opencv_upsample(opencv_net(net))

    def engine(**cfg) -> Callable[[], object]:
        up = Upscaler(model, **cfg)
        return lambda: [o.permute(1, 2, 0).numpy() for o in up.upscale(chw)]

    cl_inputs = [t[None].float().div(255).contiguous(memory_format=torch.channels_last) for t in chw]

    def network_alone() -> None:
        with torch.inference_mode():
            for x in cl_inputs:
                net(x)

    auto = Upscaler(model)
    variants: dict[str, Callable[[], object]] = {
        "opencv dnn, our ESPCN via ONNX (fp32)": lambda: [cv_run(a) for a in hwc],
        "torch network alone (fp32 channels_last, float in and out)": network_alone,
        f"engine fp32, default tiles ({auto.tile} px)": engine(precision="fp32"),
        "engine fp32, 128-px tiles": engine(precision="fp32", tile=128),
        "engine fp32, whole images": engine(precision="fp32", tile=0),
    }
    if auto.precision != "fp32":
        variants[f"engine {auto.precision} (auto), default tiles"] = engine()
    ref = np.stack([cv_run(a) for a in hwc]).astype(np.int16)
    ours = np.stack([o.permute(1, 2, 0).numpy() for o in Upscaler(model, precision="fp32").upscale(chw)])
    max_diff = int(np.abs(ref - ours).max())
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():
        fn()  # warm-up
    for r in range(rounds):
        order = list(variants.items())
        for label, fn in order if r % 2 == 0 else reversed(order):
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    out_mp = images * side * side * scale * scale / 1e6
    base = out_mp / statistics.median(times[next(iter(variants))])
    rows = []
    log(f"ESPCN x{scale}, {images} images of {side}², {threads} threads, median of {rounds} interleaved rounds")
    log(f"engine fp32 vs OpenCV output: max |difference| {max_diff} (of 255)")
    for label, ts in times.items():
        mp = out_mp / statistics.median(ts)
        rows.append({"variant": label, "out_mp_per_s": round(mp, 2), "vs_opencv": round(mp / base, 3)})
        log(f"{label:<58} {mp:8.2f} output MP/s   x{mp / base:.2f} OpenCV")
    rows.append({"variant": "max_abs_difference_vs_opencv", "value": max_diff})
    return rows
