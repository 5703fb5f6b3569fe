"""Real Helm lints and renders the chart; real kubectl takes the plain
manifests (`apply --dry-run=client`) against a stand-in API server that
serves recorded-shape discovery documents and knows no objects."""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import helm
from conftest import CHART, PLAIN, plain_objects

# group/version -> [(resource, kind, namespaced)]: what the manifests use
RESOURCES = {
    "v1": [
        ("namespaces", "Namespace", False),
        ("serviceaccounts", "ServiceAccount", True),
        ("secrets", "Secret", True),
        ("services", "Service", True),
    ],
    "apps/v1": [("daemonsets", "DaemonSet", True)],
    "rbac.authorization.k8s.io/v1": [
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
        ("roles", "Role", True),
        ("rolebindings", "RoleBinding", True),
    ],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True)],
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def discovery(path: str) -> dict | None:
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if path == "/apis":
        groups = []
        for gv in RESOURCES:
            if "/" in gv:
                g, v = gv.split("/")
                ver = {"groupVersion": gv, "version": v}
                groups.append({"name": g, "versions": [ver], "preferredVersion": ver})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    gv = path.removeprefix("/api/").removeprefix("/apis/")
    if gv in RESOURCES:
        res = [
            {"name": r, "singularName": "", "namespaced": ns, "kind": k, "verbs": VERBS}
            for r, k, ns in RESOURCES[gv]
        ]
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": res}
    return None


class Handler(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        path = self.path.split("?")[0]
        Handler.seen.append(path)
        body = discovery(path)
        if body is None:
            body = {
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "NotFound", "code": 404, "message": f"{path} not found",
            }
            code = 404
        else:
            code = 200
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    d = tmp_path_factory.mktemp("kube")
    cfg = d / "config"
    cfg.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters: [{{name: fake, cluster: {{server: 'http://127.0.0.1:{srv.server_port}'}}}}]\n"
        "contexts: [{name: fake, context: {cluster: fake, user: u}}]\nusers: [{name: u, user: {}}]\n"
    )
    yield cfg
    srv.shutdown()


def test_helm_lint_strict_passes():
    out = subprocess.run(
        [helm.tool("helm"), "lint", "--strict", str(CHART)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


def test_helm_lint_catches_a_broken_template(tmp_path):
    chart = tmp_path / "chart"
    subprocess.run(["cp", "-r", str(CHART), str(chart)], check=True)
    (chart / "templates" / "broken.yaml").write_text("kind: {{ .Values.nope.deeper }\n")
    out = subprocess.run(
        [helm.tool("helm"), "lint", "--strict", str(chart)], capture_output=True, text=True
    )
    assert out.returncode != 0


def test_kubectl_takes_every_plain_manifest(apiserver):
    env = {"KUBECONFIG": str(apiserver), "PATH": "/usr/bin:/bin", "HOME": str(apiserver.parent)}
    files = sorted(PLAIN.glob("*.yaml")) + sorted((PLAIN / "extras").glob("*.yaml"))
    for f in files:
        # schemas are checked by kubernetes-validate (test_manifests): the
        # stand-in serves no OpenAPI, so kubectl's own validation is off
        out = subprocess.run(
            [helm.tool("kubectl"), "apply", "--dry-run=client", "--validate=false", "-f", str(f)],
            capture_output=True, text=True, env=env, timeout=60,
        )
        assert out.returncode == 0, f"{f.name}: {out.stderr}"
        created = [l for l in out.stdout.splitlines() if l.endswith("created (dry run)")]
        kinds = [o["kind"] for o in plain_objects(include_extras=True) if o]
        assert created, out.stdout
        for line in created:
            assert line.split("/")[0].split(".")[0] in {k.lower() for k in kinds}, line


def test_kubectl_refuses_an_unknown_kind(apiserver, tmp_path):
    env = {"KUBECONFIG": str(apiserver), "PATH": "/usr/bin:/bin", "HOME": str(apiserver.parent)}
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: NoSuchKind\nmetadata:\n  name: x\n")
    out = subprocess.run(
        [helm.tool("kubectl"), "apply", "--dry-run=client", "--validate=false", "-f", str(bad)],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert out.returncode != 0
    assert "NoSuchKind" in out.stderr
