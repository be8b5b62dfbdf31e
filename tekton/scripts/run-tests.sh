#!/usr/bin/env bash
# The pipeline's test step: `make test` in a slim Python image, which lacks make and the
# npm client (tests/tekton installs tekton-lint with it); kubectl comes from EXTRA_PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ -n "${EXTRA_PATH:-}" ]]; then
  export PATH="$EXTRA_PATH:$PATH"
fi

missing=()
command -v make >/dev/null || missing+=(make)
command -v npm >/dev/null || missing+=(nodejs npm)
command -v git >/dev/null || missing+=(git)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The PostgreSQL sidecar may still be starting (its readiness probe gates the pod, but
# not on every Tekton version): wait for its port, a minute by default.
if [[ "${TEST_DATABASE_URL:-}" == postgresql://* ]]; then
  python3 - "$TEST_DATABASE_URL" "${DB_WAIT_SECONDS:-60}" <<'PY'
import socket, sys, time
from urllib.parse import urlsplit

url = urlsplit(sys.argv[1])
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        socket.create_connection((url.hostname, url.port or 5432), timeout=2).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"PostgreSQL at {url.hostname}:{url.port or 5432} did not come up")
        time.sleep(1)
PY
fi

exec make test
