"""The deployment files cannot be run here (no container engine); check that they parse and agree with the code."""

import re
from pathlib import Path

import yaml

from app.cli import build_parser
from app.config import Settings

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {f"SRGAN_{name.upper()}" for name in Settings.model_fields} | {"SRGAN_WEIGHTS_DIR"}


def _commands() -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return set(sub.choices)


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_compose_services_run_real_commands_with_real_settings():
    compose = _docs(REPO / "docker-compose.yml")[0]
    services = compose["services"]
    assert {"redis", "gateway", "worker"} <= set(services)
    for name, svc in services.items():
        if name == "redis":
            assert "--appendonly" in svc["command"]
            continue
        assert svc["command"][0] == "srgan" and svc["command"][1] in _commands()
        assert set(svc["environment"]) <= SETTINGS


def test_kubernetes_manifests_parse_and_use_real_settings():
    kinds = []
    k8s = REPO / "deploy" / "k8s"
    for path in sorted(p for p in k8s.glob("*.yaml") if p.name != "kustomization.yaml"):
        for doc in _docs(path):
            kinds.append(doc["kind"])
            if doc["kind"] == "ConfigMap":
                assert set(doc["data"]) <= SETTINGS
            if doc["kind"] in ("Deployment", "StatefulSet"):
                for c in doc["spec"]["template"]["spec"]["containers"]:
                    if c.get("args", [""])[0] == "srgan":
                        assert c["args"][1] in _commands()
    assert {"Deployment", "StatefulSet", "Service", "ConfigMap"} <= set(kinds)
    listed = _docs(k8s / "kustomization.yaml")[0]["resources"]
    assert all((k8s / r).exists() for r in listed)


def test_dockerfile_default_command_exists():
    cmd = re.search(r'^CMD \["srgan", "(\w+)"\]', (REPO / "Dockerfile").read_text(), re.M)
    assert cmd and cmd.group(1) in _commands()
