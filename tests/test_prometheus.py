"""Observability with the real tools: the rules pass ``promtool check rules`` and their unit tests
(``promtool test rules``), the compose Prometheus's config passes ``promtool check config``, and a real
Prometheus scraping a real stack (gateway, worker, Redis and its exporter, started as tests/servicekit.py
does) answers every query of the Grafana dashboard with data, the recording rules included."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from tests.servicekit import PrivateRedis, free_port, photo, png, service_env, start_gateway, start_worker, wait_for

REPO = Path(__file__).resolve().parents[1]
PROM_DIR = REPO / "deploy" / "prometheus"
DASHBOARD = json.loads((REPO / "deploy" / "grafana" / "srgan-service.json").read_text())
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
EXPORTER = shutil.which("prometheus-redis-exporter") or shutil.which("redis_exporter")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (make test installs it)")
# Series that only a GPU worker exports (NVML): on a machine without an NVIDIA GPU their queries are empty.
GPU_ONLY = re.compile(r"\bsrgan_gpu_\w+")


def targets() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query in the dashboard."""
    return [(p["title"], t["expr"]) for p in DASHBOARD["panels"] if p["type"] != "row" for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    """The service's metric and recorded-series names an expression reads."""
    return set(re.findall(r"\bsrgan[_:][a-zA-Z0-9_:]*", expr))


@needs_promtool
def test_rules_pass_promtool_check():
    out = subprocess.run([PROMTOOL, "check", "rules", str(PROM_DIR / "rules.yml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@needs_promtool
def test_alerts_fire_on_what_they_watch_and_stay_quiet_otherwise():
    out = subprocess.run(
        [PROMTOOL, "test", "rules", "rules_test.yml"], cwd=PROM_DIR, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    tested = yaml.safe_load((PROM_DIR / "rules_test.yml").read_text())["tests"]
    fired = {a["alertname"] for t in tested for a in t.get("alert_rule_test", []) if a["exp_alerts"]}
    rules = yaml.safe_load((PROM_DIR / "rules.yml").read_text())["groups"]
    alerts = {r["alert"] for g in rules for r in g["rules"] if "alert" in r}
    assert fired == alerts  # every alert has a test in which it fires
    wanted = {"SrganNoWorkers", "SrganQueueGrowing", "SrganJobErrorRate", "SrganLatencyHigh", "SrganWorkerRestarts"}
    assert wanted | {"SrganRedisDown", "SrganRedisMemoryHigh"} <= alerts


@needs_promtool
def test_compose_prometheus_config_is_valid(tmp_path):
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    shutil.copy(PROM_DIR / "rules.yml", tmp_path / "rules.yml")
    config["rule_files"] = [str(tmp_path / "rules.yml")]  # where compose mounts it: /etc/prometheus/rules.yml
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_operator_rules_are_generated_from_the_one_rules_file():
    import importlib.util

    spec = importlib.util.spec_from_file_location("operator_rules", PROM_DIR / "operator_rules.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.TARGET.read_text() == mod.render(), "run: python deploy/prometheus/operator_rules.py"


def test_dashboard_covers_what_an_operator_watches_with_metrics_that_exist():
    from prometheus_client import REGISTRY

    import app.metrics  # noqa: F401  (both sets of metrics registered in this process)
    import worker.metrics  # noqa: F401

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""], "info": ["_info"]}
    ours = {f.name + sfx for f in REGISTRY.collect() for sfx in suffixes.get(f.type, [""])}
    recorded = {
        r["record"]
        for g in yaml.safe_load((PROM_DIR / "rules.yml").read_text())["groups"]
        for r in g["rules"]
        if "record" in r
    }
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    exprs = " ".join(e for _, e in targets())
    for _, expr in targets():
        for name in metric_names(expr):
            assert name in ours or name in recorded, (name, expr)
    for p in DASHBOARD["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
    for needed in (
        "srgan_worker_jobs_finished_total",  # throughput
        "srgan_output_pixels_total",
        "histogram_quantile(0.99, sum by (le) (rate(srgan_job_end_to_end_seconds_bucket",  # latency percentiles
        "srgan_queue_depth_jobs",  # queue depth and wait
        "srgan_job_queue_wait_seconds_bucket",
        "srgan_batch_jobs_sum",  # batch fill
        "srgan_inference_seconds_total",  # device utilisation and memory
        "srgan_gpu_utilization_ratio",
        "srgan_device_memory_used_bytes",
        "sum by (code) (rate(srgan_worker_jobs_failed_total",  # errors by code
        "srgan_model_loaded_info",  # model versions
        "srgan_http_long_poll_duration_seconds_bucket",
    ):
        assert needed in exprs, needed


# -- a real Prometheus against a real stack ----------------------------------------------------------------------


class Prometheus:
    """A prometheus server of our own on a free port, scraping every second, with the service's rules."""

    def __init__(self, jobs: dict[str, str], workdir: Path):
        self.port = free_port()
        shutil.copy(PROM_DIR / "rules.yml", workdir / "rules.yml")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(workdir / "rules.yml")],
            "scrape_configs": [{"job_name": j, "static_configs": [{"targets": [t]}]} for j, t in jobs.items()],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(self._ready, 60, "Prometheus to start", interval=0.2)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError("prometheus exited")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, expr: str) -> list[dict]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        body = r.json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def _traffic(url: str, admin_path: str) -> int:
    """Finished jobs (long-polled), one job that the worker fails, refused uploads, one 401; returns the number of
    finished jobs."""
    image = png(photo(size=(24, 24)))
    finished = 0
    with httpx.Client(base_url=url, timeout=60) as c:
        # espcn is a model the gateway knows and this worker does not serve (no lazy loading): it fails the job.
        for model in ("bicubic", "bicubic", "bicubic", "espcn"):
            r = c.post("/v1/upscale", files={"file": ("a.png", image)}, data={"model": model})
            assert r.status_code == 202, r.text
            job = c.get(r.json()["links"]["self"], params={"wait": 30}).json()
            assert job["status"] == ("failed" if model == "espcn" else "finished"), job
            finished += job["status"] == "finished"
        assert c.post("/v1/upscale", files={"file": ("a.txt", b"not an image")}).status_code == 415
        assert c.post("/v1/upscale", content=b"{}", headers={"content-type": "application/json"}).status_code == 415
        assert c.post(admin_path, files={"file": ("w", b"x")}).status_code == 401
    return finished


@pytest.mark.timeout(300)
@pytest.mark.skipif(
    PROMETHEUS is None or EXPORTER is None,
    reason="prometheus and prometheus-redis-exporter are not installed (make test installs them)",
)
def test_real_prometheus_answers_every_dashboard_query_from_a_real_stack(tmp_path):
    import torch

    redis = PrivateRedis()
    redis.client.config_set("maxmemory", "256mb")  # as deployed: a bound and no eviction
    redis.client.config_set("maxmemory-policy", "noeviction")
    procs, prom = [], None
    try:
        exporter_port, worker_port = free_port(), free_port()
        procs.append(
            subprocess.Popen(
                [
                    EXPORTER,
                    f"-redis.addr=redis://127.0.0.1:{redis.port}",
                    f"-web.listen-address=127.0.0.1:{exporter_port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        env = service_env(
            redis.url,
            f"prom{uuid.uuid4().hex[:6]}",
            admin_key="an-admin-key-for-tests",
            worker_lazy_load="false",
            worker_metrics_port=worker_port,
        )
        worker = start_worker(env, tmp_path, ["bicubic"])
        procs.append(worker.proc)
        gateway, url = start_gateway(env, tmp_path)
        procs.append(gateway.proc)
        prom = Prometheus(
            {
                "srgan-gateway": url.split("//")[1],
                "srgan-worker": f"127.0.0.1:{worker_port}",
                "srgan-redis": f"127.0.0.1:{exporter_port}",
            },
            Path(tempfile.mkdtemp(dir=tmp_path)),
        )
        wait_for(lambda: len(prom.query("up == 1")) == 3, 60, "all three targets up", interval=0.5)
        wait_for(lambda: prom.query("srgan_live_workers == 1"), 60, "the gateway to see the worker", interval=0.5)
        admin = "/v1/models/srresnet/versions"
        # Twice, with scrapes between: a labelled series first appears with its first count, and a rate needs
        # an increase seen by two scrapes.
        for rounds in (1, 2):
            done = _traffic(url, admin) * rounds

            def scraped(done=done, rounds=rounds) -> bool:  # this round's last job and last request
                return bool(
                    prom.query(f"sum(srgan_worker_jobs_finished_total) >= {done}")
                    and prom.query(f'sum(srgan_http_requests_total{{status="401"}}) >= {rounds}')
                )

            wait_for(scraped, 30, "a scrape of this round", interval=0.5)
        wait_for(lambda: prom.query("srgan:job_error_ratio:rate5m > 0"), 30, "the recording rules", interval=0.5)

        empty, unanswered = [], []
        for title, expr in targets():
            result = prom.query(expr.replace("$__rate_interval", "1m"))
            values = [float(r["value"][1]) for r in result]
            if GPU_ONLY.search(expr) and not torch.cuda.is_available():
                assert result == [], (title, expr)  # NVML's series: none on a CPU worker, by design
                empty.append(title)
                continue
            if not values or not any(math.isfinite(v) for v in values):
                unanswered.append((title, expr, result))
        assert unanswered == []
        assert set(empty) <= {"GPU utilisation (NVML)", "GPU temperature (NVML)", "Device memory"}
        # The route labels reached Prometheus as templates, the guards' answers included.
        statuses = {(r["metric"]["route"], r["metric"]["status"]) for r in prom.query("srgan_http_requests_total")}
        assert {("/v1/upscale", "415"), ("/v1/models/{name}/versions", "401"), ("/v1/upscale", "202")} <= statuses
        assert not [s for s in statuses if s[0] == "unmatched"]
        assert prom.query('redis_memory_max_bytes{job="srgan-redis"} == 268435456')
    finally:
        if prom is not None:
            prom.stop()
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        redis.stop()
