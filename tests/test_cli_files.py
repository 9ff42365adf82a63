"""``srgan upscale`` never destroys data: names, folders, ``-o`` as a file or a folder, ``--overwrite``, and one
progress bar whose total is right from the start. The first tests reproduce the issue's bug reports."""

from __future__ import annotations

import math
import re

import pytest
from PIL import Image

from app.cli import main
from model import imageio, targets
from tests.conftest import photo_tensor


def _write(path, name="chelsea", size=(20, 30), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo_tensor(name, size).permute(1, 2, 0).numpy()).save(path, fmt)
    return path


def _run(*args: object) -> int:
    return main(["upscale", *map(str, args), "-m", "nearest", "--no-progress"])


def test_issue_inputs_are_never_replaced(tmp_path):
    """Bug report: `srgan upscale ow/face.png ow/face.jpg -o ow/` replaced face.png with its 4x result."""
    png = _write(tmp_path / "ow" / "face.png")
    jpg = _write(tmp_path / "ow" / "face.jpg", "coffee")
    before = png.read_bytes(), jpg.read_bytes()
    assert _run(png, jpg, "-o", tmp_path / "ow") == 0
    assert (png.read_bytes(), jpg.read_bytes()) == before
    # Same stem, two inputs: each keeps its extension in the name, so neither result replaces the other.
    assert Image.open(tmp_path / "ow" / "face-png_x4.png").size == (120, 80)
    assert Image.open(tmp_path / "ow" / "face-jpg_x4.png").size == (120, 80)


def test_issue_a_folder_is_an_input(tmp_path):
    """Bug report: `srgan upscale photos/ -o out/` said `[Errno 21] Is a directory`."""
    _write(tmp_path / "photos" / "a.png")
    _write(tmp_path / "photos" / "b.JPG", "coffee", fmt="JPEG")
    _write(tmp_path / "photos" / "sub" / "c.webp", "astronaut", fmt="WEBP")
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    assert _run(tmp_path / "photos", "-o", tmp_path / "out") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_x4.png", "b_x4.png"]
    assert _run(tmp_path / "photos", "-o", tmp_path / "all", "--recursive", "--format", "webp") == 0
    found = sorted(str(p.relative_to(tmp_path / "all")) for p in (tmp_path / "all").rglob("*.webp"))
    assert found == ["a_x4.webp", "b_x4.webp", "sub/c_x4.webp"]


def test_a_folder_of_subfolders_only_asks_for_recursive(tmp_path, capsys):
    _write(tmp_path / "photos" / "2024" / "a.png")
    assert _run(tmp_path / "photos", "-o", tmp_path / "out") == 2
    assert "--recursive" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_issue_dash_o_is_a_file_for_one_input(tmp_path, capsys):
    """Bug report (client, same rule here): `-o big.png` made a folder big.png/ holding photo_x4.png."""
    src = _write(tmp_path / "photo.jpg", fmt="JPEG")
    assert _run(src, "-o", tmp_path / "big.png") == 0
    assert (tmp_path / "big.png").is_file() and Image.open(tmp_path / "big.png").size == (120, 80)
    # The extension says the format; --format may agree with it, not contradict it.
    assert _run(src, "-o", tmp_path / "big.webp") == 0
    assert Image.open(tmp_path / "big.webp").format == "WEBP"
    assert _run(src, "-o", tmp_path / "big.jpeg", "--format", "png") == 2
    assert "--format is png" in capsys.readouterr().err
    # No extension: ambiguous, refused with what to do; a trailing / or an existing folder names a folder.
    assert _run(src, "-o", tmp_path / "big") == 2
    assert "end it with /" in capsys.readouterr().err and not (tmp_path / "big").exists()
    assert _run(src, "-o", f"{tmp_path / 'new'}/") == 0
    assert (tmp_path / "new" / "photo_x4.png").is_file()
    assert _run(src, "-o", tmp_path / "new") == 2  # an existing folder names a folder, where photo_x4.png is now
    assert "photo_x4.png already exists" in capsys.readouterr().err


def test_without_dash_o_results_go_beside_their_inputs(tmp_path):
    src = _write(tmp_path / "pics" / "cat.png")
    assert _run(src) == 0
    assert Image.open(tmp_path / "pics" / "cat_x4.png").size == (120, 80)
    assert src.read_bytes() == _write(tmp_path / "again.png").read_bytes()  # the input is as it was


def test_existing_files_are_kept_unless_overwrite(tmp_path, capsys):
    a, b = _write(tmp_path / "a.png"), _write(tmp_path / "b.png", "coffee")
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_x4.png").write_bytes(b"precious")
    assert _run(a, b, "-o", out) == 2
    err = capsys.readouterr().err
    assert "b_x4.png already exists; nothing was written" in err and "--overwrite" in err
    assert (out / "b_x4.png").read_bytes() == b"precious" and not (out / "a_x4.png").exists()  # not even a_x4
    assert _run(a, b, "-o", out, "--overwrite") == 0
    assert Image.open(out / "b_x4.png").size == (120, 80) and (out / "a_x4.png").exists()
    # The same for one file: an existing -o file, or the input itself.
    assert _run(a, "-o", out / "b_x4.png") == 2
    assert _run(a, "-o", a) == 2
    assert "(an input) already exists" in capsys.readouterr().err
    assert Image.open(a).size == (30, 20)


def test_a_result_never_replaces_another_input_even_with_overwrite(tmp_path, capsys):
    a = _write(tmp_path / "a.png")
    other = _write(tmp_path / "a_x4.png", "coffee")
    before = other.read_bytes()
    assert _run(a, other, "--overwrite") == 2
    assert "would replace" in capsys.readouterr().err and other.read_bytes() == before


def test_several_inputs_need_a_folder(tmp_path, capsys):
    a, b = _write(tmp_path / "a.png"), _write(tmp_path / "b.png")
    (tmp_path / "big.png").write_bytes(b"x")
    assert _run(a, b, "-o", tmp_path / "big.png") == 2
    assert "is a file; several inputs are written to a folder" in capsys.readouterr().err


def test_suffix(tmp_path):
    a = _write(tmp_path / "a.png")
    assert _run(a, "-o", f"{tmp_path / 'o1'}/", "--suffix", "big") == 0
    assert (tmp_path / "o1" / "a_big.png").exists()
    assert _run(a, "-o", f"{tmp_path / 'o2'}/", "--suffix", "") == 0
    assert (tmp_path / "o2" / "a.png").exists()
    assert main(["upscale", str(a), "-o", f"{tmp_path / 'o3'}/", "-m", "nearest", "-s", "2", "--no-progress"]) == 0
    assert Image.open(tmp_path / "o3" / "a_x2.png").size == (60, 40)


def test_issue_one_progress_bar_with_the_right_total_from_the_start(tmp_path, capsys):
    """Bug report: the bar reached `100% 107/107`, then showed `44% 108/245` (one total per chunk of 8)."""
    sizes = [(20 + 3 * i, 40 - i) for i in range(11)]  # 11 images: more than one chunk of 8
    files = [_write(tmp_path / "in" / f"p{i:02}.png", "astronaut", s) for i, s in enumerate(sizes)]
    (tmp_path / "in" / "p99.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # fails at probing: not counted
    tile = 16
    expected = sum(math.ceil(h / tile) * math.ceil(w / tile) for h, w in sizes)
    args = ["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", "bicubic", "--tile", str(tile)]
    assert main(args) == 1  # one input failed
    err = capsys.readouterr().err
    readings = [(int(n), int(t)) for n, t in re.findall(r"\| *(\d+)/(\d+) \[", err)]
    assert len(readings) >= 2, err
    assert {t for _, t in readings} == {expected}, readings
    done = [n for n, _ in readings]
    assert done == sorted(done) and done[-1] == expected
    assert "p99.png" in err and "11 image(s) written" in err and "1 failed" in err
    assert len(list((tmp_path / "out").iterdir())) == len(files)


def test_extension_tables_agree():
    assert targets.EXTENSIONS == imageio.EXTENSIONS


@pytest.mark.parametrize("overwrite", [False, True])
def test_write_new_is_atomic_and_exclusive(tmp_path, overwrite):
    path = tmp_path / "deep" / "r.png"
    targets.write_new(path, b"one", overwrite)
    assert path.read_bytes() == b"one"
    if overwrite:
        path.chmod(0o640)
        targets.write_new(path, b"two", True)
        assert path.read_bytes() == b"two" and path.stat().st_mode & 0o777 == 0o640
        assert [p.name for p in path.parent.iterdir()] == ["r.png"]  # no temporary file left
    else:
        with pytest.raises(FileExistsError):
            targets.write_new(path, b"two")
        assert path.read_bytes() == b"one"
