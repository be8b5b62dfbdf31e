#!/usr/bin/env bash
# Deploy the shop to the current kubectl context, in order: namespace, database, the
# roles (a knative/overlays/<overlay> with the images of REGISTRY/TAG), mesh policy.
#
#   deploy.sh [--dry-run] [--overlay direct|eventing] [--database cnpg|single|none]
#
# Env: REGISTRY (e.g. docker.io/<user>) and TAG: the images `make push` pushed.
# --dry-run prints everything it would apply and needs no cluster.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
overlay=direct
database=cnpg
dry_run=false
while (($#)); do
  case "$1" in
    --dry-run) dry_run=true; shift ;;
    --overlay) overlay="${2:?--overlay needs a value}"; shift 2 ;;
    --database) database="${2:?--database needs a value}"; shift 2 ;;
    *) sed -n '5p' "$0" >&2; exit 2 ;;
  esac
done
: "${REGISTRY:?REGISTRY is not set (the registry you pushed to, e.g. docker.io/<user>)}"
: "${TAG:?TAG is not set (the tag you pushed)}"
[[ -d "$root/knative/overlays/$overlay" ]] || { echo "no overlay knative/overlays/$overlay" >&2; exit 2; }
case "$database" in cnpg | single | none) ;; *) echo "--database cnpg|single|none" >&2; exit 2 ;; esac
command -v kubectl >/dev/null || { echo "deploy needs kubectl (kustomize is built in)" >&2; exit 2; }

if ! $dry_run; then
  kubectl config current-context >/dev/null || {
    echo "no kubectl context: point kubectl at your cluster first" >&2
    exit 2
  }
  kubectl get crd services.serving.knative.dev >/dev/null || {
    echo "Knative Serving is not installed (docs/cluster.md)" >&2
    exit 2
  }
fi

# The overlay plus the images to run, in a kustomization under var/ (git ignores it),
# so the overlay is referenced by a relative path as kustomize requires.
mkdir -p "$root/var/deploy"
work="$(mktemp -d "$root/var/deploy/$overlay.XXXXXX")"
trap 'rm -rf "$work"' EXIT
{
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "resources:"
  echo "  - ../../../knative/overlays/$overlay"
  echo "images:"
  for role in dispatcher command-order order-db process-data stats-order-db query-order; do
    echo "  - name: cqrs-$role"
    echo "    newName: ${REGISTRY%/}/cqrs-$role"
    echo "    newTag: \"$TAG\""
  done
} >"$work/kustomization.yaml"

apply() {  # apply -k DIR: print or apply
  if $dry_run; then
    echo "---"
    kubectl kustomize "$1"
  else
    kubectl apply -k "$1"
  fi
}

apply "$root/knative/namespace"
if [[ "$database" != none ]]; then
  apply "$root/knative/postgres/$database"
fi
apply "$work"
if $dry_run || kubectl get crd authorizationpolicies.security.istio.io >/dev/null 2>&1; then
  apply "$root/istio/base"
else
  echo "Istio is not installed: skipping istio/base (mesh policy)" >&2
fi
if ! $dry_run; then
  kubectl -n cqrs wait ksvc --all --for=condition=Ready --timeout=300s
  kubectl -n cqrs get ksvc
fi
