"""The image's dependency lists, read from ``pyproject.toml`` alone (so the dependency layers do not change
with the source or the README), and the check that the CPU image carries no CUDA.

    python requirements.py torch pyproject.toml    # torch and torchvision, from PyTorch's index of a flavour
    python requirements.py rest pyproject.toml     # everything else, and the build backend
    python requirements.py check cpu|cu128         # after installing: torch matches the flavour
"""

from __future__ import annotations

import re
import sys
import tomllib

TORCH = {"torch", "torchvision"}
NOT_CUDA = {"nvidia-ml-py"}  # NVML's Python bindings: no CUDA library, a no-op without an NVIDIA driver


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def lists(pyproject: str) -> tuple[list[str], list[str]]:
    with open(pyproject, "rb") as f:
        data = tomllib.load(f)
    # The image is the service: the base dependencies (the client's) and the `service` extra.
    project = data["project"]
    deps = project["dependencies"] + project.get("optional-dependencies", {}).get("service", [])
    torch = [d for d in deps if _name(d) in TORCH]
    rest = [d for d in deps if _name(d) not in TORCH] + data["build-system"]["requires"] + ["wheel"]
    return torch, rest


def check(flavour: str) -> None:
    from importlib.metadata import distributions

    import torch

    cuda = torch.version.cuda
    names = {d.metadata["Name"].lower() for d in distributions()}
    nvidia = sorted(n for n in names if n.startswith("nvidia-") and n not in NOT_CUDA)
    if flavour == "cpu" and (cuda is not None or nvidia):
        sys.exit(f"the CPU image has CUDA: torch {torch.__version__} (CUDA {cuda}), {nvidia}")
    if flavour != "cpu" and cuda is None:
        sys.exit(f"the {flavour} image has a CPU-only torch {torch.__version__}")
    print(f"torch {torch.__version__}, CUDA {cuda}")


if __name__ == "__main__":
    what, arg = sys.argv[1], sys.argv[2]
    if what == "check":
        check(arg)
    else:
        print("\n".join(lists(arg)[0 if what == "torch" else 1]))
