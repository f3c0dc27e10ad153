#!/usr/bin/env bash
# The Cloud's whole check, as CI runs it (.ci/run calls this script): installs what is
# missing, starts dockerd and PostgreSQL, then runs rustfmt, clippy and every test with
# cargo-nextest. Idempotent; run as root on a Debian 12 machine.
#
# Usage: scripts/test.sh [--setup-only] [NEXTEST_ARGS...]
#   --setup-only   stop after the host setup (packages, dockerd, image, PostgreSQL, tools)
#   NEXTEST_ARGS   passed to `cargo nextest run`, e.g.  scripts/test.sh -E 'test(foo)'
#
# Environment:
#   THECLOUD_SKIP_LINT=1        skip `cargo fmt --check` and `cargo clippy`
#   THECLOUD_SKIP_BENCH=1       skip the scheduler benchmark smoke run
#   THECLOUD_SKIP_FUZZ=1        skip the schemathesis fuzz run of the API
#   THECLOUD_SKIP_ANSIBLE=1     skip the Ansible fleet deployment test
#   THECLOUD_TEST_DATABASE_URL  use this PostgreSQL instead of setting up the local cluster
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"
# One full build per run: incremental caches only cost disk here (they reached tens of GB).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
PACKAGES=(docker.io busybox-static iptables nftables libvirt-dev pkg-config postgresql iproute2
  ca-certificates gcc libc6-dev iputils-ping iperf3 lvm2 e2fsprogs python3-venv curl
  ansible-core ansible-lint openssh-server python3-apt)
THECLOUD_TEST_GUEST_DIR=${THECLOUD_TEST_GUEST_DIR:-/var/lib/libvirt/images/thecloud-test}
PG_ROLE=thecloud
PG_PASSWORD=thecloud
PG_DB=thecloud

SETUP_ONLY=0
FLEET_DATABASE=postgres
NEXTEST_ARGS=()
for arg in "$@"; do
  case $arg in
  --setup-only) SETUP_ONLY=1 ;;
  -h | --help)
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) NEXTEST_ARGS+=("$arg") ;;
  esac
done

# ---------------------------------------------------------------- phase bookkeeping

PHASES=()  # "name|duration|result" rows for the summary
FAILED=0
CURRENT_PHASE=""
PHASE_T0=0
SCRIPT_T0=$(now_us)
NEXTEST_LOG=""

# phase_begin NAME [HEADLINE]
phase_begin() {
  CURRENT_PHASE=$1
  PHASE_T0=$(now_us)
  say "${2:-$1}"
}

# phase_end RESULT
phase_end() {
  local d
  d=$(fmt_duration "$PHASE_T0")
  PHASES+=("$CURRENT_PHASE|$d|$1")
  info "$CURRENT_PHASE: $1 in $d"
  CURRENT_PHASE=""
}

# check NAME COMMAND...: runs a check phase; a failure is recorded and the next phase still runs.
check() {
  local name=$1
  shift
  phase_begin "$name" "$name: $*"
  local rc=0
  "$@" || rc=$?
  if ((rc == 0)); then
    phase_end ok
  else
    phase_end "FAILED (exit $rc)"
    FAILED=1
  fi
}

summary() {
  local rc=$?
  if [[ -n $CURRENT_PHASE ]]; then
    PHASES+=("$CURRENT_PHASE|$(fmt_duration "$PHASE_T0")|FAILED")
  fi
  ((${#PHASES[@]} > 0)) || return 0
  echo
  say "Summary (total $(fmt_duration "$SCRIPT_T0"))"
  local row name d res
  for row in "${PHASES[@]}"; do
    IFS='|' read -r name d res <<<"$row"
    printf '    %-52s %8s  %s\n' "$name" "$d" "$res"
  done
  if [[ -n $NEXTEST_LOG && -f $NEXTEST_LOG ]]; then
    # Repeat nextest's closing line last, for whoever reads the end of the log.
    grep -E '^ *Summary \[' "$NEXTEST_LOG" | tail -n 1 || true
    rm -f "$NEXTEST_LOG"
  fi
  return "$rc"
}
trap summary EXIT

# ---------------------------------------------------------------- setup

print_header() {
  say "The Cloud test run: $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
  info "host: $(sed -n 's/^PRETTY_NAME=//p' /etc/os-release | tr -d '"'), kernel $(uname -r), $(nproc) cores, user $(id -un)"
  info "repo: $REPO_ROOT ($(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout'))"
  info "rustc: $(rustc --version 2>/dev/null || echo 'not found')"
}

ensure_rust_tools() {
  require_cargo
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    command -v rustup >/dev/null 2>&1 || die "cargo fmt / cargo clippy are missing and rustup is not available"
    info "rustup component add rustfmt clippy"
    rustup component add rustfmt clippy
  fi
  if cargo nextest --version >/dev/null 2>&1; then
    info "cargo-nextest present"
  else
    info "cargo install cargo-nextest --locked (compiles it from the crate registry; takes a few minutes)"
    cargo install cargo-nextest --locked
  fi
}

print_versions() {
  say "Tool versions"
  info "docker:   client $("$DOCKER" version --format '{{.Client.Version}}' 2>/dev/null || echo '?'), server $("$DOCKER" version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null || echo '?')"
  info "psql:     $(psql --version)"
  info "postgres: $(PGCONNECT_TIMEOUT=5 psql -X "$THECLOUD_TEST_DATABASE_URL" -Atc 'show server_version' 2>/dev/null || echo '?')"
  info "rustc:    $(rustc --version)"
  info "cargo:    $(cargo --version)"
  info "rustfmt:  $(cargo fmt --version)"
  info "clippy:   $(cargo clippy --version)"
  info "nextest:  $(cargo nextest --version 2>/dev/null | head -n 1)"
}

setup() {
  phase_begin "Setup: system packages"
  ensure_packages "${PACKAGES[@]}"
  phase_end ok

  phase_begin "Setup: dockerd and $BUSYBOX_IMAGE"
  ensure_dockerd
  ensure_busybox_image
  phase_end ok

  if [[ -n ${THECLOUD_TEST_DATABASE_URL:-} ]]; then
    # The fleet test's controller installs its own PostgreSQL only with a local cluster.
    FLEET_DATABASE=sqlite
    phase_begin "Setup: PostgreSQL (given by THECLOUD_TEST_DATABASE_URL)"
    PGCONNECT_TIMEOUT=5 psql -X "$THECLOUD_TEST_DATABASE_URL" -Atc 'select 1' >/dev/null ||
      die "cannot connect to THECLOUD_TEST_DATABASE_URL"
  else
    phase_begin "Setup: PostgreSQL"
    ensure_postgres "$PG_ROLE" "$PG_PASSWORD" "$PG_DB"
    THECLOUD_TEST_DATABASE_URL="postgres://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
  fi
  phase_end ok

  phase_begin "Setup: libvirtd + QEMU, and the tiny test guest"
  ensure_libvirt
  "$REPO_ROOT/tests/guest/build.sh" "$THECLOUD_TEST_GUEST_DIR"
  phase_end ok

  phase_begin "Setup: Rust tools (rustfmt, clippy, cargo-nextest)"
  ensure_rust_tools
  phase_end ok
}

# ---------------------------------------------------------------- main

cd "$REPO_ROOT"
[[ $(id -u) -eq 0 ]] || require_root "$SCRIPT_DIR/test.sh" "$@"
ensure_cargo_on_path
print_header
setup

# Tests fail instead of skipping when Docker, PostgreSQL, network namespaces, the storage
# tools (loop devices, mkfs, LVM metadata) or libvirt/QEMU are unavailable.
export THECLOUD_TEST_DATABASE_URL THECLOUD_REQUIRE_DOCKER=1 THECLOUD_REQUIRE_POSTGRES=1 \
  THECLOUD_REQUIRE_NETNS=1 THECLOUD_REQUIRE_STORAGE=1 THECLOUD_REQUIRE_LIBVIRT=1 THECLOUD_TEST_GUEST_DIR
print_versions
info "THECLOUD_TEST_DATABASE_URL=$THECLOUD_TEST_DATABASE_URL"
info "THECLOUD_REQUIRE_DOCKER=1 THECLOUD_REQUIRE_POSTGRES=1 THECLOUD_REQUIRE_NETNS=1 THECLOUD_REQUIRE_STORAGE=1 THECLOUD_REQUIRE_LIBVIRT=1"

# cargo nextest, with its output also kept (when not on a terminal, as in CI) so that the
# summary can end with nextest's own closing line.
run_tests() {
  local cmd=(cargo nextest run --workspace --no-fail-fast "${NEXTEST_ARGS[@]}")
  info "${cmd[*]}"
  if [[ -t 1 ]]; then
    "${cmd[@]}"
  else
    NEXTEST_LOG=$(mktemp)
    "${cmd[@]}" 2>&1 | tee "$NEXTEST_LOG"
    return "${PIPESTATUS[0]}"
  fi
}

if ((SETUP_ONLY)); then
  say "Setup done (--setup-only): not running the checks"
  exit 0
fi

if [[ ${THECLOUD_SKIP_LINT:-0} == 1 ]]; then
  PHASES+=("fmt|-|skipped (THECLOUD_SKIP_LINT=1)" "clippy|-|skipped (THECLOUD_SKIP_LINT=1)")
  say "Skipping fmt and clippy (THECLOUD_SKIP_LINT=1)"
else
  check fmt cargo fmt --all -- --check
  check clippy cargo clippy --workspace --all-targets -- -D warnings
fi
check tests run_tests

# A small scheduler benchmark as a smoke test (issue #3): 500 simulated nodes, 5,000
# instances through the REST API, on SQLite and on PostgreSQL, then a node failover. It fails
# on errors only, never on timing (the figures are printed for the log).
smoke_bench() {
  cargo build --workspace --bins || return
  ./target/debug/bench-scheduler --nodes 500 --instances 5000 --idle-seconds 2 \
    --stores sqlite,postgres --postgres-url "$THECLOUD_TEST_DATABASE_URL"
}
if [[ ${THECLOUD_SKIP_BENCH:-0} == 1 ]]; then
  PHASES+=("benchmark smoke|-|skipped (THECLOUD_SKIP_BENCH=1)")
else
  check "benchmark smoke" smoke_bench
fi

# Property-based fuzzing of the REST API from its OpenAPI document (issue #7): a fixed seed
# and a bounded number of examples per operation; any 5xx fails it.
if [[ ${THECLOUD_SKIP_FUZZ:-0} == 1 ]]; then
  PHASES+=("API fuzz|-|skipped (THECLOUD_SKIP_FUZZ=1)")
else
  check "API fuzz" "$SCRIPT_DIR/fuzz.sh" 25
fi

# The Ansible deployment for real (issue #8): throwaway hosts (network namespaces with sshd),
# site.yml, an instance, upgrade.yml with a second build, idempotence, ansible-lint.
if [[ ${THECLOUD_SKIP_ANSIBLE:-0} == 1 ]]; then
  PHASES+=("Ansible fleet|-|skipped (THECLOUD_SKIP_ANSIBLE=1)")
else
  check "Ansible fleet" "$REPO_ROOT/deploy/ansible/tests/fleet-test.sh" --database "$FLEET_DATABASE"
fi

if ((FAILED)); then
  say "FAILED"
  exit 1
fi
say "All checks passed"
