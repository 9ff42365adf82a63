"""Shared fixtures: real photographs (scikit-image's bundled ones, the shared SR benchmarks when present), and
the service stack (Redis, workers, a gateway as real processes) that the service tests drive."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from app.up import Child, Stack
from tests.servicekit import ClaimedDB, PrivateRedis, Service, free_port, service_env, start_gateway, start_worker
from tests.servicekit import wait_ready as _wait_ready

REPO = Path(__file__).resolve().parents[1]
# The shared data lives beside the checkout on the development machines; SRGAN_DATA_DIR points elsewhere.
DATA_DIR = Path(os.environ.get("SRGAN_DATA_DIR", REPO.parent / "shared" / "data" / "sr"))
BENCHMARKS = DATA_DIR / "benchmarks"

torch.set_num_threads(min(2, torch.get_num_threads()))


def benchmark_dir(name: str) -> Path:
    path = BENCHMARKS / name
    if not path.is_dir():
        pytest.skip(f"benchmark set {name} not found at {path} (set SRGAN_DATA_DIR to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def set5() -> Path:
    return benchmark_dir("Set5")


@pytest.fixture(scope="session")
def set14() -> Path:
    return benchmark_dir("Set14")


def photo(name: str = "astronaut") -> np.ndarray:
    """A real photograph shipped inside scikit-image's wheel, as HxWx3 uint8."""
    from skimage import data

    img = getattr(data, name)()
    return np.ascontiguousarray(img[..., :3] if img.ndim == 3 else np.stack([img] * 3, -1))


def photo_tensor(name: str = "astronaut", size: tuple[int, int] | None = None) -> torch.Tensor:
    """(3, H, W) uint8 crop of a real photograph (top-left corner of the interesting area)."""
    img = torch.from_numpy(photo(name)).permute(2, 0, 1).contiguous()
    if size:
        h, w = size
        top, left = (img.shape[1] - h) // 3, (img.shape[2] - w) // 3
        img = img[:, top : top + h, left : left + w].contiguous()
    return img


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> Path:
    """A folder of real photographs (scikit-image's) cropped small, for evaluation and training tests."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "chelsea", "coffee"):
        Image.fromarray(photo_tensor(name, (96, 128)).permute(1, 2, 0).numpy()).save(folder / f"{name}.png")
    return folder


# -- the service stack -------------------------------------------------------------------------------------------


class ServiceStack:
    """A running stack (``app.up.Stack``, as ``srgan up`` runs it) on a claimed database of the shared Redis or a
    private redis-server: ``url``, ``env`` (the settings every process got), ``gateway``, ``workers``,
    ``redis`` (the ClaimedDB or PrivateRedis), ``logs`` (their log folder)."""

    def __init__(self, redis: ClaimedDB | PrivateRedis, env: dict[str, str], logs: Path, models: list[str],
                 workers: int, metrics_port: int | None):  # fmt: skip
        self.redis, self.env, self.logs, self.metrics_port = redis, env, logs, metrics_port
        worker_env = {**env, "SRGAN_WORKER_METRICS_PORT": str(metrics_port)} if metrics_port else env
        self.stack = Stack(env=worker_env, redis_url=redis.url, worker_args=["--model", *models], workers=workers,
                           log_dir=logs, cwd=REPO)  # fmt: skip
        self.url = self.stack.url
        self.gateway = self.stack.gateway
        self.workers: list[Child] = list(self.stack.workers)
        self.extra: list[Child] = []  # more processes started for the test (trainers, gateways, ...)

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 60), **kw)

    def _env(self, settings: dict) -> dict[str, str]:
        return {**self.env, **{f"SRGAN_{k.upper()}": str(v) for k, v in settings.items()}}

    def add_worker(self, models: list[str], **settings) -> Service:
        w = start_worker(self._env(settings), self.logs, models)
        self.workers.append(w)
        return w

    def add_gateway(self, **settings) -> tuple[Service, str]:
        """Another gateway on the same Redis and queue (with these settings changed); returns it and its URL."""
        svc, url = start_gateway(self._env(settings), self.logs)
        self.extra.append(svc)
        return svc, url

    def add(self, args: list[str], label: str, **settings) -> Service:
        svc = Service(args, self._env(settings), self.logs, label)
        self.extra.append(svc)
        return svc

    def wait_ready(self, timeout: float = 120, ready: bool = True) -> None:
        _wait_ready(self.url, timeout, ready)

    def stop(self) -> None:
        self.gateway.stop()
        for p in [*self.extra, *self.workers]:
            p.stop()
        if isinstance(self.redis, ClaimedDB):
            self.redis.release()
        else:
            self.redis.stop()


@pytest.fixture(scope="module")
def stack_factory(tmp_path_factory):
    """``make(models, **settings)`` starts a stack (``SRGAN_*`` settings as keyword arguments) and waits until
    it is ready; every stack made is stopped when the module's tests are done. ``private_redis=True`` gives it a
    redis-server of its own (``aof=True``: with an append-only file), for tests that kill Redis."""
    made: list[ServiceStack] = []

    def make(models: list[str] | tuple[str, ...] = ("bicubic",), *, private_redis: bool = False, aof: bool = False,
             workers: int = 1, metrics: bool = False, ready: bool = True, name: str | None = None,
             **settings) -> ServiceStack:  # fmt: skip
        r: ClaimedDB | PrivateRedis = PrivateRedis(aof=aof) if private_redis else ClaimedDB()
        env = service_env(r.url, name or f"t{uuid.uuid4().hex[:6]}", **settings)
        st = ServiceStack(r, env, tmp_path_factory.mktemp("stack-logs"), list(models), workers,
                          free_port() if metrics else None)  # fmt: skip
        made.append(st)
        st.stack.start(ready_timeout=120 if ready else None)
        return st

    yield make
    for st in reversed(made):
        st.stop()


# Modules whose tests start real servers and processes (stacks, CLIs, Prometheus, Chromium): the `slow` marker,
# so `pytest -m "not slow"` is the fast subset (unit tests of pure logic and in-process checks). Single slow
# tests elsewhere carry the marker themselves.
SLOW_MODULES = {
    "test_api_conventions", "test_bench_overhead", "test_bench_servers", "test_cli", "test_client", "test_deploy", "test_fair_batching", "test_gateway_api", "test_gateway_backpressure", "test_gateway_door",
    "test_hot_swap", "test_k8s", "test_long_polls", "test_metrics", "test_openapi_contract", "test_prometheus",
    "test_realism_api", "test_redis_faults", "test_registry_api", "test_service_storage_dir", "test_service_up", "test_tenancy",
    "test_training", "test_training_runs", "test_web_ui", "test_webhooks", "test_worker_batching",
    "test_worker_crash", "test_worker_health",
}  # fmt: skip


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
