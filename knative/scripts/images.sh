#!/usr/bin/env bash
# Build or push the six role images (cqrs-<role>) from functions/Dockerfile with whichever
# engine this machine has: docker (a running daemon), podman or buildah.
#
#   images.sh build|push
#
# Env: TAG (required), REGISTRY (e.g. docker.io/<user>; required to push), ROLES (required;
# make passes all six, from cqrs_common/roles.py), ENGINE (docker|podman|buildah, default: the
# first that works), BASE_IMAGE (overrides the Dockerfile's pinned base), BUILD_FLAGS (extra
# flags for the build).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
action="${1:-}"
roles="${ROLES:?ROLES is not set (make images sets it from functions/shared/cqrs_common/roles.py)}"
tag="${TAG:?TAG is not set}"
prefix="${REGISTRY:+${REGISTRY%/}/}"

case "$action" in
  build | push) ;;
  *) echo "usage: $0 build|push" >&2; exit 2 ;;
esac
if [[ "$action" == push && -z "${REGISTRY:-}" ]]; then
  echo "make push needs REGISTRY, e.g. make push REGISTRY=docker.io/<user> TAG=$tag" >&2
  exit 2
fi
if [[ "$tag" == latest ]]; then
  echo "TAG=latest is refused: the manifests never use :latest (use a version or git sha)" >&2
  exit 2
fi

engine="${ENGINE:-}"
if [[ -z "$engine" ]]; then
  # docker is only a client: installed is not enough, its daemon must answer `docker info`.
  docker_error=""
  if command -v docker >/dev/null; then
    if docker_out="$(docker info 2>&1 >/dev/null)"; then
      engine=docker
    else
      docker_error="$(printf '%s\n' "$docker_out" | grep -v '^[[:space:]]*$' | tail -n 1)"
    fi
  fi
  if [[ -n "$engine" ]]; then
    :
  elif command -v podman >/dev/null; then
    engine=podman
  elif command -v buildah >/dev/null; then
    engine=buildah
  elif command -v docker >/dev/null; then
    echo "docker is installed but its daemon is not running (docker info: ${docker_error:-failed}):" \
      "start it (sudo systemctl start docker, or dockerd), or set ENGINE=podman or buildah" >&2
    exit 2
  else
    echo "no container engine: install docker (apt-get install docker.io, then start dockerd)," \
      "podman or buildah; or set ENGINE" >&2
    exit 2
  fi
fi

read -r -a extra <<<"${BUILD_FLAGS:-}"
for role in $roles; do
  image="${prefix}cqrs-${role}:${tag}"
  if [[ "$action" == build ]]; then
    args=(-f "$root/functions/Dockerfile" --build-arg "ROLE=$role" -t "$image")
    if [[ -n "${BASE_IMAGE:-}" ]]; then
      args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
    fi
    echo "$engine: building $image" >&2
    if [[ "$engine" == buildah ]]; then
      buildah bud "${args[@]}" "${extra[@]}" "$root/functions"
    else
      "$engine" build "${args[@]}" "${extra[@]}" "$root/functions"
    fi
  else
    echo "$engine: pushing $image" >&2
    if [[ "$engine" == buildah ]]; then
      buildah push "$image" "docker://$image"
    else
      "$engine" push "$image"
    fi
  fi
done
