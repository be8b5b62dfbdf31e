#!/usr/bin/env bash
# The pipeline's build step, once per role: build functions/Dockerfile with ROLE=<role>,
# push it, and write the pushed digest and reference as Tekton results.
# Env: ROLE, IMAGE (registry/user/cqrs-<role>:tag), DOCKER_USER, CONTEXT_DIR,
# DOCKER_CONFIG_DIR (holds config.json), RESULT_IMAGE_DIGEST, RESULT_IMAGE_URL,
# STORAGE_DRIVER (default overlay).
set -euo pipefail

: "${ROLE:?ROLE is not set}" "${IMAGE:?IMAGE is not set}" "${CONTEXT_DIR:?CONTEXT_DIR is not set}"
: "${DOCKER_CONFIG_DIR:?DOCKER_CONFIG_DIR is not set}"
: "${RESULT_IMAGE_DIGEST:?RESULT_IMAGE_DIGEST is not set}" "${RESULT_IMAGE_URL:?RESULT_IMAGE_URL is not set}"

if [[ "${DOCKER_USER:-}" == "change-me" || -z "${DOCKER_USER:-}" ]]; then
  echo "docker-user is '${DOCKER_USER:-}': set it to your Docker Hub user or organisation" \
    "(make pipeline DOCKER_USER=..., or patch the cqrs-registry TriggerBinding)" >&2
  exit 2
fi

# A dockerconfigjson Secret mounted whole holds .dockerconfigjson; mapped by the
# PipelineRun's items it is config.json. Accept either.
authfile=""
for name in config.json .dockerconfigjson; do
  if [[ -f "$DOCKER_CONFIG_DIR/$name" ]]; then
    authfile="$DOCKER_CONFIG_DIR/$name"
    break
  fi
done
if [[ -z "$authfile" ]]; then
  echo "no config.json in the dockerconfig workspace ($DOCKER_CONFIG_DIR)" >&2
  exit 2
fi

storage="--storage-driver=${STORAGE_DRIVER:-overlay}"
digestfile="$(mktemp)"
trap 'rm -f "$digestfile"' EXIT

buildah "$storage" bud --format=oci --build-arg "ROLE=$ROLE" \
  -f "$CONTEXT_DIR/Dockerfile" -t "$IMAGE" "$CONTEXT_DIR"
buildah "$storage" push --authfile "$authfile" --digestfile "$digestfile" \
  "$IMAGE" "docker://$IMAGE"

digest="$(cat "$digestfile")"
if [[ ! "$digest" =~ ^sha256:[0-9a-f]{64}$ ]]; then
  echo "buildah push wrote no usable digest: '$digest'" >&2
  exit 1
fi
printf '%s' "$digest" >"$RESULT_IMAGE_DIGEST"
printf '%s' "$IMAGE" >"$RESULT_IMAGE_URL"
echo "pushed $IMAGE@$digest"
