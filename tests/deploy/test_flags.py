"""The DaemonSet and the chart against the binary's real flags, read from
`cased-agent --help` (clap prints `[env: NAME=...]` and `[default: ...]`), so
the manifests cannot drift from src/config.rs."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import CHART, ROOT, container, env_of, in_ci, load_docs, only, plain_objects, rendered

FLAG_LINE = re.compile(r"^\s+(?:-[A-Za-z], )?--([a-z0-9][a-z0-9-]*)")
ENV = re.compile(r"\[env: ([A-Z0-9_]+)")
DEFAULT = re.compile(r"\[default: ([^\]]*)\]")
NOT_CONFIG = {"help", "version"}
# Where the chart's default differs from the binary's, and why.
DEPLOY_DEFAULTS = {
    "proc-path": "/host/proc",  # the host's /proc is mounted there
    "cgroup-path": "/host/sys/fs/cgroup",  # the host's cgroup tree is mounted there
    "namespace": "",  # empty: the pod's own namespace, from the downward API
    "ebpf-tls": False,  # opt-in in the chart: it adds CAP_SYS_ADMIN (docs/deploy.md)
}


def _binary() -> Path:
    if os.environ.get("CASED_AGENT_BIN"):
        return Path(os.environ["CASED_AGENT_BIN"])
    p = subprocess.run(
        ["cargo", "build", "--quiet", "--bin", "cased-agent"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert p.returncode == 0, f"cargo build failed:\n{p.stderr[-3000:]}"
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    if not target.is_absolute():
        target = ROOT / target
    return target / "debug" / "cased-agent"


@pytest.fixture(scope="module")
def flags() -> dict[str, dict]:
    """flag name -> {"env": NAME or None, "default": text or None}."""
    exe = _binary()
    p = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    out: dict[str, dict] = {}
    current = None
    for line in (p.stdout + p.stderr).splitlines():
        m = FLAG_LINE.match(line)
        if m:
            current = m.group(1)
            out[current] = {"env": None, "default": None}
        if current:
            if e := ENV.search(line):
                out[current]["env"] = e.group(1)
            if d := DEFAULT.search(line):
                out[current]["default"] = d.group(1)
    for n in NOT_CONFIG:
        out.pop(n, None)
    if not out:
        why = f"{exe} --help lists no flags (exit {p.returncode}; is src/main.rs still a stub?)"
        if in_ci():
            pytest.fail(why)
        pytest.skip(why)
    return out


def _value_path(flag: str) -> list[str]:
    if flag == "api-key":
        return ["apiKey", "value"]
    head, *rest = flag.split("-")
    return ["config", head + "".join(w.capitalize() for w in rest)]


def _values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def _get(d: dict, path: list[str]):
    for p in path:
        assert isinstance(d, dict) and p in d, f"values.yaml has no {'.'.join(path)}"
        d = d[p]
    return d


def _nest(path: list[str], v) -> dict:
    out: dict = {}
    cur = out
    for p in path[:-1]:
        cur = cur.setdefault(p, {})
    cur[path[-1]] = v
    return out


def test_the_binary_has_the_flags_of_spec_section_2(flags):
    # A floor, not the list: the binary may grow flags, the manifests follow.
    spec = {
        "endpoint": "CASED_API_ENDPOINT", "api-key": "CASED_API_KEY", "cluster-id": "CASED_CLUSTER_ID",
        "node-name": "NODE_NAME", "interval": "CASED_INTERVAL", "batch-size": "CASED_BATCH_SIZE",
        "proc-path": "PROC_PATH", "cgroup-path": "CGROUP_PATH", "enable-ebpf": "ENABLE_EBPF",
        "enable-otel": "ENABLE_OTEL", "otel-port": "OTEL_PORT", "otel-grpc-port": "OTEL_GRPC_PORT",
        "health-port": "HEALTH_PORT", "sink": "CASED_SINK", "namespace": "POD_NAMESPACE",
        "buffer-path": "CASED_BUFFER_PATH", "buffer-max-bytes": "CASED_BUFFER_MAX_BYTES",
        "compression": "CASED_COMPRESSION", "log-format": "CASED_LOG_FORMAT",
    }
    for flag, env in spec.items():
        assert flag in flags and flags[flag]["env"] == env, flag
    assert "once" in flags and flags["once"]["env"] is None


def _daemonsets():
    yield "deploy/kubernetes/daemonset.yaml", only(plain_objects(), "DaemonSet")
    yield "deploy/kubernetes/extras/daemonset-ebpf.yaml", only(
        load_docs(ROOT / "deploy/kubernetes/extras/daemonset-ebpf.yaml"), "DaemonSet"
    )
    everything = {
        "apiKey": {"value": "x"},
        "config": {"sink": "stdout", "bufferPath": "/buf", "nodeName": "n", "namespace": "ns", "once": True,
                   "enableEbpf": True, "enableOtel": True},
    }
    yield "chart with every option", only(rendered(everything), "DaemonSet")


def test_every_env_var_and_arg_of_the_daemonsets_is_a_flag(flags):
    by_env = {f["env"]: n for n, f in flags.items() if f["env"]}
    seen_env: set[str] = set()
    seen_args: set[str] = set()
    for name, ds in _daemonsets():
        c = ds["spec"]["template"]["spec"]["containers"][0]
        for e in env_of(c):
            assert e in by_env, f"{name}: env {e} is not a flag of the binary"
            seen_env.add(e)
        for a in c.get("args", []) + c.get("command", [])[1:]:
            assert a.startswith("--") and a[2:].split("=")[0] in flags, f"{name}: arg {a} is not a flag"
            seen_args.add(a[2:].split("=")[0])
    # ...and every flag is reachable: by its variable, or (no variable) as an arg
    assert seen_env == set(by_env), set(by_env) ^ seen_env
    assert seen_args == {n for n, f in flags.items() if not f["env"]}


def test_every_flag_has_a_helm_value_and_nothing_else_is_in_config(flags):
    values = _values()
    for flag in flags:
        _get(values, _value_path(flag))
    config_keys = {"config." + k for k in values["config"]}
    assert config_keys == {".".join(_value_path(f)) for f in flags if f != "api-key"}


def test_chart_defaults_are_the_binarys_unless_the_pod_needs_otherwise(flags):
    values = _values()
    for flag, f in flags.items():
        v = _get(values, _value_path(flag))
        if flag in DEPLOY_DEFAULTS:
            assert v == DEPLOY_DEFAULTS[flag], flag
        elif f["default"] is not None:
            shown = str(v).lower() if isinstance(v, bool) else str(v)
            assert shown == f["default"], f"{flag}: chart {v!r}, binary {f['default']!r}"
        else:
            assert v in ("", False), f"{flag}: the binary has no default, the chart sets {v!r}"


def _sentinel(flag: str, current, i: int):
    if isinstance(current, bool):
        return not current
    if isinstance(current, int):
        return 20000 + i
    return f"sentinel-{flag}"


def test_each_helm_value_reaches_its_flag(flags):
    values = _values()
    for i, (flag, f) in enumerate(sorted(flags.items())):
        path = _value_path(flag)
        want = _sentinel(flag, _get(values, path), i)
        objs = rendered(_nest(path, want))
        c = container(objs)
        text = str(want).lower() if isinstance(want, bool) else str(want)
        if flag == "api-key":
            ref = env_of(c)[f["env"]]["valueFrom"]["secretKeyRef"]
            secret = only(objs, "Secret")
            assert secret["metadata"]["name"] == ref["name"]
            assert base64.b64decode(secret["data"][ref["key"]]).decode() == text
        elif f["env"]:
            assert env_of(c)[f["env"]].get("value") == text, f"{'.'.join(path)} does not reach {f['env']}"
        else:
            assert c.get("args") == [f"--{flag}"], flag
        # and without the change, the value is not there
        base = container(rendered())
        if f["env"] and flag != "api-key":
            assert env_of(base).get(f["env"], {}).get("value") != text
