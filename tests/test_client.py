"""The Python client (sync and async) and ``srgan client upscale`` against a real gateway and worker; the
client-only install (no torch) simulated by refusing every import the base dependencies do not provide."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import tomllib
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.client import AsyncClient, Catalog, Client, Job, Retry, ServiceError, parse_retry_after
from tests.servicekit import (
    REPO,
    ClaimedDB,
    decode_png,
    direct_upscale,
    photo,
    png,
    service_env,
    start_gateway,
    start_worker,
    wait_for,
    wait_ready,
)

pytestmark = pytest.mark.timeout(180)
TILE = 32


@pytest.fixture(scope="module")
def db():
    claimed = ClaimedDB()
    yield claimed
    claimed.release()


@pytest.fixture(scope="module")
def stack(db, tmp_path_factory):
    logs = tmp_path_factory.mktemp("client-logs")
    env = service_env(db.url, f"cl{uuid.uuid4().hex[:6]}", worker_tile=TILE, max_input_pixels=100_000)
    worker = start_worker(env, logs, ["bicubic", "nearest"])
    gateway, url = start_gateway(env, logs)
    try:
        wait_ready(url)
        yield url
    finally:
        worker.stop()
        gateway.stop()


def image(path: Path, size=(12, 18), **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png(photo(size=size, **kw)))
    return path


def client_cmd(url: str, *args: object, blocker: bool = False, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess:  # fmt: skip
    argv = ["client", "upscale", *map(str, args), "--url", url]
    code = f"import sys; from app.cli import main; sys.exit(main({argv!r}))"
    return subprocess.run(
        [sys.executable, "-c", (CLIENT_ONLY + code) if blocker else code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**{k: v for k, v in os.environ.items() if k != "SRGAN_API_KEY"}, **(env or {})},
    )


# -- srgan client upscale -----------------------------------------------------------------------------------


def test_issue_dash_o_names_a_file_for_one_input(stack, tmp_path):
    """Bug report: `srgan client upscale photo.jpg -o big.png` made a directory big.png/ holding photo_x4.png."""
    src = image(tmp_path / "photo.png")
    out = client_cmd(stack, src, "-m", "bicubic", "-o", tmp_path / "big.png", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "big.png").is_file()
    expected = direct_upscale(src.read_bytes(), "bicubic", tile=TILE)
    np.testing.assert_array_equal(decode_png((tmp_path / "big.png").read_bytes()), expected)
    assert "1 image(s) written to" in out.stderr


def test_folders_names_one_bar_and_nothing_overwritten(stack, tmp_path):
    sizes = [(12, 18), (20, 14), (16, 16)]
    for i, size in enumerate(sizes):
        image(tmp_path / "in" / ("sub" if i == 2 else "") / f"p{i}.png", size)
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    out = client_cmd(stack, tmp_path / "in", "-r", "-m", "nearest", "-o", tmp_path / "out", "-f", "webp", "-j", "2")
    assert out.returncode == 1, out.stderr  # the broken one failed, alone
    assert "broken.png: 415 not_an_image" in out.stderr and "3 image(s) written" in out.stderr
    made = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert made == ["p0_x4.webp", "p1_x4.webp", "sub/p2_x4.webp"]
    # One bar for the run: its total (4 images) is right from the start, it only moves forward and ends full.
    readings = [(float(n), int(t)) for n, t in re.findall(r"(\d+\.\d\d)/(\d+) images", out.stderr)]
    assert readings and {t for _, t in readings} == {4}, out.stderr
    assert [n for n, _ in readings] == sorted(n for n, _ in readings) and readings[-1][0] == 4.0

    # Again: the results exist, so nothing is uploaded or written; --overwrite replaces them.
    (tmp_path / "in" / "broken.png").unlink()
    before = (tmp_path / "out" / "p0_x4.webp").read_bytes()
    again = client_cmd(stack, tmp_path / "in", "-r", "-m", "nearest", "-o", tmp_path / "out", "-f", "webp")
    assert again.returncode == 2 and "already exist; nothing was written" in again.stderr
    assert (tmp_path / "out" / "p0_x4.webp").read_bytes() == before
    forced = client_cmd(
        stack, tmp_path / "in", "-r", "-m", "bicubic", "-o", tmp_path / "out", "-f", "webp", "--overwrite"
    )
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "out" / "p0_x4.webp").read_bytes() != before  # bicubic, not nearest


def test_unreachable_gateway_is_one_line(tmp_path):
    out = client_cmd("http://127.0.0.1:9", image(tmp_path / "a.png"), "--no-progress")
    assert out.returncode == 1 and out.stderr.startswith("error: cannot reach the gateway at http://127.0.0.1:9")


# -- without torch --------------------------------------------------------------------------------------------

# Refuses every import that is neither the standard library, nor our packages, nor installed by the base
# dependencies of pyproject.toml (and theirs): what a plain `pip install srgan-service` has.
CLIENT_ONLY = textwrap.dedent(
    """
    import importlib.abc, importlib.metadata as md, sys, tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name as canon

    def _closure(reqs):
        seen, todo = set(), [Requirement(r) for r in reqs]
        while todo:
            r = todo.pop()
            if (r.marker and not r.marker.evaluate({"extra": ""})) or canon(r.name) in seen:
                continue
            seen.add(canon(r.name))
            todo += [Requirement(x) for x in md.requires(r.name) or []]
        return seen

    _base = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
    _dists = _closure(_base)
    ALLOWED = {top for top, ds in md.packages_distributions().items() if any(canon(d) in _dists for d in ds)}
    ALLOWED |= set(sys.stdlib_module_names) | {"app", "model", "worker", "training"}

    class _ClientOnly(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] not in ALLOWED:
                raise ModuleNotFoundError(f"No module named {name!r} (not in a client-only install)", name=name)
            return None

    sys.meta_path.insert(0, _ClientOnly())
    """
)
HEAVY = ("torch", "numpy", "PIL", "fastapi", "pydantic", "redis", "rq")


def test_the_client_imports_without_torch():
    code = CLIENT_ONLY + textwrap.dedent(
        f"""
        try:
            import torch
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("the blocker let torch in")
        import app.client
        from app.cli import main
        try:
            main(["client", "upscale", "--help"])
        except SystemExit:
            pass
        print(sorted(m for m in sys.modules if m.partition(".")[0] in {HEAVY!r}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "--overwrite" in out.stdout and out.stdout.strip().endswith("[]"), out.stdout


def test_client_command_runs_on_the_base_install(stack, tmp_path):
    src = image(tmp_path / "a.png")
    out = client_cmd(stack, src, "-m", "bicubic", "-o", tmp_path / "a4.png", "--no-progress", blocker=True)
    assert out.returncode == 0, out.stderr
    assert decode_png((tmp_path / "a4.png").read_bytes()).shape == (48, 72, 3)


def test_service_commands_say_what_to_install(tmp_path):
    code = CLIENT_ONLY + "from app.cli import main; sys.exit(main(['upscale', 'x.png']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 2 and "pip install 'srgan-service[service]'" in out.stderr, out.stderr


def test_dependency_split():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[; ]", d)[0] for d in project["dependencies"]}
    assert names == {"httpx", "sniffio", "tqdm"}  # sniffio: httpcore looks for it on every connection event
    extras = project["optional-dependencies"]
    assert any(d.startswith("torch") for d in extras["service"]) and "srgan-service[service]" in extras["training"]
    assert ".[service,training,test,peers]" in (REPO / "Makefile").read_text()  # make test runs the peers test too


# -- the Python client ----------------------------------------------------------------------------------------


def test_sync_client_typed(stack, tmp_path):
    seen: list[Job] = []
    with Client(stack) as c:
        src = image(tmp_path / "in.png", (10, 14))
        job = c.upscale(src, tmp_path / "out.png", model="bicubic", on_progress=seen.append)
        assert isinstance(job, Job) and job.finished and seen[-1].status == "finished"
        assert (job.input.width, job.input.height, job.output.width, job.output.height) == (14, 10, 56, 40)
        assert job.output.content_type == "image/png" and job.timings.ended_at is not None
        assert decode_png((tmp_path / "out.png").read_bytes()).shape == (40, 56, 3)
        with pytest.raises(FileExistsError):  # a saved result never replaces a file
            c.save_result(job, tmp_path / "out.png")
        with pytest.raises(ServiceError) as e:
            c.submit(b"not an image", model="bicubic")
        assert e.value.status == 415 and e.value.code == "not_an_image"
        catalog = c.models()
        assert isinstance(catalog, Catalog) and catalog.default == "srresnet" and catalog.default_scale == 4
        assert round(catalog.get("srresnet", 4).metrics["Set5"]["psnr_y"], 2) == 30.91
        assert c.ready()


def test_async_client(stack, tmp_path):
    good = [image(tmp_path / f"g{i}.png", (8 + i, 10)) for i in range(3)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")

    async def run():
        async with AsyncClient(stack) as c:
            job = await c.upscale(good[0], tmp_path / "one.png", model="nearest")
            results = [r async for r in c.upscale_iter([*good, bad], model="nearest", max_in_flight=3)]
            return job, results, await c.models()

    job, results, catalog = asyncio.run(run())
    assert job.finished and decode_png((tmp_path / "one.png").read_bytes()).shape == (32, 40, 3)
    assert sorted(r.index for r in results) == [0, 1, 2, 3]
    for r in results:
        if r.index < 3:
            assert r.ok and decode_png(r.image).shape == (4 * (8 + r.index), 40, 3)
        else:
            assert not r.ok and isinstance(r.error, ServiceError) and r.error.code == "not_an_image"
    assert catalog.get("bicubic", 4) is not None


# -- a gateway whose queue has no worker until the test starts one -------------------------------------------


@pytest.fixture()
def idle(db, tmp_path):
    """``idle(max_queue_depth)`` -> (url, start a worker)."""
    started = []

    def make(depth: int):
        env = service_env(db.url, f"id{uuid.uuid4().hex[:6]}", max_queue_depth=depth)
        gateway, url = start_gateway(env, tmp_path)
        started.append(gateway)
        return url, lambda: started.append(start_worker(env, tmp_path, ["bicubic"]))

    yield make
    for svc in reversed(started):
        svc.stop()


def test_upscale_iter_yields_each_result_as_its_job_ends(idle, tmp_path):
    url, start = idle(10)
    a, b = image(tmp_path / "a.png"), image(tmp_path / "b.png", (10, 10))
    ids: dict[int, str] = {}
    with Client(url, retry=Retry(attempts=60, max_delay=5)) as c, httpx.Client(base_url=url) as h:
        results = c.upscale_iter(
            [a, b], model="bicubic", max_in_flight=2, on_progress=lambda i, j: ids.setdefault(i, j.id)
        )
        first_holder: list = []
        t = threading.Thread(target=lambda: first_holder.append(next(results)))
        t.start()
        wait_for(lambda: len(ids) == 2, 60, "both jobs queued")
        # B ends first (canceled, while A waits for a worker): it comes out first, with its error.
        assert h.delete(f"/v1/jobs/{ids[1]}").status_code == 200
        t.join(60)
        first = first_holder[0]
        assert first.index == 1 and not first.ok and first.error.code == "job_canceled"
        assert h.get(f"/v1/jobs/{ids[0]}").json()["status"] == "queued"
        start()
        second = next(results)
        assert second.index == 0 and second.ok and decode_png(second.image).shape == (48, 72, 3)
        assert next(results, None) is None


def test_a_full_queue_is_retried_after_retry_after(idle, tmp_path):
    url, _ = idle(1)
    seen: list[tuple[float, str, int, str | None]] = []

    class Recording(httpx.HTTPTransport):  # the real transport, watched
        def handle_request(self, request):
            r = super().handle_request(request)
            seen.append((time.monotonic(), request.method, r.status_code, r.headers.get("retry-after")))
            return r

    with Client(url, transport=Recording(), retry=Retry(attempts=10, max_delay=30)) as c:
        first = c.submit(image(tmp_path / "a.png"), model="bicubic")  # fills the queue (depth 1)
        done: list[Job] = []
        t = threading.Thread(target=lambda: done.append(c.submit(image(tmp_path / "b.png"), model="bicubic")))
        t.start()
        wait_for(lambda: any(s[2] == 429 for s in seen), 30, "a 429")
        c.cancel(first)  # room again
        t.join(60)
    posts = [s for s in seen if s[1] == "POST"]
    assert [p[2] for p in posts][:2] == [202, 429] and posts[-1][2] == 202, posts
    refused = next(p for p in posts if p[2] == 429)
    wait = float(refused[3])
    assert wait >= 1 and posts[posts.index(refused) + 1][0] - refused[0] >= wait  # never sooner than it said
    assert done and done[0].status == "queued" and done[0].id != first.id


def test_retry_after_parsing_and_policy():
    assert parse_retry_after("3") == 3.0 and parse_retry_after(" 1.5 ") == 1.5 and parse_retry_after(None) is None
    now = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    date = email.utils.format_datetime(now + dt.timedelta(seconds=42), usegmt=True)
    assert parse_retry_after(date, now) == 42.0 and parse_retry_after("soon") is None
    policy = Retry(attempts=3, backoff=0.5, max_delay=10)
    assert policy.delay(0, httpx.Response(429, headers={"Retry-After": "4"})) == 4.0
    assert policy.delay(0, httpx.Response(429, headers={"Retry-After": "60"})) is None  # longer than we wait
    assert policy.delay(0, httpx.Response(400)) is None and policy.delay(3, httpx.Response(503)) is None
    assert 0.25 <= policy.delay(1, None) <= 1.0  # backoff with jitter: 0.5 * 2 * [0.5, 1)


# -- client keys ----------------------------------------------------------------------------------------------
CLIENT_KEY, OTHER_KEY, ADMIN_KEY = "cli-key-" + "c" * 24, "cli-other-" + "o" * 22, "cli-admin-" + "a" * 22


@pytest.fixture(scope="module")
def keyed(stack_factory):
    return stack_factory(["bicubic"], api_keys=f"{CLIENT_KEY},{OTHER_KEY}", admin_key=ADMIN_KEY).url


def test_the_client_sends_its_key_and_the_admin_key_where_each_belongs(keyed, tmp_path):
    src = image(tmp_path / "k.png", (10, 12))
    with Client(keyed, api_key=CLIENT_KEY, admin_key=ADMIN_KEY) as c:
        job = c.upscale(src, tmp_path / "k4.png", model="bicubic")
        assert job.finished and (tmp_path / "k4.png").exists()
        assert c.versions("espcn")["active"] == 1  # an admin route: the admin key
        assert [j.id for j in c.jobs(page_size=1)][:1] == [job.id]  # its own jobs, newest first
    with Client(keyed, api_key=OTHER_KEY) as other:
        assert job.id not in [j.id for j in other.jobs()]
        with pytest.raises(ServiceError) as e:
            other.job(job.id)
        assert e.value.status == 404
    with Client(keyed, admin_key=ADMIN_KEY) as admin_only, pytest.raises(ServiceError) as e:
        admin_only.submit(src, model="bicubic")  # the admin key is no client key, and is not sent here
    assert e.value.status == 401 and e.value.code == "unauthorized"

    async def run():
        async with AsyncClient(keyed, api_key=CLIENT_KEY) as ac:
            j = await ac.upscale(src, model="bicubic")
            return j, [x.id async for x in ac.jobs(page_size=2)]

    j, listed = asyncio.run(run())
    assert j.finished and listed[:2] == [j.id, job.id]


def test_the_client_command_takes_a_key(keyed, tmp_path):
    src = image(tmp_path / "c.png", (10, 12))
    out = client_cmd(keyed, src, "-m", "bicubic", "-o", tmp_path / "none.png", "--no-progress")
    assert out.returncode == 1 and "a client key is needed (--api-key or SRGAN_API_KEY)" in out.stderr, out.stderr
    assert not (tmp_path / "none.png").exists()
    out = client_cmd(keyed, src, "-m", "bicubic", "-o", tmp_path / "bad.png", "--no-progress", "--api-key", "wrong")
    assert out.returncode == 1 and "a client key is not valid" in out.stderr, out.stderr
    out = client_cmd(keyed, src, "-m", "bicubic", "-o", tmp_path / "a.png", "--no-progress", "--api-key", CLIENT_KEY)
    assert out.returncode == 0 and (tmp_path / "a.png").exists(), out.stderr
    out = client_cmd(keyed, src, "-m", "bicubic", "-o", tmp_path / "e.png", "--no-progress", blocker=True,
                     env={"SRGAN_API_KEY": CLIENT_KEY})  # fmt: skip
    assert out.returncode == 0 and (tmp_path / "e.png").exists(), out.stderr
