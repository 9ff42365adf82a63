"""The gateway and one worker as real processes on a real Redis, driven over HTTP."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.servicekit import assert_error, decode_png, direct_upscale, photo, png, wait_for

pytestmark = pytest.mark.timeout(120)
CONTENT_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
TILE = 64  # several tiles per test image and two per forward pass: progress and cross-job batching show


@pytest.fixture(scope="module")
def stack(stack_factory):
    st = stack_factory(["bicubic", "espcn"], metrics=True, max_upload_bytes=300_000, max_input_pixels=250_000,
                       max_output_pixels=2_000_000, worker_tile=TILE, worker_batch_size=2)  # fmt: skip
    with st.client() as client:
        yield {"url": st.url, "client": client, "db": st.redis, "worker": st.workers[0], "gateway": st.gateway,
               "env": st.env, "queue": st.env["SRGAN_QUEUE"], "metrics_port": st.metrics_port}  # fmt: skip
    code = st.workers[0].stop()
    assert code == 0, f"worker exit status {code}:\n{st.workers[0].output()[-3000:]}"


def submit(client: httpx.Client, data: bytes, **fields) -> httpx.Response:
    headers = {}
    if "idempotency_key" in fields:
        headers["Idempotency-Key"] = fields.pop("idempotency_key")
    return client.post(
        "/v1/upscale",
        files={"file": ("in.png", data, "image/png")},
        data={k: str(v) for k, v in fields.items()},
        headers=headers,
    )


def run_job(client: httpx.Client, data: bytes, **fields) -> tuple[dict, bytes]:
    r = submit(client, data, **fields)
    assert r.status_code == 202, r.text
    job = r.json()
    result = client.get(job["links"]["result"], params={"wait": 60})
    assert result.status_code == 200, result.text
    return client.get(job["links"]["self"]).json(), result.content


def test_bicubic_job_matches_the_engine_exactly(stack):
    c = stack["client"]
    data = png(photo(size=(24, 40)))
    r = submit(c, data, model="bicubic")
    assert r.status_code == 202
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] in ("queued", "started") and job["model"] == "bicubic" and job["scale"] == 4
    assert len(job["id"]) >= 22 and job["input"] == {**job["input"], "width": 40, "height": 24, "format": "PNG"}
    assert job["expires_at"] and job["links"]["result"].endswith("/result")
    result = c.get(f"/v1/jobs/{job['id']}/result", params={"wait": 30})
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    got = decode_png(result.content)
    assert got.shape == (96, 160, 3)
    np.testing.assert_array_equal(got, direct_upscale(data, "bicubic", tile=TILE))
    done = c.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "finished" and done["progress"] == 1.0 and done["attempts"] == 1
    assert done["model_version"] is None and done["model_sha256"] == "builtin" and done["error"] is None
    assert done["output"] == {"width": 160, "height": 96, "bytes": len(result.content), "content_type": "image/png",
                              "sha256": hashlib.sha256(result.content).hexdigest()}  # fmt: skip
    t = done["timings"]
    assert t["queued_at"] <= t["started_at"] <= t["ended_at"] and t["processing_s"] >= 0
    assert done["expires_at"] > t["ended_at"]


def test_learned_model_matches_a_direct_engine_run(stack):
    data = png(photo("coffee", size=(40, 56), top=100, left=250))
    job, out = run_job(stack["client"], data, model="espcn", format="png")
    from model.zoo import load_model

    assert job["model_version"] == 1 and job["model_sha256"] == load_model("espcn", 4).version
    diff = np.abs(decode_png(out).astype(int) - direct_upscale(data, "espcn", tile=TILE).astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.05  # bf16: tiles batched with other jobs' tiles


def test_srresnet_progress_is_published_and_output_matches(stack):
    """Several tiles (lazy-loaded srresnet, 64-pixel tiles): progress is seen strictly between 0 and 1."""
    c = stack["client"]
    data = png(photo("chelsea", size=(96, 96), top=60, left=120))
    r = submit(c, data, model="srresnet")
    assert r.status_code == 202
    jid = r.json()["id"]
    seen = set()

    def finished() -> bool:
        j = c.get(f"/v1/jobs/{jid}", params={"wait": 0.05}).json()
        seen.add(j["progress"])
        assert j["status"] in ("queued", "started", "finished"), j
        return j["status"] == "finished"

    wait_for(finished, 100, "the srresnet job", interval=0.02)
    assert any(0 < p < 1 for p in seen), seen
    out = decode_png(c.get(f"/v1/jobs/{jid}/result").content)
    diff = np.abs(out.astype(int) - direct_upscale(data, "srresnet", tile=TILE).astype(int))
    assert out.shape == (384, 384, 3) and diff.max() <= 2 and diff.mean() < 0.1


def test_jobs_batch_together_and_all_finish(stack):
    """Eight jobs submitted at once all finish with the right sizes; formats and quality are honoured."""
    c = stack["client"]
    jobs = []
    for i in range(8):
        fmt = ["png", "webp", "jpeg"][i % 3]
        r = submit(c, png(photo(size=(16 + i, 20), top=10 * i)), model="bicubic", format=fmt, quality=80)
        assert r.status_code == 202, r.text
        jobs.append((r.json()["id"], fmt, 16 + i))
    for jid, fmt, h in jobs:
        r = c.get(f"/v1/jobs/{jid}/result", params={"wait": 30})
        assert r.status_code == 200
        assert r.headers["content-type"] == CONTENT_TYPES[fmt]
        assert Image.open(io.BytesIO(r.content)).size == (80, 4 * h)


def test_long_poll_returns_when_the_job_ends(stack):
    c = stack["client"]
    r = submit(c, png(photo(size=(20, 20))), model="bicubic")
    t0 = time.monotonic()
    j = c.get(r.json()["links"]["self"], params={"wait": 20}).json()
    assert j["status"] == "finished" and time.monotonic() - t0 < 10
    # a wait longer than SRGAN_MAX_WAIT_S is capped, not refused
    assert c.get(r.json()["links"]["self"], params={"wait": 1e6}).status_code == 200


BAD_REQUESTS = [
    "not_an_image",
    "empty",
    "truncated",
    "corrupt_data",
    "garbled_header",
    "bomb",
    "zero_size",
    "output_too_large",
    "upload_too_large",
    "wrong_content_type",
    "unknown_model",
    "unknown_scale",
    "no_weights",
    "bad_version",
    "bad_format",
    "bad_quality",
    "missing_file",
]


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_requests_get_the_right_status_and_one_error_shape(stack, case):
    import struct
    import zlib

    c = stack["client"]
    good = png(photo(size=(32, 32)))

    def resized_header(w: int, h: int) -> bytes:
        """``good`` with its IHDR claiming w x h (checksum fixed): what a decompression bomb looks like."""
        ihdr = struct.pack(">II", w, h) + good[24:29]
        return good[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + good[33:]

    if case == "not_an_image":
        assert_error(submit(c, b"%PDF-1.4 definitely not an image" * 10), 415, "not_an_image")
    elif case == "empty":
        assert_error(submit(c, b""), 422, "empty_upload")
    elif case == "truncated":
        assert_error(submit(c, good[: len(good) // 2]), 422, "corrupt_image")
    elif case == "corrupt_data":  # pixel data overwritten: the chunk checksums no longer match
        bad = bytearray(good)
        bad[80:100] = bytes(20)
        assert_error(submit(c, bytes(bad)), 422, "corrupt_image")
    elif case == "garbled_header":  # a PNG signature, then garbage: a damaged PNG, not "not an image"
        assert_error(submit(c, good[:16] + b"\xff" * 13 + good[29:]), 422, "corrupt_image")
    elif case == "bomb":  # a header claiming 100000 x 100000 pixels: refused from the header alone
        assert_error(submit(c, resized_header(100_000, 100_000)), 413, "too_many_pixels")
    elif case == "zero_size":
        err = submit(c, resized_header(0, 10))
        assert err.status_code == 422 and err.json()["error"]["code"] in ("empty_image", "corrupt_image")
    elif case == "output_too_large":  # 400x400 is under the 250k input limit; x4 is over 2M output pixels
        assert_error(submit(c, png(np.zeros((400, 400, 3), np.uint8)), model="bicubic"), 422, "too_many_output_pixels")
    elif case == "upload_too_large":
        noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
        assert_error(submit(c, png(noise, compress_level=0)), 413, "upload_too_large")
    elif case == "wrong_content_type":
        assert_error(
            c.post("/v1/upscale", content=good, headers={"content-type": "image/png"}), 415, "unsupported_media_type"
        )
        assert_error(c.post("/v1/upscale", json={"file": "x"}), 415, "unsupported_media_type")
    elif case == "unknown_model":
        assert_error(submit(c, good, model="waifu2x"), 422, "unknown_model")
    elif case == "unknown_scale":
        assert_error(submit(c, good, model="srresnet", scale=3), 422, "unknown_model")
    elif case == "no_weights":
        from model.zoo import find_weights

        if find_weights("srcnn", 2) is None:
            assert_error(submit(c, good, model="srcnn", scale=2), 422, "model_unavailable")
    elif case == "bad_version":
        assert_error(submit(c, good, model="espcn@00000000"), 422, "unknown_model_version")
    elif case == "bad_format":
        assert_error(submit(c, good, format="gif"), 422, "invalid_request")
    elif case == "bad_quality":
        assert_error(submit(c, good, quality=0), 422, "invalid_request")
    elif case == "missing_file":
        assert_error(c.post("/v1/upscale", files={"other": ("a.png", good)}), 422, "invalid_request")
    # ... and the service still works afterwards
    job, out = run_job(c, good, model="bicubic")
    assert job["status"] == "finished" and decode_png(out).shape == (128, 128, 3)


def test_pinned_version_is_honoured(stack):
    from model.zoo import load_model

    sha = load_model("espcn", 4).version
    job, _ = run_job(stack["client"], png(photo(size=(16, 16))), model=f"espcn@{sha[:10]}")
    assert job["model_version"] == 1 and job["model_sha256"] == sha


TRUNCATED_UPLOADS = {
    "JPEG": {"quality": 90},
    "WEBP": {"quality": 80},
    "BMP": {},
    "TIFF": {"compression": "tiff_lzw"},
    "GIF": {},
    "PNG": {},
}


@pytest.mark.parametrize("fmt", TRUNCATED_UPLOADS)
def test_truncated_uploads_of_every_format_are_refused_at_the_door(stack, fmt):
    """A file cut short is a 422 ``corrupt_image`` at upload, never a 202 whose job fails in the worker; the
    whole file is accepted and upscaled."""
    buf = io.BytesIO()
    Image.fromarray(photo("coffee", size=(48, 64), top=100, left=250)).save(buf, fmt, **TRUNCATED_UPLOADS[fmt])
    data = buf.getvalue()
    for keep in (0.5, 0.9):
        e = assert_error(submit(stack["client"], data[: int(len(data) * keep)], model="bicubic"), 422, "corrupt_image")
        assert "truncated" in e["message"] or "corrupt" in e["message"], e
    job, out = run_job(stack["client"], data, model="bicubic")
    assert job["status"] == "finished" and job["input"]["format"] == fmt
    assert Image.open(io.BytesIO(out)).size == (256, 192)


def test_idempotency_key(stack):
    c = stack["client"]
    a, b = png(photo(size=(16, 16))), png(photo(size=(16, 17)))
    key = uuid.uuid4().hex
    first = submit(c, a, model="bicubic", idempotency_key=key)
    again = submit(c, a, model="bicubic", idempotency_key=key)
    assert first.status_code == 202 and again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers.get("idempotent-replayed") == "true"
    assert_error(submit(c, b, model="bicubic", idempotency_key=key), 409, "idempotency_conflict")
    assert_error(submit(c, a, model="espcn", idempotency_key=key), 409, "idempotency_conflict")
    other = submit(c, a, model="bicubic", idempotency_key=uuid.uuid4().hex)
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]


def test_unknown_ids_and_routes(stack):
    c = stack["client"]
    assert_error(c.get("/v1/jobs/doesnotexist0000000000"), 404, "job_not_found")
    assert_error(c.get("/v1/jobs/doesnotexist0000000000/result"), 404, "job_not_found")
    assert_error(c.get("/v1/jobs/bad:id!"), 404, "job_not_found")
    assert_error(c.delete("/v1/jobs/doesnotexist0000000000"), 404, "job_not_found")
    assert_error(c.get("/v2/nothing"), 404, "not_found")
    assert_error(c.put("/v1/upscale"), 405, "method_not_allowed")
    assert_error(c.get("/v1/jobs/x", params={"wait": -1}), 422, "invalid_request")


def test_models_health_docs(stack):
    c = stack["client"]
    models = c.get("/v1/models").json()
    rows = {(m["name"], m["scale"]): m for m in models["models"]}
    assert rows[("bicubic", 4)]["loaded"] and rows[("bicubic", 4)]["version"] is None
    assert rows[("bicubic", 4)]["sha256"] == "builtin"
    assert rows[("srresnet", 4)]["has_weights"] and rows[("srresnet", 4)]["version"] == 1
    assert len(rows[("srresnet", 4)]["sha256"]) == 64 and rows[("srresnet", 4)]["versions"] == [1]
    assert c.get("/healthz").json() == {"status": "ok"}
    ready = c.get("/readyz").json()
    assert ready["status"] == "ready" and ready["workers"][0]["models"]
    spec = c.get("/openapi.json").json()
    assert {"/v1/upscale", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/models", "/readyz"} <= set(
        spec["paths"]
    )
    assert "Problem" in spec["components"]["schemas"] and "Job" in spec["components"]["schemas"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    post = spec["paths"]["/v1/upscale"]["post"]["responses"]
    assert {"200", "202", "400", "409", "413", "415", "422", "429", "500", "503"} == set(post)  # 200: Prefer: wait
    assert post["422"]["content"] == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    assert c.get("/docs").status_code == 200


def test_metrics(stack):
    c = stack["client"]
    run_job(c, png(photo(size=(16, 16))), model="bicubic")
    text = c.get("/metrics").text
    for name in (
        "srgan_http_requests_total",
        "srgan_http_request_duration_seconds_bucket",
        "srgan_upload_bytes",
        "srgan_jobs_enqueued_total",
        "srgan_queue_depth_jobs",
        "srgan_jobs_rejected_total",
    ):
        assert name in text, name
    assert 'route="/v1/jobs/{job_id}/result"' in text  # route templates, never raw ids
    worker = httpx.get(f"http://127.0.0.1:{stack['metrics_port']}/metrics").text
    for name in (
        "srgan_worker_jobs_finished_total",
        "srgan_job_queue_wait_seconds_bucket",
        "srgan_job_processing_seconds_bucket",
        "srgan_job_end_to_end_seconds_bucket",
        "srgan_batch_tiles_bucket",
        "srgan_tiles_processed_total",
        "srgan_output_pixels_total",
        "srgan_inference_seconds_total",
        "srgan_model_loaded_info",
        "srgan_device_memory_used_bytes",
    ):
        assert name in worker, name
    assert 'srgan_worker_jobs_finished_total{model="bicubic"}' in worker


def test_rq_info_sees_queue_and_worker(stack):
    bin_dir = Path(sys.executable).parent
    out = subprocess.run(
        [str(bin_dir / "rq"), "info", "--url", stack["db"].url, stack["queue"]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert stack["queue"] in out.stdout
    assert "1 workers" in out.stdout or "1 worker" in out.stdout, out.stdout
