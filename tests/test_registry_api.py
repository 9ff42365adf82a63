"""The registry's admin API and ``srgan models`` against a real gateway and worker (processes, real Redis):
who may call it, uploads checked and gated, listing, promotion and rollback reaching the worker, one error
shape."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

import tests.registrykit as K
from model.zoo import SHIPPED_WEIGHTS_DIR
from tests.servicekit import (
    PY,
    REPO,
    assert_error,
    photo,
    png,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)
KEY = "k-" + uuid.uuid4().hex
SHIPPED_SHA = json.loads((SHIPPED_WEIGHTS_DIR / "espcn_x4.json").read_text())["sha256"]


@pytest.fixture(scope="module")
def svc(stack_factory, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("regapi")
    # promotions must arrive over pub/sub, not the poll
    st = stack_factory(["espcn", "bicubic"], admin_key=KEY, models_dir=tmp / "models",
                       gate_dir=K.gate_folder(tmp / "gate"), worker_model_poll_s=30)  # fmt: skip
    _, open_url = st.add_gateway(admin_key="")  # the same service without an admin key
    with st.client(headers={"Authorization": f"Bearer {KEY}"}) as admin, st.client() as anon:
        yield {"url": st.url, "open_url": open_url, "admin": admin, "anon": anon, "env": st.env, "tmp": tmp,
               "db": st.redis, "worker": st.workers[0]}  # fmt: skip


def upload(client: httpx.Client, path: Path, name: str = "espcn", card: bytes | None = None, **fields):
    card = card if card is not None else path.with_suffix(".json").read_bytes()
    data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()}
    return client.post(
        f"/v1/models/{name}/versions",
        data=data,
        files={
            "weights": (path.name, path.read_bytes(), "application/octet-stream"),
            "card": ("card.json", card, "application/json"),
        },
    )


ADMIN_CALLS = [
    ("GET", "/v1/models/espcn/versions", None),
    ("GET", "/v1/models/espcn_x4/versions/1", None),
    ("GET", "/v1/models/nosuchmodel/versions", None),
    ("POST", "/v1/models/espcn/promote", {"version": 1}),
    ("POST", "/v1/models/espcn/rollback", {}),
    ("POST", "/v1/models/nosuchmodel/promote", {"version": 1}),
    ("GET", "/v1/training-runs", None),
    ("GET", "/v1/training-runs/nosuchrun", None),
    ("POST", "/v1/training-runs", {"stage": "espcn", "data": ["/nowhere"]}),
    ("DELETE", "/v1/training-runs/nosuchrun", None),
]


def test_without_an_admin_key_configured_the_admin_routes_answer_403(svc):
    with httpx.Client(base_url=svc["open_url"], timeout=30) as c:
        for method, path, body in ADMIN_CALLS:
            for headers in ({}, {"Authorization": f"Bearer {KEY}"}):
                e = assert_error(c.request(method, path, json=body, headers=headers), 403, "admin_disabled")
                assert "SRGAN_ADMIN_KEY" in e["message"] and "Authorization: Bearer" in e["message"]
        weights = SHIPPED_WEIGHTS_DIR / "espcn_x4.safetensors"
        assert_error(upload(c, weights), 403, "admin_disabled")
        assert c.get("/v1/models").status_code == 200  # the public list stays public
        assert "/v1/models/{name}/promote" in c.get("/openapi.json").json()["paths"]


def test_a_missing_or_wrong_key_is_401_never_404_or_2xx(svc):
    c = svc["anon"]
    for method, path, body in ADMIN_CALLS:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": KEY},
            {"Authorization": f"Basic {KEY}"},
            {"Authorization": f"Bearer {KEY}x"},
        ):
            r = c.request(method, path, json=body, headers=headers)
            assert_error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer")
    r = upload(c, SHIPPED_WEIGHTS_DIR / "espcn_x4.safetensors")
    assert_error(r, 401, "unauthorized")
    # nothing happened
    assert svc["admin"].get("/v1/models/espcn/versions").json()["history"] == [1]


def test_upload_list_promote_rollback(svc):
    admin, tmp = svc["admin"], svc["tmp"] / "uploads"
    listing = admin.get("/v1/models/espcn/versions").json()
    assert (listing["name"], listing["scale"], listing["active"], listing["history"]) == ("espcn", 4, 1, [1])
    assert [(v["version"], v["source"], v["sha256"], v["active"]) for v in listing["versions"]] == [
        (1, "shipped", SHIPPED_SHA, True)
    ]

    good = K.variant(tmp / "good", seed=1)
    r = upload(admin, good, by="alice", notes="hello")
    assert r.status_code == 201, r.text
    v2 = r.json()
    assert (v2["version"], v2["source"], v2["registered_by"], v2["notes"], v2["active"]) == (
        2,
        "uploaded",
        "alice",
        "hello",
        False,
    )
    assert r.headers["location"] == "/v1/models/espcn_x4/versions/2"
    assert v2["metrics"]["gate"]["passed"] and v2["metrics"]["gate"]["baseline"] == "version 1"
    assert admin.get(r.headers["location"]).json()["sha256"] == v2["sha256"]

    # refused uploads: the reason, the one error shape, and nothing registered
    def bad(name, make):
        (tmp / name).mkdir(parents=True)
        return make(tmp / name)

    assert "sha256" in assert_error(upload(admin, bad("lying", K.lying_card)), 422, "invalid_weights")["message"]
    assert_error(upload(admin, bad("garbage", K.garbage)), 422, "invalid_weights")
    assert_error(upload(admin, bad("swapped", K.srcnn_tensors_espcn_card)), 422, "invalid_weights")
    assert_error(upload(admin, K.variant(tmp / "srcnn", name="srcnn")), 422, "wrong_architecture")
    assert_error(upload(admin, good, card=b"{oops"), 422, "invalid_card")
    assert_error(upload(admin, good), 409, "already_registered")
    assert_error(upload(admin, good, name="nosuchmodel"), 404, "unknown_model")
    random = K.variant(tmp / "random", random=True, seed=2)
    e = assert_error(upload(admin, random, promote=True), 422, "quality_gate_failed")
    assert "dB" in e["message"] and "force" in e["message"]
    assert_error(admin.post("/v1/models/espcn/versions", files={"weights": ("w", b"x")}), 422, "invalid_request")
    assert [v["version"] for v in admin.get("/v1/models/espcn/versions").json()["versions"]] == [1, 2]
    r = upload(admin, random, force=True, promote=True)  # forced in, but promote needs the gate: not active
    assert r.status_code == 201 and r.json()["version"] == 3 and not r.json()["active"]
    assert not r.json()["metrics"]["gate"]["passed"]

    # the public list shows every version and the active one
    row = next(m for m in admin.get("/v1/models").json()["models"] if (m["name"], m["scale"]) == ("espcn", 4))
    assert (row["version"], row["sha256"], row["versions"]) == (1, SHIPPED_SHA, [1, 2, 3])
    assert row["loaded"] and row["loaded_versions"] == [1]

    # promote: the worker switches (pub/sub; its poll is 30 s) and the answer says so
    r = admin.post("/v1/models/espcn/promote", json={"version": 2, "by": "bob"}, params={"wait": 10})
    assert r.status_code == 200, r.text
    a = r.json()
    assert (a["active"], a["previous"], a["changed"], a["history"]) == (2, 1, True, [1, 2])
    assert a["version"]["promoted_by"] == "bob" and a["version"]["sha256"] == v2["sha256"]
    assert a["rollout"]["complete"] and list(a["rollout"]["workers"].values()) == [2]
    assert a["rollout"]["waited_s"] < 5
    row = next(m for m in admin.get("/v1/models").json()["models"] if (m["name"], m["scale"]) == ("espcn", 4))
    assert (row["version"], row["sha256"], row["loaded_versions"]) == (2, v2["sha256"], [2])
    job = run(svc, "espcn")
    assert (job["model_version"], job["model_sha256"]) == (2, v2["sha256"])
    again = admin.post("/v1/models/espcn_x4/promote", json={"version": 2}).json()
    assert not again["changed"] and again["history"] == [1, 2] and again["rollout"] is None

    assert_error(admin.post("/v1/models/espcn/promote", json={"version": 99}), 404, "unknown_version")
    assert_error(admin.post("/v1/models/espcn/promote", json={"version": "two"}), 422, "invalid_request")
    assert_error(admin.post("/v1/models/espcn/promote", json={}), 422, "invalid_request")
    assert_error(admin.post("/v1/models/bicubic/promote", json={"version": 1}), 404, "weightless_model")
    assert_error(admin.get("/v1/models/bicubic/versions"), 404, "weightless_model")
    assert_error(admin.post("/v1/models/espcn/promote", json={"version": 1}, params={"scale": 5}), 404, "unknown_model")
    assert_error(admin.get("/v1/models/espcn/versions/9"), 404, "unknown_version")

    # roll back: version 1 again, in the worker too; then nothing left to roll back
    r = admin.post("/v1/models/espcn/rollback", json={"by": "carol"}, params={"wait": 10})
    assert r.status_code == 200, r.text
    b = r.json()
    assert (b["active"], b["previous"], b["history"]) == (1, 2, [1]) and b["rollout"]["complete"]
    job = run(svc, "espcn")
    assert (job["model_version"], job["model_sha256"]) == (1, SHIPPED_SHA)
    e = assert_error(admin.post("/v1/models/espcn/rollback"), 409, "nothing_to_roll_back")
    assert "version 1" in e["message"]
    versions = {v["version"]: v for v in admin.get("/v1/models/espcn/versions").json()["versions"]}
    assert versions[1]["active"] and versions[1]["promoted_by"] == "carol" and versions[2]["promoted_by"] == "bob"

    # version 3 (random weights, forced in) failed the picture checks: promoting it needs force, then roll back
    assert versions[3]["metrics"]["gate"]["pictures_passed"] is False
    e = assert_error(admin.post("/v1/models/espcn/promote", json={"version": 3}), 422, "quality_gate_failed")
    assert "force" in e["message"]
    assert_error(admin.post("/v1/models/espcn/promote", json={"version": 3, "force": 1}), 422, "invalid_request")
    r = admin.post("/v1/models/espcn/promote", json={"version": 3, "force": True, "by": "dave"})
    assert r.status_code == 200 and r.json()["active"] == 3, r.text
    assert admin.post("/v1/models/espcn/rollback", json={"by": "carol"}).json()["active"] == 1

    # pinned to a version the worker does not serve as active
    job = run(svc, f"espcn@{v2['sha256'][:8]}")
    assert (job["model_version"], job["model_sha256"]) == (2, v2["sha256"])
    assert_error(
        svc["anon"].post("/v1/upscale", files={"file": ("a.png", png(photo(size=(8, 8))))}, data={"model": "espcn@7"}),
        422,
        "unknown_model_version",
    )


def run(svc, model: str) -> dict:
    c = svc["anon"]
    r = c.post("/v1/upscale", files={"file": ("a.png", png(photo(size=(16, 16))))}, data={"model": model})
    assert r.status_code == 202, r.text
    job = c.get(f"/v1/jobs/{r.json()['id']}", params={"wait": 30}).json()
    assert job["status"] == "finished", job
    return job


def srgan(
    svc, *args: str, key: str | None = KEY, local: bool = False, url: str | None = None
) -> subprocess.CompletedProcess:
    env = dict(svc["env"])
    env.pop("SRGAN_ADMIN_KEY", None)
    cmd = [PY, "-m", "app.cli", "models", *args]
    if local:
        cmd.append("--local")
    else:
        cmd += ["--url", url or svc["url"]] + (["--admin-key", key] if key else [])
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_srgan_models_cli(svc):
    tmp = svc["tmp"] / "cli"
    p = srgan(svc, "list", "espcn", "--json")
    assert p.returncode == 0, p.stderr
    before = json.loads(p.stdout)
    n = max(v["version"] for v in before["versions"]) + 1

    weights = K.variant(tmp, seed=5)
    p = srgan(svc, "upload", "espcn", str(weights), "--promote", "--by", "dora")
    assert p.returncode == 0, p.stderr
    assert f"registered version {n}" in p.stdout and "passed" in p.stdout and "active" in p.stdout
    p = srgan(svc, "list")
    assert p.returncode == 0 and any(
        line.split()[:4] == ["espcn", "x4", "active", str(n)] for line in p.stdout.splitlines()
    ), p.stdout
    p = srgan(svc, "list", "espcn")
    assert p.returncode == 0 and f"active version {n}" in p.stdout and "dora" in p.stdout
    wait_for(lambda: run(svc, "espcn")["model_version"] == n, 10, "the worker to serve the upload")

    p = srgan(svc, "rollback", "espcn", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["active"] == before["active"] and out["previous"] == n and out["rollout"]["complete"]
    p = srgan(svc, "promote", "espcn", str(n))
    assert p.returncode == 0 and f"version {n} active" in p.stdout and "all workers switched" in p.stdout

    # --local: the models directory and Redis of this machine, as the gateway's host would use
    p = srgan(svc, "rollback", "espcn", "--by", "eve", local=True)
    assert p.returncode == 0, p.stderr
    assert wait_for(
        lambda: run(svc, "espcn")["model_version"] == before["active"], 10, "the worker to hear a --local rollback"
    )
    p = srgan(svc, "list", "espcn", "--json", local=True)
    assert p.returncode == 0 and json.loads(p.stdout)["active"] == before["active"]
    versions = svc["admin"].get("/v1/models/espcn/versions").json()
    assert versions["active"] == before["active"]
    assert next(v for v in versions["versions"] if v["version"] == before["active"])["promoted_by"] == "eve"

    # errors: one line, exit status 1
    p = srgan(svc, "promote", "espcn", "99")
    assert p.returncode == 1 and "unknown_version" in p.stderr and "Traceback" not in p.stderr
    p = srgan(svc, "list", "espcn", key="wrong")
    assert p.returncode == 1 and "unauthorized" in p.stderr
    p = srgan(svc, "list", url="http://127.0.0.1:9")
    assert p.returncode == 1 and "cannot reach the gateway" in p.stderr and "Traceback" not in p.stderr
    p = srgan(svc, "promote", "espcn", "99", local=True)
    assert p.returncode == 1 and "unknown_version" in p.stderr and "Traceback" not in p.stderr
