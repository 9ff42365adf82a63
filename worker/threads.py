"""How many threads the batch pipeline uses: the decode/encode pool (:func:`io_threads`) and, around a small
engine call on a CPU, torch's intra-op threads (:func:`torch_threads`)."""

from __future__ import annotations

import os

__all__ = ["io_threads", "torch_threads", "weightless"]

# Engine calls on this few input pixels run on one CPU thread: waking torch's other threads for every small op
# costs more than it saves (measured: 16x16 bicubic job 2.7 ms instead of 7.7 ms on a busy 2-core machine).
_ONE_THREAD_INPUT_PIXELS = 96 * 96
# Interpolation (two small matmuls and a few elementwise passes per image) on one thread up to this many input
# pixels per engine call. Overhead benchmark (bicubic x4 on 64-128 px photos, batches of ~3.5 jobs, 2 cores shared
# with the gateway and clients), 4 interleaved rounds: worker CPU per job 5.8 -> 5.1 ms (median; lower in every
# pair), jobs/s 110 -> 134, latency no worse. The second thread's half of the matmuls had cost more than it saved.
_ONE_THREAD_INTERPOLATION_PIXELS = 512 * 512


def io_threads(settings) -> int:
    """A GPU outruns one or two PNG encoders by far (H200, SRResNet, 256 px in: 211 images/s computed, 16/s
    encoded with 2 threads); the encoders run without the GIL, so use the cores. On a CPU worker those cores
    run the network, and two threads keep decode/encode overlapped without starving it."""
    from model.engine import resolve_device

    if settings.worker_io_threads:
        return settings.worker_io_threads
    if resolve_device(settings.worker_device).type == "cpu":
        return 2
    return max(2, min(16, len(os.sched_getaffinity(0))))


def weightless(up) -> bool:
    return bool(getattr(getattr(up.model, "spec", None), "weightless", False))


def torch_threads(up, input_pixels: int) -> int | None:
    """Drop to one CPU thread for a tiny engine call, or an interpolation of up to 512x512 input pixels; returns
    the thread count to restore (None: unchanged)."""
    # (Switching interpolations up to 512x512 to one thread was tried before OMP_WAIT_POLICY=PASSIVE and measured
    # no better then: idle OpenMP threads spinning had been the cost. Measured again with PASSIVE, it is better:
    # see _ONE_THREAD_INTERPOLATION_PIXELS.)
    if up.device.type != "cpu":
        return None
    if input_pixels > (_ONE_THREAD_INTERPOLATION_PIXELS if weightless(up) else _ONE_THREAD_INPUT_PIXELS):
        return None
    import torch

    n = torch.get_num_threads()
    if n == 1:
        return None
    torch.set_num_threads(1)
    return n
