"""Client keys (``app.auth``): how keys are configured and read, and what the guard lets through, on a small app
of its own (the gateway process is tested in ``test_gateway_door.py``)."""

from __future__ import annotations

import hashlib
import os

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.auth import ClientGuard, ClientKeys, needs_client_key
from app.deps import ClientDep

ALICE, BOB = "alice-" + "a" * 26, "bob-" + "b" * 28


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def test_open_mode_without_any_setting():
    keys = ClientKeys()
    assert not keys.enabled and keys.identify(ALICE) is None


def test_inline_keys_identify_clients_by_a_short_hash():
    keys = ClientKeys(f"{ALICE}, {BOB} ,")
    assert keys.enabled
    assert keys.identify(ALICE) == sha(ALICE)[:12] and keys.identify(BOB) == sha(BOB)[:12]
    assert keys.identify(ALICE + "x") is None and keys.identify("") is None


def test_keys_file_holds_keys_or_their_sha256(tmp_path):
    f = tmp_path / "keys"
    f.write_text(f"# clients\n{ALICE}\n\nsha256:{sha(BOB)}  # bob, stored hashed\n{sha('carol-' + 'c' * 26).upper()}\n")
    keys = ClientKeys(file=f)
    assert keys.identify(ALICE) == sha(ALICE)[:12]
    assert keys.identify(BOB) == sha(BOB)[:12]
    assert keys.identify("carol-" + "c" * 26) == sha("carol-" + "c" * 26)[:12]
    assert keys.identify(sha(BOB)) is None  # the digest itself is not a key


def test_an_empty_keys_file_admits_nobody_rather_than_everybody(tmp_path):
    f = tmp_path / "keys"
    f.write_text("# no clients yet\n")
    keys = ClientKeys(file=f)
    assert keys.enabled and keys.identify(ALICE) is None


def test_a_missing_keys_file_stops_the_gateway_but_a_later_loss_keeps_the_keys(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="SRGAN_API_KEYS_FILE"):
        ClientKeys(file=tmp_path / "nowhere")
    f = tmp_path / "keys"
    f.write_text(ALICE + "\n")
    keys = ClientKeys(file=f)
    monkeypatch.setattr("app.auth._RECHECK_S", 0.0)
    f.write_text(BOB + "\n")
    os.utime(f, ns=(1, 1))  # a new mtime even within the file system's timestamp granularity
    assert keys.identify(BOB) is not None and keys.identify(ALICE) is None  # rotated without a restart
    f.unlink()
    assert keys.identify(BOB) is not None  # unreadable now: the last good set stays


def test_the_admin_key_cannot_be_a_client_key(tmp_path):
    with pytest.raises(ValueError, match="admin key must stay separate"):
        ClientKeys(f"{ALICE},{BOB}", admin_key=BOB)
    f = tmp_path / "keys"
    f.write_text(f"sha256:{sha(BOB)}\n")
    with pytest.raises(ValueError, match="admin key must stay separate"):
        ClientKeys(file=f, admin_key=BOB)


def test_malformed_hash_line_is_an_error(tmp_path):
    f = tmp_path / "keys"
    f.write_text("sha256:1234\n")
    with pytest.raises(ValueError, match="line 1"):
        ClientKeys(file=f)


def test_which_paths_need_a_key():
    for path in ("/v1/upscale", "/v1/jobs/abc", "/v1/jobs/abc/result"):
        assert needs_client_key(path), path
    for path in ("/v1/models", "/v1/models/espcn/versions", "/v1/training-runs", "/", "/healthz", "/docs"):
        assert not needs_client_key(path), path


def app_with(keys: ClientKeys) -> TestClient:
    app = FastAPI()

    @app.get("/v1/whoami")
    async def whoami(client: ClientDep) -> dict:
        return {"client": client}

    @app.get("/healthz")
    async def healthz(client: ClientDep) -> dict:
        return {"client": client}

    app.add_middleware(ClientGuard, keys=keys)
    return TestClient(app)


def test_the_guard_sets_the_client_for_the_routes():
    c = app_with(ClientKeys(ALICE))
    r = c.get("/v1/whoami", headers={"Authorization": f"Bearer {ALICE}"})
    assert r.status_code == 200 and r.json() == {"client": sha(ALICE)[:12]}
    for headers in ({}, {"Authorization": f"Bearer {BOB}"}, {"Authorization": ALICE}, {"Authorization": "Bearer "}):
        r = c.get("/v1/whoami", headers=headers)
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", (headers, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer") and ALICE not in r.text
    assert c.get("/healthz").json() == {"client": None}  # public


def test_open_mode_routes_see_no_client():
    c = app_with(ClientKeys())
    assert c.get("/v1/whoami").json() == {"client": None}
