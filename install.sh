#!/usr/bin/env bash
# Install, upgrade or remove cased-agent with kubectl (docs/deploy.md).
#
#   CASED_API_KEY=... ./install.sh --cluster-id prod-eu-1
#   ./install.sh --cluster-id prod-eu-1 --dry-run      # print, apply nothing
#   ./install.sh --uninstall
#
# Applies deploy/kubernetes/ (next to this script) with `kubectl apply`, so
# running it again is an upgrade and changes only what changed. The API key
# goes to the Secret `cased-agent` through kubectl's standard input: it never
# appears in a command line, a file or the output.
set -euo pipefail

readonly NAMESPACE=cased-system
readonly NAME=cased-agent
readonly SECRET_KEY=api-key

usage() {
    cat <<'EOF'
Usage: install.sh [options]

Installs (or upgrades) cased-agent in the namespace cased-system.

Options:
  --cluster-id ID    cluster identifier sent with every metric (required to
                     install; or CASED_CLUSTER_ID). Letters, digits, . _ -
  --api-key KEY      Cased API key (or CASED_API_KEY, which keeps it out of
                     the process list). Optional on upgrade: the existing
                     Secret is kept.
  --image REF        container image (default: the one in the manifests)
  --enable-ebpf      deploy the eBPF variant (HTTP tracing; adds the BPF,
                     PERFMON and SYS_RESOURCE capabilities)
  --context NAME     kubectl context to use (default: the current one)
  --dry-run          print what would be applied (API key redacted); calls
                     no kubectl
  --uninstall        delete everything the install created
  -h, --help         this text
EOF
}

die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit 1
}

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
manifests="$script_dir/deploy/kubernetes"

api_key=${CASED_API_KEY:-}
cluster_id=${CASED_CLUSTER_ID:-}
image=""
ebpf=false
context=""
dry_run=false
uninstall=false

while [ $# -gt 0 ]; do
    case "$1" in
        --cluster-id) [ $# -ge 2 ] || die "--cluster-id needs a value"; cluster_id=$2; shift 2 ;;
        --cluster-id=*) cluster_id=${1#*=}; shift ;;
        --api-key) [ $# -ge 2 ] || die "--api-key needs a value"; api_key=$2; shift 2 ;;
        --api-key=*) api_key=${1#*=}; shift ;;
        --image) [ $# -ge 2 ] || die "--image needs a value"; image=$2; shift 2 ;;
        --image=*) image=${1#*=}; shift ;;
        --context) [ $# -ge 2 ] || die "--context needs a value"; context=$2; shift 2 ;;
        --context=*) context=${1#*=}; shift ;;
        --enable-ebpf) ebpf=true; shift ;;
        --dry-run) dry_run=true; shift ;;
        --uninstall) uninstall=true; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

[ -d "$manifests" ] || die "manifests not found at $manifests (run the script from a checkout of the repository)"

# Applied in this order; deleted in the reverse order.
daemonset=daemonset.yaml
if [ "$ebpf" = true ]; then
    daemonset=extras/daemonset-ebpf.yaml
fi
files=(namespace.yaml serviceaccount.yaml rbac.yaml networkpolicy.yaml "$daemonset")
for f in "${files[@]}"; do
    [ -f "$manifests/$f" ] || die "missing manifest $manifests/$f"
done

kubectl_args=()
if [ -n "$context" ]; then
    kubectl_args+=(--context "$context")
fi

kube() {
    kubectl "${kubectl_args[@]+"${kubectl_args[@]}"}" "$@"
}

# kubectl present and the API server answering, or a clear message.
check_cluster() {
    command -v kubectl >/dev/null 2>&1 ||
        die "kubectl not found on PATH: install it (https://kubernetes.io/docs/tasks/tools/), or run with --dry-run to see the manifests"
    local err
    if ! err=$(kube get --raw=/version --request-timeout=15s 2>&1 >/dev/null); then
        local ctx=${context:-$(kubectl config current-context 2>/dev/null || echo none)}
        die "cannot reach the Kubernetes API server (context: $ctx): ${err%%$'\n'*}"
    fi
}

# The objects, with the cluster id (and image) filled in.
render() {
    local f first=true
    for f in "${files[@]}"; do
        if [ "$first" = true ]; then first=false; else printf -- '---\n'; fi
        awk -v id="$cluster_id" -v img="$image" '
            /^ *- name: CASED_CLUSTER_ID$/ { print; found = 1; getline; sub(/value: .*/, "value: \"" id "\""); print; next }
            img != "" && /^ *image: / { sub(/image: .*/, "image: \"" img "\"") }
            { print }
            END { if (FILENAME ~ /daemonset/ && !found) exit 3 }
        ' "$manifests/$f" || die "could not set the cluster id in $f"
    done
}

# The Secret; $1 is the data value (base64 of the key, or a redaction).
secret_yaml() {
    cat <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: $NAME
  namespace: $NAMESPACE
  labels:
    app.kubernetes.io/name: cased-agent
    app.kubernetes.io/instance: $NAME
type: Opaque
data:
  $SECRET_KEY: $1
EOF
}

if [ "$uninstall" = true ]; then
    if [ "$dry_run" = true ]; then
        echo "# would delete (kubectl delete --ignore-not-found), in this order:"
        for ((i = ${#files[@]} - 1; i >= 0; i--)); do
            awk '/^kind: /{k=$2} /^  name: /{ if (k) { print "#   " k "/" $2; k="" } }' "$manifests/${files[$i]}"
        done
        echo "#   and with the namespace: the Secret $NAME and the leader-election Lease"
        exit 0
    fi
    check_cluster
    for ((i = ${#files[@]} - 1; i >= 0; i--)); do
        kube delete --ignore-not-found --wait=false -f "$manifests/${files[$i]}"
    done
    echo "cased-agent removed (the namespace $NAMESPACE is being deleted with its Secret and Lease)."
    exit 0
fi

[ -n "$cluster_id" ] || die "a cluster id is required: --cluster-id ID (or CASED_CLUSTER_ID)"
[[ "$cluster_id" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$ ]] ||
    die "invalid cluster id '$cluster_id': use letters, digits, '.', '_' and '-' (at most 253)"
if [ -n "$image" ]; then
    [[ "$image" =~ ^[A-Za-z0-9][A-Za-z0-9._/:@-]*$ ]] || die "invalid image reference '$image'"
fi

if [ "$dry_run" = true ]; then
    render
    printf -- '---\n'
    if [ -n "$api_key" ]; then
        secret_yaml "\"<redacted: ${#api_key} bytes, from --api-key or CASED_API_KEY>\""
    else
        echo "# Secret $NAMESPACE/$NAME: unchanged (no --api-key or CASED_API_KEY given; it must exist already)"
    fi
    exit 0
fi

# Rendered before anything is applied: a failure here applies nothing.
manifest=$(render)

check_cluster

if [ -z "$api_key" ] && ! kube -n "$NAMESPACE" get secret "$NAME" -o name >/dev/null 2>&1; then
    die "no API key: pass --api-key KEY or set CASED_API_KEY (the Secret $NAMESPACE/$NAME does not exist yet)"
fi

kube apply -f "$manifests/namespace.yaml"
secret_changed=false
if [ -n "$api_key" ]; then
    # Through stdin only: the key is in no argument list and no file.
    out=$(secret_yaml "$(printf '%s' "$api_key" | base64 | tr -d '\n')" | kube apply -f -)
    echo "$out"
    case "$out" in *configured*) secret_changed=true ;; esac
fi
printf '%s\n' "$manifest" | kube apply -f -
if [ "$secret_changed" = true ]; then
    # Pods read the key at start: restart them so they use the new one.
    kube -n "$NAMESPACE" rollout restart "daemonset/$NAME"
fi

cat <<EOF

cased-agent is deployed in the namespace $NAMESPACE (cluster id: $cluster_id).
  kubectl -n $NAMESPACE rollout status daemonset/$NAME
  kubectl -n $NAMESPACE logs -l app.kubernetes.io/name=cased-agent --tail=20
EOF
