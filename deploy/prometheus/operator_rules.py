"""Write the Prometheus Operator's copy of the rules, ``deploy/k8s/components/monitoring/prometheus-rule.yaml``,
from ``deploy/prometheus/rules.yml`` (their one home):

    python deploy/prometheus/operator_rules.py

``tests/test_prometheus.py`` fails when the two differ.
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "rules.yml"
TARGET = HERE.parent / "k8s" / "components" / "monitoring" / "prometheus-rule.yaml"


def render() -> str:
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "srgan"},
        "spec": yaml.safe_load(RULES.read_text()),
    }
    header = "# Generated from deploy/prometheus/rules.yml by deploy/prometheus/operator_rules.py: edit that file.\n"
    return header + yaml.safe_dump(rule, sort_keys=False, width=120)


if __name__ == "__main__":
    TARGET.write_text(render())
