"""The gateway's model catalog (``Gateway.catalog``): read once, then re-read every 30 s in a thread while
requests keep the one they have, so no request (and no event loop) waits for the model cards."""

from __future__ import annotations

import threading
import time
import uuid

from app.config import Settings
from app.service import Gateway
from tests.servicekit import ClaimedDB, wait_for


def test_a_stale_catalog_is_served_at_once_while_one_thread_re_reads_it():
    db = ClaimedDB()
    gw = Gateway(Settings(redis_url=db.url, queue=f"catalog-{uuid.uuid4().hex[:6]}"))
    try:
        first = gw.catalog()
        assert any(r["name"] == "bicubic" for r in first)
        read, release = [], threading.Event()
        real = gw.registry.catalog

        def slow_read(*args, **kwargs):  # the real read, held until the test lets it finish
            read.append(threading.current_thread().name)
            release.wait(60)
            return real(*args, **kwargs)

        gw.registry.catalog = slow_read  # type: ignore[method-assign]
        gw._catalog = (time.monotonic() - 31, first)  # 31 s old
        assert gw.catalog() is first and gw.catalog() is first  # no wait for the re-read
        wait_for(lambda: read, 30, "the re-read to start")
        release.set()
        wait_for(lambda: gw._catalog is not None and gw._catalog[1] is not first, 30, "the re-read to land")
        assert read == ["srgan-catalog"]  # one re-read, in its thread, for both requests
        assert [r["name"] for r in gw.catalog()] == [r["name"] for r in first]
        gw.invalidate_catalog()  # a promotion: the next request reads it at once
        assert gw.catalog() is not first and read == ["srgan-catalog", "MainThread"]
    finally:
        gw.redis.close()
        db.release()
