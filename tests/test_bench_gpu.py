"""``srgan bench gpu`` end to end on CPU with tiny sizes: the engine variants, a real service bench (its own
stack) and the JSON file. Slow: it starts Redis, a gateway and a worker. On a GPU it is the same code."""

import json

import pytest

from model.bench_gpu import format_table, run_gpu_bench

pytestmark = pytest.mark.slow


def test_gpu_bench_runs_on_cpu_with_tiny_sizes(tmp_path):
    out = tmp_path / "gpu-bench.json"
    lines: list[str] = []
    result = run_gpu_bench(
        device="cpu", models=("espcn",), images=2, side=32, seconds=0.05, compile_modes=(),
        service_images=4, service_side=32, clients=2, formats=("jpeg",), overhead_jobs=40, budget_s=400,
        out=out, log=lines.append,
    )  # fmt: skip
    rows = result["rows"]
    engine = [r for r in rows if r["section"] == "engine"]
    assert {r["variant"] for r in engine} >= {"fp32", "channels_last off"} and all("error" not in r for r in engine)
    assert all(r["out_mp_per_s"] > 0 and r["psnr_y_vs_hr"] > 20 for r in engine)
    assert next(r for r in engine if r["variant"] == "fp32")["psnr_vs_fp32"] == 99.0  # itself
    service = [r for r in rows if r["section"] == "service"]
    jpeg = next(r for r in service if r["variant"] == "service jpeg")
    assert "error" not in jpeg, jpeg
    assert jpeg["result"]["service"]["images_per_s"] > 0
    overhead = [r for r in service if r["variant"] == "overhead proxy"]
    assert all("error" not in r for r in overhead), overhead  # present where helper "speed"'s mode has landed
    assert json.loads(out.read_text())["rows"][0]["model"] == "espcn"
    table = format_table(rows)
    assert "espcn" in table and "service jpeg" in table and table in "\n".join(lines)
