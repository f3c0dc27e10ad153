#!/usr/bin/env bash
# End-to-end test of the Ansible deployment, for real, on throwaway hosts: each "host" is a
# network namespace with its own address and its own sshd, and its own install root, config,
# data and log directories (host_vars), so Ansible reaches it over SSH like a real machine.
#
#   1. ansible-lint (default profile) on deploy/ansible
#   2. site.yml with build A: the controller comes up (PostgreSQL on the controller, or SQLite),
#      every compute node enrolls with its own one-use join token and is `ready`
#   3. the systemd units the roles write (rendered in systemd mode) pass systemd-analyze verify;
#      the controller's firewall admits the fleet's network only
#   4. an instance is launched through the API and runs
#   5. upgrade.yml with build B (the same tree stamped THECLOUD_BUILD_ID=fleet-upgrade): the
#      controller, then each compute node drained (keep_instances), upgraded and undrained;
#      the instance never stopped (same container, same start time); every node runs build B
#   6. site.yml and upgrade.yml again with build B: no task reports a change
#
# Usage: deploy/ansible/tests/fleet-test.sh [--compute N] [--database postgres|sqlite] [--keep]
#   --compute N   compute hosts (default 2)
#   --database    the controller's database (default postgres: installed and run by the
#                 controller role, reached over its Unix socket)
#   --keep        leave the hosts, daemons and files for inspection (clean up with --clean)
#   --clean       remove what a previous run left, and exit
# Needs root, dockerd with the local busybox image, PostgreSQL (for --database postgres), and
# the debug binaries (it runs `cargo build`). scripts/test.sh prepares all of that.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ANSIBLE_DIR=$(cd "$HERE/.." && pwd)
REPO_ROOT=$(cd "$ANSIBLE_DIR/../.." && pwd)
# shellcheck source=../../../scripts/lib.sh
source "$REPO_ROOT/scripts/lib.sh"

COMPUTE=2
DATABASE=postgres
KEEP=0
CLEAN_ONLY=0
while (($#)); do
  case $1 in
  --compute) COMPUTE=${2:?}; shift 2 ;;
  --database) DATABASE=${2:?}; shift 2 ;;
  --keep) KEEP=1; shift ;;
  --clean) CLEAN_ONLY=1; shift ;;
  -h | --help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ $COMPUTE =~ ^[1-9][0-9]?$ ]] || die "--compute: 1 to 99"
[[ $DATABASE == postgres || $DATABASE == sqlite ]] || die "--database: postgres or sqlite"
[[ $(id -u) -eq 0 ]] || die "run as root (network namespaces, sshd, the agents)"

# Fixed names so that a later run (or --clean) finds what an aborted run left.
WORK=/var/tmp/thecloud-fleet-test
BRIDGE=tcfleet0
NET=10.231.0
NS_PREFIX=tcfleet-
PG_DB=thecloud_fleet_test
BUILD_B=fleet-upgrade
VM_DIR_PREFIX=/var/lib/libvirt/images/thecloud-fleet-
SSH_OPTS=(-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR -o BatchMode=yes)

host_names() {
  echo h0
  local i
  for ((i = 1; i <= COMPUTE; i++)); do echo "h$i"; done
}
host_ip() { echo "$NET.$((10 + ${1#h}))"; }
host_root() { echo "$WORK/hosts/$1"; }

# ---------------------------------------------------------------- cleanup

# signal_daemons SIG: every daemon the hosts started (agents, scheduler, sshd), by pid file.
signal_daemons() {
  local pidfile pid
  for pidfile in "$WORK"/hosts/*/run/thecloud/*.pid "$WORK"/hosts/*/sshd.pid; do
    [[ -f $pidfile ]] || continue
    pid=$(cat "$pidfile" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ ]] && kill "-$1" "$pid" 2>/dev/null || true
  done
}

cleanup() {
  local ns node_ids=()
  signal_daemons TERM
  sleep 1
  signal_daemons KILL
  # The test nodes' containers (by node id), then their namespaces and links.
  for f in "$WORK"/hosts/*/var/lib/thecloud/agent/node.json; do
    [[ -f $f ]] && node_ids+=("$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["node_id"])' "$f" 2>/dev/null || true)")
  done
  local id
  for id in "${node_ids[@]}"; do
    [[ -n $id ]] || continue
    docker ps -aq --filter "label=thecloud.node-id=$id" | xargs -r docker rm -f >/dev/null 2>&1 || true
  done
  # Every process left in a host's namespace (e.g. Ansible's persistent SSH sessions) holds
  # it, and its links, alive after `ip netns delete`: kill them first.
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    case $ns in
    "$NS_PREFIX"*)
      ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
      ip netns delete "$ns" 2>/dev/null || true
      ;;
    tf[0-9]*) ip netns delete "$ns" 2>/dev/null || true ;;
    esac
  done
  # A namespace can outlive its deletion for a while (sockets closing); its veth with it.
  local link
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^tcf-h' || true); do
    ip link delete "$link" 2>/dev/null || true
  done
  ip link delete "$BRIDGE" 2>/dev/null || true
  while iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null; do :; done
  if [[ $DATABASE == postgres ]] && command -v dropdb >/dev/null; then
    (cd / && runuser -u postgres -- dropdb --if-exists "$PG_DB" 2>/dev/null) || true
  fi
  rm -rf "$WORK" "$VM_DIR_PREFIX"h*
}

if ((CLEAN_ONLY)); then
  cleanup
  say "Cleaned up"
  exit 0
fi

on_exit() {
  local rc=$?
  if ((rc != 0)); then
    warn "the fleet test failed; logs of the hosts' daemons:"
    local log
    for log in "$WORK"/hosts/*/log/thecloud/*.log; do
      [[ -f $log ]] || continue
      printf -- '--- %s (last 30 lines)\n' "$log" >&2
      tail -n 30 "$log" >&2 || true
    done
  fi
  if ((KEEP)); then
    info "kept: $WORK (inventory $WORK/inventory.yml); clean up with $0 --clean"
  else
    cleanup
  fi
  exit "$rc"
}

# ---------------------------------------------------------------- hosts

make_hosts() {
  mkdir -p "$WORK/ssh" "$WORK/hosts" /run/sshd
  chmod 755 "$WORK" "$WORK/hosts"
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/id" -C fleet-test
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/host_key" -C fleet-test-host
  cp "$WORK/ssh/id.pub" "$WORK/ssh/authorized_keys"
  ip link add "$BRIDGE" type bridge
  ip addr add "$NET.1/24" dev "$BRIDGE"
  # A second address outside the networks the controller's firewall admits.
  ip addr add "$NET.200/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Docker's FORWARD policy is DROP and bridged frames pass iptables (bridge netfilter): let
  # the hosts talk to each other across the bridge, as machines on one LAN would.
  iptables -C FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null ||
    iptables -I FORWARD 1 -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
  local h ns ip
  for h in $(host_names); do
    ns=$NS_PREFIX$h
    ip=$(host_ip "$h")
    mkdir -p "$(host_root "$h")"
    chmod 755 "$(host_root "$h")"
    ip netns add "$ns"
    ip link add "tcf-$h" type veth peer name eth0 netns "$ns"
    ip link set "tcf-$h" master "$BRIDGE" up
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$NET.1"
    ip netns exec "$ns" /usr/sbin/sshd -f /dev/null \
      -o ListenAddress="$ip" -o HostKey="$WORK/ssh/host_key" -o PidFile="$(host_root "$h")/sshd.pid" \
      -o AuthorizedKeysFile="$WORK/ssh/authorized_keys" -o PermitRootLogin=prohibit-password \
      -o PasswordAuthentication=no -o StrictModes=no -o UsePAM=no \
      -o "Subsystem=sftp /usr/lib/openssh/sftp-server" -o MaxStartups=100
  done
  for h in $(host_names); do
    local i
    for ((i = 0; i < 50; i++)); do
      ssh "${SSH_OPTS[@]}" -i "$WORK/ssh/id" "root@$(host_ip "$h")" true 2>/dev/null && break
      sleep 0.1
    done
    ((i < 50)) || die "sshd on $h ($(host_ip "$h")) does not answer"
  done
  info "$((COMPUTE + 1)) hosts: h0 (controller) $(host_ip h0), compute h1..h$COMPUTE from $(host_ip h1), each with sshd"
}

host_dirs() {
  local r
  r=$(host_root "$1")
  cat <<EOF
          thecloud_prefix: $r/opt/thecloud
          thecloud_config_dir: $r/etc/thecloud
          thecloud_data_dir: $r/var/lib/thecloud
          thecloud_log_dir: $r/log/thecloud
          thecloud_run_dir: $r/run/thecloud
EOF
}

write_inventory() {
  local inv=$WORK/inventory.yml h i
  {
    cat <<EOF
# Throwaway hosts of deploy/ansible/tests/fleet-test.sh
all:
  vars:
    ansible_user: root
    ansible_ssh_private_key_file: $WORK/ssh/id
    ansible_ssh_common_args: "${SSH_OPTS[*]}"
    ansible_python_interpreter: /usr/bin/python3
    thecloud_service_manager: background
    # No route to a Debian mirror from the hosts: use the packages as installed.
    thecloud_apt_cache_valid_time: 0
  children:
    controller:
      vars:
        thecloud_postgresql_local: $([[ $DATABASE == postgres ]] && echo true || echo false)
        thecloud_postgresql_db: $PG_DB
        thecloud_api_allowed_cidrs: [$NET.0/25]
        thecloud_agent_allowed_cidrs: [$NET.0/25]
        thecloud_scheduler_settings:
          node_down_after: "10s"
          reschedule_after: "5m"
      hosts:
        h0:
          ansible_host: $(host_ip h0)
$(host_dirs h0)
    compute:
      hosts:
EOF
    for ((i = 1; i <= COMPUTE; i++)); do
      h=h$i
      cat <<EOF
        $h:
          ansible_host: $(host_ip "$h")
$(host_dirs "$h")
          thecloud_sysctl_file: $(host_root "$h")/etc/sysctl.d/60-thecloud.conf
          thecloud_vpc_prefix: tf$i
          thecloud_node_labels: { zone: z$((i % 2)) }
          # One host runs libvirt too (shared libvirtd, own VM directory); the others do not.
          thecloud_vms: $( ((i == 2)) && echo true || echo false)
          thecloud_vm_dir: $VM_DIR_PREFIX$h
EOF
    done
  } >"$inv"
}

# ---------------------------------------------------------------- helpers

RECAP=""
# playbook NAME PLAYBOOK ARTIFACTS: runs it, keeps its output, sets RECAP and PLAY_SECONDS.
playbook() {
  local name=$1 book=$2 artifacts=$3 log=$WORK/$1.log t0 rc=0
  t0=$(now_us)
  (cd "$ANSIBLE_DIR" && ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1 ansible-playbook -i "$WORK/inventory.yml" "$book" \
    -e "thecloud_artifact_dir=$artifacts") >"$log" 2>&1 || rc=$?
  PLAY_SECONDS=$(awk -v us=$(($(now_us) - t0)) 'BEGIN { printf "%.1f", us / 1e6 }')
  RECAP=$(sed -n '/PLAY RECAP/,$p' "$log")
  if ((rc != 0)); then
    tail -n 60 "$log" >&2
    die "$name: ansible-playbook $book failed (exit $rc; log $log)"
  fi
  info "$name: $book in ${PLAY_SECONDS}s"
}

# Fails unless the last playbook run changed nothing on any host, naming what changed.
expect_no_changes() {
  local name=$1
  if grep -Eq 'changed=[1-9]' <<<"$RECAP"; then
    grep -E '^changed:|^TASK' "$WORK/$name.log" | grep -B1 '^changed:' >&2 || true
    printf '%s\n' "$RECAP" >&2
    die "$name: not idempotent: the run above changed something"
  fi
  grep -Eq 'ok=[1-9]' <<<"$RECAP" || die "$name: the recap shows no task at all"
  info "$name: no changes on any host"
}

# No secret in Ansible's output or the daemons' logs: neither the admin key nor a join token.
no_secrets_in_logs() {
  local logs=("$WORK"/*.log "$WORK"/hosts/*/log/thecloud/*.log)
  if grep -Fq "$(admin_key)" "${logs[@]}" || grep -Eq 'tcj_[A-Za-z0-9_-]{16,}|"token": *"[^"]{16,}' "${logs[@]}"; then
    grep -l -F "$(admin_key)" "${logs[@]}" >&2 || true
    die "a secret appears in the output of ansible-playbook or in a daemon's log"
  fi
}

# How long each agent was away during the upgrade: from its "signal received" to the next
# "session accepted" in its log.
agent_gaps() {
  python3 - "$WORK"/hosts/h*/log/thecloud/cloud-agent.log <<'PY'
import re, sys
from datetime import datetime
def ts(line):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
    return datetime.fromisoformat(m.group(1)[:26]) if m else None
for path in sys.argv[1:]:
    host = path.split("/hosts/")[1].split("/")[0]
    stop = None
    gap = None
    for line in open(path, errors="replace"):
        if "signal received" in line:
            stop = ts(line)
        elif "session accepted" in line and stop is not None:
            gap = (ts(line) - stop).total_seconds()
            stop = None
    if gap is not None:
        print(f"    {host}: agent away {gap:.2f} s (signal received -> session accepted)")
PY
}

admin_key() { cat "$(host_root h0)/var/lib/thecloud/scheduler/admin.key"; }
API=http://$(host_ip h0):8080
cloud() { "$REPO_ROOT/target/debug/cloud" --api-url "$API" --api-key "$(admin_key)" "$@"; }

# JSON field of `cloud ... -o json` via a Python expression on `d`.
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

container_of() {
  docker ps -q --no-trunc --filter "label=thecloud.instance-id=$1"
}

# ---------------------------------------------------------------- the test

main() {
  local t_all
  t_all=$(now_us)
  say "Fleet deployment test: 1 controller + $COMPUTE compute hosts (database: $DATABASE)"
  command -v ansible-playbook >/dev/null || die "ansible-playbook is missing (apt-get install ansible-core)"
  command -v ansible-lint >/dev/null || die "ansible-lint is missing (apt-get install ansible-lint)"
  [[ -x /usr/sbin/sshd ]] || die "sshd is missing (apt-get install openssh-server)"
  docker_up || die "dockerd is not running"

  say "ansible-lint (default profile)"
  (cd "$ANSIBLE_DIR" && ansible-lint --nocolor site.yml upgrade.yml roles) || die "ansible-lint found problems"

  say "Builds A and B"
  mkdir -p "$WORK"
  cleanup
  trap on_exit EXIT
  mkdir -p "$WORK/build-a" "$WORK/build-b"
  (cd "$REPO_ROOT" && cargo build --bin cloud-agent --bin cloud-scheduler --bin cloud)
  cp "$REPO_ROOT"/target/debug/{cloud-agent,cloud-scheduler,cloud} "$WORK/build-a/"
  (cd "$REPO_ROOT" && THECLOUD_BUILD_ID=$BUILD_B cargo build --bin cloud-agent --bin cloud-scheduler)
  cp "$REPO_ROOT"/target/debug/{cloud-agent,cloud-scheduler} "$WORK/build-b/"
  cp "$WORK/build-a/cloud" "$WORK/build-b/cloud"
  local va vb
  va=$("$WORK/build-a/cloud-agent" --version | awk '{print $NF}')
  vb=$("$WORK/build-b/cloud-agent" --version | awk '{print $NF}')
  [[ $va != "$vb" ]] || die "builds A and B report the same version ($va)"
  info "build A: agent $va; build B: agent $vb"

  say "Throwaway hosts"
  make_hosts
  write_inventory

  say "site.yml (build A): install the fleet"
  playbook site-1 site.yml "$WORK/build-a"
  local rollout=$PLAY_SECONDS
  local nodes
  nodes=$(cloud node list -o json)
  local ready
  ready=$(json "sum(1 for n in d if n['status'] == 'ready' and n['connected'] and n['agent_version'] == '$va')" <<<"$nodes")
  [[ $ready == "$COMPUTE" ]] || die "expected $COMPUTE ready nodes on $va, got: $(cloud node list)"
  cloud node list
  no_secrets_in_logs
  local h
  for h in $(seq 1 "$COMPUTE"); do
    [[ ! -e $(host_root "h$h")/etc/thecloud/join.token ]] || die "h$h: the join token was left on the host"
  done
  info "every compute node is ready on $va; no token left on the hosts or in the output"

  say "systemd units (rendered by the roles in systemd mode, checked with systemd-analyze)"
  playbook units tests/systemd-units.yml "$WORK/build-a"
  local unit units=0
  for unit in "$WORK"/hosts/*/opt/thecloud/systemd-check/*.service; do
    systemd-analyze verify "$unit" || die "systemd-analyze verify $unit failed"
    units=$((units + 1))
  done
  ((units == COMPUTE + 1)) || die "expected $((COMPUTE + 1)) units, found $units"
  info "$units units verified"

  say "Firewall of the controller"
  curl -fsS -m 3 -o /dev/null --interface "$NET.1" "$API/readyz" || die "the API does not answer from $NET.1 (admitted)"
  if curl -fsS -m 3 -o /dev/null --interface "$NET.200" "$API/readyz" 2>/dev/null; then
    die "the API answers from $NET.200, outside thecloud_api_allowed_cidrs"
  fi
  info "the API answers from $NET.1 (admitted) and not from $NET.200 (outside $NET.0/25)"

  say "An instance through the API"
  local inst id cid started
  inst=$(cloud instance launch --name fleet-web --image local/busybox:latest --cpu 100m --memory 32Mi -o json -- sleep 100000)
  id=$(json "d['id']" <<<"$inst")
  local i
  for ((i = 0; i < 60; i++)); do
    [[ $(cloud instance show "$id" -o json | json "d['status']") == running ]] && break
    sleep 1
  done
  ((i < 60)) || die "the instance did not reach running: $(cloud instance show "$id")"
  cid=$(container_of "$id")
  [[ -n $cid ]] || die "no container for instance $id"
  started=$(docker inspect -f '{{.State.StartedAt}}' "$cid")
  local on
  on=$(cloud instance show "$id" -o json | json "d['node_name']")
  info "instance $id running on $on, container ${cid:0:12}, started $started"

  # An operator's maintenance drain on a node without the instance: the upgrade must upgrade
  # that node but leave its drain in place.
  local held=""
  if ((COMPUTE >= 2)); then
    held=$(cloud node list -o json | json "sorted(n['name'] for n in d if n['name'] != '$on')[0]")
    cloud node drain "$held" --keep-instances >/dev/null
    info "operator drain (keep instances) on $held before the upgrade"
  fi

  say "upgrade.yml (build B): rolling upgrade"
  local sched_pid_before
  sched_pid_before=$(cat "$(host_root h0)/run/thecloud/cloud-scheduler.pid")
  # Watch the instance's container during the upgrade: it must never stop.
  local watch_log=$WORK/watch.log
  (
    while :; do
      docker inspect -f '{{.State.Status}} {{.State.StartedAt}}' "$cid" 2>&1 || true
      sleep 0.5
    done
  ) >"$watch_log" &
  local watcher=$!
  playbook upgrade-1 upgrade.yml "$WORK/build-b"
  kill "$watcher" 2>/dev/null || true
  wait "$watcher" 2>/dev/null || true
  local upgrade_time=$PLAY_SECONDS
  grep -Eo '[a-z0-9]+ upgraded to [^;]+; drained for [0-9.]+ s' "$WORK/upgrade-1.log" | sort -u | sed 's/^/    /'
  agent_gaps
  local upgraded
  upgraded=$(grep -Eo '[a-z0-9]+ upgraded to [^;]+;' "$WORK/upgrade-1.log" | sort -u | wc -l)
  ((upgraded == COMPUTE)) || die "expected $COMPUTE upgraded nodes in the output, found $upgraded"
  if [[ -n $held ]]; then
    grep -q "$held upgraded to [^;]*; it was already drained by an operator" "$WORK/upgrade-1.log" ||
      die "the play did not report $held as upgraded and left drained"
    [[ $(cloud node show "$held" -o json | json "d.get('drain')") == keep_instances ]] ||
      die "the upgrade lifted the operator's drain on $held"
    cloud node undrain "$held" >/dev/null
    info "$held was upgraded and kept its operator drain (undrained now)"
  fi

  # Every node on build B and ready; the scheduler restarted on build B.
  nodes=$(cloud node list -o json)
  ready=$(json "sum(1 for n in d if n['status'] == 'ready' and n['connected'] and n['agent_version'] == '$vb' and n.get('drain') is None)" <<<"$nodes")
  [[ $ready == "$COMPUTE" ]] || die "expected $COMPUTE ready nodes on $vb, got: $(cloud node list)"
  [[ $(cat "$(host_root h0)/run/thecloud/cloud-scheduler.pid") != "$sched_pid_before" ]] || die "the scheduler was not restarted"
  "$(host_root h0)/opt/thecloud/bin/cloud-scheduler" --version | grep -q "+$BUILD_B" || die "the controller does not run build B"
  # The instance never stopped: the same container, started once, running all along.
  [[ $(container_of "$id") == "$cid" ]] || die "the instance's container changed (was ${cid:0:12})"
  [[ $(docker inspect -f '{{.State.StartedAt}}' "$cid") == "$started" ]] || die "the container was restarted"
  if grep -v "^running $started\$" "$watch_log" | grep -q .; then
    sort "$watch_log" | uniq -c >&2
    die "the container was not running at every moment of the upgrade"
  fi
  local samples
  samples=$(wc -l <"$watch_log")
  ((samples > 5)) || die "the watcher saw the container only $samples times"
  [[ $(cloud instance show "$id" -o json | json "d['status']") == running ]] || die "the instance is not running after the upgrade"
  info "all $COMPUTE nodes ready on $vb and the controller on build B; instance container ${cid:0:12} running in all $samples samples, same start time"

  say "site.yml and upgrade.yml again (build B): idempotence"
  playbook site-3 site.yml "$WORK/build-b"
  expect_no_changes site-3
  playbook upgrade-2 upgrade.yml "$WORK/build-b"
  expect_no_changes upgrade-2

  no_secrets_in_logs
  cloud instance rm "$id" >/dev/null || true
  say "Fleet test passed in $(fmt_duration "$t_all")"
  info "fleet rollout (site.yml, 1 controller + $COMPUTE compute hosts, first run): ${rollout}s"
  info "rolling upgrade (upgrade.yml, controller + $COMPUTE nodes one at a time): ${upgrade_time}s"
}

main
