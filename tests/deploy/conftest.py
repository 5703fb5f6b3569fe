"""Shared helpers of the deployment tests (tests/deploy, run by run.sh)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import helm  # noqa: E402

PLAIN = ROOT / "deploy" / "kubernetes"
CHART = ROOT / "deploy" / "helm" / "cased-agent"

# The Kubernetes minor versions the manifests must validate against: the
# chart's kubeVersion floor (1.30) up to the newest schema kubernetes-validate
# ships (checked in test_manifests so a newer release is noticed).
K8S_VERSIONS = ["1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0"]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def plain_objects(include_extras: bool = False) -> list[dict[str, Any]]:
    files = sorted(PLAIN.glob("*.yaml"))
    if include_extras:
        files += sorted((PLAIN / "extras").glob("*.yaml"))
    return [o for f in files for o in load_docs(f)]


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    md = obj.get("metadata", {})
    return (obj["kind"], md.get("namespace", ""), md["name"])


def by_key(objs: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for o in objs:
        k = key(o)
        assert k not in out, f"duplicate object {k}"
        out[k] = o
    return out


def rendered(overrides: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
    return helm.objects(helm.render(overrides, **kw))


def only(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    ds = only(objs, "DaemonSet")
    cs = ds["spec"]["template"]["spec"]["containers"]
    assert len(cs) == 1
    return cs[0]


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for e in c.get("env", []):
        assert e["name"] not in out, f"duplicate env {e['name']}"
        out[e["name"]] = e
    return out


@pytest.fixture(scope="session")
def plain() -> list[dict[str, Any]]:
    return plain_objects()
