"""Fair batching: a small, cheap job claimed in the same batch as big ones ends first (the batching worker
in-process against a real Redis, as in test_worker_batching)."""

from __future__ import annotations

import pytest

from app.config import Settings
from tests.servicekit import PrivateRedis, enqueue_upscale, photo, png
from worker.jobs import JobStore
from worker.service import BatchWorker
from worker.storage import make_storage

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


@pytest.fixture
def env():
    r = PrivateRedis()
    s = Settings(redis_url=r.url, queue="fair", key_prefix="fair", worker_models=["bicubic", "srresnet"],
                 worker_metrics_port=0, worker_batch_jobs=3, heartbeat_interval_s=0.2)  # fmt: skip
    storage = make_storage(s, r.client)
    yield s, r.client, JobStore.for_queue(s, r.client, storage)
    r.stop()


def test_a_tiny_bicubic_job_ends_before_the_two_big_srresnet_jobs_of_its_batch(env):
    s, conn, store = env
    big = [enqueue_upscale(store, png(photo(size=(96, 128), top=40 * i)), "srresnet") for i in range(2)]
    tiny = enqueue_upscale(store, png(photo(size=(12, 12))), "bicubic")  # queued last
    w = BatchWorker(s, connection=conn, models=["bicubic", "srresnet"])
    w.work(burst=True)
    recs = {r.id: r for r in store.get_many([*big, tiny])}
    assert all(r.status == "finished" for r in recs.values())
    assert len({r.data.batch_started_at for r in recs.values()}) <= 2  # claimed together: one batch, two groups
    assert {r.started_at for r in recs.values()} == {recs[tiny].started_at}  # one claim
    # Stored before the network even started on the big ones (not merely before their slower encodes).
    assert recs[tiny].ended_at <= min(recs[b].data.batch_started_at for b in big)


def test_inside_one_engine_call_the_smaller_image_ends_first(env):
    s, conn, store = env
    large = [enqueue_upscale(store, png(photo(size=(160, 160), top=30 * i)), "srresnet") for i in range(2)]
    small = enqueue_upscale(store, png(photo(size=(24, 24))), "srresnet")  # queued last
    w = BatchWorker(s, connection=conn, models=["bicubic", "srresnet"])
    w.work(burst=True)
    recs = {r.id: r for r in store.get_many([*large, small])}
    assert all(r.status == "finished" for r in recs.values())
    assert {r.started_at for r in recs.values()} == {recs[small].started_at}  # one claim
    assert recs[small].ended_at <= min(recs[b].ended_at for b in large)
