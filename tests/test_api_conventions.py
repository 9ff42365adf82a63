"""The API's HTTP conventions on a real gateway, worker and Redis: the job listing with cursor pagination
(scoped to the client key), ``Prefer: wait=N`` on uploads, results with ETag, Cache-Control, HEAD, conditional
requests and byte ranges, and the job's ETag long-poll that follows progress."""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest

from tests.servicekit import assert_error, decode_png, photo, png, wait_for

pytestmark = pytest.mark.timeout(300)
KEY_A, KEY_B = "list-a-" + "a" * 24, "list-b-" + "b" * 24


@pytest.fixture(scope="module")
def keyed(stack_factory):
    return stack_factory(["bicubic"], api_keys=f"{KEY_A},{KEY_B}")


@pytest.fixture(scope="module")
def open_stack(stack_factory):
    return stack_factory(["bicubic"], max_wait_s=20)


def client(st, key: str | None = None, **kw) -> httpx.Client:
    return st.client(headers={"Authorization": f"Bearer {key}"} if key else {}, **kw)


def submit(c: httpx.Client, data: bytes, headers: dict | None = None, **fields) -> httpx.Response:
    return c.post("/v1/upscale", files={"file": ("a.png", data)}, data={"model": "bicubic", **fields},
                  headers=headers or {})  # fmt: skip


def image(i: int) -> bytes:
    return png(photo(size=(8 + i % 5, 9 + i // 5)))


def pages(c: httpx.Client, limit: int) -> list[list[str]]:
    """Every page of GET /v1/jobs, following `next`."""
    out, url = [], f"/v1/jobs?limit={limit}"
    while url:
        r = c.get(url)
        assert r.status_code == 200, r.text
        body = r.json()
        out.append([j["id"] for j in body["jobs"]])
        assert (body["next"] is None) == ("link" not in r.headers), (body["next"], r.headers.get("link"))
        if body["next"]:
            assert r.headers["link"] == f'<{body["next"]}>; rel="next"'
        url = body["next"]
    return out


# -- GET /v1/jobs --------------------------------------------------------------------------------------------


def test_the_listing_is_newest_first_paginated_and_scoped_to_the_key(keyed):
    with client(keyed, KEY_A) as a, client(keyed, KEY_B) as b:
        mine = [submit(a, image(i)).json()["id"] for i in range(7)]
        theirs = [submit(b, image(i)).json()["id"] for i in range(3)]
        first = pages(a, 3)
        assert [len(p) for p in first] == [3, 3, 1]
        assert [j for p in first for j in p] == mine[::-1]  # newest first, each once, none skipped
        assert [j for p in pages(b, 100) for j in p] == theirs[::-1]  # another key sees only its own
        # Jobs created while a client pages through do not shift its pages: the cursor is a position in time.
        r = a.get("/v1/jobs", params={"limit": 3})
        nxt = r.json()["next"]
        newer = submit(a, image(8)).json()["id"]
        rest = a.get(nxt).json()
        assert [j["id"] for j in rest["jobs"]] == mine[::-1][3:6]
        assert a.get("/v1/jobs", params={"limit": 1}).json()["jobs"][0]["id"] == newer
        listed = a.get("/v1/jobs", params={"limit": 1}).json()["jobs"][0]
        alone = a.get(f"/v1/jobs/{newer}").json()
        assert set(listed) == set(alone) and listed["input"] == alone["input"] and listed["links"] == alone["links"]
        assert_error(httpx.get(f"{keyed.url}/v1/jobs"), 401, "unauthorized")
        assert_error(a.get("/v1/jobs", params={"cursor": "not-a-cursor"}), 422, "invalid_request")
        assert_error(a.get("/v1/jobs", params={"limit": 0}), 422, "invalid_request")
        assert_error(a.get("/v1/jobs", params={"limit": 101}), 422, "invalid_request")


def test_jobs_created_in_the_same_microsecond_are_each_listed_once(stack_factory):
    st = stack_factory(["bicubic"], workers=0, ready=False)
    with client(st) as c:
        ids = [submit(c, image(i)).json()["id"] for i in range(5)]
        queue = st.env["SRGAN_QUEUE"]
        index = f"t-{queue}:index:{queue}:-"
        tie = st.redis.client.zscore(index, ids[2])
        st.redis.client.zadd(index, {j: tie for j in ids[1:4]}, xx=True)  # three jobs of the same µs
        listed = [j for p in pages(c, 1) for j in p]
        assert listed == [ids[4], *sorted(ids[1:4], reverse=True), ids[0]]  # ties by id, as Redis orders them


def test_an_expired_job_leaves_the_listing(stack_factory):
    st = stack_factory(["bicubic"], workers=0, ready=False, input_ttl_s=2)
    with client(st) as c:
        old = submit(c, image(1)).json()["id"]
        wait_for(lambda: c.get(f"/v1/jobs/{old}").status_code == 404, 30, "the queued job to expire")
        new = submit(c, image(2)).json()["id"]
        assert [j for p in pages(c, 10) for j in p] == [new]
        index = [k for k in st.redis.client.keys("*index*")]
        assert len(index) == 1 and st.redis.client.zrange(index[0], 0, -1) == [new.encode()]


def test_open_mode_lists_every_job(open_stack):
    with client(open_stack) as c, client(open_stack) as other:
        ids = [submit(c, image(i)).json()["id"] for i in range(2)] + [submit(other, image(5)).json()["id"]]
        listed = [j for p in pages(c, 2) for j in p]
        assert listed[:3] == ids[::-1]


# -- Prefer: wait=N --------------------------------------------------------------------------------------------


def test_prefer_wait_answers_with_the_image_when_done_in_time(open_stack):
    data = png(photo(size=(12, 16)))
    with client(open_stack) as c:
        r = submit(c, data, {"Prefer": "respond-async, wait=15"})
        assert r.status_code == 200, r.text[:300]
        assert r.headers["preference-applied"] == "wait=15" and r.headers["content-type"] == "image/png"
        jid = r.headers["location"].rsplit("/", 1)[1]
        assert r.headers["content-location"] == f"/v1/jobs/{jid}/result"
        assert r.headers["etag"] == f'"{hashlib.sha256(r.content).hexdigest()}"'
        assert r.headers["x-model-sha256"] == "builtin" and decode_png(r.content).shape == (48, 64, 3)
        assert c.get(f"/v1/jobs/{jid}/result").content == r.content
        r = submit(c, data, {"Prefer": "wait=9999"})  # capped by SRGAN_MAX_WAIT_S (20 here)
        assert r.status_code == 200 and r.headers["preference-applied"] == "wait=20"
        r = submit(c, data, {"Prefer": "wait=soon"})  # not a number: ignored, as RFC 7240 says
        assert r.status_code == 202 and "preference-applied" not in r.headers


def test_prefer_wait_answers_202_when_the_job_is_not_done_in_time(stack_factory):
    st = stack_factory(["bicubic"], workers=0, ready=False)
    with client(st) as c:
        t0 = time.monotonic()
        r = submit(c, image(3), {"Prefer": "wait=1"})
        waited = time.monotonic() - t0
        assert r.status_code == 202 and r.json()["status"] == "queued", r.text
        assert r.headers["preference-applied"] == "wait=1" and r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
        assert r.json()["queue_position"] == 0 and waited >= 1.0


# -- results --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(open_stack):
    with client(open_stack) as c:
        jid = submit(c, png(photo(size=(40, 48)))).json()["id"]
        r = c.get(f"/v1/jobs/{jid}/result", params={"wait": 60})
        assert r.status_code == 200
        return jid, r.content


def test_a_result_has_a_strong_etag_and_cache_headers(open_stack, finished):
    jid, body = finished
    with client(open_stack) as c:
        r = c.get(f"/v1/jobs/{jid}/result")
        etag = f'"{hashlib.sha256(body).hexdigest()}"'
        assert r.headers["etag"] == etag and r.headers["accept-ranges"] == "bytes"
        assert c.get(f"/v1/jobs/{jid}").json()["output"]["sha256"] == etag.strip('"')  # recorded at finish
        cache = r.headers["cache-control"].split(", ")
        assert cache[0] == "private" and cache[2] == "immutable" and 3000 < int(cache[1].split("=")[1]) <= 3600
        assert "last-modified" in r.headers
        for tag in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            nm = c.get(f"/v1/jobs/{jid}/result", headers={"If-None-Match": tag})
            assert nm.status_code == 304 and nm.content == b"" and nm.headers["etag"] == etag, tag
        assert c.get(f"/v1/jobs/{jid}/result", headers={"If-None-Match": '"other"'}).content == body


def test_head_gives_the_headers_without_the_bytes(open_stack, finished):
    jid, body = finished
    with client(open_stack) as c:
        h = c.head(f"/v1/jobs/{jid}/result")
        g = c.get(f"/v1/jobs/{jid}/result")
        assert h.status_code == 200 and h.content == b""
        assert int(h.headers["content-length"]) == len(body)
        for name in ("etag", "content-type", "cache-control", "accept-ranges", "content-disposition"):
            assert h.headers[name] == g.headers[name], name
        assert_error(c.get("/v1/jobs/nope/result"), 404, "job_not_found")
        assert c.head("/v1/jobs/nope/result").status_code == 404


def test_ranges(open_stack, finished):
    jid, body = finished
    n = len(body)
    url = f"/v1/jobs/{jid}/result"
    with client(open_stack) as c:
        for spec, (a, b) in {"bytes=0-99": (0, 99), "bytes=100-": (100, n - 1), "bytes=-50": (n - 50, n - 1),
                             f"bytes=10-{n + 500}": (10, n - 1), f"bytes=-{n + 9}": (0, n - 1)}.items():  # fmt: skip
            r = c.get(url, headers={"Range": spec})
            assert r.status_code == 206, (spec, r.status_code)
            assert r.headers["content-range"] == f"bytes {a}-{b}/{n}" and r.content == body[a : b + 1], spec
            assert int(r.headers["content-length"]) == b - a + 1
        for spec in (f"bytes={n}-", f"bytes={n + 10}-{n + 20}", "bytes=-0"):
            r = c.get(url, headers={"Range": spec})
            assert_error(r, 416, "range_not_satisfiable")
            assert r.headers["content-range"] == f"bytes */{n}"
        for spec in ("bytes=0-1,5-9", "items=0-5", "bytes=9-2", "bytes=abc"):  # ignored: the whole result
            r = c.get(url, headers={"Range": spec})
            assert r.status_code == 200 and r.content == body, spec
        etag = c.head(url).headers["etag"]
        assert c.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206
        assert c.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'}).content == body
        r = c.head(url, headers={"Range": "bytes=0-9"})
        assert r.status_code == 206 and r.headers["content-length"] == "10" and r.content == b""


# -- the job's own ETag: a long-poll for any change ------------------------------------------------------------


def test_if_none_match_long_poll_follows_the_job(stack_factory):
    st = stack_factory(["bicubic"], workers=0, ready=False)
    with client(st) as c:
        job = submit(c, image(4)).json()
        r = c.get(f"/v1/jobs/{job['id']}")
        etag = r.headers["etag"]
        assert etag.startswith('W/"')
        assert c.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": etag}).status_code == 304
        t0 = time.monotonic()
        r = c.get(f"/v1/jobs/{job['id']}", params={"wait": 1.5}, headers={"If-None-Match": etag})
        assert r.status_code == 304 and time.monotonic() - t0 >= 1.5  # nothing changed meanwhile
        st.add_worker(["bicubic"])
        seen = []
        while not seen or seen[-1]["status"] not in ("finished", "failed"):
            r = c.get(f"/v1/jobs/{job['id']}", params={"wait": 60}, headers={"If-None-Match": etag})
            assert r.status_code == 200, r.status_code
            etag = r.headers["etag"]
            seen.append(r.json())
        assert seen[-1]["status"] == "finished" and len(seen) <= 4, [s["status"] for s in seen]
