#!/usr/bin/env bash
# The pipeline's deploy step: render knative/overlays/<overlay> with every role's image
# pinned to the digest just pushed, then apply it and wait for the Knative Services.
#
#   deploy.sh [--dry-run] [--overlay direct] [--namespace cqrs] IMAGE_URL... -- IMAGE_DIGEST...
#
# IMAGE_URLs are registry/user/cqrs-<role>:tag and IMAGE_DIGESTs their sha256 digests, in
# the same order (the build matrix's results). --dry-run prints the rendered YAML instead
# of applying it. Needs kubectl (kustomize is built in); the apply also needs a context.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
overlay=direct
namespace=cqrs
dry_run=false
urls=()
digests=()

usage() {
  sed -n '4,5p' "$0" >&2
  exit 2
}

while (($#)); do
  case "$1" in
    --dry-run) dry_run=true; shift ;;
    --overlay) overlay="${2:?--overlay needs a value}"; shift 2 ;;
    --namespace) namespace="${2:?--namespace needs a value}"; shift 2 ;;
    --) shift; digests=("$@"); break ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) urls+=("$1"); shift ;;
  esac
done

if ((${#urls[@]} == 0)) || ((${#urls[@]} != ${#digests[@]})); then
  echo "need one digest per image: ${#urls[@]} image(s), ${#digests[@]} digest(s)" >&2
  usage
fi
if [[ ! -d "$root/knative/overlays/$overlay" ]]; then
  echo "no overlay knative/overlays/$overlay" >&2
  exit 2
fi

# A kustomization on top of the overlay that pins the images. It lives under var/ (git
# ignores it) because kustomize resolves the overlay by a path relative to it.
mkdir -p "$root/var/deploy"
work="$(mktemp -d "$root/var/deploy/$overlay.XXXXXX")"
trap 'rm -rf "$work"' EXIT

pinned=()
{
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "resources:"
  echo "  - ../../../knative/overlays/$overlay"
  echo "images:"
  for i in "${!urls[@]}"; do
    url="${urls[$i]}" digest="${digests[$i]}"
    if [[ ! "$digest" =~ ^sha256:[0-9a-f]{64}$ ]]; then
      echo "not an image digest: '$digest' (for $url)" >&2
      exit 2
    fi
    repo="$url"
    # drop a tag (a ':' after the last '/'), keep a registry port
    if [[ "${repo##*/}" == *:* ]]; then
      repo="${repo%:*}"
    fi
    name="${repo##*/}"
    if [[ "$name" != cqrs-* ]]; then
      echo "not a cqrs-<role> image: $url" >&2
      exit 2
    fi
    # The overlay names its images cqrs-<role> (or already the full repository).
    for match in "$name" "$repo"; do
      printf '  - name: %s\n    newName: %s\n    digest: %s\n' "$match" "$repo" "$digest"
    done
    pinned+=("$repo@$digest")
  done
} >"$work/kustomization.yaml"

rendered="$work/rendered.yaml"
kubectl kustomize "$work" >"$rendered"

for ref in "${pinned[@]}"; do
  if ! grep -qF "image: $ref" "$rendered"; then
    repo="${ref%@*}"
    echo "knative/overlays/$overlay has no image named ${repo##*/} (or $repo); not deploying" >&2
    exit 1
  fi
done
# ...and no role image may be left unpinned (a role missing from the build).
unpinned="$(sed -nE 's/^[[:space:]-]*image: *//p' "$rendered" | sort -u |
  grep -E '(^|/)cqrs-[^/]*$' | grep -vxF -f <(printf '%s\n' "${pinned[@]}") || true)"
if [[ -n "$unpinned" ]]; then
  echo "not pinned to a pushed digest, not deploying:" $unpinned >&2
  exit 1
fi

if [[ "$dry_run" == true ]]; then
  cat "$rendered"
  exit 0
fi

# Every kubectl here fails the step when it fails (set -e sees each exit status: no
# pipelines or process substitutions around them).
kubectl apply --namespace "$namespace" -f "$rendered"
kubectl wait --namespace "$namespace" --for=condition=Ready --timeout=10m ksvc --all
