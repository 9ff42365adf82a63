"""The shared-directory storage backend end to end: gateway and worker exchange images through files."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.servicekit import (
    PrivateRedis,
    decode_png,
    direct_upscale,
    photo,
    png,
    service_env,
    start_gateway,
    start_worker,
    wait_ready,
)

pytestmark = pytest.mark.timeout(120)


def test_dir_storage_end_to_end(tmp_path):
    r = PrivateRedis()
    blobs = tmp_path / "shared"
    env = service_env(r.url, "dirq", storage="dir", storage_dir=blobs)
    gateway, url = start_gateway(env, tmp_path)
    worker = start_worker(env, tmp_path, ["bicubic"])
    try:
        wait_ready(url)
        data = png(photo(size=(20, 24)))
        job = httpx.post(f"{url}/v1/upscale", files={"file": ("a.png", data)}, data={"model": "bicubic"}).json()
        out = httpx.get(f"{url}/v1/jobs/{job['id']}/result", params={"wait": 30}, timeout=40)
        assert out.status_code == 200
        np.testing.assert_array_equal(decode_png(out.content), direct_upscale(data, "bicubic"))
        assert (blobs / "result" / job["id"]).read_bytes() == out.content
        assert not (blobs / "input" / job["id"]).exists()  # the upload is deleted once the job ends
        assert not r.client.keys("t-dirq:input:*") and not r.client.keys("t-dirq:result:*")  # nothing in Redis
    finally:
        assert worker.stop() == 0
        gateway.stop()
        r.stop()
