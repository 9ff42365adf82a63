"""The servers ``srgan bench servers`` compares: ours, LitServe and TorchServe, each on free ports, each serving the
same weights through the same :class:`model.engine.Upscaler`, decoder and PNG encoder (:class:`Pipeline`).

Every server here is started as a child process tree and knows its root pid (all its CPU) and, once it has
served, its engine pid (the process that runs the :class:`Pipeline`; ours: the worker), so the benchmark can
split the serving side's CPU from the engine's. ``python -m app.peer_litserve ...`` is the LitServe child;
:func:`torchserve_handle` is the TorchServe handler (a module-level entry point, imported by the
handler file of the model archive).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

__all__ = ["Pipeline", "OursServer", "LitServeServer", "TorchServeServer", "peer_missing", "SERVERS"]

# the engine's torch threads in a peer: the worker's setting, else what torch picks in the benchmark process
# (TorchServe sets OMP_NUM_THREADS=1 for its workers otherwise)
THREADS_ENV = "SRGAN_BENCH_THREADS"
PIDFILE_ENV = "SRGAN_BENCH_PIDFILE"
_ROOT = Path(__file__).resolve().parents[1]  # the checkout: TorchServe's worker imports the handler from it


class Pipeline:
    """What every peer server runs per batch: decode the uploads, one ``Upscaler.upscale`` call on all of them,
    encode PNGs, with the worker's engine settings (``SRGAN_WORKER_*``), as the worker's engine is built."""

    def __init__(self, model: str, scale: int = 4):
        import torch

        from app.config import Settings
        from model.engine import Upscaler
        from model.zoo import load_model
        from worker.models import engine_config

        s = Settings()
        threads = s.worker_threads or int(os.environ.get(THREADS_ENV) or 0)
        if threads:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.up = Upscaler(load_model(model, scale), engine_config(s))
        self.level = s.worker_png_compress_level
        pidfile = os.environ.get(PIDFILE_ENV)
        if pidfile:
            Path(pidfile).write_text(json.dumps({"pid": os.getpid(), "threads": self.threads}))

    def __call__(self, blobs: list[bytes]) -> list[bytes]:
        from model.imageio import decode, encode

        decoded = [decode(b) for b in blobs]
        out = self.up.upscale([d.rgb for d in decoded])
        return [encode(d, sr, "png", 90, png_compress_level=self.level) for d, sr in zip(decoded, out, strict=True)]


def _free_port() -> int:
    from app.up import free_port

    return free_port()


def _wait(url: str, proc: subprocess.Popen, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} did not start ({url})\n{tail}")
        time.sleep(0.2)


class _Server:
    name = ""
    flow = "post"  # how the clients talk to it (app.bench_servers)

    def __init__(self, model: str, batch: int, delay_ms: float, env: dict[str, str]):
        self.model, self.batch, self.delay_ms = model, batch, delay_ms
        self.tmp = Path(tempfile.mkdtemp(prefix=f"srgan-bench-{self.name}-"))
        self.pidfile = self.tmp / "engine.json"
        self.env = {**env, PIDFILE_ENV: str(self.pidfile)}
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> _Server:
        raise NotImplementedError

    def root_pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid]

    def engine(self) -> dict:
        """{"pid", "threads"} of the process that runs the pipeline (known once it has loaded)."""
        return json.loads(self.pidfile.read_text())

    def pause(self, paused: bool) -> None:
        """SIGSTOP (SIGCONT) the whole process group: LitServe's loops poll while idle (~0.16 s of CPU a second on
        2 cores), which would be taken from whatever is measured beside them."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM to the whole process group (LitServe's workers and TorchServe's Java outlive their parent
        otherwise), SIGKILL to what is left after 20 s."""
        if self.proc is not None:
            _kill_group(self.proc, 20)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _kill_group(proc: subprocess.Popen, timeout: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)  # spawn() made it a session (and group) leader
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is None:
                time.sleep(0.1)
                continue
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


class OursServer(_Server):
    """Our stack (a private redis-server, one worker, the gateway) with the worker taking ``batch`` jobs at once."""

    name = "ours"

    def start(self) -> OursServer:
        from app.bench_service import bench_stack

        self.stack = bench_stack([self.model], self.batch, self.env)
        self.stack.start()
        self.url = self.stack.url
        return self

    def root_pids(self) -> list[int]:
        return [c.pid for c in self.stack.children]

    def engine(self) -> dict:
        # the worker sets SRGAN_WORKER_THREADS, else keeps torch's default, which the benchmark passes the peers
        threads = self.env.get("SRGAN_WORKER_THREADS") or self.env.get(THREADS_ENV)
        return {"pid": self.stack.workers[0].pid, "threads": int(threads) if threads else None}

    def pause(self, paused: bool) -> None:
        """Never paused: a stopped Redis wakes up to expired heartbeat keys (the gateway would refuse jobs until
        the worker writes again). Idle, it costs about 12 ms of CPU a second."""

    def stop(self) -> None:
        self.stack.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class LitServeServer(_Server):
    """LitServe: one API server process, one inference worker, ``max_batch_size``/``batch_timeout`` batching;
    requests are JSON ``{"image": base64}`` (LitServe hands the worker what the request parsed to, and it must
    pickle), responses the PNG bytes."""

    name = "litserve"
    flow = "litserve"

    def start(self) -> LitServeServer:
        from app.up import spawn

        port = _free_port()
        log = self.tmp / "litserve.log"
        with open(log, "ab") as out:
            self.proc = spawn(
                [sys.executable, "-m", "app.peer_litserve", self.model, str(port), str(self.batch),
                 str(self.delay_ms / 1000)],
                self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.url = f"http://127.0.0.1:{port}/predict"
        _wait(f"http://127.0.0.1:{port}/health", self.proc, 180, "LitServe", log)
        return self


_TS_CONFIG = """\
inference_address=http://127.0.0.1:{inference}
management_address=http://127.0.0.1:{management}
metrics_address=http://127.0.0.1:{metrics}
model_store={store}
disable_system_metrics=true
enable_metrics_api=false
default_workers_per_model=1
job_queue_size=10000
async_logging=true
"""


class TorchServeServer(_Server):
    """TorchServe (Java front end, one Python worker): a model archive of a custom handler (no weights in it: the
    handler loads ours), registered through the management API with ``batch_size``/``max_batch_delay``; raw
    bytes in, PNG bytes out."""

    name = "torchserve"

    def start(self) -> TorchServeServer:
        from app.up import spawn

        store = self.tmp / "store"
        store.mkdir()
        handler = self.tmp / "srgan_handler.py"
        handler.write_text("from app.peer_servers import torchserve_handle as handle  # noqa: F401\n")
        bindir = Path(sys.executable).parent
        subprocess.run(
            [str(bindir / "torch-model-archiver"), "--model-name", self.model, "--version", "1.0", "--handler",
             str(handler), "--export-path", str(store), "--archive-format", "no-archive"],
            check=True, env=self.env, cwd=self.tmp, capture_output=True,
        )  # fmt: skip
        ports = {k: _free_port() for k in ("inference", "management", "metrics")}
        config = self.tmp / "config.properties"
        config.write_text(_TS_CONFIG.format(store=store, **ports))
        logs = self.tmp / "logs"
        env = {**self.env, "LOG_LOCATION": str(logs), "METRICS_LOCATION": str(logs), "TS_CONFIG_FILE": str(config),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), self.env.get("PYTHONPATH")]))}  # fmt: skip
        with open(self.tmp / "torchserve.log", "ab") as out:
            self.proc = spawn(
                [str(bindir / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth",
                 "--enable-model-api", "--model-store", str(store), "--ts-config", str(config)],
                env, cwd=self.tmp, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        base = f"http://127.0.0.1:{ports['inference']}"
        _wait(f"{base}/ping", self.proc, 180, "TorchServe", self.tmp / "torchserve.log")
        r = httpx.post(
            f"http://127.0.0.1:{ports['management']}/models",
            params={"url": self.model, "batch_size": self.batch, "max_batch_delay": int(self.delay_ms),
                    "initial_workers": 1, "synchronous": "true", "response_timeout": 600},
            timeout=300,
        )  # fmt: skip
        if r.status_code >= 300:
            raise RuntimeError(f"TorchServe did not register {self.model}: {r.status_code} {r.text[:500]}")
        self.url = f"{base}/predictions/{self.model}"
        return self


_ts_pipe: Pipeline | None = None


def torchserve_handle(data, context):
    """TorchServe's entry point: ``data`` is the batch (a list of requests, raw bytes under "body"/"data"),
    ``None`` once at load time."""
    global _ts_pipe
    if _ts_pipe is None:
        _ts_pipe = Pipeline(context.manifest["model"]["modelName"])
    if data is None:
        return None
    blobs = [bytes(d.get("body") or d.get("data")) for d in data]
    out = _ts_pipe(blobs)
    for i in range(len(out)):
        context.set_response_content_type(i, "image/png")
    return out


SERVERS = {"ours": OursServer, "litserve": LitServeServer, "torchserve": TorchServeServer}


def peer_missing(name: str) -> str | None:
    """Why ``name`` cannot run here (a missing package or java), or None."""
    import importlib.util

    if name == "litserve" and importlib.util.find_spec("litserve") is None:
        return "litserve is not installed (pip install 'srgan-service[peers]')"
    if name == "torchserve":
        bindir = Path(sys.executable).parent
        for exe in ("torchserve", "torch-model-archiver"):
            if not (bindir / exe).exists() and shutil.which(exe) is None:
                return f"{exe} is not installed (pip install 'srgan-service[peers]')"
        if shutil.which("java") is None:
            return "no java on PATH (TorchServe's front end needs Java 11+)"
    return None
