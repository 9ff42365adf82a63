"""The containers' health checks against real processes: ``srgan worker --alive`` (the worker's liveness,
startup and readiness probe) follows the worker's heartbeat, frozen and thawed with SIGSTOP/SIGCONT, and
passes while Redis is down; ``python -m app.healthcheck`` (the image's HEALTHCHECK) checks the role given."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pytest

from tests.servicekit import REPO, PrivateRedis, free_port, service_env, start_gateway, start_worker, wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    redis = PrivateRedis()
    logs = tmp_path_factory.mktemp("health-logs")
    env = service_env(redis.url, f"hc{uuid.uuid4().hex[:6]}")
    worker = start_worker(env, logs, ["bicubic"])
    gateway, url = start_gateway(env, logs)
    try:
        yield {"env": env, "redis": redis, "worker": worker, "url": url}
    finally:
        gateway.stop()
        worker.signal(signal.SIGCONT)
        worker.stop()
        if redis.proc.poll() is None:
            redis.stop()


def probe(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)


def state(env: dict) -> str:
    from app.config import Settings
    from worker.health import heartbeat_state

    settings = Settings(redis_url=env["SRGAN_REDIS_URL"], queue=env["SRGAN_QUEUE"], key_prefix=env["SRGAN_KEY_PREFIX"])
    return heartbeat_state(settings)


def test_the_probe_follows_the_heartbeat_of_this_hosts_worker(stack):
    env, worker = stack["env"], stack["worker"]
    wait_for(lambda: state(env) == "alive", 120, "the worker to register its heartbeat", interval=0.2)
    r = probe(env, "app.cli", "worker", "--alive")
    assert r.returncode == 0 and "alive" in r.stdout, r.stdout + r.stderr

    worker.signal(signal.SIGSTOP)  # a wedged process: no heartbeat, no exit
    try:
        wait_for(lambda: state(env) == "dead", 30, "the heartbeat to expire", interval=0.2)
        r = probe(env, "app.cli", "worker", "--alive")
        assert r.returncode == 1 and "dead" in r.stdout, r.stdout + r.stderr
        # Another queue's worker set has no worker of this host: also dead, not confused with this one.
        other = {**env, "SRGAN_QUEUE": "someone-else"}
        assert probe(other, "app.cli", "worker", "--alive").returncode == 1
    finally:
        worker.signal(signal.SIGCONT)
    wait_for(lambda: state(env) == "alive", 30, "the heartbeat to resume", interval=0.2)
    assert probe(env, "app.healthcheck", "srgan", "worker", "--model", "bicubic").returncode == 0


def test_image_healthcheck_checks_the_gateway_role(stack):
    port = stack["url"].rsplit(":", 1)[1]
    assert probe(stack["env"], "app.healthcheck", "srgan", "serve", "--port", port).returncode == 0
    nobody = str(free_port())
    r = probe(stack["env"], "app.healthcheck", "srgan", "serve", "--port", nobody)
    assert r.returncode == 1 and "does not answer" in r.stdout
    assert probe(stack["env"], "app.healthcheck", "srgan", "models", "list").returncode == 0  # a one-off command


def test_image_healthcheck_reads_the_role_from_pid_1_when_not_given():
    from app.healthcheck import role

    assert role(["/usr/local/bin/python", "/usr/local/bin/srgan", "worker", "--queue", "training"]) == (
        "worker",
        ["--queue", "training"],
    )
    assert role(["srgan", "serve", "--port", "8080"]) == ("serve", ["--port", "8080"])
    assert role(["tini", "--", "srgan", "models", "list"]) == (None, [])
    with open("/proc/1/cmdline", "rb") as f:
        assert f.read()  # what the HEALTHCHECK reads exists on Linux


def test_the_probe_passes_while_redis_is_down(stack):
    """Restarting workers would not bring Redis back; SrganRedisDown reports the outage instead."""
    stack["redis"].stop()
    r = probe(stack["env"], "app.cli", "worker", "--alive")
    assert r.returncode == 0 and "unknown" in r.stdout, r.stdout + r.stderr
    assert os.path.exists(f"/proc/{stack['worker'].pid}")
