"""The engine's benchmarks run end to end on CPU with tiny sizes (they print numbers; nothing here is timed)."""

import pytest


def test_bench_peers_runs_the_same_network_in_opencv_and_the_engine():
    pytest.importorskip("cv2", reason="the peers extra (opencv-contrib-python-headless) is not installed")
    from model.bench_peers import run_peers

    lines: list[str] = []
    rows = run_peers(side=32, images=2, rounds=1, threads=1, log=lines.append)
    by = {r["variant"]: r for r in rows}
    assert by["max_abs_difference_vs_opencv"]["value"] <= 1  # the same network, the same rounding
    assert by["opencv dnn, our ESPCN via ONNX (fp32)"]["vs_opencv"] == 1.0
    assert all(r["out_mp_per_s"] > 0 for r in rows if "out_mp_per_s" in r)
    assert any("output MP/s" in line for line in lines)


def test_bench_commands_and_make_targets_exist():
    from pathlib import Path

    from app.cli import build_parser

    parser = build_parser()
    gpu = parser.parse_args(["bench", "gpu", "--device", "cpu", "--no-service", "--compile"])
    assert gpu.device == "cpu" and gpu.no_service and gpu.compile == [] and gpu.budget <= 600
    assert parser.parse_args(["bench", "peers", "--images", "2"]).images == 2
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "gpu-bench: install\n\t$(SRGAN) bench gpu" in makefile and "peers: install" in makefile
