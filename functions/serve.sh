#!/bin/sh
# Container entry point: serve the role named by $ROLE under gunicorn.
# exec, so gunicorn is PID 1 and receives SIGTERM from Kubernetes directly.
# gunicorn_conf binds 0.0.0.0:$PORT and reads WEB_CONCURRENCY / GUNICORN_THREADS.
set -eu
package=$(printf '%s' "${ROLE:?ROLE is not set}" | tr - _)
# No control socket: nothing runs gunicornc in a container, and the user has no home for it.
exec gunicorn -c python:cqrs_common.gunicorn_conf --no-control-socket "${package}:create_app()"
