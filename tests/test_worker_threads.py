"""How many torch threads an engine call of the batch pipeline runs on (worker/threads.py)."""

from types import SimpleNamespace

import pytest
import torch

from worker.threads import torch_threads


def _engine(device: str, weightless: bool):
    return SimpleNamespace(
        device=torch.device(device), model=SimpleNamespace(spec=SimpleNamespace(weightless=weightless))
    )


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("weightless", "pixels", "one_thread"),
    [
        (False, 96 * 96, True),  # a tiny network call
        (False, 96 * 96 + 1, False),
        (True, 8 * 128 * 128, True),  # a batch of small interpolations
        (True, 512 * 512, True),
        (True, 512 * 512 + 1, False),  # a large interpolation keeps the threads
    ],
)
def test_small_calls_and_interpolations_run_on_one_thread(two_threads, weightless, pixels, one_thread):
    restore = torch_threads(_engine("cpu", weightless), pixels)
    if one_thread:
        assert restore == 2 and torch.get_num_threads() == 1
    else:
        assert restore is None and torch.get_num_threads() == 2


def test_gpu_engines_are_left_alone(two_threads):
    assert torch_threads(_engine("cuda", True), 64 * 64) is None and torch.get_num_threads() == 2
