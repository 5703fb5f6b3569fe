"""The plain manifests and the chart: generated from one source, valid for
every supported Kubernetes version, least privilege."""

from __future__ import annotations

import base64
import kubernetes_validate
import pytest

import helm
from conftest import (
    K8S_VERSIONS,
    PLAIN,
    by_key,
    container,
    env_of,
    load_docs,
    only,
    plain_objects,
    rendered,
)

EBPF = {"config": {"enableEbpf": True}}
EVERYTHING = {
    "createNamespace": True,
    "apiKey": {"value": "k-123"},
    "config": {
        "enableEbpf": True,
        "enableOtel": True,
        "bufferPath": "/var/lib/cased-agent",
        "sink": "cased",
        "nodeName": "node-a",
        "namespace": "observability",
        "once": True,
    },
    "otlpService": {"enabled": True},
    "imagePullSecrets": [{"name": "regcred"}],
}


# ---------------------------------------------------------------- one source


def test_plain_files_are_exactly_the_charts_rendering():
    expected = helm.plain_expected()
    on_disk = {str(p.relative_to(PLAIN)) for p in PLAIN.rglob("*.yaml")}
    assert on_disk == set(expected), "deploy/kubernetes has files the chart does not generate"
    for rel, text in expected.items():
        assert (PLAIN / rel).read_text() == text, (
            f"deploy/kubernetes/{rel} differs from the chart: "
            "run `python3 tests/deploy/helm.py --write-plain`"
        )


def test_default_rendering_equals_plain_manifests_object_by_object(plain):
    kinds = sorted(o["kind"] for o in plain)
    assert kinds == sorted(
        ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
         "RoleBinding", "NetworkPolicy", "DaemonSet"]
    )
    want = by_key(plain)
    # helm installs into an existing namespace (or --create-namespace) by default
    got = by_key(rendered())
    assert set(got) == {k for k in want if k[0] != "Namespace"}
    for k, obj in got.items():
        assert obj == want[k], f"{k} differs between the chart and deploy/kubernetes"
    got = by_key(rendered({"createNamespace": True}))
    assert set(got) == set(want)
    for k, obj in got.items():
        assert obj == want[k], k


def test_ebpf_variant_differs_from_default_only_where_ebpf_needs():
    base = only(plain_objects(), "DaemonSet")
    ebpf = only(load_docs(PLAIN / "extras" / "daemonset-ebpf.yaml"), "DaemonSet")
    c0 = base["spec"]["template"]["spec"]["containers"][0]
    c1 = ebpf["spec"]["template"]["spec"]["containers"][0]
    assert env_of(c1)["ENABLE_EBPF"]["value"] == "true"
    assert env_of(c0)["ENABLE_EBPF"]["value"] == "false"
    added = set(c1["securityContext"]["capabilities"]["add"]) - set(c0["securityContext"]["capabilities"]["add"])
    assert added == {"BPF", "PERFMON", "SYS_RESOURCE", "SYS_CHROOT"}
    mounts = {m["name"] for m in c1["volumeMounts"]} - {m["name"] for m in c0["volumeMounts"]}
    assert mounts == {"host-btf", "host-tracefs"}


# ---------------------------------------------------------------- schemas


def _variants():
    yield "plain", plain_objects(include_extras=True)
    yield "chart-default", rendered()
    yield "chart-everything", rendered(EVERYTHING)
    yield "chart-existing-secret", rendered({"apiKey": {"existingSecret": "mine", "value": "x"}})


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_strictly(version):
    count = 0
    for name, objs in _variants():
        for obj in objs:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']} invalid for {version}: {e.message} at {list(e.path)}")
            count += 1
    assert count >= 30


def test_versions_reach_the_newest_schema_shipped():
    newest = kubernetes_validate.latest_version().split(".")[:2]
    assert K8S_VERSIONS[-1].split(".")[:2] == newest, f"kubernetes-validate knows {newest}: add it"


def test_schema_validation_catches_a_broken_object():
    ds = only(rendered(), "DaemonSet")
    ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSIONS[0], strict=True)
    ds = only(rendered(), "DaemonSet")
    ds["spec"]["template"]["spec"]["hostPid"] = True  # misspelt: strict rejects it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSIONS[0], strict=True)


# ---------------------------------------------------------------- RBAC


def _rules(obj):
    return {
        (g, r, v)
        for rule in obj["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_cluster_role_grants_exactly_what_the_agent_uses(plain):
    assert _rules(only(plain, "ClusterRole")) == {
        ("", "pods", "get"), ("", "pods", "list"), ("", "pods", "watch"),
        ("events.k8s.io", "events", "list"), ("events.k8s.io", "events", "watch"),
        ("apps", "replicasets", "get"),
        ("batch", "jobs", "get"),
    }


def test_leases_only_in_the_agents_namespace(plain):
    role = only(plain, "Role")
    assert role["metadata"]["namespace"] == "cased-system"
    assert _rules(role) == {
        ("coordination.k8s.io", "leases", v) for v in ("get", "list", "watch", "create", "update")
    }
    assert not any("leases" in r for _, r, _ in _rules(only(plain, "ClusterRole")))


def test_bindings_bind_the_agents_service_account(plain):
    sa = only(plain, "ServiceAccount")
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        b = only(plain, kind)
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": "cased-agent"}
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "cased-system"}]
    ds = only(plain, "DaemonSet")
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_lease_namespace_follows_the_namespace_flag():
    objs = rendered({"config": {"namespace": "observability"}})
    assert only(objs, "Role")["metadata"]["namespace"] == "observability"
    assert only(objs, "RoleBinding")["metadata"]["namespace"] == "observability"
    assert env_of(container(objs))["POD_NAMESPACE"] == {"name": "POD_NAMESPACE", "value": "observability"}


# ---------------------------------------------------------------- DaemonSet


def test_daemonset_pod_shape(plain):
    ds = only(plain, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert pod["hostNetwork"] is False
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    c = pod["containers"][0]
    env = env_of(c)
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["CASED_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "cased-agent", "key": "api-key"}}
    assert "value" not in env["CASED_API_KEY"]
    assert env["CASED_CLUSTER_ID"]["value"] == ""  # install.sh fills it in
    assert c["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }
    assert pod["terminationGracePeriodSeconds"] > 10  # > the 10 s shutdown grace


def test_security_context_is_least_privilege(plain):
    c = container(plain)
    sc = c["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsUser"] == 0
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sorted(sc["capabilities"]["add"]) == ["DAC_READ_SEARCH", "SYS_PTRACE"]
    sc = container(rendered(EBPF))["securityContext"]
    assert sorted(sc["capabilities"]["add"]) == ["BPF", "DAC_READ_SEARCH", "PERFMON", "SYS_CHROOT", "SYS_PTRACE", "SYS_RESOURCE"]


def test_host_mounts_are_read_only_and_match_the_path_flags():
    for objs in (plain_objects(), rendered(EBPF)):
        ds = only(objs, "DaemonSet")
        pod = ds["spec"]["template"]["spec"]
        c = pod["containers"][0]
        env = env_of(c)
        host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert set(host) == set(mounts)
        for name, m in mounts.items():
            assert m.get("readOnly") is True, f"{name} must be read-only"
        assert host["host-proc"] == "/proc"
        assert mounts["host-proc"]["mountPath"] == env["PROC_PATH"]["value"] == "/host/proc"
        assert host["host-cgroup"] == "/sys/fs/cgroup"
        assert mounts["host-cgroup"]["mountPath"] == env["CGROUP_PATH"]["value"] == "/host/sys/fs/cgroup"
        assert mounts["host-cgroup"]["mountPropagation"] == "HostToContainer"
    mounts = {m["name"]: m["mountPath"] for m in container(rendered(EBPF))["volumeMounts"]}
    assert mounts["host-btf"] == "/sys/kernel/btf"
    assert mounts["host-tracefs"] == "/sys/kernel/tracing"


def test_probes_use_the_health_port(plain):
    c = container(plain)
    port = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port == {"health": 8080}
    assert env_of(c)["HEALTH_PORT"]["value"] == "8080"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert c["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    np = only(plain, "NetworkPolicy")
    assert np["spec"]["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]
    assert np["spec"]["podSelector"]["matchLabels"] == only(plain, "DaemonSet")["spec"]["selector"]["matchLabels"]


def test_health_port_value_moves_port_probe_target_and_policy():
    objs = rendered({"config": {"healthPort": 9090}})
    c = container(objs)
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"health": 9090}
    assert env_of(c)["HEALTH_PORT"]["value"] == "9090"
    assert only(objs, "NetworkPolicy")["spec"]["ingress"][0]["ports"] == [{"port": 9090, "protocol": "TCP"}]


# ---------------------------------------------------------------- chart options


def test_api_key_value_creates_the_secret():
    objs = rendered({"apiKey": {"value": "k-123"}})
    s = only(objs, "Secret")
    assert s["metadata"] == {
        "name": "cased-agent", "namespace": "cased-system",
        "labels": {"app.kubernetes.io/name": "cased-agent", "app.kubernetes.io/instance": "cased-agent"},
    }
    assert base64.b64decode(s["data"]["api-key"]) == b"k-123"
    assert env_of(container(objs))["CASED_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "cased-agent", "key": "api-key"}
    assert not [o for o in rendered() if o["kind"] == "Secret"]


def test_existing_secret_is_referenced_not_created():
    objs = rendered({"apiKey": {"existingSecret": "mine", "secretKey": "token", "value": "ignored"}})
    assert not [o for o in objs if o["kind"] == "Secret"]
    assert env_of(container(objs))["CASED_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "mine", "key": "token"}


def test_buffer_path_mounts_a_writable_host_directory():
    objs = rendered({"config": {"bufferPath": "/var/lib/cased-agent/buffer"}})
    c = container(objs)
    assert env_of(c)["CASED_BUFFER_PATH"]["value"] == "/var/lib/cased-agent/buffer"
    m = {m["name"]: m for m in c["volumeMounts"]}["buffer"]
    assert m == {"name": "buffer", "mountPath": "/var/lib/cased-agent/buffer"}
    v = {v["name"]: v for v in only(objs, "DaemonSet")["spec"]["template"]["spec"]["volumes"]}["buffer"]
    assert v["hostPath"] == {"path": "/var/lib/cased-agent", "type": "DirectoryOrCreate"}
    assert "CASED_BUFFER_PATH" not in env_of(container(rendered()))


def test_otel_opens_ports_service_and_policy():
    objs = rendered({"config": {"enableOtel": True}, "otlpService": {"enabled": True}})
    c = container(objs)
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"health": 8080, "otlp-grpc": 4317, "otlp-http": 4318}
    svc = only(objs, "Service")
    assert svc["spec"]["internalTrafficPolicy"] == "Local"
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == {"otlp-grpc", "otlp-http"}
    assert svc["spec"]["selector"] == only(objs, "DaemonSet")["spec"]["selector"]["matchLabels"]
    ports = [p["port"] for p in only(objs, "NetworkPolicy")["spec"]["ingress"][0]["ports"]]
    assert ports == [8080, 4317, 4318]


def test_release_name_and_namespace_are_used_everywhere():
    objs = rendered({"createNamespace": True}, release="agent2", namespace="mon")
    for o in objs:
        md = o["metadata"]
        if o["kind"] == "Namespace":
            assert md["name"] == "mon"
            continue
        assert md["name"] == "agent2"
        if o["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert md["namespace"] == "mon"
    assert env_of(container(objs))["CASED_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "agent2"
