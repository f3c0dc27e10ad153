#!/usr/bin/env bash
# The Cloud on one host: installs what is missing, starts dockerd (and libvirtd for VMs), builds the release
# binaries, starts a scheduler and an agent in the background and configures the `cloud` CLI.
# Idempotent: running it again only starts what is not running.
#
# Usage: scripts/quickstart.sh [up|stop|status|restart|help]     (default: up)
#
# Environment:
#   THECLOUD_HOME       state, logs and pid files       (default /var/lib/thecloud)
#   THECLOUD_HTTP       scheduler REST listen address   (default 127.0.0.1:8080)
#   THECLOUD_GRPC       scheduler agent gRPC address    (default 127.0.0.1:7443)
#   THECLOUD_NODE_NAME  name of this host's node        (default: the agent's own choice)
#   CARGO_TARGET_DIR    where cargo builds              (default <repo>/target)
#   THECLOUD_SKIP_BUILD=1  use the binaries already in $CARGO_TARGET_DIR/release
#   THECLOUD_NO_VMS=1      do not install or start libvirt (the node runs containers only)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
THECLOUD_HOME=${THECLOUD_HOME:-/var/lib/thecloud}
HTTP_ADDR=$(normalize_addr "${THECLOUD_HTTP:-127.0.0.1:8080}")
GRPC_ADDR=$(normalize_addr "${THECLOUD_GRPC:-127.0.0.1:7443}")
API_URL="http://$(client_addr "$HTTP_ADDR")"
BIN_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release

SCHED_DIR=$THECLOUD_HOME/scheduler
AGENT_DIR=$THECLOUD_HOME/agent
LOG_DIR=$THECLOUD_HOME/logs
SCHED_LOG=$LOG_DIR/scheduler.log
AGENT_LOG=$LOG_DIR/agent.log
SCHED_PIDFILE=$LOG_DIR/scheduler.pid
AGENT_PIDFILE=$LOG_DIR/agent.pid
SCHED_CONFIG=$THECLOUD_HOME/scheduler.toml
START_TIMEOUT=60

PACKAGES=(docker.io busybox-static iptables nftables libvirt-dev pkg-config ca-certificates curl gcc libc6-dev python3 iproute2)

usage() {
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# launch PIDFILE LOG PROGRAM ARGS...: starts PROGRAM in its own session, detached from this
# shell, appending to LOG; PIDFILE gets the program's pid.
launch() {
  local pidfile=$1 log=$2
  shift 2
  rm -f "$pidfile"
  printf -- '---- %s: starting %s\n' "$(date -Is)" "$*" >>"$log"
  # The inner shell writes its own pid, then execs the program (same pid).
  # shellcheck disable=SC2016 # $$, $1 and $@ expand in the inner shell
  setsid sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$pidfile" "$@" >>"$log" 2>&1 </dev/null &
  # Wait until the pid file names the program itself (not the shell that is about to exec it).
  local i pid name=${1##*/}
  for ((i = 0; i < 100; i++)); do
    pid=$(cat "$pidfile" 2>/dev/null || true)
    pid_is "$pid" "$name" && return 0
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  log_tail "$log"
  die "could not start $1 (log: $log)"
}

readyz() { curl -fsS -m 2 -o /dev/null "$API_URL/readyz" 2>/dev/null; }

# ---------------------------------------------------------------- up

build() {
  local b
  if [[ ${THECLOUD_SKIP_BUILD:-0} == 1 ]]; then
    say "Skipping the build (THECLOUD_SKIP_BUILD=1): using $BIN_DIR"
    for b in cloud-scheduler cloud-agent cloud; do
      [[ -x $BIN_DIR/$b ]] || die "$BIN_DIR/$b does not exist"
    done
    return 0
  fi
  say "Building (release): cargo build --release --workspace"
  info "The first build compiles every dependency and takes several minutes; later runs only rebuild what changed."
  local t0
  t0=$(now_us)
  (cd "$REPO_ROOT" && cargo build --release --workspace)
  for b in cloud-scheduler cloud-agent cloud; do
    [[ -x $BIN_DIR/$b ]] || die "the build did not produce $BIN_DIR/$b"
  done
  info "build done in $(fmt_duration "$t0")"
}

start_scheduler() {
  say "Starting the scheduler (REST $HTTP_ADDR, agent gRPC $GRPC_ADDR)"
  mkdir -p "$THECLOUD_HOME" "$LOG_DIR" "$SCHED_DIR"
  # The scheduler prints the admin key once on first start, so its log is private too.
  chmod 700 "$SCHED_DIR" "$LOG_DIR"
  local pid
  if pid=$(pidfile_running "$SCHED_PIDFILE" cloud-scheduler); then
    info "cloud-scheduler is already running (pid $pid)"
  else
    local addr
    for addr in "$HTTP_ADDR" "$GRPC_ADDR"; do
      local c
      c=$(client_addr "$addr")
      if port_open "${c%:*}" "${c##*:}"; then
        die "port $addr is already in use by a process this script did not start (see: ss -ltnp). Stop it, or choose other ports with THECLOUD_HTTP / THECLOUD_GRPC."
      fi
    done
    [[ -f $SCHED_DIR/admin.key ]] || FIRST_START=1
    local args=(serve --data-dir "$SCHED_DIR" --http "$HTTP_ADDR" --grpc "$GRPC_ADDR")
    [[ -f $SCHED_CONFIG ]] && args+=(--config "$SCHED_CONFIG") && info "using config $SCHED_CONFIG"
    launch "$SCHED_PIDFILE" "$SCHED_LOG" "$BIN_DIR/cloud-scheduler" "${args[@]}"
    info "started cloud-scheduler (pid $(cat "$SCHED_PIDFILE"), log $SCHED_LOG)"
  fi
  local i
  for ((i = 0; i < START_TIMEOUT * 2; i++)); do
    if readyz; then
      info "scheduler ready: $API_URL/readyz answers 200"
      [[ -f $SCHED_DIR/admin.key ]] || die "the scheduler is ready but $SCHED_DIR/admin.key does not exist"
      if [[ ${FIRST_START:-0} == 1 ]]; then
        info "first start: admin API key written to $SCHED_DIR/admin.key"
      fi
      return 0
    fi
    if ! pidfile_running "$SCHED_PIDFILE" cloud-scheduler >/dev/null; then
      log_tail "$SCHED_LOG"
      die "cloud-scheduler exited during start-up (log: $SCHED_LOG)"
    fi
    sleep 0.5
  done
  log_tail "$SCHED_LOG"
  die "the scheduler did not become ready within ${START_TIMEOUT}s ($API_URL/readyz; log: $SCHED_LOG)"
}

configure_cli() {
  say "Configuring the cloud CLI"
  "$BIN_DIR/cloud" config set api-url "$API_URL" >/dev/null
  "$BIN_DIR/cloud" config set api-key "$(cat "$SCHED_DIR/admin.key")" >/dev/null
  info "api-url $API_URL, api-key from $SCHED_DIR/admin.key (for user $(id -un))"
  local link=/usr/local/bin/cloud
  if [[ -e $link && ! -L $link ]]; then
    warn "$link exists and is not a symlink; leaving it alone (the CLI is at $BIN_DIR/cloud)"
  else
    ln -sfn "$BIN_DIR/cloud" "$link"
    info "$link -> $BIN_DIR/cloud"
  fi
}

# Succeeds when `cloud node list -o json` shows a node with status "ready".
node_ready() {
  "$BIN_DIR/cloud" node list -o json 2>/dev/null | python3 -c '
import json, sys
nodes = json.load(sys.stdin)
if isinstance(nodes, dict):
    nodes = nodes.get("items", [])
sys.exit(0 if any(n.get("status") == "ready" for n in nodes) else 1)
' 2>/dev/null
}

start_agent() {
  say "Starting the agent (scheduler $(client_addr "$GRPC_ADDR"))"
  mkdir -p "$AGENT_DIR"
  chmod 700 "$AGENT_DIR"
  local pid
  if pid=$(pidfile_running "$AGENT_PIDFILE" cloud-agent); then
    info "cloud-agent is already running (pid $pid)"
  else
    local f
    for f in "$SCHED_DIR/pki/ca.crt" "$SCHED_DIR/join.token"; do
      [[ -f $f ]] || die "$f is missing: the scheduler should have created it on first start (log: $SCHED_LOG)"
    done
    local args=(run --scheduler "$(client_addr "$GRPC_ADDR")" --ca-file "$SCHED_DIR/pki/ca.crt"
      --join-token-file "$SCHED_DIR/join.token" --data-dir "$AGENT_DIR")
    [[ -n ${THECLOUD_NODE_NAME:-} ]] && args+=(--name "$THECLOUD_NODE_NAME")
    launch "$AGENT_PIDFILE" "$AGENT_LOG" "$BIN_DIR/cloud-agent" "${args[@]}"
    info "started cloud-agent (pid $(cat "$AGENT_PIDFILE"), log $AGENT_LOG)"
  fi
  local i
  for ((i = 0; i < START_TIMEOUT; i++)); do
    if node_ready; then
      info "a node is ready"
      return 0
    fi
    if ! pidfile_running "$AGENT_PIDFILE" cloud-agent >/dev/null; then
      log_tail "$AGENT_LOG"
      die "cloud-agent exited during start-up (log: $AGENT_LOG)"
    fi
    sleep 1
  done
  "$BIN_DIR/cloud" node list >&2 || true
  log_tail "$AGENT_LOG"
  die "no node became ready within ${START_TIMEOUT}s (agent log: $AGENT_LOG, scheduler log: $SCHED_LOG)"
}

what_now() {
  cat <<EOF

The Cloud is running on this host.
  REST API     $API_URL   (admin key: $SCHED_DIR/admin.key)
  agent gRPC   $(client_addr "$GRPC_ADDR")   (mutual TLS, CA: $SCHED_DIR/pki/ca.crt)
  logs         $SCHED_LOG
               $AGENT_LOG
               /var/log/dockerd.log
  state        $THECLOUD_HOME

Try:
  cloud node list
  cloud instance launch --name web --image local/busybox:latest --cpu 250m --memory 64Mi -- sh -c 'while true; do echo hi; sleep 1; done'
  cloud instance list
  cloud instance show web
  cloud instance logs web
  cloud instance stop web
  cloud instance start web
  cloud instance rm web

A private network (VPC) with a subnet and a firewall:
  cloud vpc create prod --cidr 10.10.0.0/16
  cloud subnet create web --vpc prod --cidr 10.10.1.0/24 --nat-egress
  cloud sg create web --rule ingress:tcp:80:0.0.0.0/0 --rule ingress:icmp::10.10.0.0/16
  cloud instance launch --name app --image local/busybox:latest --subnet prod/web --sg web -- sleep 1d

Status:  $SCRIPT_DIR/quickstart.sh status
Stop:    $SCRIPT_DIR/quickstart.sh stop     (stops the scheduler and the agent; containers and state are kept)
EOF
  if [[ -n ${SUDO_USER:-} ]]; then
    printf '\nNote: the CLI was configured for root (run via sudo); use "sudo cloud ..." or configure it for %s.\n' "$SUDO_USER"
  fi
}

cmd_up() {
  local t0
  t0=$(now_us)
  say "Checking system packages"
  ensure_packages "${PACKAGES[@]}"
  require_cargo
  say "Starting dockerd"
  ensure_dockerd
  say "Checking the local image $BUSYBOX_IMAGE"
  ensure_busybox_image
  # VMs: libvirtd + QEMU. Optional: without them the agent runs containers only.
  say "Starting libvirtd (VMs)"
  if [[ ${THECLOUD_NO_VMS:-0} == 1 ]]; then
    info "skipped (THECLOUD_NO_VMS=1): this node will run containers only"
  elif ! (ensure_libvirt); then
    warn "libvirt could not be set up: this node will run containers only"
  fi
  build
  start_scheduler
  configure_cli
  start_agent
  info "all up in $(fmt_duration "$t0")"
  what_now
}

# ---------------------------------------------------------------- stop / status

# stop_proc NAME PIDFILE: SIGTERM, then SIGKILL after 15 s.
stop_proc() {
  local name=$1 pidfile=$2 pid i
  if ! pid=$(pidfile_running "$pidfile" "$name"); then
    info "$name is not running"
    rm -f "$pidfile"
    return 0
  fi
  info "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    pid_is "$pid" "$name" || break
    sleep 0.1
  done
  if pid_is "$pid" "$name"; then
    warn "$name (pid $pid) did not stop within 15 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

cmd_stop() {
  say "Stopping The Cloud (containers, dockerd and state in $THECLOUD_HOME are left as they are)"
  stop_proc cloud-agent "$AGENT_PIDFILE"
  stop_proc cloud-scheduler "$SCHED_PIDFILE"
}

cmd_status() {
  local pid
  if docker_up; then echo "dockerd          running"; else echo "dockerd          not running"; fi
  if pid=$(pidfile_running "$SCHED_PIDFILE" cloud-scheduler); then
    if readyz; then
      echo "cloud-scheduler  running (pid $pid), ready at $API_URL"
    else
      echo "cloud-scheduler  running (pid $pid), NOT ready at $API_URL/readyz"
    fi
  else
    echo "cloud-scheduler  not running"
  fi
  if pid=$(pidfile_running "$AGENT_PIDFILE" cloud-agent); then
    echo "cloud-agent      running (pid $pid)"
  else
    echo "cloud-agent      not running"
  fi
  echo "logs             $LOG_DIR"
  if [[ -x $BIN_DIR/cloud ]] && readyz; then
    echo
    "$BIN_DIR/cloud" node list || true
  fi
}

# ---------------------------------------------------------------- main

main() {
  local cmd=${1:-up}
  case $cmd in
  up | start)
    require_root "$SCRIPT_DIR/quickstart.sh" "$@"
    cmd_up
    ;;
  stop)
    require_root "$SCRIPT_DIR/quickstart.sh" "$@"
    cmd_stop
    ;;
  restart)
    require_root "$SCRIPT_DIR/quickstart.sh" "$@"
    cmd_stop
    cmd_up
    ;;
  status) cmd_status ;;
  help | -h | --help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
  esac
}

main "$@"
