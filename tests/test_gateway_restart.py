"""A gateway SIGKILLed with jobs queued, in flight and long-polled loses nothing: the jobs live in Redis, and a
new gateway (or another one) answers for all of them."""

from __future__ import annotations

import os
import signal
import threading

import httpx
import pytest

from tests.servicekit import photo, png, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_a_gateway_killed_mid_load_loses_no_job(stack_factory):
    st = stack_factory(["espcn"], worker_tile=24, worker_batch_size=1, worker_batch_jobs=2)
    with st.client() as c:
        ids = []
        for i in range(8):
            data = png(photo("astronaut", size=(160, 160), top=60 + 9 * i, left=120))
            r = c.post("/v1/upscale", files={"file": ("a.png", data)}, data={"model": "espcn"})
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        wait_for(lambda: c.get(f"/v1/jobs/{ids[0]}").json()["status"] in ("started", "finished"), 300,
                 "the first job to start", interval=0.05)  # fmt: skip
        waiting: list[BaseException | httpx.Response] = []

        def long_poll() -> None:  # a client waiting on the last job when its gateway dies
            try:
                waiting.append(httpx.get(f"{st.url}/v1/jobs/{ids[-1]}", params={"wait": 60}, timeout=90))
            except httpx.HTTPError as e:
                waiting.append(e)

        t = threading.Thread(target=long_poll)
        t.start()
        os.kill(st.gateway.pid, signal.SIGKILL)
        assert st.gateway.proc.wait(10) == -signal.SIGKILL
        t.join(60)
        assert waiting and isinstance(waiting[0], httpx.HTTPError)  # its connection died with the gateway
    _, url = st.add_gateway()  # a new gateway on the same Redis
    with httpx.Client(base_url=url, timeout=120) as c:
        ended = [c.get(f"/v1/jobs/{j}", params={"wait": 60}).json() for j in ids]
        while any(j["status"] not in ("finished", "failed") for j in ended):
            ended = [c.get(f"/v1/jobs/{j['id']}", params={"wait": 60}).json() for j in ended]
        assert [j["status"] for j in ended] == ["finished"] * len(ids), ended
        assert all(c.get(f"/v1/jobs/{j}/result").status_code == 200 for j in ids)
    print(f"\ngateway SIGKILL: {len(ids)} accepted, {len(ids)} finished through a new gateway, 0 lost")
