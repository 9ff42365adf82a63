"""Training runs from the API: a real gateway, a real training worker (``srgan worker --queue training``) and a
serving worker. Tiny ESPCN runs on a folder of real photographs: progress and metrics while running, a new
version registered at the end, ``auto_promote`` only through the gate, cancel of a queued and a running run."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from PIL import Image

import tests.registrykit as K
from tests.servicekit import (
    Service,
    assert_error,
    photo,
    png,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)
KEY = "k-" + uuid.uuid4().hex
# a few steps on small crops, logged and validated often; no data-loader processes
TINY = {
    "batch_size": 4,
    "crop": 48,
    "log_every": 1,
    "val_every": 2,
    "ckpt_every": 2,
    "workers": 0,
    "lr_schedule": "constant",
    "warmup_steps": 0,
    "ema": 0.0,
    "val_max_images": 2,
}


@pytest.fixture(scope="module")
def svc(stack_factory, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    data = tmp / "photos"
    data.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        Image.fromarray(photo(name, size=(96, 96), top=50, left=50)).save(data / f"{name}.png")
    st = stack_factory(["espcn"], admin_key=KEY, models_dir=tmp / "models", gate_dir=K.gate_folder(tmp / "gate"),
                       training_runs_dir=tmp / "runs")  # fmt: skip
    trainer = st.add(["worker", "--queue", "training"], "trainer")
    with st.client(headers={"Authorization": f"Bearer {KEY}"}) as admin:
        yield {"admin": admin, "data": str(data), "trainer": trainer, "tmp": tmp, "url": st.url, "env": st.env}


def start(admin: httpx.Client, **request) -> dict:
    r = admin.post("/v1/training-runs", json=request)
    assert r.status_code == 202, r.text
    run = r.json()
    assert r.headers["location"] == f"/v1/training-runs/{run['id']}" and run["status"] == "queued"
    return run


def wait_run(svc, run_id: str, until, timeout: float = 900) -> dict:
    """Wait for an event of the run; the timeout is only a safety net (a busy machine trains slowly)."""

    def check():
        run = svc["admin"].get(f"/v1/training-runs/{run_id}").json()
        if run["status"] == "failed":
            raise AssertionError(f"{run}\n{svc['trainer'].output()[-3000:]}")
        return run if until(run) else None

    return wait_for(check, timeout, f"training run {run_id}", interval=0.1)


def active(svc) -> int:
    return svc["admin"].get("/v1/models/espcn/versions").json()["active"]


def served_version(svc) -> int:
    with httpx.Client(base_url=svc["url"], timeout=30) as c:
        r = c.post("/v1/upscale", files={"file": ("a.png", png(photo(size=(16, 16))))}, data={"model": "espcn"})
        return c.get(f"/v1/jobs/{r.json()['id']}", params={"wait": 30}).json()["model_version"]


def test_requests_are_checked_before_they_are_queued(svc):
    admin, data = svc["admin"], svc["data"]
    for body in (
        {"stage": "espcn", "model": "srcnn", "data": [data]},  # the stage trains another architecture
        {"stage": "espcn", "model": "bicubic", "data": [data]},
        {"stage": "espcn", "data": [data], "overrides": {"out": "/tmp/elsewhere"}},
        {"stage": "espcn", "data": [data], "overrides": {"no_such_field": 1}},
        {"stage": "espcn", "data": [data], "recipe": "no_such_recipe"},
        {"stage": "espcn", "data": [data], "scale": 3, "model": "srgan"},
    ):
        assert_error(admin.post("/v1/training-runs", json=body), 422, "invalid_training_run")
    for body in (
        {"stage": "nope", "data": [data]},
        {"stage": "espcn", "data": []},
        {"stage": "espcn"},
        {"stage": "espcn", "data": [data], "steps": 0},
    ):
        assert_error(admin.post("/v1/training-runs", json=body), 422, "invalid_request")
    assert_error(admin.get("/v1/training-runs/nosuchrun"), 404, "run_not_found")
    assert_error(admin.delete("/v1/training-runs/nosuchrun"), 404, "run_not_found")
    assert admin.get("/v1/training-runs").json()["runs"] == []


def test_a_run_registers_a_version_and_auto_promotes_through_the_gate(svc):
    admin = svc["admin"]
    assert active(svc) == 1
    # fine-tune the active version with a tiny learning rate: it stays as good, passes the gate, is promoted
    run = first = start(
        admin,
        stage="espcn",
        data=[svc["data"]],
        steps=4,
        init="active",
        auto_promote=True,
        by="tester",
        overrides={**TINY, "lr": 1e-7},
    )
    done = wait_run(svc, run["id"], lambda r: r["status"] == "finished")
    res = done["result"]
    assert res["version"] == 2 and res["promoted"] and res["gate"]["passed"] and res["promote_reason"] is None
    assert done["step"] == done["total_steps"] == 4 and done["progress"] == 1.0
    assert done["metrics"]["losses"] and done["metrics"]["val"] and done["metrics"]["val_step"] in (2, 4)
    assert done["samples_step"] in (2, 4) and done["request"]["auto_promote"] and done["attempts"] == 1
    samples = admin.get(f"/v1/training-runs/{run['id']}/samples")
    assert samples.status_code == 200 and samples.content[:8] == b"\x89PNG\r\n\x1a\n"
    versions = admin.get("/v1/models/espcn/versions").json()
    v2 = versions["versions"][1]
    assert (versions["active"], versions["history"]) == (2, [1, 2])
    assert (v2["source"], v2["run"], v2["sha256"], v2["promoted_by"]) == ("trained", run["id"], res["sha256"], "tester")
    # the serving worker switched to it without a restart
    wait_for(lambda: served_version(svc) == 2, 10, "the worker to serve the trained version")

    # from scratch, 3 steps: far below the gate; registered all the same, not promoted
    run = start(
        admin,
        stage="espcn",
        data=[svc["data"]],
        steps=3,
        init="scratch",
        auto_promote=True,
        overrides={**TINY, "lr": 1e-3},
    )
    done = wait_run(svc, run["id"], lambda r: r["status"] == "finished")
    res = done["result"]
    assert res["version"] == 3 and not res["promoted"] and not res["gate"]["passed"]
    assert "quality gate" in res["promote_reason"] and res["gate"]["baseline"] == "version 2"
    assert active(svc) == 2 and served_version(svc) == 2
    runs = admin.get("/v1/training-runs").json()["runs"]
    assert [(r["id"], r["status"]) for r in runs] == [(run["id"], "finished"), (first["id"], "finished")]


def test_cancel_a_queued_and_a_running_run(svc):
    admin = svc["admin"]
    before = [v["version"] for v in admin.get("/v1/models/espcn/versions").json()["versions"]]
    long = start(
        admin,
        stage="espcn",
        data=[svc["data"]],
        steps=100_000,
        overrides={**TINY, "val_every": 1000, "ckpt_every": 1000},
    )
    queued = start(admin, stage="espcn", data=[svc["data"]], steps=2, overrides=TINY)
    # the training worker takes one run at a time: the second waits, and is canceled at once
    running = wait_run(svc, long["id"], lambda r: r["status"] == "started" and r["step"] >= 2)
    assert 0 < running["progress"] < 0.01 and running["metrics"]["losses"] and running["metrics"]["it_s"]
    assert running["total_steps"] == 100_000 and running["out"]
    r = admin.delete(f"/v1/training-runs/{queued['id']}")
    assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
    r = admin.delete(f"/v1/training-runs/{long['id']}")
    assert r.status_code == 202 and r.json()["cancel_requested"], r.text
    t0 = time.monotonic()
    done = wait_run(svc, long["id"], lambda r: r["status"] == "canceled", timeout=300)
    assert time.monotonic() - t0 < 10 and done["result"] is None and done["step"] < 100_000
    again = admin.delete(f"/v1/training-runs/{long['id']}")
    assert again.status_code == 200 and again.json()["status"] == "canceled"
    # nothing was registered, the canceled run never started, and the worker takes the next run
    assert [v["version"] for v in admin.get("/v1/models/espcn/versions").json()["versions"]] == before
    assert admin.get(f"/v1/training-runs/{queued['id']}").json()["step"] == 0
    nxt = start(admin, stage="espcn", data=[svc["data"]], steps=2, init="active", overrides={**TINY, "lr": 1e-7})
    done = wait_run(svc, nxt["id"], lambda r: r["status"] == "finished")
    assert done["result"]["version"] == max(before) + 1 and not done["result"]["promoted"]
    assert_error(admin.delete(f"/v1/training-runs/{nxt['id']}"), 409, "not_cancelable")


def test_sigterm_puts_a_run_back_and_the_next_training_worker_resumes_it(svc):
    import signal

    admin = svc["admin"]
    # enough steps that the run is still going when the signal lands, also on a quiet machine
    run = start(
        admin,
        stage="espcn",
        data=[svc["data"]],
        steps=400,
        init="active",
        overrides={**TINY, "lr": 1e-7, "val_every": 1000, "ckpt_every": 1000},
    )
    running = wait_run(svc, run["id"], lambda r: r["status"] == "started" and r["step"] >= 3)
    svc["trainer"].signal(signal.SIGTERM)
    wait_for(lambda: svc["trainer"].proc.poll() is not None, 30, "the training worker to stop")
    assert svc["trainer"].proc.returncode == 0, svc["trainer"].output()[-2000:]
    stopped = admin.get(f"/v1/training-runs/{run['id']}").json()
    assert stopped["status"] == "queued" and stopped["step"] >= running["step"], stopped  # back, not lost
    trainer = Service(["worker", "--queue", "training"], svc["env"], svc["tmp"], "trainer2")
    try:
        steps = []

        def finished(r):
            steps.append(r["step"])
            return r["status"] == "finished"

        done = wait_run(svc, run["id"], finished)
        # a clean stop is not the run's fault: it does not count as an attempt
        assert done["attempts"] == 1 and done["step"] == 400 and done["result"]["version"] >= 2
        # it went on from the checkpoint of the stop, not from step 0
        assert min(s for s in steps if s) >= stopped["step"], (stopped["step"], steps)
        assert "(resuming)" in trainer.output()
    finally:
        trainer.stop()
