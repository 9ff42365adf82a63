"""The gateway never imports torch: it checks uploads from their headers and bodies (``model.imageinfo``,
``model.imagecheck``) and reads the model specs, but runs no network, so each gateway process stays small.

One check imports the gateway's modules in a fresh interpreter; the other drives a real gateway through the
requests a client makes (upload, status, long-poll, result, listing, models) and then reads its memory map."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.servicekit import photo, png

REPO = Path(__file__).resolve().parents[1]


def test_gateway_modules_do_not_import_torch():
    code = (
        "import sys\n"
        "import app.cli, app.main\n"
        "app.cli.build_parser()\n"  # what `srgan serve` runs before uvicorn
        "app.main.create_app()\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'safetensors.torch') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"the gateway imported {out.stdout.strip()}"


def _jpeg(arr) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _mapped_libraries(pid: int) -> set[str]:
    libs = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and ".so" in parts[5]:
            libs.add(Path(parts[5]).name)
    return libs


@pytest.mark.slow
def test_a_serving_gateway_has_no_torch_loaded(stack_factory):
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs Linux's /proc to read the gateway's memory map")
    st = stack_factory(["bicubic"])
    with st.client() as c:
        ids = []
        for fmt, data in (("png", png(photo())), ("jpeg", _jpeg(photo()))):
            r = c.post("/v1/upscale", files={"file": (f"a.{fmt}", data)}, data={"model": "bicubic"})
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        for job_id in ids:
            r = c.get(f"/v1/jobs/{job_id}", params={"wait": 30})
            assert r.json()["status"] == "finished", r.text
            assert c.get(f"/v1/jobs/{job_id}/result").status_code == 200
        assert c.get("/v1/jobs").status_code == 200
        assert c.get("/v1/models").status_code == 200
        assert c.get("/metrics").status_code == 200

    def torch_libs(pid: int) -> list[str]:
        return sorted(lib for lib in _mapped_libraries(pid) if lib.startswith(("libtorch", "libc10")))

    assert torch_libs(st.workers[0].pid), "the check reads no torch in the worker either: it sees nothing"
    assert not torch_libs(st.gateway.pid), f"the gateway loaded {torch_libs(st.gateway.pid)}"


@pytest.mark.parametrize(
    ("arch", "params"),
    [
        ("srcnn", {}),
        ("srcnn", {"scale": 2, "n1": 17, "n2": 5, "f1": 3, "f2": 3, "f3": 7}),
        ("espcn", {}),
        ("espcn", {"scale": 3, "n1": 9, "n2": 13, "f1": 3, "f2": 5, "f3": 1}),
        ("srresnet", {}),
        ("srresnet", {"scale": 2, "num_feat": 7, "num_blocks": 3}),
    ],
)
def test_the_card_check_counts_parameters_as_torch_builds_them(arch, params):
    import torch

    from model.archs import ARCHS
    from model.paramcount import count_params

    with torch.device("meta"):
        module = ARCHS[arch](**params)
    assert count_params(arch, params) == sum(p.numel() for p in module.parameters())
