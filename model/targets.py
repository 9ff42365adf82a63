"""Where each result goes: the one rule ``srgan upscale`` and ``srgan client upscale`` share.

- Inputs are files or folders (their images; with ``recursive`` also those of subfolders, the folder tree
  kept under the output folder).
- ``-o`` names a file when the input is one file, and a folder when there are several inputs or a folder.
  A single file's ``-o`` is a folder only when it is an existing folder or ends with ``/``.
- Default names are ``STEM_SUFFIX.EXT`` (Real-ESRGAN's ``--suffix`` convention, ``x4`` for a 4x run), beside
  each input when there is no ``-o``; inputs that differ only in their extension keep it: ``face-jpg_x4.png``.
- Nothing is ever overwritten, neither an input nor an existing file, unless ``overwrite``; and even then a
  result never lands on another input of the same run (it would be read after being replaced).

Pure path logic: no torch, no Pillow, so the client-only install can use it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EXTENSIONS", "IMAGE_SUFFIXES", "Target", "TargetError", "plan", "write_new"]

# Output format -> file extension (model.imageio.EXTENSIONS says the same; a test checks they agree).
EXTENSIONS = {"png": ".png", "webp": ".webp", "jpeg": ".jpg"}
_FORMAT_OF = {".png": "png", ".webp": "webp", ".jpg": "jpeg", ".jpeg": "jpeg"}
# What a folder's images are, by extension (a file named on the command line is always tried).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
_SHOWN = 5  # paths listed in one error message


class TargetError(ValueError):
    """The inputs and ``-o`` do not make a safe plan: nothing was computed or written."""


@dataclass(frozen=True)
class Target:
    source: Path
    path: Path


def _images(folder: Path, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def plan(
    inputs: list[Path],
    out: str | None,
    *,
    format: str | None,
    default_format: str = "png",
    suffix: str = "x4",
    recursive: bool = False,
    overwrite: bool = False,
) -> tuple[list[Target], str]:
    """The target of every input image and the output format; raises :class:`TargetError` before any work
    when the plan would overwrite something without ``overwrite``, or is ambiguous."""
    files: list[tuple[Path, Path]] = []  # (image, its folder relative to the output folder)
    for p in inputs:
        if p.is_dir():
            found = _images(p, recursive)
            if not found:
                more = "" if recursive else " (add --recursive for its subfolders)"
                raise TargetError(f"{p}: no images in this folder{more}")
            files += [(f, f.parent.relative_to(p)) for f in found]
        elif p.exists():
            files.append((p, Path()))
        else:
            raise TargetError(f"{p}: no such file or folder")
    if format is not None and format not in EXTENSIONS:
        raise TargetError(f"unknown format {format!r}; choose one of {', '.join(EXTENSIONS)}")
    tail = f"_{suffix}" if suffix else ""

    single = len(inputs) == 1 and not inputs[0].is_dir()
    out_path = Path(out) if out else None
    if single and out is not None and out_path is not None and not (out.endswith(("/", os.sep)) or out_path.is_dir()):
        fmt = _FORMAT_OF.get(out_path.suffix.lower())
        if fmt is None:
            raise TargetError(
                f"-o {out}: one input is written to one file: give it an image extension "
                f"({', '.join(_FORMAT_OF)}), or end it with / to name a folder"
            )
        if format is not None and format != fmt:
            raise TargetError(f"-o {out} is a {fmt} file name but --format is {format}")
        targets = [Target(files[0][0], out_path)]
    else:
        if out_path is not None and out_path.exists() and not out_path.is_dir():
            raise TargetError(f"-o {out} is a file; several inputs are written to a folder")
        fmt = format or default_format
        ext = EXTENSIONS[fmt]
        folders = [out_path / rel if out_path is not None else f.parent for f, rel in files]
        names = [f"{f.stem}{tail}{ext}" for f, _ in files]
        # Inputs that differ only in their extension (face.png, face.jpg) keep it in the name: face-jpg_x4.png.
        count: dict[str, int] = {}
        for d, n in zip(folders, names, strict=True):
            count[_key(d / n)] = count.get(_key(d / n), 0) + 1
        targets = [
            Target(f, d / (n if count[_key(d / n)] == 1 else f"{f.stem}-{f.suffix[1:].lower()}{tail}{ext}"))
            for (f, _), d, n in zip(files, folders, names, strict=True)
        ]
    _check(targets, overwrite)
    return targets, fmt


def _check(targets: list[Target], overwrite: bool) -> None:
    sources = {_key(t.source): t.source for t in targets}
    seen: dict[str, Target] = {}
    for t in targets:
        key = _key(t.path)
        if key in seen:
            raise TargetError(
                f"{seen[key].source} and {t.source} would both be written to {t.path}: "
                "upscale them in separate runs, or with another -o or --suffix"
            )
        seen[key] = t
        other = sources.get(key)
        if other is not None and key != _key(t.source):
            raise TargetError(f"the result of {t.source} would replace {other}, another input of this run")
    if overwrite:
        return
    exist = [t.path for t in targets if t.path.exists() or t.path.is_symlink()]
    if exist:
        names = [f"{p} (an input)" if _key(p) in sources else str(p) for p in exist[:_SHOWN]]
        more = f" and {len(exist) - _SHOWN} more" if len(exist) > _SHOWN else ""
        raise TargetError(
            f"{', '.join(names)}{more} already exist{'s' if len(exist) == 1 else ''}; nothing was written "
            "(--overwrite replaces them, or choose another -o or --suffix)"
        )


def _key(path: Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def write_new(path: Path, data: bytes, overwrite: bool = False) -> None:
    """Write ``data`` to ``path``, creating folders. Without ``overwrite`` the file must not exist (checked
    atomically, so a file made meanwhile is not replaced either); with it, an existing file is replaced
    atomically. A failed write leaves no partial file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode if overwrite else None
    except FileNotFoundError:
        mode = None
    if mode is None:
        with open(path, "xb") as f:  # FileExistsError when it exists
            try:
                f.write(data)
            except BaseException:
                f.close()
                path.unlink(missing_ok=True)
                raise
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
