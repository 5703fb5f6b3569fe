"""install.sh: shellcheck-clean, its --dry-run output, its errors, and the
kubectl calls it makes (against a recording stand-in for kubectl)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, by_key, env_of, only, plain_objects

INSTALL = ROOT / "install.sh"
KEY = "csk_live_Zm9vYmFyYmF6cXV1eA_not_real_7731"


@pytest.fixture(scope="module")
def no_kubectl_path(tmp_path_factory) -> str:
    """A PATH with every program of the current PATH except kubectl."""
    d = tmp_path_factory.mktemp("bin-without-kubectl")
    for entry in os.environ["PATH"].split(os.pathsep):
        p = Path(entry)
        if not p.is_dir():
            continue
        for exe in p.iterdir():
            if exe.name == "kubectl" or (d / exe.name).exists():
                continue
            if exe.is_file() and os.access(exe, os.X_OK):
                (d / exe.name).symlink_to(exe)
    assert not (d / "kubectl").exists() and (d / "awk").exists()
    return str(d)


FAKE_KUBECTL = r"""#!/usr/bin/env bash
# Records each call (argv on one line, stdin when -f -) and answers like kubectl.
log="$FAKE_KUBECTL_LOG"
printf '%s\n' "$*" >> "$log/calls"
n=$(wc -l < "$log/calls")
for a in "$@"; do
  if [ "$a" = "-" ]; then cat > "$log/stdin.$n"; fi
done
case "$*" in
  *"get --raw=/version"*)
    if [ -n "${FAKE_UNREACHABLE:-}" ]; then
      echo "The connection to the server 10.255.0.1:6443 was refused - did you specify the right host or port?" >&2
      exit 1
    fi
    echo '{"major":"1","minor":"33"}' ;;
  *"get secret"*) [ -n "${FAKE_SECRET_EXISTS:-}" ] || { echo 'Error from server (NotFound): secrets "cased-agent" not found' >&2; exit 1; } ;;
  *"apply -f -"*) if [ -n "${FAKE_CONFIGURED:-}" ] && grep -q 'kind: Secret' "$log/stdin.$n"; then echo "secret/cased-agent configured"; else echo "applied (fake)"; fi ;;
  *) echo "ok (fake)" ;;
esac
"""


@pytest.fixture()
def fake(tmp_path, no_kubectl_path):
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    k = bindir / "kubectl"
    k.write_text(FAKE_KUBECTL)
    k.chmod(0o755)
    log = tmp_path / "log"
    log.mkdir()

    class Fake:
        path = f"{bindir}{os.pathsep}{no_kubectl_path}"
        logdir = log

        def calls(self) -> list[str]:
            f = log / "calls"
            return f.read_text().splitlines() if f.exists() else []

        def stdin(self, n: int) -> str:
            return (log / f"stdin.{n}").read_text()

    return Fake()


def run(args, path, env=None, **kw):
    e = {"PATH": path, "HOME": os.environ.get("HOME", "/root")}
    e.update(env or {})
    return subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, env=e, timeout=60, **kw)


def fake_env(fake, **extra):
    e = {"FAKE_KUBECTL_LOG": str(fake.logdir)}
    e.update(extra)
    return e


# ---------------------------------------------------------------- lint


def test_shellcheck_clean():
    sc = shutil.which("shellcheck")
    assert sc, "shellcheck is not installed: run tests/deploy/run.sh (apt-get install shellcheck)"
    for script in (INSTALL, ROOT / "tests" / "deploy" / "run.sh"):
        p = subprocess.run([sc, "--severity=style", str(script)], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr


# ---------------------------------------------------------------- dry run


def _dry_objects(out: str):
    return [d for d in yaml.safe_load_all(out) if d]


def test_dry_run_prints_the_objects_with_the_cluster_id_and_no_key(no_kubectl_path):
    p = run(["--cluster-id", "prod-eu-1", "--dry-run"], no_kubectl_path, {"CASED_API_KEY": KEY})
    assert p.returncode == 0, p.stderr
    b64 = base64.b64encode(KEY.encode()).decode()
    for text in (p.stdout, p.stderr):
        assert KEY not in text and b64 not in text and KEY[:12] not in text
    objs = _dry_objects(p.stdout)
    secret = only(objs, "Secret")
    assert secret["metadata"]["name"] == "cased-agent" and secret["metadata"]["namespace"] == "cased-system"
    assert "redacted" in secret["data"]["api-key"]
    got = by_key([o for o in objs if o["kind"] != "Secret"])
    want = by_key(plain_objects())
    assert set(got) == set(want)
    for k, o in want.items():
        if k[0] == "DaemonSet":
            env = env_of(got[k]["spec"]["template"]["spec"]["containers"][0])
            assert env["CASED_CLUSTER_ID"] == {"name": "CASED_CLUSTER_ID", "value": "prod-eu-1"}
            env["CASED_CLUSTER_ID"]["value"] = ""
        assert got[k] == o, f"{k} differs from deploy/kubernetes"


def test_dry_run_with_api_key_flag_image_and_ebpf(no_kubectl_path):
    p = run(
        ["--dry-run", "--api-key", KEY, "--cluster-id=c1", "--image", "registry.example/cased-agent:1.2.3", "--enable-ebpf"],
        no_kubectl_path,
    )
    assert p.returncode == 0, p.stderr
    assert KEY not in p.stdout + p.stderr
    c = only(_dry_objects(p.stdout), "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "registry.example/cased-agent:1.2.3"
    assert "BPF" in c["securityContext"]["capabilities"]["add"]
    assert env_of(c)["ENABLE_EBPF"]["value"] == "true"
    assert env_of(c)["CASED_CLUSTER_ID"]["value"] == "c1"


def test_dry_run_without_a_key_keeps_the_secret(no_kubectl_path):
    p = run(["--dry-run", "--cluster-id", "c1"], no_kubectl_path)
    assert p.returncode == 0, p.stderr
    assert not [o for o in _dry_objects(p.stdout) if o["kind"] == "Secret"]
    assert "Secret cased-system/cased-agent: unchanged" in p.stdout


def test_dry_run_uninstall_lists_what_it_deletes(no_kubectl_path):
    p = run(["--uninstall", "--dry-run"], no_kubectl_path)
    assert p.returncode == 0, p.stderr
    lines = [ln.strip("# ").strip() for ln in p.stdout.splitlines()]
    assert lines.index("DaemonSet/cased-agent") < lines.index("Namespace/cased-system")
    for obj in ("ClusterRole/cased-agent", "ClusterRoleBinding/cased-agent", "Role/cased-agent", "ServiceAccount/cased-agent"):
        assert obj in lines


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dry-run"], "a cluster id is required"),
        (["--dry-run", "--cluster-id", "prod eu"], "invalid cluster id 'prod eu'"),
        (["--dry-run", "--cluster-id", 'x"; rm -rf /'], "invalid cluster id"),
        (["--dry-run", "--cluster-id", "c", "--image", "a b"], "invalid image reference"),
        (["--bogus"], "unknown option: --bogus"),
        (["--cluster-id"], "--cluster-id needs a value"),
    ],
)
def test_bad_arguments_are_named(no_kubectl_path, args, message):
    p = run(args, no_kubectl_path)
    assert p.returncode != 0
    assert message in p.stderr
    assert p.stdout.count("kind:") == 0


def test_without_kubectl_a_clear_error(no_kubectl_path):
    for args in (["--cluster-id", "c1"], ["--uninstall"]):
        p = run(args, no_kubectl_path, {"CASED_API_KEY": KEY})
        assert p.returncode == 1
        assert "kubectl not found on PATH" in p.stderr
        assert KEY not in p.stdout + p.stderr


def test_unreachable_cluster_a_clear_error(fake):
    p = run(["--cluster-id", "c1"], fake.path, fake_env(fake, CASED_API_KEY=KEY, FAKE_UNREACHABLE="1"))
    assert p.returncode == 1
    assert "cannot reach the Kubernetes API server" in p.stderr
    assert "was refused" in p.stderr
    assert not [c for c in fake.calls() if c.startswith("apply")]


def test_no_key_and_no_secret_is_refused(fake):
    p = run(["--cluster-id", "c1"], fake.path, fake_env(fake))
    assert p.returncode == 1
    assert "no API key" in p.stderr
    assert not [c for c in fake.calls() if "apply" in c]


# ---------------------------------------------------------------- the kubectl calls


def test_install_applies_namespace_secret_then_objects(fake):
    p = run(["--cluster-id", "prod-eu-1", "--context", "kind-test"], fake.path, fake_env(fake, CASED_API_KEY=KEY))
    assert p.returncode == 0, p.stderr
    calls = fake.calls()
    assert calls[0] == "--context kind-test get --raw=/version --request-timeout=15s"
    assert calls[1].startswith("--context kind-test apply -f ") and calls[1].endswith("deploy/kubernetes/namespace.yaml")
    assert calls[2:] == ["--context kind-test apply -f -", "--context kind-test apply -f -"]
    secret = yaml.safe_load(fake.stdin(3))
    assert secret["kind"] == "Secret"
    assert base64.b64decode(secret["data"]["api-key"]).decode() == KEY
    objs = [d for d in yaml.safe_load_all(fake.stdin(4)) if d]
    assert sorted(o["kind"] for o in objs) == sorted(
        ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "NetworkPolicy", "DaemonSet"]
    )
    env = env_of(only(objs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0])
    assert env["CASED_CLUSTER_ID"]["value"] == "prod-eu-1"
    # the key travels through stdin only
    assert not any(KEY in c for c in calls)
    assert KEY not in p.stdout + p.stderr
    assert "rollout restart" not in "\n".join(calls)


def test_running_again_is_the_same_apply(fake):
    env = fake_env(fake, CASED_API_KEY=KEY)
    assert run(["--cluster-id", "c1"], fake.path, env).returncode == 0
    first = fake.calls()
    assert run(["--cluster-id", "c1"], fake.path, env).returncode == 0
    assert fake.calls() == first + first
    assert fake.stdin(4) == fake.stdin(4 + len(first))


def test_a_changed_key_restarts_the_pods(fake):
    p = run(["--cluster-id", "c1"], fake.path, fake_env(fake, CASED_API_KEY=KEY, FAKE_CONFIGURED="1"))
    assert p.returncode == 0, p.stderr
    assert fake.calls()[-1] == "-n cased-system rollout restart daemonset/cased-agent"


def test_upgrade_without_a_key_keeps_the_existing_secret(fake):
    p = run(["--cluster-id", "c1"], fake.path, fake_env(fake, FAKE_SECRET_EXISTS="1"))
    assert p.returncode == 0, p.stderr
    calls = fake.calls()
    assert "-n cased-system get secret cased-agent -o name" in calls
    applied = [fake.stdin(i + 1) for i, c in enumerate(calls) if c.endswith("apply -f -")]
    assert len(applied) == 1 and "kind: Secret" not in applied[0]


def test_uninstall_deletes_in_reverse_order(fake):
    p = run(["--uninstall"], fake.path, fake_env(fake))
    assert p.returncode == 0, p.stderr
    deletes = [c.rsplit("/", 1)[-1] for c in fake.calls() if c.startswith("delete")]
    assert deletes == ["daemonset.yaml", "networkpolicy.yaml", "rbac.yaml", "serviceaccount.yaml", "namespace.yaml"]
    assert all("--ignore-not-found" in c for c in fake.calls() if c.startswith("delete"))
