"""Helpers for reading rendered Kubernetes manifests: lookups, quantities, a NetworkPolicy evaluator, and
schemas of the custom resources we ship (KEDA's ScaledObject, the Prometheus Operator's PodMonitor and
PrometheusRule), written from their documented fields since their CRDs are not available offline."""

from __future__ import annotations

import re

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def find(docs: list[dict], kind: str, name: str | None = None) -> dict:
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(hits) == 1, f"{len(hits)} {kind} {name or ''}"
    return hits[0]


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def pod_specs(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict) -> list[dict]:
    return pod_specs(workload)["containers"]


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def memory_bytes(q: str | int) -> float:
    """``3Gi``, ``512Mi``, ``2gb`` (Redis), ``60m`` (nginx sizes, megabytes) -> bytes."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([a-zA-Z]*)", str(q).strip())
    assert m, q
    unit = m.group(2)
    unit = {"gb": "g", "mb": "m", "kb": "k", "G": "g", "M": "m", "K": "k"}.get(unit, unit)
    return float(m.group(1)) * _UNITS[unit]


def cpu_cores(q: str | int) -> float:
    s = str(q)
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


def _selects(selector: dict | None, labels: dict) -> bool:
    """A label selector (``{}`` selects everything) applied to labels."""
    if selector is None:
        return False
    if not (selector.get("matchLabels") or {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions") or []:
        value, op = labels.get(expr["key"]), expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
    return True


def allowed(
    policies: list[dict], pod_labels: dict, pod_ns: str, src_labels: dict, src_ns_labels: dict, port: int
) -> bool:
    """Whether NetworkPolicies let a pod (labels, namespace labels) open ``port`` on a pod of ``pod_ns``.

    Kubernetes' rules: a pod selected by no Ingress policy takes everything; a selected one takes what any
    rule of any policy selecting it allows. A peer with only podSelector means the policy's own namespace.
    """
    relevant = [
        p
        for p in policies
        if p["metadata"].get("namespace") == pod_ns
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and _selects(p["spec"]["podSelector"], pod_labels)
    ]
    if not relevant:
        return True
    same_ns = src_ns_labels.get("kubernetes.io/metadata.name") == pod_ns
    for p in relevant:
        for rule in p["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(pp.get("port") == port for pp in ports):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
                ns_ok = _selects(ns_sel, src_ns_labels) if ns_sel is not None else same_ns
                pod_ok = _selects(pod_sel, src_labels) if pod_sel is not None else True
                if "ipBlock" not in peer and ns_ok and pod_ok:
                    return True
    return False


def _object(properties: dict, required: list[str] = (), extra: bool = False) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": extra}


_STR = {"type": "string"}
_INT = {"type": "integer", "minimum": 0}
_META = _object(
    {"name": _STR, "namespace": _STR, "labels": {"type": "object"}, "annotations": {"type": "object"}}, ["name"]
)

# KEDA 2.x ScaledObject (keda.sh/v1alpha1) and its redis trigger's metadata (keda.sh/docs/scalers/redis-lists).
_REDIS_TRIGGER_KEYS = {
    "address",
    "addressFromEnv",
    "host",
    "hostFromEnv",
    "port",
    "portFromEnv",
    "username",
    "usernameFromEnv",
    "passwordFromEnv",
    "listName",
    "listLength",
    "activationListLength",
    "databaseIndex",
    "enableTLS",
    "unsafeSsl",
}
SCALED_OBJECT = _object(
    {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": _META,
        "spec": _object(
            {
                "scaleTargetRef": _object(
                    {"name": _STR, "kind": _STR, "apiVersion": _STR, "envSourceContainerName": _STR}, ["name"]
                ),
                "pollingInterval": _INT,
                "cooldownPeriod": _INT,
                "initialCooldownPeriod": _INT,
                "idleReplicaCount": _INT,
                "minReplicaCount": _INT,
                "maxReplicaCount": _INT,
                "fallback": {"type": "object"},
                "advanced": {"type": "object"},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": _object(
                        {
                            "type": {"const": "redis"},
                            "name": _STR,
                            "metadata": {
                                "type": "object",
                                "additionalProperties": _STR,  # every value a string
                                "propertyNames": {"enum": sorted(_REDIS_TRIGGER_KEYS)},
                                "required": ["listName"],
                            },
                            "authenticationRef": _object({"name": _STR}, ["name"]),
                        },
                        ["type", "metadata"],
                    ),
                },
            },
            ["scaleTargetRef", "triggers"],
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)

_RELABEL = _object(
    {
        "action": _STR,
        "sourceLabels": {"type": "array"},
        "targetLabel": _STR,
        "replacement": _STR,
        "regex": _STR,
        "separator": _STR,
    }
)
POD_MONITOR = _object(
    {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": _META,
        "spec": _object(
            {
                "selector": {"type": "object"},
                "namespaceSelector": {"type": "object"},
                "jobLabel": _STR,
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": _object(
                        {
                            "port": _STR,
                            "path": _STR,
                            "interval": {"type": "string", "pattern": r"^\d+(ms|s|m|h)$"},
                            "scrapeTimeout": _STR,
                            "relabelings": {"type": "array", "items": _RELABEL},
                            "metricRelabelings": {"type": "array", "items": _RELABEL},
                        },
                        ["port"],
                    ),
                },
            },
            ["selector", "podMetricsEndpoints"],
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)
_RULE = {
    "oneOf": [
        _object({"record": _STR, "expr": _STR, "labels": {"type": "object"}}, ["record", "expr"]),
        _object(
            {"alert": _STR, "expr": _STR, "for": _STR, "labels": {"type": "object"}, "annotations": {"type": "object"}},
            ["alert", "expr"],
        ),
    ]
}
PROMETHEUS_RULE = _object(
    {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _META,
        "spec": _object(
            {
                "groups": {
                    "type": "array",
                    "items": _object(
                        {"name": _STR, "interval": _STR, "rules": {"type": "array", "items": _RULE}}, ["name", "rules"]
                    ),
                }
            },
            ["groups"],
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)
CRD_SCHEMAS = {"ScaledObject": SCALED_OBJECT, "PodMonitor": POD_MONITOR, "PrometheusRule": PROMETHEUS_RULE}
