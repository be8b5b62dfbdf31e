#!/usr/bin/env bash
# The postgres stand-in's entrypoint (Dockerfile beside this file). Our own script for the part of
# the official image's documented contract that knative/postgres/single/postgres.yaml relies on:
#   - first start (no $PGDATA/PG_VERSION): initdb with POSTGRES_USER (default postgres) as the
#     superuser and POSTGRES_PASSWORD as its password, scram-sha-256 for TCP clients from any
#     address, trust on the local socket; POSTGRES_DB (default POSTGRES_USER) created; then
#     /docker-entrypoint-initdb.d/*.sql, *.sql.gz and *.sh, once, in name order, with psql as
#     the superuser on POSTGRES_DB. A first start that fails leaves $PGDATA empty again, so the
#     next start begins afresh (the official image leaves a half-made cluster behind).
#   - every start: $PGDATA made 0700, then exec postgres, PID 1, on all addresses, its socket in /var/run/postgresql.
# Options alone (`-c name=value`) are given to postgres; any other command runs as it is.
set -euo pipefail
shopt -s nullglob

log() { printf 'entrypoint: %s\n' "$*" >&2; }

if [[ $# -eq 0 || "$1" == -* ]]; then
  set -- postgres "$@"
fi
if [[ "$1" != postgres ]]; then
  exec "$@"
fi
if [[ "$(id -u)" == 0 ]]; then
  log "PostgreSQL does not run as root: run as the postgres user (999), the image's USER"
  exit 1
fi

superuser="${POSTGRES_USER:-postgres}"
database="${POSTGRES_DB:-$superuser}"

first_start() {
  if [[ -z "${POSTGRES_PASSWORD:-}" ]]; then
    log "POSTGRES_PASSWORD is empty: the superuser $superuser needs one for TCP clients"
    exit 1
  fi
  local pwfile
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  # POSTGRES_INITDB_ARGS is a list of options, split on spaces as in the official image
  # shellcheck disable=SC2086
  initdb --username="$superuser" --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 --set="listen_addresses=*" \
    --set="unix_socket_directories=/var/run/postgresql" ${POSTGRES_INITDB_ARGS:-}
  rm -f "$pwfile"
  # initdb admits TCP from loopback only; a pod's clients come from the pod network
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"

  # The init scripts' server: on the socket only, so no TCP client sees a half-made database.
  pg_ctl --pgdata="$PGDATA" --wait --silent --options="-c listen_addresses=''" start
  local psql=(psql --no-psqlrc --set=ON_ERROR_STOP=1 --username="$superuser")
  if [[ "$database" != postgres ]]; then
    "${psql[@]}" --dbname=postgres --set=db="$database" <<<'CREATE DATABASE :"db";'
  fi
  local script
  for script in /docker-entrypoint-initdb.d/*; do
    case "$script" in
      *.sh)
        log "running $script"
        # executable: run; otherwise sourced, seeing this script's variables (as upstream)
        # shellcheck disable=SC1090
        if [[ -x "$script" ]]; then "$script"; else . "$script"; fi
        ;;
      *.sql)
        log "running $script"
        "${psql[@]}" --dbname="$database" --file="$script"
        ;;
      *.sql.gz)
        log "running $script"
        gzip -dc "$script" | "${psql[@]}" --dbname="$database"
        ;;
      *) log "ignoring $script" ;;
    esac
  done
  pg_ctl --pgdata="$PGDATA" --wait --silent --mode=fast stop
}

undo_first_start() {
  local status=$?
  if ((status != 0)); then
    pg_ctl --pgdata="$PGDATA" --silent --mode=immediate stop >/dev/null 2>&1 || true
    find "$PGDATA" -mindepth 1 -delete
    log "the first start failed (exit $status): $PGDATA is empty again"
  fi
}

mkdir -p "$PGDATA"
# As the official image does at every start: a volume's fsGroup, applied again by the kubelet
# at each mount, leaves the folder g+rwx and setgid, and PostgreSQL refuses that.
chmod 0700 "$PGDATA"
if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  if [[ -n "$(ls -A "$PGDATA")" ]]; then
    log "$PGDATA holds files but no database: not initializing over them"
    exit 1
  fi
  log "initializing $PGDATA"
  trap undo_first_start EXIT
  # bash as PID 1 would ignore these; the EXIT trap then undoes the half-made cluster
  trap 'exit 143' TERM INT
  first_start
  trap - EXIT TERM INT
  log "initialized; starting PostgreSQL"
fi
exec "$@"
