"""The upscale worker: one long-lived process per device that takes many jobs at once.

:class:`BatchWorker` puts three parts together, each in its own module:

- the **model pool** (``worker/models.py``): the engines it holds in memory, and hot swap between batches;
- the **batch pipeline** (``worker/pipeline.py``): claim -> decode -> engine -> encode -> store;
- the **process lifecycle** (``worker/process.py``): signals, heartbeat and maintenance, surviving Redis outages.

It never forks and never lets rq fork (CUDA does not survive a fork, and a fork per job costs more than a small
job); it is registered as an rq worker, so ``rq info`` shows it with its state and job counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from worker import metrics as M
from worker.jobs import JobStore
from worker.models import ModelPool
from worker.pipeline import BatchPipeline, Task
from worker.presence import Presence
from worker.process import WorkerProcess
from worker.records import ServedModel
from worker.storage import make_storage

__all__ = ["BatchWorker", "run_worker"]


class BatchWorker:
    """A model pool and a batch pipeline, run by a worker process (it is the process's body)."""

    def __init__(self, settings, *, models: list[str] | None = None, name: str | None = None, connection=None):
        conn = connection if connection is not None else settings.redis(name="srgan-worker")
        from worker.registry import open_registry

        self.settings = settings
        self.store = JobStore.for_queue(settings, conn, make_storage(settings, conn))
        self.presence = Presence(self.store, name, dead_after_s=settings.worker_dead_after_s)
        self.name = self.presence.name
        self.preload = list(settings.worker_models if models is None else models)
        self.models = ModelPool(settings, open_registry(settings, conn), conn, name=self.name)
        self.pipeline = BatchPipeline(settings, self.store, self.models, worker=self.name,
                                      counters_key=self.presence.counters_key)  # fmt: skip
        self.process = WorkerProcess(settings, self.store, self.presence, self)

    def work(self, burst: bool = False) -> bool:
        """Run until stopped (or, with ``burst``, until the queue is empty). Returns whether any batch ran."""
        return self.process.work(burst)

    # -- the process's body -----------------------------------------------------------------------------------
    def load(self) -> None:
        self.models.preload(self.preload)

    def start(self) -> None:
        self.models.start_watching()

    def next_batch(self, block_s: float | None) -> list[Task]:
        p = self.pipeline
        p.wait_for_encoders(max_pending=max(2, p.batch_jobs, p.io_threads))
        return p.next_batch(block_s)

    def run(self, tasks: list[Task]) -> None:
        self.pipeline.run(tasks)

    @contextlib.contextmanager
    def between_batches(self) -> Iterator[None]:
        with self.models.lock:  # engines change only between batches
            self.models.switch_staged()
            yield

    def retry_unstored(self) -> int:
        return self.pipeline.retry_unstored()

    def flush_progress(self) -> None:
        self.pipeline.flush_progress()

    def busy(self) -> int:
        return self.pipeline.busy()

    def held(self) -> dict[str, str]:
        return self.pipeline.held()

    def served(self) -> list[ServedModel]:
        return self.models.served()

    def device(self):
        return self.models.device()

    @property
    def seconds_per_job(self) -> float | None:
        return self.pipeline.seconds_per_job

    @property
    def batches(self) -> int:
        return self.pipeline.batches

    def close(self, cold: bool) -> None:
        self.models.stop_watching()
        self.pipeline.close(cold)


def run_worker(settings, *, models: list[str] | None = None, burst: bool = False,
               on_ready: Callable[[BatchWorker], None] | None = None) -> int:  # fmt: skip
    """Build and run one worker (``srgan worker``); returns the exit status."""
    if settings.worker_threads:
        import torch

        torch.set_num_threads(settings.worker_threads)
    w = BatchWorker(settings, models=models)
    M.serve_metrics(settings.worker_metrics_port)
    if on_ready is not None:
        on_ready(w)
    w.work(burst=burst)
    return 0
