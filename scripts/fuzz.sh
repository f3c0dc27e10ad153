#!/usr/bin/env bash
# Property-based fuzzing of the REST API from its OpenAPI document (schemathesis): starts a
# scheduler on a scratch data dir, runs schemathesis with a fixed seed and a bounded number of
# examples per operation, and fails on any 5xx (check `not_a_server_error`). Prints how many
# requests it sent. Idempotent; installs schemathesis into a private venv when missing.
#
# Usage: scripts/fuzz.sh [MAX_EXAMPLES]     (default 25 per operation)
#   THECLOUD_FUZZ_SEED   hypothesis seed (default 1)
#   THECLOUD_FUZZ_VENV   where schemathesis lives (default /opt/thecloud-fuzz)
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

MAX_EXAMPLES=${1:-25}
SEED=${THECLOUD_FUZZ_SEED:-1}
VENV=${THECLOUD_FUZZ_VENV:-/opt/thecloud-fuzz}
# schemathesis 3.39 breaks with newer hypothesis releases ("'many' object has no attribute
# 'more'"): both are pinned.
ST_VERSION=3.39.16
HYPOTHESIS_VERSION=6.120.0

ensure_schemathesis() {
  if [[ -x $VENV/bin/st ]] && "$VENV/bin/st" --version 2>/dev/null | grep -q "$ST_VERSION"; then
    return
  fi
  info "installing schemathesis $ST_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$ST_VERSION" "hypothesis==$HYPOTHESIS_VERSION"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

require_root "$SCRIPT_DIR/fuzz.sh" "$@"
ensure_packages python3-venv curl
require_cargo
ensure_schemathesis
cd "$REPO_ROOT"
cargo build -q -p cloud-scheduler --bin cloud-scheduler
DATA=$(mktemp -d)
HTTP_PORT=$(free_port)
GRPC_PORT=$(free_port)
./target/debug/cloud-scheduler serve --data-dir "$DATA" --http "127.0.0.1:$HTTP_PORT" \
  --grpc "127.0.0.1:$GRPC_PORT" >"$DATA/scheduler.log" 2>&1 &
PID=$!
cleanup() {
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null || {
  log_tail "$DATA/scheduler.log"
  die "the scheduler did not start"
}
KEY=$(cat "$DATA/admin.key")
OUT="$DATA/schemathesis.out"
set +e
# The key goes in a header given on the command line of a local, short-lived process.
# From the scratch dir: hypothesis keeps its example database in ./.hypothesis.
(cd "$DATA" && "$VENV/bin/st" run "http://127.0.0.1:$HTTP_PORT/openapi.json" \
  -H "X-API-Key: $KEY" \
  --checks not_a_server_error \
  --hypothesis-seed="$SEED" \
  --hypothesis-max-examples="$MAX_EXAMPLES" \
  --hypothesis-suppress-health-check=all \
  --no-color) >"$OUT" 2>&1
RC=$?
set -e
grep -vE "returned only 4xx responses|^  - " "$OUT" | tail -n 20
# "not_a_server_error   N / N passed": one check per request sent.
REQUESTS=$(grep -oE 'not_a_server_error +[0-9]+ / [0-9]+' "$OUT" | grep -oE '[0-9]+$' || echo 0)
INTERNAL=$(grep -c 'internal error' "$DATA/scheduler.log" || true)
info "schemathesis sent $REQUESTS requests (seed $SEED, at most $MAX_EXAMPLES examples per operation); exit code $RC; internal errors logged: $INTERNAL"
# The key was on every request: its secret must not be in the scheduler's log.
if grep -qF -- "${KEY#*_*_}" "$DATA/scheduler.log"; then
  die "the API key's secret appears in the scheduler log"
fi
if ((RC != 0)) || ((INTERNAL > 0)) || ((REQUESTS == 0)); then
  log_tail "$DATA/scheduler.log"
  exit 1
fi
