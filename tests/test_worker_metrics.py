"""The worker's per-model series, looked up once (worker/metrics.py per_model)."""

import uuid

from worker import metrics as M


def test_per_model_children_are_the_labelled_series():
    model = f"m-{uuid.uuid4().hex[:8]}"
    s = M.per_model(model)
    assert M.per_model(model) is s
    before = M.JOBS_FINISHED.labels(model)._value.get()
    s.finished.inc()
    M.count_output(model, 3, 5)
    assert M.JOBS_FINISHED.labels(model)._value.get() == before + 1
    assert M.OUTPUT_PIXELS.labels(model)._value.get() == 15
    for child, metric in [(s.queue_wait, M.QUEUE_WAIT), (s.processing, M.PROCESSING), (s.end_to_end, M.END_TO_END),
                          (s.tiles, M.TILES)]:  # fmt: skip
        assert child is metric.labels(model)
