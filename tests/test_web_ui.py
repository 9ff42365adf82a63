"""The web page in real headless Chromium against a real gateway and worker."""

import shutil
import uuid

import numpy as np
import pytest

from tests.servicekit import ClaimedDB, photo, png, service_env, start_gateway, start_worker, wait_ready

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make test installs it)")
pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs it)"),
]
# What the workplace's probe found Chromium needs on a closed network, as root.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    db = ClaimedDB()
    logs = tmp_path_factory.mktemp("ui-logs")
    env = service_env(db.url, f"ui{uuid.uuid4().hex[:6]}", max_input_pixels=100_000)
    worker = start_worker(env, logs, ["bicubic"])
    gateway, url = start_gateway(env, logs)
    try:
        wait_ready(url)
        yield url
    finally:
        worker.stop()
        gateway.stop()
        db.release()


@pytest.fixture()
def page(site):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto(site)
        page.wait_for_selector("#model option", state="attached")
        yield page
        browser.close()


def test_upload_progress_and_result(page, tmp_path):
    image = tmp_path / "cat.png"
    image.write_bytes(png(photo("chelsea", (40, 60))))
    page.select_option("#model", label="bicubic ×4")
    page.select_option("#format", "png")
    page.set_input_files("#file", str(image))
    assert "cat.png" in page.inner_text("#filename")
    page.click("#submit")
    page.wait_for_function("document.getElementById('result').naturalWidth > 0", timeout=60_000)
    size = page.evaluate(
        "[document.getElementById('result').naturalWidth, document.getElementById('result').naturalHeight]"
    )
    assert size == [240, 160]
    assert page.inner_text("#error") == ""
    assert page.get_attribute("#download", "download") == "cat_x4.png"
    assert "240×160" in page.inner_text("#result-caption")


def test_bad_upload_shows_the_api_error(page, tmp_path):
    bogus = tmp_path / "notes.png"
    bogus.write_bytes(b"this is not a picture")
    page.set_input_files("#file", str(bogus))
    page.click("#submit")
    page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=30_000)
    assert "not_an_image" in page.inner_text("#error")
    assert page.is_hidden("#pair")


def test_too_large_image_is_refused_with_its_code(page, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(png(np.zeros((400, 400, 3), dtype=np.uint8)))  # 160k pixels > the 100k limit
    page.set_input_files("#file", str(big))
    page.click("#submit")
    page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=30_000)
    assert "too_many_pixels" in page.inner_text("#error")
