"""What the gateway's check of an upload costs, per format, in CPU milliseconds per MB of upload.

``python -m model.bench_imagecheck [--rounds N] [FOLDER]`` builds one photograph (a 2x2 mosaic of real photos:
FOLDER's, else ``$SRGAN_DATA_DIR/train/Sun_Hays80``'s, else scikit-image's) in every input format and times,
in interleaved rounds (median), three things on each file:

- ``header``: :func:`model.imageio.probe` plus, for PNG, Pillow's chunk CRC walk: the check before
  :mod:`model.imagecheck` existed;
- ``door``: :func:`model.imageio.probe` plus :func:`model.imagecheck.verify`: the check now;
- ``decode``: :func:`model.imageio.decode`, what the worker does with the file (for scale).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from model.imagecheck import verify
from model.imageio import decode, probe

__all__ = ["sample_files", "run"]


def _photos(folder: Path | None) -> list[np.ndarray]:
    if folder is None and os.environ.get("SRGAN_DATA_DIR"):
        folder = Path(os.environ["SRGAN_DATA_DIR"]) / "train" / "Sun_Hays80"
    files = sorted(folder.glob("*.jpg"))[:4] if folder is not None and folder.is_dir() else []
    if len(files) == 4:
        return [np.asarray(Image.open(f).convert("RGB").resize((1024, 680), Image.Resampling.LANCZOS)) for f in files]
    import skimage.data

    return [getattr(skimage.data, n)()[:400, :600, :3] for n in ("astronaut", "chelsea", "coffee", "rocket")]


def sample_files(folder: Path | None = None) -> dict[str, bytes]:
    """One mosaic of four photographs, saved in each format the service reads."""
    tiles = [np.asarray(Image.fromarray(p).resize((1024, 680))) for p in _photos(folder)]
    im = Image.fromarray(np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])]))

    def save(fmt: str, img: Image.Image = im, **kw) -> bytes:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    return {
        "PNG": save("PNG"),
        "JPEG q90": save("JPEG", quality=90),
        "JPEG progressive": save("JPEG", quality=90, progressive=True),
        "WebP lossy q80": save("WEBP", quality=80),
        "WebP lossless": save("WEBP", lossless=True),
        "BMP": save("BMP"),
        "TIFF raw": save("TIFF"),
        "TIFF LZW": save("TIFF", compression="tiff_lzw"),
        "TIFF deflate": save("TIFF", compression="tiff_adobe_deflate"),
        "GIF": save("GIF", img=im.convert("P")),
    }


def _header(data: bytes) -> None:
    info = probe(data)
    if info.format == "PNG":
        with Image.open(io.BytesIO(data)) as im:
            im.verify()


def _door(data: bytes) -> None:
    verify(data, probe(data))


def _cpu_ms(fn, data: bytes) -> float:
    t0 = time.process_time()
    fn(data)
    return (time.process_time() - t0) * 1e3


def run(files: dict[str, bytes], rounds: int = 7) -> list[dict]:
    steps = {"header": _header, "door": _door, "decode": decode}
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for name, data in files.items():
            for step, fn in steps.items():
                times.setdefault((name, step), []).append(_cpu_ms(fn, data))
    rows = []
    for name, data in files.items():
        mb = len(data) / 1e6
        row = {"format": name, "mb": round(mb, 2)}
        for step in steps:
            ms = statistics.median(times[(name, step)])
            row[f"{step}_ms"], row[f"{step}_ms_per_mb"] = round(ms, 2), round(ms / mb, 2)
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", type=Path, help="four or more JPEG photographs (default: see above)")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    files = sample_files(args.folder)
    im = Image.open(io.BytesIO(files["PNG"]))
    print(f"{im.width}x{im.height} photograph, {args.rounds} interleaved rounds, median CPU time of one call")
    print(f"{'format':18s} {'MB':>6s} {'header ms/MB':>13s} {'door ms/MB':>11s} {'decode ms/MB':>13s} {'door ms':>8s}")
    for r in run(files, args.rounds):
        print(
            f"{r['format']:18s} {r['mb']:6.2f} {r['header_ms_per_mb']:13.2f} {r['door_ms_per_mb']:11.2f} "
            f"{r['decode_ms_per_mb']:13.2f} {r['door_ms']:8.1f}"
        )


if __name__ == "__main__":
    main()
