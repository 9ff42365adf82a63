"""Settings (and their generated documentation), job bookkeeping helpers and the two storage backends."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from app.config import Settings, settings_markdown
from model.specs import parse_series, series_id
from tests.servicekit import ClaimedDB
from worker.jobs import new_job_id
from worker.storage import DirStorage, RedisStorage, make_storage


def test_settings_doc_matches_the_class():
    doc = (Path(__file__).resolve().parents[1] / "app" / "SETTINGS.md").read_text()
    assert doc == settings_markdown(), "app/SETTINGS.md is stale: python -m app.config > app/SETTINGS.md"
    for name in Settings.model_fields:
        assert f"`SRGAN_{name.upper()}`" in doc


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("SRGAN_WORKER_MODELS", "srresnet, espcn_x4")
    monkeypatch.setenv("SRGAN_WORKER_TILE", "")
    monkeypatch.setenv("SRGAN_MAX_QUEUE_DEPTH", "7")
    monkeypatch.setenv("SRGAN_STORAGE", "dir")
    s = Settings()
    assert s.worker_models == ["srresnet", "espcn_x4"] and s.worker_tile is None and s.max_queue_depth == 7
    with pytest.raises(ValueError, match="SRGAN_STORAGE_DIR"):
        make_storage(s, None)
    monkeypatch.setenv("SRGAN_DEFAULT_FORMAT", "gif")
    with pytest.raises(ValueError):
        Settings()


def test_model_specs_and_ids():
    assert parse_series("espcn_x3", 4) == ("espcn", 3)
    assert parse_series("srresnet", 4) == ("srresnet", 4) and parse_series("srresnet") == ("srresnet", None)
    assert parse_series("_x4", 2) == ("_x4", 2) and series_id("espcn", 3) == "espcn_x3"
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 22 for i in ids)


def test_dir_storage_expires_and_sweeps(tmp_path):
    st = DirStorage(tmp_path / "blobs")
    st.put("input", "a", b"hello", ttl_s=60)
    st.put("result", "b", b"gone", ttl_s=60)
    assert st.get("input", "a") == b"hello" and st.get_many("result", ["b", "zz"]) == [b"gone", None]
    past = time.time() - 1
    os.utime(st.path("result", "b"), (past, past))  # as if its TTL ran out
    assert st.get("result", "b") is None and not st.path("result", "b").exists()
    st.put("result", "c", b"old", ttl_s=60)
    os.utime(st.path("result", "c"), (past, past))
    assert st.sweep() == 1 and st.get("input", "a") == b"hello"
    st.delete("input", "a")
    assert st.get("input", "a") is None
    with pytest.raises(ValueError):
        st.path("input", "../etc/passwd")


def test_redis_storage_uses_ttls_and_pipelines():
    db = ClaimedDB()
    try:
        st = RedisStorage(db.client, "unit")
        with db.client.pipeline() as pipe:
            st.put("input", "x", b"data", ttl_s=30, pipeline=pipe)
            assert st.get("input", "x") is None  # not before the pipeline runs
            pipe.execute()
        assert st.get("input", "x") == b"data" and 0 < db.client.ttl(st.redis_key("input", "x")) <= 30
        assert st.get_many("input", ["x", "y"]) == [b"data", None]
        st.delete("input", "x")
        assert st.get("input", "x") is None and st.sweep() == 0
    finally:
        db.release()


def test_engine_settings_reach_the_engine_config(monkeypatch):
    from worker.models import engine_config

    plain = engine_config(Settings())
    assert not plain.compile and not plain.cuda_graphs
    monkeypatch.setenv("SRGAN_WORKER_COMPILE", "max-autotune")
    monkeypatch.setenv("SRGAN_WORKER_CUDA_GRAPHS", "true")
    cfg = engine_config(Settings())
    assert cfg.compile and cfg.compile_mode == "max-autotune" and cfg.cuda_graphs
    monkeypatch.setenv("SRGAN_WORKER_COMPILE", "fastest")
    with pytest.raises(ValueError, match="worker_compile"):
        Settings()
