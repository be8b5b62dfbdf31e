#!/usr/bin/env bash
# Deploy the shop to the current kubectl context, in order: namespace, database (and wait
# until it is ready and its Secrets exist), the roles (a knative/overlays/<overlay> with the
# images of REGISTRY/TAG), mesh policy; then wait for the roles to be Ready.
#
#   deploy.sh [--dry-run] [--overlay direct|eventing] [--database cnpg|single|none]
#
# Env: REGISTRY (e.g. docker.io/<user>) and TAG: the images `make push` pushed; ROLES (the
# role names, from the Makefile); DEPLOY_TIMEOUT: how long each wait may take (default 300s).
# --dry-run prints everything it would apply and needs no cluster. Running it twice changes
# nothing the second time.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
overlay=direct
database=cnpg
dry_run=false
timeout="${DEPLOY_TIMEOUT:-300s}"
while (($#)); do
  case "$1" in
    --dry-run) dry_run=true; shift ;;
    --overlay) overlay="${2:?--overlay needs a value}"; shift 2 ;;
    --database) database="${2:?--database needs a value}"; shift 2 ;;
    *) sed -n '6p' "$0" >&2; exit 2 ;;
  esac
done
: "${REGISTRY:?REGISTRY is not set (the registry you pushed to, e.g. docker.io/<user>)}"
: "${TAG:?TAG is not set (the tag you pushed)}"
: "${ROLES:?ROLES is not set (make deploy sets it)}"
[[ -d "$root/knative/overlays/$overlay" ]] || { echo "no overlay knative/overlays/$overlay" >&2; exit 2; }
case "$database" in cnpg | single | none) ;; *) echo "--database cnpg|single|none" >&2; exit 2 ;; esac
command -v kubectl >/dev/null || { echo "deploy needs kubectl (kustomize is built in)" >&2; exit 2; }

ns=cqrs
# The Secrets the roles read as DATABASE_URL (knative/base); CloudNativePG creates them,
# the other options need them created by hand (docs/cluster.md, "Databases").
db_secrets=(cqrs-orders-app cqrs-stats-app)

has_crd() { kubectl get crd "$1" >/dev/null 2>&1; }
die() { echo "$*" >&2; exit 2; }

if ! $dry_run; then
  kubectl config current-context >/dev/null || die "no kubectl context: point kubectl at your cluster first"
  # Check every prerequisite before changing anything, so a missing one leaves no half deploy.
  has_crd services.serving.knative.dev || die "Knative Serving is not installed (docs/cluster.md, step 3)"
  if [[ "$overlay" == eventing ]]; then
    has_crd brokers.eventing.knative.dev ||
      die "OVERLAY=eventing needs Knative Eventing (docs/cluster.md, step 4); OVERLAY=direct does not"
    # Deliveries must carry the Trigger's or PingSource's token, which the roles verify: a
    # cluster-wide Eventing setting, so the operator turns it on (docs/cluster.md, step 4).
    [[ "$(kubectl -n knative-eventing get configmap config-features \
      -o jsonpath='{.data.authentication-oidc}' 2>/dev/null)" == enabled ]] ||
      die "OVERLAY=eventing needs Knative Eventing's authentication-oidc feature enabled (docs/cluster.md, step 4)"
  fi
  case "$database" in
    cnpg)
      has_crd clusters.postgresql.cnpg.io ||
        die "DATABASE=cnpg needs the CloudNativePG operator (docs/cluster.md, step 5), or use DATABASE=single"
      ;;
    single)
      missing=()
      for s in cqrs-postgres "${db_secrets[@]}"; do
        kubectl -n "$ns" get secret "$s" >/dev/null 2>&1 || missing+=("$s")
      done
      ((${#missing[@]} == 0)) ||
        die "DATABASE=single needs the Secrets ${missing[*]} in namespace $ns first (docs/cluster.md, step 5)"
      ;;
    none)
      for s in "${db_secrets[@]}"; do
        kubectl -n "$ns" get secret "$s" >/dev/null 2>&1 ||
          die "DATABASE=none needs the Secret $s (key uri) in namespace $ns (docs/cluster.md, step 5)"
      done
      ;;
  esac
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
  for role in $ROLES; do
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

wait_for() {  # kubectl wait, skipped in a dry run
  $dry_run || kubectl -n "$ns" wait --timeout="$timeout" "$@"
}

apply "$root/knative/namespace"
if [[ "$database" != none ]]; then
  apply "$root/knative/postgres/$database"
  # The roles start only once their store answers: a role whose Secret is missing would sit
  # in CreateContainerConfigError, and one whose database is not up fails its readiness.
  if [[ "$database" == cnpg ]]; then
    wait_for --for=condition=Ready cluster.postgresql.cnpg.io/cqrs-orders cluster.postgresql.cnpg.io/cqrs-stats
    wait_for --for=create "${db_secrets[@]/#/secret/}"
  else
    wait_for --for=jsonpath='{.status.readyReplicas}'=1 statefulset/cqrs-postgres
  fi
fi
apply "$work"
if $dry_run || has_crd authorizationpolicies.security.istio.io; then
  apply "$root/istio/base"
  # Eventing's namespace exists only with Eventing: its mesh policy goes with the overlay.
  if [[ "$overlay" == eventing ]]; then
    apply "$root/istio/eventing"
  fi
else
  echo "Istio is not installed: skipping istio/base (mesh policy)" >&2
fi
if ! $dry_run; then
  wait_for --for=condition=Ready ksvc --all
  kubectl -n "$ns" get ksvc
fi
