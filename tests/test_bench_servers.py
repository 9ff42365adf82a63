"""``srgan bench servers``: each installed server (ours, LitServe, TorchServe) answers with exactly the bytes the
shared pipeline makes in-process, and a tiny benchmark measures every row with all images back at the right
size. A server whose package or java is missing is skipped with the reason."""

import argparse
import base64
import io
import os

import httpx
import pytest
from PIL import Image

from app.bench_servers import ROWS, run_servers_bench, server_round, table
from app.bench_service import load_images
from app.peer_servers import SERVERS, THREADS_ENV, Pipeline, peer_missing


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", THREADS_ENV: "1", "SRGAN_WORKER_THREADS": "1"}
    env.pop("SRGAN_REDIS_URL", None)
    return env


def _one(url: str, flow: str, image: bytes) -> bytes:
    if flow == "litserve":
        r = httpx.post(url, json={"image": base64.b64encode(image).decode()}, timeout=120)
    elif flow == "post":
        r = httpx.post(url, content=image, timeout=120)
    else:
        from app.client import Client
        from app.client.base import upload

        with Client(url, timeout=120) as c:
            if flow == "two-step":
                return c.result(c.submit(image, model="bicubic", format="png"), wait=120)
            kw = upload(image, None, None, {"model": "bicubic", "format": "png"})
            r = c.http.post("/v1/upscale", headers={**kw.pop("headers"), "Prefer": "wait=120"}, **kw)
    assert r.status_code == 200, r.text[:300]
    return r.content


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_each_server_answers_with_the_shared_pipelines_bytes_and_is_measured(name, tmp_path):
    why = peer_missing(name)
    if why:
        pytest.skip(why)
    images = load_images(None, 4, 48)
    expected = Pipeline("bicubic")(images[:1])[0]
    server = SERVERS[name]("bicubic", 4, 5, _env()).start()
    try:
        files = []
        for i, b in enumerate(images):
            files.append(tmp_path / f"{i}.png")
            files[-1].write_bytes(b)
        for row, (srv, flow) in ROWS.items():
            if srv != name:
                continue
            got = _one(server.url, flow, images[0])
            assert Image.open(io.BytesIO(got)).size == (192, 192), row
            assert got == expected, f"{row}: not the bytes the shared pipeline makes"
            x = server_round(server, flow, files, 12, 4, 2)
            assert (x["images"], x["failed"]) == (12, 0), x["errors"]
            assert x["images_per_s"] > 0 and x["latency_ms"]["p50"] > 0
            assert x["cpu_ms"] > 0 and x["engine_cpu_ms"] > 0 and x["client_cpu_ms"] > 0
            assert x["cpu_ms"] >= x["engine_cpu_ms"]  # the engine's process is part of the tree
    finally:
        server.stop()


def test_a_tiny_comparison_measures_every_installed_server_and_names_the_missing_ones(monkeypatch):
    args = argparse.Namespace(regime="compute", servers=["ours", "litserve", "torchserve"], rounds=1, images=2,
                              jobs=2, concurrency=2, size=32, small=32, batch=2, batch_delay_ms=5, data=None)  # fmt: skip
    monkeypatch.setenv("SRGAN_WORKER_THREADS", "1")
    lines: list[str] = []
    result = run_servers_bench(args, log=lines.append)
    rows = result["regimes"]["compute"]["rows"]
    installed = [s for s in ("ours", "litserve", "torchserve") if peer_missing(s) is None]
    assert set(result["skipped"]) == {"ours", "litserve", "torchserve"} - set(installed)
    assert all(result["skipped"].values())  # each with its reason
    want = {"engine", *(row for row, (srv, _) in ROWS.items() if srv in installed)}
    assert set(rows) == want
    assert rows["engine"]["images_per_s"] > 0 and rows["engine"]["codecs_images_per_s"] > 0
    for row in want - {"engine"}:
        x = rows[row]
        assert (x["images"], x["failed"]) == (2, 0), (row, x["errors"])
        assert x["ratio"] > 0 and x["cpu_ms"] > 0
    text = table(result["regimes"]["compute"])
    assert all(row in text for row in want - {"engine"}) and "engine alone" in text


def test_a_missing_peer_is_named_with_its_reason(monkeypatch):
    import importlib.util
    import shutil

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert "litserve is not installed" in (peer_missing("litserve") or "")
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    assert peer_missing("torchserve")  # no java on PATH (or no torchserve at all)
    assert peer_missing("ours") is None
