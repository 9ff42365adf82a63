"""The gateway's pages in real headless Chromium against a real gateway and worker, with the network cut off:
every request that is not to this machine is blocked and counted (none may happen). Screenshots of each step
are saved under each test's tmp_path (``shots/``)."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from tests.servicekit import ClaimedDB, photo, png, service_env, start_gateway, start_worker, wait_ready

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make test installs it)")
pytestmark = [
    pytest.mark.timeout(240),
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
LOCAL = {"127.0.0.1", "localhost"}
TILE = 16  # many tiles per image: the progress bar has something to follow


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    db = ClaimedDB()
    logs = tmp_path_factory.mktemp("ui-logs")
    env = service_env(
        db.url, f"ui{uuid.uuid4().hex[:6]}", max_input_pixels=100_000, worker_tile=TILE, worker_batch_size=2
    )
    worker = start_worker(env, logs, ["bicubic", "srresnet", "srgan"])
    gateway, url = start_gateway(env, logs)
    try:
        wait_ready(url)
        yield url
    finally:
        worker.stop()
        gateway.stop()
        db.release()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Shots:
    """Numbered screenshots of the steps of one test."""

    def __init__(self, page, folder: Path):
        self.page, self.folder, self.n = page, folder, 0
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, step: str, full_page: bool = True) -> Path:
        self.n += 1
        path = self.folder / f"{self.n:02d}-{step}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


def open_page(browser, url: str, tmp_path: Path, **context):
    """A page in a fresh context whose requests may go to this machine only; returns (page, shots, blocked)."""
    ctx = browser.new_context(**context)
    blocked: list[str] = []

    def guard(route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    ctx.route("**/*", guard)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    return page, Shots(page, tmp_path / "shots"), blocked, errors


@pytest.fixture()
def ui(browser, site, tmp_path):
    page, shots, blocked, errors = open_page(browser, site, tmp_path, viewport={"width": 1100, "height": 900})
    page.wait_for_selector("#model-list input", state="attached")
    yield page, shots
    page.context.close()
    assert blocked == [] and errors == []


def image_file(tmp_path: Path, name: str, size=(120, 160)) -> Path:
    path = tmp_path / name
    path.write_bytes(png(photo("astronaut", size, top=40, left=160)))  # the face: detail to compare
    return path


def test_model_choices_say_look_speed_and_psnr(ui):
    page, shots = ui
    lines = {
        page.get_attribute(f"#model-list label:nth-child({i + 1}) input", "value"): text
        for i, text in enumerate(page.locator("#model-list .line").all_inner_texts())
    }
    assert list(lines)[:5] == ["srresnet", "srgan", "espcn", "srcnn", "bicubic"]
    # PSNR from the model cards through GET /v1/models (the README's table says the same numbers).
    assert "PSNR 30.91 dB Set5, 27.82 dB Set14" in lines["srresnet"] and "highest PSNR" in lines["srresnet"]
    assert "sharpest" in lines["srgan"] and "fast" in lines["espcn"] and "baseline" in lines["bicubic"]
    assert page.is_checked("#model-list input[value=srresnet]")  # the service's default
    shots("models-x4")
    page.select_option("#scale", "8")  # only the interpolations go to x8
    names = page.eval_on_selector_all("#model-list input", "els => els.map(e => e.value)")
    assert names == ["bicubic", "bilinear", "nearest"]
    shots("models-x8")


def test_preview_progress_before_after_zoom_pan_download(ui, tmp_path):
    page, shots = ui
    shots("empty")
    page.set_input_files("#file", str(image_file(tmp_path, "astro.png")))
    page.wait_for_function("document.getElementById('preview').naturalWidth === 160")
    assert "astro.png" in page.inner_text("#filename") and "160×120 → 640×480" in page.inner_text("#filename")
    shots("preview")
    # Every value the bar shows, as the page sets it.
    page.evaluate(
        """() => { window.seen = [];
        new MutationObserver(() => window.seen.push(Number(document.getElementById('progress').value)))
          .observe(document.getElementById('progress'), {attributes: true, attributeFilter: ['value']}); }"""
    )
    page.check("#model-list input[value=srresnet]")
    page.click("#submit")
    page.wait_for_function("(() => { const v = document.getElementById('progress').value; return v > 0 && v < 1; })()")
    assert "of the tiles" in page.inner_text("#status")
    shots("progress")
    page.wait_for_function("document.getElementById('after').naturalWidth > 0", timeout=120_000)
    seen = page.evaluate("window.seen")
    partial = sorted({v for v in seen if 0 < v < 1})
    assert len(partial) >= 2, seen  # it moved with the tiles, not 0 -> done
    assert page.inner_text("#error") == "" and "done: 160×120 → 640×480" in page.inner_text("#status")

    # Before and after over the same region at 1:1: both 640x480 on screen, the same transform.
    def rect(sel):
        return page.eval_on_selector(
            sel, "e => { const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; }"
        )

    assert page.get_attribute("#viewer", "data-zoom") == "1"
    assert rect("#before") == rect("#after") and rect("#after")[2:] == [640, 480]
    assert page.eval_on_selector("#before", "e => e.naturalWidth") == 160
    shots("result-1to1")
    page.fill("#split", "25")
    page.dispatch_event("#split", "input")
    clip = page.eval_on_selector("#after-layer", "e => e.style.clipPath")
    width = page.eval_on_selector("#viewer", "e => e.getBoundingClientRect().width")
    assert clip == f"inset(0px 0px 0px {round(width * 0.25)}px)"
    page.click("#zoom-in")
    assert page.get_attribute("#viewer", "data-zoom") == "2" and rect("#after")[2:] == [1280, 960]
    assert rect("#before") == rect("#after")
    x0 = int(page.get_attribute("#viewer", "data-x"))
    box = page.locator("#viewer").bounding_box()
    page.mouse.move(box["x"] + 300, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 150, steps=5)
    page.mouse.up()
    assert int(page.get_attribute("#viewer", "data-x")) == max(x0 - 100, round(width - 1280))  # kept in view
    shots("zoomed-panned")
    page.click("#zoom-fit")
    shots("fit")

    assert page.get_attribute("#download", "download") == "astro_x4.png"
    r = page.request.get(page.eval_on_selector("#download", "e => e.href"))
    assert r.status == 200 and r.headers["content-type"] == "image/png" and r.body()[:4] == b"\x89PNG"


def test_the_realism_slider_comes_with_srgan_and_is_sent(ui, tmp_path):
    page, shots = ui
    assert page.is_hidden("#realism-row")  # srresnet, the default: no blend to offer
    page.set_input_files("#file", str(image_file(tmp_path, "face.png", size=(32, 40))))
    page.check("#model-list input[value=srgan]")
    assert page.is_visible("#realism-row") and page.input_value("#realism") == "1"
    page.fill("#realism", "0.35")
    page.dispatch_event("#realism", "input")
    assert page.inner_text("#realism-value") == "0.35"
    shots("realism-0.35")
    with page.expect_response("**/v1/upscale") as answer:
        page.click("#submit")
    job = answer.value.json()
    assert job["model"] == "srgan" and job["realism"] == 0.35
    page.wait_for_function("document.getElementById('after').naturalWidth > 0", timeout=120_000)
    assert page.inner_text("#error") == ""
    shots("realism-result")
    page.check("#model-list input[value=espcn]")
    assert page.is_hidden("#realism-row")


def test_keyboard_only(ui, tmp_path):
    page, shots = ui
    # Intercept file choosers from now on: expect_file_chooser alone turns that on while the key is on its way.
    page.on("filechooser", lambda chooser: None)
    for _ in range(10):  # past the header's links
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "drop":
            break
    assert page.evaluate("document.activeElement.id") == "drop"
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    chooser.value.set_files(str(image_file(tmp_path, "key.png", (40, 60))))
    page.wait_for_function("document.getElementById('preview').naturalWidth === 60")
    page.keyboard.press("Tab")  # the scale
    page.keyboard.press("Tab")  # the checked model
    assert page.evaluate("document.activeElement.value") == "srresnet"
    for _ in range(4):
        page.keyboard.press("ArrowDown")  # srgan, espcn, srcnn, bicubic
    assert page.is_checked("#model-list input[value=bicubic]")
    shots("keyboard-choices")
    page.keyboard.press("Tab")  # format
    page.keyboard.press("Tab")  # the button
    assert page.evaluate("document.activeElement.id") == "submit"
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('after').naturalWidth === 240", timeout=60_000)
    assert page.evaluate("document.activeElement.id") == "viewer"  # the result takes the focus
    page.keyboard.press("+")
    assert page.get_attribute("#viewer", "data-zoom") == "2"
    x = int(page.get_attribute("#viewer", "data-x"))
    page.keyboard.press("ArrowLeft")  # shows more of the left: the image moves right, as far as it may
    assert int(page.get_attribute("#viewer", "data-x")) >= x
    page.keyboard.press("]")
    assert page.get_attribute("#viewer", "data-split") == "0.6"
    page.keyboard.press("f")
    assert float(page.get_attribute("#viewer", "data-zoom")) > 2  # 240x160 fits the viewer at more than 2x
    shots("keyboard-result")


def test_phone_width(browser, site, tmp_path):
    page, shots, blocked, errors = open_page(
        browser, site, tmp_path, viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True
    )
    try:
        page.wait_for_selector("#model-list input", state="attached")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375  # nothing wider than the phone
        shots("phone-empty")
        page.set_input_files("#file", str(image_file(tmp_path, "phone.png", (60, 80))))
        page.check("#model-list input[value=bicubic]")
        page.tap("#submit")
        page.wait_for_function("document.getElementById('after').naturalWidth === 320", timeout=60_000)
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        viewer = page.locator("#viewer").bounding_box()
        assert viewer["x"] >= 0 and viewer["x"] + viewer["width"] <= 375
        page.locator("#viewer").scroll_into_view_if_needed()
        shots("phone-result")
        page.tap("#zoom-in")
        assert page.get_attribute("#viewer", "data-zoom") == "2"
        shots("phone-zoomed")
    finally:
        page.context.close()
    assert blocked == [] and errors == []


def test_bad_upload_shows_the_api_error(ui, tmp_path):
    page, shots = ui
    bogus = tmp_path / "notes.png"
    bogus.write_bytes(b"this is not a picture")
    page.set_input_files("#file", str(bogus))
    page.click("#submit")
    page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=30_000)
    assert "not_an_image" in page.inner_text("#error")
    assert page.is_hidden("#viewer-box")
    shots("api-error")


def test_too_large_image_is_refused_with_its_code(ui, tmp_path):
    page, shots = ui
    big = tmp_path / "big.png"
    big.write_bytes(png(np.zeros((400, 400, 3), dtype=np.uint8)))  # 160k pixels > the 100k limit
    page.set_input_files("#file", str(big))
    page.click("#submit")
    page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=30_000)
    assert "too_many_pixels" in page.inner_text("#error") and "100,000" in page.inner_text("#error")
    shots("too-large")


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        ("/docs", ".swagger-ui .opblock-summary-path[data-path='/v1/upscale']"),
        ("/redoc", "redoc h1:has-text('srgan-service')"),
    ],
)
def test_docs_render_without_internet(browser, site, tmp_path, path, rendered):
    page, shots, blocked, errors = open_page(browser, site + path, tmp_path, viewport={"width": 1100, "height": 900})
    try:
        page.wait_for_selector(rendered, timeout=60_000)
        shots(path.strip("/"), full_page=False)
        html = page.content()
        assert "cdn.jsdelivr.net" not in html and "fonts.googleapis.com" not in html
    finally:
        page.context.close()
    assert blocked == [] and errors == []


# -- a gateway with client keys ----------------------------------------------------------------------------------
UI_KEY = "ui-client-key-" + "k" * 20


@pytest.fixture(scope="module")
def keyed_site(stack_factory):
    return stack_factory(["bicubic"], api_keys=UI_KEY).url


def test_a_keyed_gateway_asks_for_the_key_and_uses_it(browser, keyed_site, tmp_path):
    page, shots, blocked, errors = open_page(browser, keyed_site, tmp_path, viewport={"width": 1100, "height": 900})
    try:
        page.wait_for_selector("#key-box", state="visible")  # the page's probe got a 401
        assert page.input_value("#api-key") == ""
        page.set_input_files("#file", str(image_file(tmp_path, "k.png", (30, 40))))
        page.check("#model-list input[value=bicubic]")
        shots("key-asked")
        page.click("#submit")  # without the key: the API's 401, and the field to type it in
        page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=30_000)
        assert "unauthorized" in page.inner_text("#error") and "needs a client key" in page.inner_text("#key-help")
        assert page.evaluate("document.activeElement.id") == "api-key"
        shots("key-refused")
        page.fill("#api-key", UI_KEY)
        page.dispatch_event("#api-key", "change")
        page.click("#submit")
        page.wait_for_function("document.getElementById('after').naturalWidth === 160", timeout=60_000)
        assert page.inner_text("#error") == "" and "done: 40×30 → 160×120" in page.inner_text("#status")
        # An <img> cannot send the key: the result is fetched with it and shown (and downloaded) from a blob.
        href = page.eval_on_selector("#download", "e => e.href")
        assert href.startswith("blob:") and page.get_attribute("#download", "download") == "k_x4.png"
        magic = page.evaluate("async (u) => [...new Uint8Array(await (await fetch(u)).arrayBuffer()).slice(0, 4)]",
                              href)  # fmt: skip
        assert bytes(magic) == b"\x89PNG"
        shots("key-result")
        page.reload()  # kept for the tab (sessionStorage), not sent anywhere else
        page.wait_for_selector("#key-box", state="visible")
        assert page.input_value("#api-key") == UI_KEY
        assert page.evaluate("sessionStorage.getItem('srgan-api-key')") == UI_KEY
        assert page.evaluate("localStorage.getItem('srgan-api-key')") is None
    finally:
        page.context.close()
    assert blocked == [] and errors == []


def test_the_page_long_polls_for_changes(browser, site, tmp_path):
    """Following a job costs about one request per change of its progress, not two a second."""
    page, shots, blocked, errors = open_page(browser, site, tmp_path, viewport={"width": 1100, "height": 900})
    try:
        page.wait_for_selector("#model-list input", state="attached")
        polls: list[tuple[str, int]] = []
        page.on("response", lambda r: polls.append((r.request.headers.get("if-none-match", ""), r.status))
                if "/v1/jobs/" in r.url and not r.url.endswith("/result") else None)  # fmt: skip
        page.evaluate(
            """() => { window.seen = [];
            new MutationObserver(() => window.seen.push(Number(document.getElementById('progress').value)))
              .observe(document.getElementById('progress'), {attributes: true, attributeFilter: ['value']}); }"""
        )
        page.set_input_files("#file", str(image_file(tmp_path, "poll.png")))
        page.check("#model-list input[value=srresnet]")
        t0 = time.monotonic()
        page.click("#submit")
        page.wait_for_function("document.getElementById('after').naturalWidth > 0", timeout=120_000)
        took = time.monotonic() - t0
        seen = page.evaluate("window.seen")
        print(f"\nthe page followed a {took:.1f} s job with {len(polls)} requests ({len(set(seen))} progress values)")
        partial = sorted({v for v in seen if 0 < v < 1})
        assert len(partial) >= 2, seen
        long_polls = [p for p in polls if p[0]]
        assert long_polls and all(status in (200, 304) for _, status in polls), polls
        # Every answer to a long-poll brought a change (or said there was none for seconds: 304).
        assert len(polls) <= len(set(seen)) + 4 + sum(s == 304 for _, s in polls), (len(polls), seen)
    finally:
        page.context.close()
    assert blocked == [] and errors == []
