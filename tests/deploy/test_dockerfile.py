"""The image recipe, checked where it can be without a Docker engine:
hadolint lints the Dockerfile, and its build step (the crt-static release
build) runs here exactly as written, with the binary then run `--once`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, in_ci

DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    venv_bin = Path(os.sys.executable).parent
    found = venv_bin / "hadolint"
    if found.exists():
        return str(found)
    which = shutil.which("hadolint")
    if not which:
        pytest.fail("hadolint is not installed: run tests/deploy/run.sh")
    return which


def build_step() -> str:
    """The shell of the build stage's RUN, without its BuildKit mount flags."""
    text = DOCKERFILE.read_text()
    joined = re.sub(r"\\\n", " ", text)
    runs = [l for l in joined.splitlines() if l.startswith("RUN ") and "cargo build" in l]
    assert len(runs) == 1, runs
    body = runs[0][len("RUN ") :]
    body = re.sub(r"--mount=\S+\s+", "", body).strip()
    return body


def test_hadolint_clean():
    out = subprocess.run([_hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_build_step_is_the_static_release_build():
    step = build_step()
    assert 'RUSTFLAGS="-C target-feature=+crt-static"' in step
    assert "cargo build --release --locked --target" in step
    assert "/out/cased-agent --version" in step


def test_static_build_as_the_dockerfile_does_runs_once(tmp_path):
    if not in_ci() and os.environ.get("CASED_STATIC_BUILD") != "1":
        pytest.skip("the static release build runs under CI=true (or CASED_STATIC_BUILD=1)")
    out_dir = tmp_path / "out"
    step = build_step().replace("/out/", f"{out_dir}/")
    env = {k: v for k, v in os.environ.items() if k not in ("CARGO_TARGET_DIR", "RUSTFLAGS")}
    # the stage's SHELL: bash -o pipefail -c
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", step], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=3000,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    exe = out_dir / "cased-agent"
    assert exe.exists()
    ldd = subprocess.run(["ldd", str(exe)], capture_output=True, text=True)
    assert "not a dynamic executable" in ldd.stdout + ldd.stderr or "statically linked" in ldd.stdout, ldd.stdout
    run = subprocess.run(
        [str(exe), "--once", "--sink", "stdout"], capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert run.returncode == 0, run.stderr
    assert '"node.memory.total"' in run.stdout
    assert '"node.cpu.usage_percent"' in run.stdout
