"""The metrics, read from a real gateway and a real worker: route templates for every answer (also those of
the upload and admin guards), long-polls in their own histogram, no ``_created`` series, output pixels per
model; and the device sampling (NVML) logic."""

from __future__ import annotations

import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servicekit import (
    ClaimedDB,
    free_port,
    photo,
    png,
    service_env,
    start_gateway,
    start_worker,
    wait_ready,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    db = ClaimedDB()
    logs = tmp_path_factory.mktemp("metrics-logs")
    metrics_port = free_port()
    env = service_env(
        db.url, f"met{uuid.uuid4().hex[:6]}", admin_key="a-long-admin-key-for-tests", worker_metrics_port=metrics_port
    )
    worker = start_worker(env, logs, ["bicubic"])
    gateway, url = start_gateway(env, logs)
    try:
        wait_ready(url)
        yield {"url": url, "worker_metrics": f"http://127.0.0.1:{metrics_port}/metrics"}
    finally:
        gateway.stop()
        worker.stop()
        db.release()


def samples(url: str) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(snapshot, name: str, **labels) -> float:
    return snapshot.get((name, frozenset(labels.items())), 0.0)


def run_job(url: str, size=(16, 16)) -> dict:
    r = httpx.post(f"{url}/v1/upscale", files={"file": ("a.png", png(photo(size=size)))}, data={"model": "bicubic"})
    assert r.status_code == 202, r.text
    job = httpx.get(f"{url}{r.json()['links']['self']}", params={"wait": 30}, timeout=60).json()
    assert job["status"] == "finished", job
    return job


def test_every_answer_is_counted_under_its_route_template(stack):
    url = stack["url"]
    r415 = httpx.post(f"{url}/v1/upscale", json={"file": "x"})  # refused by the upload guard
    r401 = httpx.post(f"{url}/v1/models/srresnet/versions", files={"file": ("w", b"x")})  # by the admin guard
    r405 = httpx.delete(f"{url}/healthz")
    r404 = httpx.get(f"{url}/no/such/page")
    assert (r415.status_code, r401.status_code, r405.status_code, r404.status_code) == (415, 401, 405, 404)
    s = samples(f"{url}/metrics")
    requests = "srgan_http_requests_total"
    assert value(s, requests, route="/v1/upscale", method="POST", status="415") >= 1
    assert value(s, requests, route="/v1/models/{name}/versions", method="POST", status="401") >= 1
    assert value(s, requests, route="/healthz", method="DELETE", status="405") >= 1
    unmatched = {dict(k)["status"] for (n, k) in s if n == requests and dict(k)["route"] == "unmatched"}
    assert unmatched == {"404"}  # only a path that no route has


def test_long_polls_have_their_own_histogram(stack):
    url = stack["url"]
    job = run_job(url)
    route = "/v1/jobs/{job_id}"
    before = samples(f"{url}/metrics")
    for wait in (0, 5, 5):  # the job is finished: even a long-poll answers at once
        assert httpx.get(f"{url}/v1/jobs/{job['id']}", params={"wait": wait}, timeout=30).status_code == 200
    after = samples(f"{url}/metrics")

    def delta(name):
        return value(after, name, route=route) - value(before, name, route=route)

    assert delta("srgan_http_long_poll_duration_seconds_count") == 2
    assert delta("srgan_http_request_duration_seconds_count") == 1


def test_no_created_series_anywhere(stack):
    run_job(stack["url"])
    for endpoint in (f"{stack['url']}/metrics", stack["worker_metrics"]):
        text = httpx.get(endpoint, timeout=10).text
        assert "srgan_" in text
        assert not [line for line in text.splitlines() if "_created" in line.split(" ")[0]], endpoint


def test_output_pixels_per_model_and_no_gpu_series_on_a_cpu_worker(stack):
    before = samples(stack["worker_metrics"])
    run_job(stack["url"], size=(12, 20))
    after = samples(stack["worker_metrics"])
    name = "srgan_output_pixels_total"
    assert value(after, name, model="bicubic") - value(before, name, model="bicubic") == 48 * 80  # x4 each way
    assert not [n for n, _ in after if n.startswith("srgan_gpu_")]
    assert value(after, "srgan_device_memory_used_bytes", device="cpu") > 100e6  # the worker's resident set


class FakeNvml:
    """NVML's calls as nvidia-ml-py names them, answering for one GPU (the sampler's logic, no driver)."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self):
        self.opened, self.asked = 0, []

    def nvmlInit(self):
        self.opened += 1

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.asked.append(("uuid", uuid))
        return "h"

    def nvmlDeviceGetHandleByIndex(self, i):
        self.asked.append(("index", i))
        return "h"

    def nvmlDeviceGetMemoryInfo(self, h):
        return type("M", (), {"used": 3 * 2**30, "total": 141 * 2**30})()

    def nvmlDeviceGetUtilizationRates(self, h):
        return type("U", (), {"gpu": 87})()

    def nvmlDeviceGetTemperature(self, h, sensor):
        return 61


def test_nvml_sampler_reads_utilisation_memory_temperature_and_maps_visible_devices(monkeypatch):
    from worker.metrics import Nvml

    fake = FakeNvml()
    assert Nvml(0, "GPU-1234", nvml=fake).sample() == {
        "utilization": 0.87,
        "memory_used": 3 * 2**30,
        "memory_total": 141 * 2**30,
        "temperature": 61.0,
    }
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    Nvml(1, None, nvml=fake)  # cuda:1 is the machine's GPU 5
    assert fake.asked == [("uuid", "GPU-1234"), ("index", 5)]


def test_nvml_is_a_no_op_without_an_nvidia_driver():
    import torch

    from worker.metrics import Nvml

    nvml = Nvml(0)  # the real nvidia-ml-py
    if torch.cuda.is_available():
        s = nvml.sample()
        assert 0 <= s["utilization"] <= 1 and 0 < s["memory_used"] <= s["memory_total"]
    else:
        assert nvml.handle is None and nvml.sample() is None


def test_measure_device_on_cpu_sets_the_resident_set_and_no_gpu_series():
    import os

    import torch
    from prometheus_client import REGISTRY

    from worker.metrics import measure_device

    measure_device(torch.device("cpu"))
    rss = REGISTRY.get_sample_value("srgan_device_memory_used_bytes", {"device": "cpu"})
    with open(f"/proc/{os.getpid()}/status") as f:
        vmrss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    assert 0.5 * vmrss < rss < 2 * vmrss
    assert REGISTRY.get_sample_value("srgan_gpu_utilization_ratio", {"device": "cpu"}) is None
