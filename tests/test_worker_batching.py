"""The batching worker in-process against a real Redis: jobs of one model share one engine call; an image that
does not fit fails alone; an engine failure fails only the jobs it had not finished."""

from __future__ import annotations

import pytest

from app.config import Settings
from tests.servicekit import PrivateRedis, decode_png, direct_upscale, enqueue_upscale, photo, png
from worker.jobs import JobStore
from worker.service import BatchWorker
from worker.storage import make_storage

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def env():
    r = PrivateRedis()
    s = Settings(
        redis_url=r.url,
        queue="batch",
        key_prefix="batch",
        worker_models=["bicubic"],
        worker_metrics_port=0,
        worker_batch_jobs=8,
        heartbeat_interval_s=0.2,
    )
    conn = r.client
    storage = make_storage(s, conn)
    yield s, conn, JobStore.for_queue(s, conn, storage), storage
    r.stop()


def enqueue(s, store, storage, data: bytes, model: str) -> str:
    return enqueue_upscale(store, data, model)


class Recording:
    """Wraps an engine and records what each ``upscale_iter`` call was given (and can sabotage it)."""

    def __init__(self, up, calls: list, fail_image: int | None = None, crash_after: int | None = None):
        self.up, self.calls, self.fail_image, self.crash_after = up, calls, fail_image, crash_after

    def __getattr__(self, name):
        return getattr(self.up, name)

    def upscale_iter(self, images, progress=None):
        from model.engine import ImageTooLargeError

        self.calls.append((self.up.model.name, len(images)))
        for n, (i, out) in enumerate(self.up.upscale_iter(images, progress)):
            if self.crash_after is not None and n == self.crash_after:
                raise RuntimeError("simulated device failure")
            yield (i, ImageTooLargeError("simulated: does not fit")) if i == self.fail_image else (i, out)


def run(worker: BatchWorker) -> None:
    worker.work(burst=True)


def statuses(store, ids) -> list[tuple[str, str | None]]:
    recs = store.get_many(ids)
    return [(r.status, r.data.error.code if r.data.error else None) for r in recs]


def test_jobs_of_one_model_share_one_engine_call(env):
    s, conn, q, storage = env
    images = [png(photo(size=(12 + i, 16), top=20 * i)) for i in range(5)]
    ids = [enqueue(s, q, storage, data, "bicubic" if i < 3 else "espcn") for i, data in enumerate(images)]
    w = BatchWorker(s, connection=conn, models=["bicubic", "espcn"])
    calls: list = []
    w.load()
    w.models.engines = {k: Recording(up, calls) for k, up in w.models.engines.items()}
    run(w)
    assert sorted(calls) == [("bicubic", 3), ("espcn", 2)]  # one call per model, every job of it inside
    assert statuses(q, ids) == [("finished", None)] * 5
    for jid, data in zip(ids[:3], images[:3], strict=True):
        out = decode_png(storage.get("result", jid))
        assert (out == direct_upscale(data, "bicubic")).all()
        assert storage.get("input", jid) is None  # uploads are deleted once their job ends
    assert int(conn.hget(w.presence.counters_key, "successful_job_count")) == 5  # rq's per-worker counters
    assert q.queue.finished_job_registry.count == 5 and q.queue.started_job_registry.count == 0


def test_the_next_full_batch_is_taken_while_one_computes(env):
    """Two jobs per batch, six jobs: while a full batch computes, the next is claimed, started and decoded, so
    each later batch was started before the batch ahead of it ended; every result is still the engine's."""
    s, conn, q, storage = env
    s = s.model_copy(update={"worker_batch_jobs": 2})
    images = [png(photo(size=(96, 96), top=30 * i)) for i in range(6)]
    ids = [enqueue(s, q, storage, data, "srresnet") for data in images]
    w = BatchWorker(s, connection=conn, models=["srresnet"])
    run(w)
    views = q.get_many(ids)
    assert [v.status for v in views] == ["finished"] * 6 and all(v.attempts == 1 for v in views)
    for ahead, later in ((views[0:2], views[2:4]), (views[2:4], views[4:6])):
        assert max(v.started_at for v in later) < min(v.ended_at for v in ahead)
    assert (decode_png(storage.get("result", ids[5])) == direct_upscale(images[5], "srresnet")).all()


def test_an_image_that_cannot_fit_fails_alone(env):
    s, conn, q, storage = env
    ids = [enqueue(s, q, storage, png(photo(size=(10, 10 + i))), "bicubic") for i in range(3)]
    w = BatchWorker(s, connection=conn)
    w.load()
    calls: list = []
    w.models.engines = {k: Recording(up, calls, fail_image=1) for k, up in w.models.engines.items()}
    run(w)
    assert statuses(q, ids) == [("finished", None), ("failed", "image_too_large"), ("finished", None)]
    assert q.queue.failed_job_registry.get_job_ids() == [ids[1]]


def test_an_engine_failure_fails_only_the_unfinished_jobs(env):
    s, conn, q, storage = env
    ids = [enqueue(s, q, storage, png(photo(size=(10, 10 + i))), "bicubic") for i in range(3)]
    w = BatchWorker(s, connection=conn)
    w.load()
    w.models.engines = {k: Recording(up, [], crash_after=1) for k, up in w.models.engines.items()}
    run(w)
    got = statuses(q, ids)
    assert got[0] == ("finished", None) and got[1:] == [("failed", "engine_error")] * 2
    # the worker survives it: the next job goes through
    later = enqueue(s, q, storage, png(photo(size=(9, 9))), "bicubic")
    w2 = BatchWorker(s, connection=conn)
    run(w2)
    assert statuses(q, [later]) == [("finished", None)]


def test_unknown_or_unserved_models_fail_the_job_not_the_worker(env):
    s, conn, q, storage = env
    bad = enqueue(s, q, storage, png(photo(size=(8, 8))), "srgan_nonexistent")
    ok = enqueue(s, q, storage, png(photo(size=(8, 8))), "bicubic")
    w = BatchWorker(s, connection=conn)
    run(w)
    assert statuses(q, [bad, ok]) == [("failed", "model_unavailable"), ("finished", None)]
