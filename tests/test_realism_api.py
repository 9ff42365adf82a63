"""The realism knob over a real stack (Redis, a worker, the gateway as processes): ``realism`` on
``POST /v1/upscale`` blends the active srresnet and srgan; 0 and 1 give exactly their results, the job records
the value, and bad values are refused at the door."""

from __future__ import annotations

import httpx
import pytest

from tests.servicekit import assert_error, decode_png, photo, png

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def stack(stack_factory):
    return stack_factory(["srresnet", "srgan"], max_wait_s=120)


def upscale(c: httpx.Client, data: bytes, **form) -> httpx.Response:
    return c.post(
        "/v1/upscale", files={"file": ("p.png", data, "image/png")}, data=form, headers={"Prefer": "wait=120"}
    )


def image(r: httpx.Response):
    assert r.status_code == 200, r.text[:300]
    return decode_png(r.content)


def test_realism_0_and_1_are_srresnet_and_srgan_and_between_is_a_blend(stack):
    data = png(photo("astronaut", (28, 36)))
    with stack.client(timeout=180) as c:
        psnr, adv = image(upscale(c, data, model="srresnet")), image(upscale(c, data, model="srgan"))
        assert (image(upscale(c, data, realism="0")) == psnr).all()
        assert (image(upscale(c, data, realism="1", model="srgan")) == adv).all()
        r = upscale(c, data, realism="0.5")
        mid = image(r)
        assert (mid != psnr).any() and (mid != adv).any()
        job = c.get(r.headers["content-location"].removesuffix("/result")).json()
        assert job["realism"] == 0.5 and job["model"] == "srgan" and job["status"] == "finished"
        assert job["model_version"] is None and len(job["model_sha256"]) == 64
        plain = c.get(upscale(c, data, model="srgan").headers["content-location"].removesuffix("/result")).json()
        assert plain["realism"] is None and plain["model_sha256"] != job["model_sha256"]
        # the same value again: the same blend (the worker built it once), the same pixels
        again = upscale(c, data, realism="0.50")
        assert (image(again) == mid).all()


def test_bad_realism_is_refused_at_the_door(stack):
    data = png(photo("chelsea", (16, 16), top=60, left=130))
    with stack.client() as c:
        for bad in ("1.5", "-0.1", "nan", "lots", ""):
            assert_error(upscale(c, data, realism=bad), 422, "invalid_request")
        e = assert_error(upscale(c, data, realism="0.5", model="espcn"), 422, "invalid_realism")
        assert "srresnet and srgan" in e["message"]
        assert_error(upscale(c, data, realism="0.5", model="srgan@1"), 422, "invalid_realism")


def test_client_upscale_realism(stack, tmp_path):
    from app.cli import main
    from app.client import Client

    src = tmp_path / "a.png"
    src.write_bytes(png(photo("coffee", (20, 24), top=100, left=200)))
    common = ["client", "upscale", str(src), "--url", stack.url, "--no-progress"]
    assert main([*common, "--model", "srresnet", "-o", str(tmp_path / "psnr.png")]) == 0
    assert main([*common, "--realism", "0", "-o", str(tmp_path / "r0.png")]) == 0
    assert (decode_png((tmp_path / "r0.png").read_bytes()) == decode_png((tmp_path / "psnr.png").read_bytes())).all()
    with Client(stack.url) as c:
        job = c.upscale(src, realism=0.25)
    assert job.realism == 0.25 and job.model == "srgan" and job.finished
