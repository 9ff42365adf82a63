import json
import subprocess
import sys

from PIL import Image

from app.cli import main
from tests.conftest import photo_tensor


def _write(path, name, size, fmt):
    Image.fromarray(photo_tensor(name, size).permute(1, 2, 0).numpy()).save(path, fmt)
    return path


def test_upscale_writes_each_input_with_its_stem(tmp_path):
    a = _write(tmp_path / "cat.jpg", "chelsea", (40, 60), "JPEG")
    b = _write(tmp_path / "astro.png", "astronaut", (50, 30), "PNG")
    out = tmp_path / "out"
    assert main(["upscale", str(a), str(b), "-o", str(out), "--model", "espcn", "--tile", "24", "--no-progress"]) == 0
    assert Image.open(out / "cat_x4.png").size == (240, 160)
    assert Image.open(out / "astro_x4.png").size == (120, 200)


def test_upscale_formats_and_whole_image(tmp_path):
    a = _write(tmp_path / "cat.png", "chelsea", (30, 30), "PNG")
    out = tmp_path / "out"
    assert (
        main(
            [
                "upscale",
                str(a),
                "-o",
                str(out) + "/",
                "-m",
                "bicubic",
                "-s",
                "2",
                "--tile",
                "0",
                "--format",
                "webp",
                "--no-progress",
            ]
        )
        == 0
    )
    im = Image.open(out / "cat_x2.webp")
    assert im.format == "WEBP" and im.size == (60, 60)


def test_a_bad_input_fails_alone(tmp_path, capsys):
    good = _write(tmp_path / "good.png", "coffee", (20, 20), "PNG")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    out = tmp_path / "out"
    assert main(["upscale", str(bad), str(good), "-o", str(out), "-m", "nearest", "--no-progress"]) == 1
    assert (out / "good_x4.png").exists() and not (out / "bad_x4.png").exists()
    assert "bad.png" in capsys.readouterr().err


def test_unknown_model_is_a_clear_error(tmp_path, capsys):
    good = _write(tmp_path / "good.png", "coffee", (20, 20), "PNG")
    assert main(["upscale", str(good), "-o", str(tmp_path / "big.png"), "-m", "edsr"]) == 2
    assert "unknown model 'edsr'" in capsys.readouterr().err


def test_bench_engine_json():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "bench",
            "engine",
            "--models",
            "bicubic",
            "espcn",
            "--seconds",
            "0.2",
            "--tile",
            "32",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    keys = {"model", "precision", "batch", "out_mp_per_s", "gflops_per_s", "roofline_fraction", "speedup_vs_fp32_eager"}
    assert all(keys <= set(r) for r in rows)
    espcn = [r for r in rows if r["model"] == "espcn"]
    assert espcn[0]["speedup_vs_fp32_eager"] == 1.0 and len(espcn) >= 2
    assert all(r["out_mp_per_s"] > 0 and 0 < r["roofline_fraction"] < 1.5 for r in rows)
    # FLOPs are counted: ESPCN x4 does about 2 * 37k multiply-adds per LR pixel = 4.6 kFLOP per output pixel.
    assert 4000 < espcn[0]["flops_per_out_px"] < 5500


def test_bench_service_json():
    """The whole stack on free ports (its own redis-server, a worker, the gateway), two service rounds between
    engine runs: every image comes back at 4x its size, and the median round's ratio is among the rounds'."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "bench",
            "service",
            "--model",
            "espcn",
            "-n",
            "6",
            "-c",
            "3",
            "--size",
            "48",
            "--rounds",
            "2",
            "--overhead-jobs",
            "5",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    sv = r["service"]
    assert sv["failed"] == 0 and sv["images_per_s"] > 0
    assert abs(sv["out_mp_per_s"] / sv["images_per_s"] - (4 * 48) ** 2 / 1e6) < 1e-6  # each result 192x192
    assert len(r["ratios_to_engine"]) == 2 and round(r["ratio_to_engine"], 3) in r["ratios_to_engine"]
    assert len(r["engine"]["runs_s"]) == 2 and 0 < sv["engine_busy_fraction"] <= 1
    assert r["overhead"]["jobs"] == 5 and r["overhead"]["e2e_ms"]["p50"] > 0
